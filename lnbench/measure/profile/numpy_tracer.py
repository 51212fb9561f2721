"""NumPy op tracing: an ``ndarray`` subclass that records every operation on it.

The thunk's arrays are swapped (in its closure, and in tuples/lists there) for views of
:class:`Traced`, whose ``__array_ufunc__`` / ``__array_function__`` (NEP 13, NEP 18) and
``astype`` / ``copy`` run the real operation on plain arrays and hand it to the recorder —
operators (``a * b``), reductions (``np.sum`` → ``add.reduce``) and dtype casts included. The
outputs are wrapped again, so the whole dataflow of the formula stays traced; the results the
thunk returns are unwrapped, and the closure is put back, so tracing changes neither.

``np.empty/zeros/ones/full`` are wrapped while tracing, so arrays a formula (or a Numba kernel's
wrapper) creates itself are seen too; ``empty`` writes nothing.

Per op: an output that owns no data and shares memory with an input is a *view* (reshape,
transpose, ...) — nothing computed or moved, not recorded. Otherwise the bytes read are the
distinct (pointer, size) input buffers, the bytes written are the outputs', and the outputs that
own their data are new allocations (none when ``out=`` was passed).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from lnbench.measure.profile.faults import minflt
from lnbench.measure.profile.ops import Event, Recorder, dt_short, leaves, shape_str
from lnbench.registry import as_triple

_CREATORS = ("empty", "zeros", "ones", "full")


class Traced(np.ndarray):
    """A view whose operations run on plain arrays and are recorded (see module docstring)."""

    recorder: ClassVar[Recorder | None] = None

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        return _np_call(name, getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return _np_call(func.__name__, func, args, kwargs)

    def astype(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _np_call("astype", np.ndarray.astype, (self, *args), kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _np_call("copy", np.ndarray.copy, (self, *args), kwargs)


def unwrap(v: Any) -> Any:
    """``v`` with every :class:`Traced` (in tuples, lists, dict values) as a plain ndarray."""
    if isinstance(v, Traced):
        return v.view(np.ndarray)
    if isinstance(v, tuple):
        return tuple(unwrap(x) for x in v)
    if isinstance(v, list):
        return [unwrap(x) for x in v]
    if isinstance(v, dict):
        return {k: unwrap(x) for k, x in v.items()}
    return v


def _wrap(v: Any) -> Any:
    if type(v) is np.ndarray:
        return v.view(Traced)
    if isinstance(v, tuple):
        return tuple(_wrap(x) for x in v)
    if isinstance(v, list):
        return [_wrap(x) for x in v]
    return v


def ptr(a: np.ndarray) -> int:
    """The address of an array's first element."""
    return int(a.__array_interface__["data"][0])


def _np_call(name: str, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    rec = Traced.recorder
    a, k = unwrap(args), unwrap(kwargs)
    if rec is None:
        return _wrap(fn(*a, **k))
    f0 = minflt()
    t0 = time.perf_counter()
    out = fn(*a, **k)
    dt = time.perf_counter() - t0
    faults = minflt() - f0
    ins = list(leaves(a, np.ndarray)) + list(
        leaves({n: v for n, v in k.items() if n != "out"}, np.ndarray))
    outs = list(leaves(out, np.ndarray))
    if outs and all(not o.flags.owndata and any(np.may_share_memory(o, i) for i in ins)
                    for o in outs):
        return _wrap(out)  # a view (reshape, transpose, ...): nothing computed or moved
    seen: set[tuple[int, int]] = set()
    read = 0
    for i in ins:
        key = (ptr(i), i.nbytes)
        if key not in seen:  # an operand used twice (x * x) is read once
            seen.add(key)
            read += i.nbytes
    written = sum(o.nbytes for o in outs)
    new = [] if "out" in k else [o for o in outs if o.flags.owndata]
    sig = _signature(ins, outs)
    rec.add(name, sig, t0, dt, read, written, sum(o.nbytes for o in new), len(new),
            tuple(ptr(o) for o in new), faults)
    return _wrap(out)


def _signature(ins: list[Any], outs: list[Any]) -> str:
    dts = sorted({dt_short(x.dtype) for x in ins + outs})
    return (f"{'·'.join(shape_str(i) for i in ins) or '()'} → "
            f"{','.join(shape_str(o) for o in outs)} {'/'.join(dts)}")


@contextlib.contextmanager
def _traced_creators(rec: Recorder) -> Iterator[None]:
    """While tracing, arrays created with np.empty/zeros/ones/full are recorded and traced."""
    saved = {n: getattr(np, n) for n in _CREATORS}

    def wrapper(name: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(orig)
        def make(*args: Any, **kwargs: Any) -> Any:
            f0 = minflt()
            t0 = time.perf_counter()
            out = orig(*args, **kwargs)
            dt = time.perf_counter() - t0
            faults = minflt() - f0
            written = 0 if name == "empty" else out.nbytes
            rec.add(name, _signature([], [out]), t0, dt, 0, written, out.nbytes, 1,
                    (ptr(out),), faults)
            return out.view(Traced) if Traced.recorder is not None else out

        return make

    try:
        for n, f in saved.items():
            setattr(np, n, wrapper(n, f))
        yield
    finally:
        for n, f in saved.items():
            setattr(np, n, f)


def _closure_swap(thunk: Callable[..., Any], conv: Callable[[Any], Any]) -> list[tuple[Any, Any]]:
    """Replace arrays held in the thunk's closure (and tuples/lists there) by ``conv(array)``;
    returns what to put back."""
    restore = []
    for cell in getattr(thunk, "__closure__", None) or ():
        try:
            v = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        nv = _deep(v, conv)
        if nv is not v:
            restore.append((cell, v))
            cell.cell_contents = nv
    return restore


def _deep(v: Any, conv: Callable[[Any], Any]) -> Any:
    c = conv(v)
    if c is not v:
        return c
    if isinstance(v, tuple | list):
        items = [_deep(x, conv) for x in v]
        if any(a is not b for a, b in zip(items, v, strict=True)):
            return type(v)(items)
    return v


def closure_values(thunk: Callable[..., Any]) -> list[Any]:
    """The values the thunk's closure holds, tuples and lists flattened."""
    vals: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, tuple | list):
            for x in v:
                walk(x)
        else:
            vals.append(v)

    for cell in getattr(thunk, "__closure__", None) or ():
        with contextlib.suppress(ValueError):
            walk(cell.cell_contents)
    return vals


def trace_numpy(thunk: Callable[[], Any], iterations: int, inject: bool
                ) -> tuple[list[Event], float, Any, list[tuple[float, float]]]:
    """Run the thunk ``iterations`` times with its operations recorded;
    (events, wall seconds per call, outputs, (start, end) of each call).

    ``inject=False`` (Numba: the compiled kernel takes plain arrays) records only the arrays
    created with ``np.empty`` & co. around the kernel."""
    rec = Recorder()
    spans: list[tuple[float, float]] = []
    restore = _closure_swap(thunk, lambda a: a.view(Traced) if type(a) is np.ndarray else a) \
        if inject else []
    Traced.recorder = rec if inject else None
    outs: Any = None
    try:
        with _traced_creators(rec):
            for _ in range(iterations):
                t0 = time.perf_counter()
                outs = thunk()
                spans.append((t0, time.perf_counter()))
    finally:
        Traced.recorder = None
        for cell, v in restore:
            cell.cell_contents = v
    wall = sum(b - a for a, b in spans) / iterations
    return rec.events, wall, unwrap(as_triple(outs)), spans
