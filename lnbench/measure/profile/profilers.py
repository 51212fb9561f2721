"""The backend's own profiler over the same thunk: the kernels/functions table.

- torch: ``torch.profiler`` with ``record_shapes`` and ``profile_memory`` — self CPU time per
  aten op (self CUDA time per kernel on GPUs), each call wrapped in a ``record_function`` span
  (dropped from the table), and the Chrome trace it writes;
- NumPy and Numba: ``cProfile``, time grouped by Python function and C builtin (own time);
- CuPy: ``cupyx.profiler.benchmark`` — CPU and GPU time of the whole call (CUDA events); CuPy
  gives no per-kernel breakdown in-process, ``nsys profile`` does.

Every table is per backward call (totals divided by the calls profiled), sorted by the time that
matters on the device (self CUDA time on GPUs, self time otherwise), with each row's ``pct`` of
that column's sum.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from typing import Any

import numpy as np

from lnbench.measure.profile.ops import short_path


def torch_profiler(thunk: Callable[[], Any], iterations: int, device: str,
                   trace: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """torch.profiler rows (per call, by self time) and its memory totals; writes the trace."""
    import warnings

    from torch.profiler import ProfilerActivity, profile, record_function

    from lnbench.arrays import synchronize
    from lnbench.measure.memory import quiet_fd2

    acts = [ProfilerActivity.CPU]
    if device == "cuda":
        acts.append(ProfilerActivity.CUDA)
    with warnings.catch_warnings(), quiet_fd2():
        warnings.simplefilter("ignore")
        with profile(activities=acts, record_shapes=True, profile_memory=True) as prof:
            for i in range(iterations):
                with record_function(f"lnbench backward #{i}"):
                    thunk()
                synchronize(device)
    if trace:
        prof.export_chrome_trace(trace)
    rows = []
    for e in prof.key_averages():
        if e.key.startswith("lnbench backward") or e.key == "[memory]":
            continue
        rows.append({
            "name": e.key,
            "calls": e.count / iterations,
            "self_seconds": e.self_cpu_time_total / 1e6 / iterations,
            "total_seconds": e.cpu_time_total / 1e6 / iterations,
            "device_seconds": (e.self_device_time_total / 1e6 / iterations
                               if device == "cuda" else None),
        })
    key = "device_seconds" if device == "cuda" else "self_seconds"
    rows.sort(key=lambda r: -(r[key] or 0.0))
    tot = sum(r[key] or 0.0 for r in rows) or 1.0
    for r in rows:
        r["pct"] = 100 * (r[key] or 0.0) / tot
    mem_attr = "self_device_memory_usage" if device == "cuda" else "self_cpu_memory_usage"
    allocated = sum(max(0, int(getattr(e, mem_attr, 0) or 0)) for e in prof.events())
    return rows, {"profiler_allocated_bytes": allocated / iterations}


def cprofile(thunk: Callable[[], Any], iterations: int) -> list[dict[str, Any]]:
    """cProfile over ``iterations`` calls, grouped by function, per call, by own time."""
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(iterations):
        thunk()
    pr.disable()
    st = pstats.Stats(pr)
    rows = []
    for (fname, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if func == "<method 'disable' of '_lsprof.Profiler' objects>":
            continue
        label = func if fname == "~" else f"{short_path(fname)}:{line}({func})"
        rows.append({"name": label, "calls": nc / iterations, "self_seconds": tt / iterations,
                     "total_seconds": ct / iterations, "device_seconds": None})
    rows.sort(key=lambda r: -r["self_seconds"])
    tot = sum(r["self_seconds"] for r in rows) or 1.0
    for r in rows:
        r["pct"] = 100 * r["self_seconds"] / tot
    return rows


def cupy_profile(thunk: Callable[[], Any], iterations: int) -> tuple[list[dict[str, Any]], str]:
    """One row: the whole call's median CPU and GPU time (``cupyx.profiler.benchmark``), and a
    note saying what is missing."""
    try:
        from cupyx.profiler import benchmark
    except ImportError as e:
        return [], f"cupyx.profiler not importable ({e}): no CuPy profile"
    r = benchmark(thunk, n_repeat=max(iterations, 10), n_warmup=2)
    return [{
        "name": "backward (whole call)", "calls": 1.0,
        "self_seconds": float(np.median(r.cpu_times)),
        "total_seconds": float(np.median(r.cpu_times)),
        "device_seconds": float(np.median(r.gpu_times[0])), "pct": 100.0,
    }], ("CuPy: cupyx.profiler gives the GPU time of the whole call only; run under `nsys "
         "profile` for per-kernel times")
