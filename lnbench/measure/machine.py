"""Machine facts stored with every result set, and this machine's copy bandwidth.

asv's machine.json has no GPU fields; lnbench writes ``<results>/lnbench-machines/<machine>.json``
(a folder without machine.json, which asv ignores) so reports can join them to asv's files.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

VERSIONED = ("numpy", "torch", "cupy", "cupy-cuda12x", "numba", "triton", "ml_dtypes",
             "liger-kernel", "asv", "pandas")


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def copy_bandwidth_cpu() -> float:
    """Practical speed of light on this CPU, GB/s counting read + write.

    Measured in a fresh Python process (``python -m lnbench.measure.machine``), so the figure
    does not depend on the heap and page state of the process that asks (a long-lived benchmark
    process measured up to 70 % more than fresh ones on the same VM); falls back to measuring
    here if the subprocess fails.
    """
    import subprocess
    import sys

    try:
        out = subprocess.run([sys.executable, "-m", "lnbench.measure.machine"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        return float(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return _copy_here()


def _copy_here(nbytes: int = 256 * 2**20, repeat: int = 9) -> float:
    """Best of NumPy's single-threaded ``np.copyto`` and torch's multi-threaded ``copy_`` on
    ``nbytes`` arrays (larger than any cache), median of ``repeat`` copies each."""
    src = np.ones(nbytes // 8)
    return copy_best(src, np.empty_like(src), repeat)


def copy_best(src: np.ndarray, dst: np.ndarray, repeat: int) -> float:
    """GB/s (read + write) of copying ``src`` into ``dst``: the best of ``np.copyto`` and torch's
    ``copy_``, median of ``repeat`` copies each, after one untimed copy."""
    np.copyto(dst, src)

    def med(fn) -> float:
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    best = med(lambda: np.copyto(dst, src))
    try:
        import torch

        ts, td = torch.from_numpy(src), torch.from_numpy(dst)
        td.copy_(ts)
        best = min(best, med(lambda: td.copy_(ts)))
    except ImportError:
        pass
    return 2 * src.nbytes / best / 1e9


def copy_bandwidth(device: str) -> float | None:
    """GB/s for ``device``; None where the device is not here."""
    if device == "cpu":
        return copy_bandwidth_cpu()
    try:
        from lnbench.measure.cuda import copy_bandwidth_cuda

        return copy_bandwidth_cuda()
    except Exception:
        return None


def gpu_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"gpu_name": None, "gpu_memory_bytes": None, "driver": None,
                             "cuda": None}
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            facts.update(gpu_name=p.name, gpu_memory_bytes=int(p.total_memory),
                         cuda=torch.version.cuda)
    except Exception:
        pass
    if facts["gpu_name"]:
        try:
            import subprocess

            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=False,
            ).stdout.strip()
            facts["driver"] = out.splitlines()[0] if out else None
        except Exception:
            pass
    return facts


def machine_name() -> str:
    """asv's machine name when one is configured (``ASV_MACHINE`` / ~/.asv-machine.json)."""
    if os.environ.get("ASV_MACHINE"):
        return os.environ["ASV_MACHINE"]
    try:
        d = json.loads(Path("~/.asv-machine.json").expanduser().read_text())
        names = [k for k in d if k != "version"]
        if len(names) == 1:
            return names[0]
    except (OSError, ValueError):
        pass
    return socket.gethostname()


def facts(measure_bandwidth: bool = True) -> dict[str, Any]:
    """Everything reports need to compare this machine with others."""
    import psutil

    from lnbench.measure import heap

    gpu = gpu_facts()
    copy = {"cpu": None, "cuda": None}
    if measure_bandwidth:
        copy["cpu"] = round(copy_bandwidth_cpu(), 2)
        if gpu["gpu_name"]:
            cb = copy_bandwidth("cuda")
            copy["cuda"] = round(cb, 1) if cb else None
    return {
        "machine": machine_name(),
        "recorded_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=True),
        "cpu_threads_used": _threads(),
        "memory_bytes": int(psutil.virtual_memory().total),
        **gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: v for p in VERSIONED if (v := _version(p))},
        "copy_gbps": copy,
        "malloc": heap.policy(),  # steady or system: lnbench.measure.heap
    }


def _threads() -> int | None:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


def write_facts(results_dir: str | os.PathLike, data: dict[str, Any] | None = None) -> Path:
    """Write (or refresh) ``<results_dir>/lnbench-machines/<machine>.json``."""
    data = data or facts()
    d = Path(results_dir) / "lnbench-machines"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{data['machine']}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":
    print(f"{_copy_here():.3f}")
