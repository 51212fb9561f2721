"""GPU measurements: per-call time from CUDA events, extra device memory per call, copy bandwidth.

Timing follows ``triton.testing.do_bench``: warm-up calls, then per call: zero a 256 MB buffer
(flushes the L2 cache, 50 MB on an H100), record a start event, run the thunk, record an end
event; every event pair is read after one final synchronize, so the host never stalls the queue
between calls. The caller takes the median (``do_bench`` defaults to the *mean*, docs/peers.md).
:func:`time_cuda` is the CUDA clock of lnbench's one interleaved measurement
(``lnbench.measure.timing.time_interleaved``), which ``lnbench run`` and ``lnbench gpu-check``
time with.
Events go on torch's current stream; CuPy launches on its current stream — both are the legacy
default stream unless a caller changed them, so the events bracket CuPy kernels too.

Without a usable GPU every function raises :class:`CudaUnavailable` with the reason; nothing here
ever returns a made-up number.
"""

from __future__ import annotations

import importlib.util
import statistics
from collections.abc import Callable, Iterable
from typing import Any

L2_FLUSH_BYTES = 256 * 1024 * 1024
ALLOC_ROUND = 512  # both torch's caching allocator and CuPy's pool round blocks to 512 bytes


class CudaUnavailable(RuntimeError):
    """No CUDA device (or no CUDA build of torch) to measure on; ``str(e)`` says why."""


def cuda_unavailable() -> str | None:
    """Why GPU measurements cannot run here, or None."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return "torch: no CUDA device (torch.cuda.is_available() is False)"
    return None


def _require() -> Any:
    why = cuda_unavailable()
    if why:
        raise CudaUnavailable(why)
    import torch

    return torch


def time_cuda(thunk: Callable[[], Any], *, warmup: int = 3, rep: int = 20,
              flush_l2: bool = True) -> list[float]:
    """Seconds per call of ``thunk`` for ``rep`` calls, from CUDA events (median is the caller's).

    ``warmup`` untimed calls come first. With ``flush_l2`` a 256 MB buffer is zeroed before each
    call, outside the events, so every call starts with a cold L2 as a training step would.
    """
    torch = _require()
    if rep < 1:
        raise ValueError(f"rep must be at least 1, got {rep}")
    cache = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda") if flush_l2 else None
    for _ in range(max(0, warmup)):
        thunk()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    for i in range(rep):
        if cache is not None:
            cache.zero_()
        starts[i].record()
        thunk()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends, strict=True)]


def _round(n: int) -> int:
    return -(-n // ALLOC_ROUND) * ALLOC_ROUND


def _leaves(out: Any) -> Iterable[Any]:
    if isinstance(out, tuple | list):
        for o in out:
            yield from _leaves(o)
    elif out is not None:
        yield out


def _array_bytes(outs: Any) -> tuple[int, int]:
    """(torch bytes, CuPy bytes) of the result arrays' allocations, each counted once and
    rounded like its allocator does."""
    t = c = 0
    seen: set[tuple[str, int]] = set()
    for a in _leaves(outs):
        if type(a).__name__ == "DeviceBF16":  # lnbench.impls.cupy_fused: CuPy uint16 bits
            a = a.bits
        mod = type(a).__module__
        if mod.startswith("torch"):
            st = a.untyped_storage()
            if ("torch", st.data_ptr()) not in seen:
                seen.add(("torch", st.data_ptr()))
                t += _round(st.nbytes())
        elif mod.startswith("cupy"):
            mem = a.data.mem
            if ("cupy", mem.ptr) not in seen:
                seen.add(("cupy", mem.ptr))
                c += _round(int(mem.size))
    return t, c


def cuda_workspace_bytes(thunk: Callable[[], Any]) -> int:
    """Extra device bytes one call allocates beyond its inputs and outputs (peak, per call).

    torch's caching allocator: ``max_memory_allocated`` after ``reset_peak_memory_stats`` minus
    what was allocated before the call and minus the outputs. CuPy's pool: a memory hook tracks
    the peak of bytes handed out during the call, minus the outputs still held. The two are added
    (an implementation may use both). Run the thunk once before (warm-up, compilation).
    """
    torch = _require()
    hook = _cupy_peak_hook()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    if hook is not None:
        with hook:
            outs = thunk()
            torch.cuda.synchronize()
    else:
        outs = thunk()
        torch.cuda.synchronize()
    t_peak = torch.cuda.max_memory_allocated() - before
    t_out, c_out = _array_bytes(outs)
    extra = max(0, t_peak - t_out)
    if hook is not None:
        extra += max(0, hook.peak - c_out)
    del outs
    return int(extra)


def _cupy_peak_hook() -> Any:
    """A CuPy MemoryHook recording the peak bytes taken from the pool, or None without CuPy."""
    if importlib.util.find_spec("cupy") is None:
        return None
    try:
        import cupy
        from cupy.cuda import memory_hook

        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - CuPy present but unusable: nothing to track
        return None

    class PeakHook(memory_hook.MemoryHook):
        name = "lnbench_peak"

        def __init__(self) -> None:
            self.cur = 0
            self.peak = 0

        def malloc_postprocess(self, **kw: Any) -> None:
            if kw.get("mem_ptr"):
                self.cur += int(kw["mem_size"])
                self.peak = max(self.peak, self.cur)

        def free_postprocess(self, **kw: Any) -> None:
            self.cur -= int(kw["mem_size"])

    return PeakHook()


def copy_bandwidth_cuda(nbytes: int = 1 << 30, *, rep: int = 20) -> float:
    """Device-to-device copy speed in GB/s (1e9 B/s), counting read + write: 2·nbytes / median.

    The practical speed of light for a memory-bound kernel (docs/peers.md: 3019 GB/s on an H100).
    """
    torch = _require()

    def measure() -> list[float]:
        src = torch.ones(nbytes, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        return time_cuda(lambda: dst.copy_(src), warmup=3, rep=rep, flush_l2=False)

    times = measure()
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times) / 1e9


def device_info() -> dict[str, Any]:
    """Name, capability, SMs, memory, driver and CUDA versions of the current device."""
    torch = _require()
    import subprocess

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    info: dict[str, Any] = {
        "name": torch.cuda.get_device_name(),
        "capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "driver": None,
    }
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        if r.returncode == 0 and r.stdout.strip():
            info["driver"] = r.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    for mod, key in (("cupy", "cupy"), ("triton", "triton")):
        if importlib.util.find_spec(mod) is not None:
            try:
                info[key] = __import__(mod).__version__
            except Exception as e:  # noqa: BLE001 - a broken install is worth reporting
                info[key] = f"import failed: {type(e).__name__}: {e}"
    return info


def free_device_memory() -> None:
    """Return cached blocks of torch's allocator and CuPy's pool to the driver (between impls)."""
    if cuda_unavailable() is None:
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            cupy.get_default_memory_pool().free_all_blocks()
        except Exception:  # noqa: BLE001 - CuPy without a device: nothing to free
            pass
