"""torch op tracing: a ``TorchDispatchMode`` that sees each aten operation below autograd.

The mode receives every aten call with its real input and output tensors. An op whose returns
all alias an input without writing it (``view``, ``expand``, ``t``, ...) is a view: nothing
computed or moved, not recorded. The op schema's alias info tells in-place and ``out=`` writes
(aliasing, writing) from new tensors (no alias): only the latter are allocations. Bytes read are
the distinct (pointer, numel) input tensors, each counted by its storage when smaller than its
view (an expanded, broadcast operand is read once); ``empty``-like ops write nothing. On CUDA the
device is synchronised around each op, so its wall time is the kernel's.

The first call under the mode pays one-time set-up (dispatcher caches) and is not recorded.
``torch.compile`` cannot be traced this way: Dynamo refuses to run under a user dispatch mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lnbench.measure.profile.faults import minflt
from lnbench.measure.profile.ops import Event, Recorder, dt_short, leaves, shape_str
from lnbench.registry import as_triple


def tensor_bytes(t: Any) -> int:
    """Bytes a tensor's elements span, at most its storage (a broadcast view counts once)."""
    n = t.numel() * t.element_size()
    try:
        return min(n, t.untyped_storage().nbytes())  # an expanded (broadcast) view: its storage
    except Exception:  # noqa: BLE001  (tensors without storage)
        return n


def trace_torch(thunk: Callable[[], Any], iterations: int, device: str
                ) -> tuple[list[Event], float, Any]:
    """Run the thunk ``iterations`` times under the dispatch mode (after one unrecorded call);
    (events, wall seconds per call, outputs)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from lnbench.arrays import synchronize

    rec = Recorder()
    sync = (lambda: synchronize("cuda")) if device == "cuda" else (lambda: None)
    empties = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}

    recording = False

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if not recording:
                return func(*args, **kwargs)
            sync()
            f0 = minflt()
            t0 = time.perf_counter()
            out = func(*args, **kwargs)
            sync()
            dt = time.perf_counter() - t0
            faults = minflt() - f0
            rets = func._schema.returns
            if rets and all(r.alias_info is not None and not r.alias_info.is_write
                            for r in rets):
                return out  # a view: nothing computed or moved
            ins = list(leaves((args, kwargs), torch.Tensor))
            outs = list(leaves(out, torch.Tensor))
            read, seen = 0, set()
            for t in ins:
                key = (t.data_ptr(), t.numel())
                if key not in seen:
                    seen.add(key)
                    read += tensor_bytes(t)
            name = func.overloadpacket.__name__
            new = [o for o, r in zip(outs, rets, strict=False) if r.alias_info is None]
            written = 0 if name in empties else sum(tensor_bytes(o) for o in outs)
            dts = sorted({dt_short(str(t.dtype).removeprefix("torch.")) for t in ins + outs})
            sig = (f"{'·'.join(shape_str(t) for t in ins) or '()'} → "
                   f"{','.join(shape_str(o) for o in outs)} {'/'.join(dts)}")
            rec.add(f"aten::{name}", sig, t0, dt, read, written,
                    sum(tensor_bytes(o) for o in new), len(new),
                    tuple(o.data_ptr() for o in new), faults)
            return out

    outs: Any = None
    with Mode():
        thunk()  # the first call under a dispatch mode pays one-time set-up; not recorded
        sync()
        recording = True
        t0 = time.perf_counter()
        for _ in range(iterations):
            outs = thunk()
        sync()
        wall = time.perf_counter() - t0
    return rec.events, wall / iterations, as_triple(outs)
