"""Bytes moved by a backward, modelled from its ops, against the minimal model ``Case.nbytes_min``.

**The ops model** is Σ over the recorded ops of (bytes of the input arrays read + bytes of the
outputs written), per call, each op's distinct operands counted once and a broadcast operand by
its own size (:mod:`.ops`). It is the traffic an unfused implementation causes if every
intermediate goes to memory and back; divided by ``Case.nbytes_min`` (dy, x, γ, mean and rstd
read once, dx, dγ, dβ written once: the least any implementation can move, ``lnbench.grid``) it
says how many times over the minimum a formula moves its data (``moves_x_min``).

**The boundary model** applies when the ops hide the work — a compiled kernel (Numba, Inductor)
runs as one opaque call, so the tracers see only the arrays created around it. It is *opaque*
when nothing was recorded, or when the recorded ops account for less than half the traced wall
time and move less than ``nbytes_min``. The model then counts the arrays the thunk holds (its
closure: the inputs and any prepared buffers) as read once and its outputs as written once —
the least a single fused pass can move — plus what the visible ops moved.

Both are models of traffic between operations, not hardware counters: an operand that fits in
cache may not reach DRAM, so an "effective GB/s" (bytes moved / seconds) above the machine's copy
bandwidth means cache reuse, not a faster memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lnbench.measure.profile.numpy_tracer import closure_values, ptr
from lnbench.measure.profile.ops import Event, OpStat

BOUNDARY_NOTE = ("bytes moved: boundary model (the arrays the thunk holds read once, the "
                 "outputs written once) - the ops hide the work of a compiled kernel")


def bytes_moved(ops: list[OpStat], events: list[Event], traced_seconds: float | None,
                ops_seconds: float | None, nbytes_min: int, thunk: Callable[[], Any],
                outs: tuple[Any, Any, Any]) -> tuple[float, str]:
    """(bytes moved per call, ``"ops"`` or ``"boundary"``): the ops model unless the ops are
    opaque (see the module docstring), then the boundary model."""
    op_bytes = sum(o.bytes_read + o.bytes_written for o in ops)
    opaque = not events or (traced_seconds and ops_seconds is not None
                            and ops_seconds < 0.5 * traced_seconds and op_bytes < nbytes_min)
    if not opaque:
        return op_bytes, "ops"
    return boundary_bytes(thunk, outs) + op_bytes, "boundary"


def boundary_bytes(thunk: Callable[[], Any], outs: tuple[Any, Any, Any]) -> float:
    """Bytes of the arrays the thunk holds (read once) plus its outputs (written once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for v in closure_values(thunk):
        n = _array_bytes(v)
        if n is not None:
            key = (_data_ptr(v), n)
            if key not in seen:
                seen.add(key)
                total += n
    for o in outs:
        total += _array_bytes(o) or 0
    return float(total)


def _array_bytes(v: Any) -> int | None:
    if isinstance(v, np.ndarray):
        return int(v.nbytes)
    if type(v).__module__.startswith(("torch", "cupy")) and hasattr(v, "shape"):
        if hasattr(v, "element_size"):
            return int(v.numel() * v.element_size())
        return int(v.nbytes)
    return None


def _data_ptr(v: Any) -> int:
    if isinstance(v, np.ndarray):
        return ptr(v)
    if hasattr(v, "data_ptr"):
        return int(v.data_ptr())
    return id(v)
