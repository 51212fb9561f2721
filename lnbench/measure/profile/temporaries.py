"""Temporaries: the arrays a backward allocates beyond the three it returns.

- **from the ops**: the tracers record each op's newly allocated outputs (count, bytes, data
  pointers). Over ``k`` traced calls, the temporaries per call are the allocations per call minus
  the returned outputs, which are matched by data pointer against the *last* allocation at each
  output's address (a returned view counts its base array): what remains was allocated, used and
  dropped inside the call;
- **peak workspace** (``lnbench.measure.memory.workspace_bytes``): the high-water mark above the
  inputs and outputs — tracemalloc's peak minus the outputs for NumPy/Numba, torch profiler
  memory events on the CPU, the CUDA allocator's statistics on GPUs;
- **Numba NRT allocations**: arrays the compiled code allocated through Numba's runtime in one
  call, which no Python-level tracer sees;
- torch's profiler adds the bytes it saw allocated (``profiler_allocated_bytes``,
  :mod:`.profilers`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from lnbench.measure.profile.numpy_tracer import ptr
from lnbench.measure.profile.ops import Event
from lnbench.measure.profile.torch_tracer import tensor_bytes


def _out_ptrs(outs: tuple[Any, Any, Any]) -> dict[int, int]:
    ptrs = {}
    for o in outs:
        if o is None:
            continue
        if isinstance(o, np.ndarray):
            base = o
            while isinstance(base.base, np.ndarray):
                base = base.base
            ptrs[ptr(base)] = int(base.nbytes)
            ptrs[ptr(o)] = int(o.nbytes)
        elif hasattr(o, "data_ptr"):
            ptrs[int(o.data_ptr())] = tensor_bytes(o)
    return ptrs


def temporaries(events: list[Event], outs: tuple[Any, Any, Any], iterations: int
                ) -> dict[str, float]:
    """Arrays the ops allocated per call, minus the returned outputs (matched by data pointer)."""
    count = sum(e.nalloc for e in events) / iterations
    nbytes = sum(e.alloc for e in events) / iterations
    out_ptrs = _out_ptrs(outs)
    # outputs of the last call: the last allocation at each output pointer
    matched: dict[int, int] = {}
    for e in reversed(events):
        for p in e.ptrs:
            if p in out_ptrs and p not in matched:
                matched[p] = out_ptrs[p]
    n_out = len(matched)
    b_out = sum(matched.values())
    return {"count": max(0.0, count - n_out), "bytes": max(0.0, nbytes - b_out),
            "allocations": count, "allocated_bytes": nbytes}


def peak_workspace(thunk: Callable[[], Any], array: str, device: str) -> dict[str, Any]:
    """The peak workspace of one call and the method that measured it (raises what the
    measurement raises)."""
    from lnbench.measure.memory import workspace_bytes

    return {
        "peak_workspace_bytes": int(workspace_bytes(thunk, array, device)),
        "peak_method": ("CUDA allocator statistics" if device == "cuda" else
                        "torch profiler memory events" if array == "torch"
                        else "tracemalloc peak minus outputs"),
    }


def nrt_allocations(thunk: Callable[[], Any]) -> int | None:
    """Allocations Numba's runtime (NRT) made during one call; None when Numba is not loaded."""
    if "numba" not in sys.modules:
        return None
    try:
        from numba.core.runtime import rtsys

        before = rtsys.get_allocation_stats()
        thunk()
        after = rtsys.get_allocation_stats()
        return int(after.alloc - before.alloc)
    except Exception:  # noqa: BLE001  (NRT statistics disabled or not initialised)
        return None
