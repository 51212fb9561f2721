"""Workspace: the bytes a backward allocates beyond its inputs and outputs, per array family.

- NumPy and Numba: ``tracemalloc`` peak during one call (NumPy's data buffers and Numba's NRT
  allocations go through Python's traced allocators), minus the bytes of the returned outputs.
- torch on the CPU: the profiler with ``profile_memory=True``; allocations are attributed to the
  ops (``self_cpu_memory_usage``) and frees to ``[memory]`` events, so a running sum in time
  order gives the peak of live bytes, minus the outputs.
- CUDA (torch, CuPy): ``lnbench.measure.cuda.cuda_workspace_bytes`` (allocator statistics).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from lnbench.arrays import synchronize


def _nbytes(outs: Any) -> int:
    total = 0
    for o in outs if isinstance(outs, tuple | list) else (outs,):
        if o is None:
            continue
        if hasattr(o, "nbytes"):
            total += int(o.nbytes)
        elif hasattr(o, "element_size"):
            total += int(o.element_size() * o.numel())
    return total


def workspace_tracemalloc(thunk: Callable[[], Any]) -> int:
    """Peak traced bytes during one call minus the outputs' bytes."""
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        outs = thunk()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was:
            tracemalloc.stop()
    return max(0, peak - _nbytes(outs))


@contextlib.contextmanager
def quiet_fd2() -> Iterator[None]:
    """Silence file descriptor 2 (Kineto prints profiler_start/stop lines from C++)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def workspace_torch_cpu(thunk: Callable[[], Any]) -> int:
    """Peak of live bytes during one call (torch profiler memory events) minus the outputs."""
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings(), quiet_fd2():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            outs = thunk()
    events = sorted(
        (e.time_range.start, int(getattr(e, "self_cpu_memory_usage", 0) or 0))
        for e in prof.events()
    )
    live = peak = 0
    for _, b in events:
        live += b
        peak = max(peak, live)
    return max(0, peak - _nbytes(outs))


def workspace_bytes(thunk: Callable[[], Any], array: str, device: str) -> int:
    """The backward's own workspace in bytes, measured the way ``array``/``device`` allow."""
    if device == "cuda":
        from lnbench.measure.cuda import cuda_workspace_bytes

        return int(cuda_workspace_bytes(thunk))
    if array == "torch":
        return workspace_torch_cpu(thunk)
    synchronize(device)
    return workspace_tracemalloc(thunk)
