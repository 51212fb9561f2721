"""Where a backward's time and bytes go: ``lnbench profile`` (measuring only; no formatting).

For one (implementation, case) it measures, with the thunk prepared outside any of it:

- **time**: the median of per-call samples, untraced (``lnbench.measure.timing``, as ``run``);
- **ops**: every array operation the backward performs, in time order, with the source line
  that issued it, its operand shapes, its wall time and the bytes it reads and writes:
  - NumPy: the thunk's arrays are swapped (in its closure) for views of a small ``ndarray``
    subclass whose ``__array_ufunc__``/``__array_function__``/``astype`` run the real operation
    on plain arrays and record it — operators (``a * b``), reductions (``np.sum`` →
    ``add.reduce``) and dtype casts included. ``np.empty/zeros/ones/full`` are wrapped while
    tracing, so arrays a formula creates itself are seen too;
  - torch: a ``TorchDispatchMode`` sees each aten operation below autograd with its real input
    and output tensors (views and in-place writes told apart by the op schema's alias info).
    Skipped for ``torch.compile`` (Dynamo refuses to run under a user dispatch mode).
- **profiler**: the backend's own profiler over the same thunk — ``torch.profiler`` (self CPU
  time per op; self CUDA time per kernel on GPUs; a Chrome trace), ``cProfile`` for NumPy and
  Numba (time grouped by Python function and C builtin), ``cupyx.profiler.benchmark`` for CuPy
  (GPU time of the whole call; no per-kernel breakdown in-process);
- **temporaries**: arrays allocated by the ops minus the returned outputs (count and bytes), the
  peak workspace (``lnbench.measure.memory``: tracemalloc for NumPy/Numba, torch profiler memory
  events on the CPU, allocator statistics on CUDA), Numba NRT allocations for compiled code and
  the bytes torch's profiler saw allocated;
- **page faults**: minor faults per untraced call and per op (``getrusage``), with this
  machine's cost of one fault (:func:`fault_cost_seconds`): every fresh temporary is zero-filled
  by the kernel page by page on first touch, which can cost more than the arithmetic;
- **bytes moved** against ``Case.nbytes_min``: the model is Σ over ops of (bytes of input arrays
  read + bytes of outputs written), counting a broadcast operand once; when the ops hide the work
  (a compiled kernel: Numba, Inductor) the *boundary* model counts the arrays the thunk holds as
  read once and its outputs as written once — the least a single fused pass can move.

Bytes are a model of traffic between operations, not a hardware counter: an operand that fits in
cache may not reach DRAM (so "effective GB/s" above the copy bandwidth means cache reuse).
"""

from __future__ import annotations

import contextlib
import cProfile
import functools
import json
import math
import os
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lnbench.grid import CaseData
from lnbench.registry import Impl, as_triple

try:
    import resource
except ImportError:  # not on Windows: page faults are then reported as 0
    resource = None  # type: ignore[assignment]

BACKENDS = ("numpy", "numba", "torch", "cupy")
# Library code an op passes through before reaching the formula line that issued it.
_LIB_MARKERS = tuple(
    os.sep + p + os.sep for p in ("numpy", "array_api_compat", "torch", "ml_dtypes", "cupy")
)


class ProfileUnavailable(Exception):
    """The implementation cannot run here, or does not take this case (the reason says which)."""


@dataclass
class OpStat:
    """One array operation from one source line with one operand signature, per backward call."""

    name: str
    where: str  # file:line of the code that issued it ("" when unknown)
    code: str  # that source line
    signature: str  # operand shapes and dtype, e.g. "1024x4096·4096 f32 -> 1024x4096"
    calls: float  # per backward call
    seconds: float  # per backward call
    bytes_read: float
    bytes_written: float
    alloc_count: float
    alloc_bytes: float
    page_faults: float  # minor page faults during the op (fresh memory touched first)
    pct: float = 0.0  # of the traced time
    gbps: float | None = None  # (read + written) / seconds


@dataclass
class ProfileResult:
    impl: str
    case: str
    M: int
    N: int
    dtype: str
    dist: str
    device: str
    backend: str  # numpy | numba | torch | cupy
    profiler: str  # what produced `profiler_rows`
    seconds: float  # untraced median per call
    seconds_q25: float
    seconds_q75: float
    samples: int
    iterations: int  # backward calls averaged by the tracers and profilers
    nbytes_min: int
    bytes_moved: float | None
    bytes_method: str  # ops | boundary | unknown
    moves_x_min: float | None
    gbps: float  # nbytes_min / seconds (what `lnbench run` reports)
    effective_gbps: float | None  # bytes_moved / seconds
    copy_gbps: float | None
    pct_copy: float | None
    effective_pct_copy: float | None
    page_faults_per_call: float | None  # minor page faults per untraced call (CPU)
    fault_seconds: float | None  # one fault's cost here (fault_cost_seconds)
    traced_seconds: float | None  # wall time per call under the op tracer
    ops_seconds: float | None  # of which inside traced ops
    ops: list[OpStat] = field(default_factory=list)  # sorted by time, slowest first
    ops_total: int = 0  # distinct ops before any `top` cut
    profiler_rows: list[dict[str, Any]] = field(default_factory=list)
    temporaries: dict[str, Any] = field(default_factory=dict)
    trace: str | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return _finite(d)

    def top(self, k: int) -> ProfileResult:
        """A copy keeping the ``k`` slowest ops and profiler rows (all when k <= 0)."""
        import copy

        r = copy.copy(self)
        if k > 0:
            r.ops = self.ops[:k]
            r.profiler_rows = self.profiler_rows[:k]
        return r


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def backend_for(impl: Impl) -> str:
    """Which profiler applies: torch and CuPy by array library; Numba by family or requirement."""
    if impl.array in ("torch", "cupy"):
        return impl.array
    if impl.family == "numba" or "numba" in impl.requires:
        return "numba"
    return "numpy"


# --- op recording (shared by the NumPy and torch tracers) -----------------------------------------


@dataclass
class _Event:
    name: str
    where: str
    signature: str
    t0: float
    dt: float
    read: int
    written: int
    alloc: int  # bytes of new arrays (0 for views / in-place writes)
    nalloc: int
    ptrs: tuple[int, ...]  # data pointers of newly allocated outputs
    faults: int  # minor page faults of the process during the op


@functools.cache
def _is_lib(filename: str) -> bool:
    return filename == __file__ or any(m in filename for m in _LIB_MARKERS)


def _where(depth: int = 1) -> str:
    """``file:line:col:end_line:end_col`` of the expression that issued the op: the first frame
    outside array libraries and this module, narrowed to its instruction's source span."""
    f = sys._getframe(depth)
    while f is not None and _is_lib(f.f_code.co_filename):
        f = f.f_back
    if f is None:
        return ""
    pos = _positions(f.f_code)
    i = f.f_lasti // 2
    if 0 <= i < len(pos) and pos[i][0] is not None:
        ln, eln, col, ecol = pos[i]
        return f"{f.f_code.co_filename}:{ln}:{col}:{eln}:{ecol}"
    return f"{f.f_code.co_filename}:{f.f_lineno}"


@functools.lru_cache(maxsize=256)
def _positions(code: Any) -> list[tuple[Any, Any, Any, Any]]:
    return list(code.co_positions())


def _source(where: str) -> tuple[str, str]:
    """(``path:line``, the source text of the expression) for a ``_where`` string."""
    import linecache

    parts = where.rsplit(":", 4)
    if len(parts) == 5 and all(p.lstrip("-").isdigit() for p in parts[1:]):
        fname, ln, col, eln, ecol = parts[0], *map(int, parts[1:])
        lines = [linecache.getline(fname, n) for n in range(ln, eln + 1)]
        if lines and col is not None and ecol is not None and col >= 0 and ecol >= 0:
            if len(lines) == 1:
                text = lines[0][col:ecol]
            else:
                text = lines[0][col:] + "".join(lines[1:-1]) + lines[-1][:ecol]
        else:
            text = "".join(lines)
    else:
        fname, _, line = where.rpartition(":")
        ln = int(line) if line.isdigit() else 0
        text = linecache.getline(fname, ln)
    return f"{_short_path(fname)}:{ln}", " ".join(text.split())


class _Recorder:
    def __init__(self) -> None:
        self.events: list[_Event] = []

    def add(self, name: str, signature: str, t0: float, dt: float, read: int, written: int,
            alloc: int, nalloc: int, ptrs: tuple[int, ...], faults: int) -> None:
        self.events.append(_Event(name, _where(1), signature, t0, dt, read, written, alloc,
                                  nalloc, ptrs, faults))


@functools.cache
def fault_cost_seconds(nbytes: int = 64 * 2**20, repeat: int = 3) -> float | None:
    """Seconds one minor page fault costs on this machine: first touches of a fresh anonymous
    mapping, one write per 4 KiB page, median of ``repeat`` mappings (None without faults)."""
    import mmap

    costs = []
    for _ in range(repeat):
        m = mmap.mmap(-1, nbytes)
        a = np.frombuffer(m, dtype=np.uint8)
        f0 = _minflt()
        t0 = time.perf_counter()
        a[::4096] = 1
        dt = time.perf_counter() - t0
        n = _minflt() - f0
        del a
        m.close()
        if n > 0:
            costs.append(dt / n)
    return float(np.median(costs)) if costs else None


def _minflt() -> int:
    """Minor page faults of this process so far (all threads): first touches of fresh pages."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def _aggregate(events: list[_Event], iterations: int) -> list[OpStat]:
    """Group by (op, source expression, signature); values per backward call; slowest first."""
    groups: dict[tuple[str, str, str], list[_Event]] = {}
    for e in events:
        groups.setdefault((e.name, e.where, e.signature), []).append(e)
    total = sum(e.dt for e in events) or 1.0
    out = []
    for (name, where, sig), es in groups.items():
        sec = sum(e.dt for e in es)
        short, code = _source(where) if where else ("", "")
        read = sum(e.read for e in es) / iterations
        written = sum(e.written for e in es) / iterations
        s = sec / iterations
        out.append(OpStat(
            name=name, where=short, code=code, signature=sig, calls=len(es) / iterations,
            seconds=s, bytes_read=read, bytes_written=written,
            alloc_count=sum(e.nalloc for e in es) / iterations,
            alloc_bytes=sum(e.alloc for e in es) / iterations,
            page_faults=sum(e.faults for e in es) / iterations,
            pct=100 * sec / total, gbps=(read + written) / s / 1e9 if s > 0 else None,
        ))
    out.sort(key=lambda o: -o.seconds)
    return out


def _short_path(fname: str) -> str:
    p = Path(fname)
    parts = p.parts
    if "lnbench" in parts:
        i = len(parts) - 1 - parts[::-1].index("lnbench")
        return "/".join(parts[i:])
    return p.name


# --- NumPy: an ndarray subclass that records every operation on it ------------------------------


def _dt_short(dt: Any) -> str:
    s = str(dt)
    return {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}.get(s, s)


def _shape_str(a: Any) -> str:
    shp = getattr(a, "shape", None)
    if shp is None:
        return "scalar"
    return "x".join(str(n) for n in shp) if len(shp) else "0-d"


def _leaves(v: Any, cls: type) -> Iterator[Any]:
    """Instances of ``cls`` in ``v`` and its tuples, lists and dict values."""
    if isinstance(v, cls):
        yield v
    elif isinstance(v, tuple | list):
        for x in v:
            yield from _leaves(x, cls)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _leaves(x, cls)


class _Traced(np.ndarray):
    """A view whose operations run on plain arrays and are recorded (see module docstring)."""

    recorder: ClassVar[_Recorder | None] = None

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        return _np_call(name, getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return _np_call(func.__name__, func, args, kwargs)

    def astype(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _np_call("astype", np.ndarray.astype, (self, *args), kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return _np_call("copy", np.ndarray.copy, (self, *args), kwargs)


def _unwrap(v: Any) -> Any:
    if isinstance(v, _Traced):
        return v.view(np.ndarray)
    if isinstance(v, tuple):
        return tuple(_unwrap(x) for x in v)
    if isinstance(v, list):
        return [_unwrap(x) for x in v]
    if isinstance(v, dict):
        return {k: _unwrap(x) for k, x in v.items()}
    return v


def _wrap(v: Any) -> Any:
    if type(v) is np.ndarray:
        return v.view(_Traced)
    if isinstance(v, tuple):
        return tuple(_wrap(x) for x in v)
    if isinstance(v, list):
        return [_wrap(x) for x in v]
    return v


def _ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def _np_call(name: str, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    rec = _Traced.recorder
    a, k = _unwrap(args), _unwrap(kwargs)
    if rec is None:
        return _wrap(fn(*a, **k))
    f0 = _minflt()
    t0 = time.perf_counter()
    out = fn(*a, **k)
    dt = time.perf_counter() - t0
    faults = _minflt() - f0
    ins = list(_leaves(a, np.ndarray)) + list(
        _leaves({n: v for n, v in k.items() if n != "out"}, np.ndarray))
    outs = list(_leaves(out, np.ndarray))
    if outs and all(not o.flags.owndata and any(np.may_share_memory(o, i) for i in ins)
                    for o in outs):
        return _wrap(out)  # a view (reshape, transpose, ...): nothing computed or moved
    seen: set[tuple[int, int]] = set()
    read = 0
    for i in ins:
        key = (_ptr(i), i.nbytes)
        if key not in seen:  # an operand used twice (x * x) is read once
            seen.add(key)
            read += i.nbytes
    written = sum(o.nbytes for o in outs)
    new = [] if "out" in k else [o for o in outs if o.flags.owndata]
    sig = _signature(ins, outs)
    rec.add(name, sig, t0, dt, read, written, sum(o.nbytes for o in new), len(new),
            tuple(_ptr(o) for o in new), faults)
    return _wrap(out)


def _signature(ins: list[Any], outs: list[Any]) -> str:
    dts = sorted({_dt_short(x.dtype) for x in ins + outs})
    return (f"{'·'.join(_shape_str(i) for i in ins) or '()'} → "
            f"{','.join(_shape_str(o) for o in outs)} {'/'.join(dts)}")


_CREATORS = ("empty", "zeros", "ones", "full")


@contextlib.contextmanager
def _traced_creators(rec: _Recorder) -> Iterator[None]:
    """While tracing, arrays created with np.empty/zeros/ones/full are recorded and traced."""
    saved = {n: getattr(np, n) for n in _CREATORS}

    def wrapper(name: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(orig)
        def make(*args: Any, **kwargs: Any) -> Any:
            f0 = _minflt()
            t0 = time.perf_counter()
            out = orig(*args, **kwargs)
            dt = time.perf_counter() - t0
            faults = _minflt() - f0
            written = 0 if name == "empty" else out.nbytes
            rec.add(name, _signature([], [out]), t0, dt, 0, written, out.nbytes, 1,
                    (_ptr(out),), faults)
            return out.view(_Traced) if _Traced.recorder is not None else out

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


def _closure_values(thunk: Callable[..., Any]) -> list[Any]:
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


def _trace_numpy(thunk: Callable[[], Any], iterations: int, inject: bool
                 ) -> tuple[list[_Event], float, Any, list[tuple[float, float]]]:
    """Run the thunk ``iterations`` times with its operations recorded;
    (events, wall seconds per call, outputs, (start, end) of each call)."""
    rec = _Recorder()
    spans: list[tuple[float, float]] = []
    restore = _closure_swap(thunk, lambda a: a.view(_Traced) if type(a) is np.ndarray else a) \
        if inject else []
    _Traced.recorder = rec if inject else None
    outs: Any = None
    try:
        with _traced_creators(rec):
            for _ in range(iterations):
                t0 = time.perf_counter()
                outs = thunk()
                spans.append((t0, time.perf_counter()))
    finally:
        _Traced.recorder = None
        for cell, v in restore:
            cell.cell_contents = v
    wall = sum(b - a for a, b in spans) / iterations
    return rec.events, wall, _unwrap(as_triple(outs)), spans


# --- torch: a dispatch mode below autograd ------------------------------------------------------


def _tensor_bytes(t: Any) -> int:
    n = t.numel() * t.element_size()
    try:
        return min(n, t.untyped_storage().nbytes())  # an expanded (broadcast) view: its storage
    except Exception:  # noqa: BLE001  (tensors without storage)
        return n


def _trace_torch(thunk: Callable[[], Any], iterations: int, device: str
                 ) -> tuple[list[_Event], float, Any]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from lnbench.arrays import synchronize

    rec = _Recorder()
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
            f0 = _minflt()
            t0 = time.perf_counter()
            out = func(*args, **kwargs)
            sync()
            dt = time.perf_counter() - t0
            faults = _minflt() - f0
            rets = func._schema.returns
            if rets and all(r.alias_info is not None and not r.alias_info.is_write
                            for r in rets):
                return out  # a view: nothing computed or moved
            ins = list(_leaves((args, kwargs), torch.Tensor))
            outs = list(_leaves(out, torch.Tensor))
            read, seen = 0, set()
            for t in ins:
                key = (t.data_ptr(), t.numel())
                if key not in seen:
                    seen.add(key)
                    read += _tensor_bytes(t)
            name = func.overloadpacket.__name__
            new = [o for o, r in zip(outs, rets, strict=False) if r.alias_info is None]
            written = 0 if name in empties else sum(_tensor_bytes(o) for o in outs)
            dts = sorted({_dt_short(str(t.dtype).removeprefix("torch.")) for t in ins + outs})
            sig = (f"{'·'.join(_shape_str(t) for t in ins) or '()'} → "
                   f"{','.join(_shape_str(o) for o in outs)} {'/'.join(dts)}")
            rec.add(f"aten::{name}", sig, t0, dt, read, written,
                    sum(_tensor_bytes(o) for o in new), len(new),
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



def _torch_profiler(thunk: Callable[[], Any], iterations: int, device: str,
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


# --- cProfile (NumPy, Numba) ---------------------------------------------------------------------


def _cprofile(thunk: Callable[[], Any], iterations: int) -> list[dict[str, Any]]:
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
        label = func if fname == "~" else f"{_short_path(fname)}:{line}({func})"
        rows.append({"name": label, "calls": nc / iterations, "self_seconds": tt / iterations,
                     "total_seconds": ct / iterations, "device_seconds": None})
    rows.sort(key=lambda r: -r["self_seconds"])
    tot = sum(r["self_seconds"] for r in rows) or 1.0
    for r in rows:
        r["pct"] = 100 * r["self_seconds"] / tot
    return rows


def _nrt_allocations(thunk: Callable[[], Any]) -> int | None:
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


# --- CuPy ----------------------------------------------------------------------------------------


def _cupy_profile(thunk: Callable[[], Any], iterations: int) -> tuple[list[dict[str, Any]], str]:
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


# --- the whole profile ---------------------------------------------------------------------------


def _boundary_bytes(thunk: Callable[[], Any], outs: tuple[Any, Any, Any]) -> float:
    """Bytes of the arrays the thunk holds (read once) plus its outputs (written once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for v in _closure_values(thunk):
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
        return _ptr(v)
    if hasattr(v, "data_ptr"):
        return int(v.data_ptr())
    return id(v)


def _out_ptrs(outs: tuple[Any, Any, Any]) -> dict[int, int]:
    ptrs = {}
    for o in outs:
        if o is None:
            continue
        if isinstance(o, np.ndarray):
            base = o
            while isinstance(base.base, np.ndarray):
                base = base.base
            ptrs[_ptr(base)] = int(base.nbytes)
            ptrs[_ptr(o)] = int(o.nbytes)
        elif hasattr(o, "data_ptr"):
            ptrs[int(o.data_ptr())] = _tensor_bytes(o)
    return ptrs


def _temporaries(events: list[_Event], outs: tuple[Any, Any, Any], iterations: int) -> dict:
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


def _iterations(seconds: float, budget: float) -> int:
    return int(min(20, max(1, math.ceil(budget / max(seconds, 1e-9)))))


def profile_impl(
    impl: Impl,
    data: CaseData,
    *,
    trace: str | os.PathLike[str] | None = None,
    repeat: int = 7,
    max_time: float = 2.0,
    budget: float = 0.3,
) -> ProfileResult:
    """Profile one implementation on one case (see the module docstring for what is measured).

    ``budget`` seconds of backward calls (1 to 20 calls) go to each tracer and profiler.
    Raises :class:`ProfileUnavailable` when the implementation cannot run here or does not
    take the case.
    """
    from lnbench.measure.machine import copy_bandwidth, cpu_model, machine_name
    from lnbench.measure.memory import workspace_bytes
    from lnbench.measure.timing import time_thunk

    case = data.case
    why = impl.unavailable() or impl.unsupported(case)
    if why:
        raise ProfileUnavailable(f"{impl.name}: {why}")
    backend = backend_for(impl)
    notes: list[str] = []
    thunk = impl.make(data)
    f0 = _minflt()
    timing = time_thunk(thunk, impl.device, repeat=repeat, max_time=max_time)
    # time_cpu makes 2 calls (warm-up, calibration) before its samples
    calls = timing.number * len(timing.samples) + (2 if impl.device == "cpu" else 0)
    faults = (_minflt() - f0) / calls if impl.device == "cpu" else None
    sec = timing.median
    k = _iterations(sec, budget)
    trace_path = str(trace) if trace else None

    events: list[_Event] = []
    traced_wall: float | None = None
    outs: Any = as_triple(thunk())
    rows: list[dict[str, Any]] = []
    temps: dict[str, Any] = {}
    if backend in ("numpy", "numba"):
        inject = backend == "numpy"
        events, traced_wall, outs, spans = _trace_numpy(thunk, k, inject)
        if not inject:
            notes.append("Numba: the compiled kernel is one opaque call; ops list only the "
                         "arrays created around it (np.empty & co.)")
        rows = _cprofile(thunk, k)
        profiler = "cProfile (per Python function / C builtin, own time)"
        if trace_path:
            _write_numpy_trace(trace_path, events, spans, impl.name, case.name)
        nrt = _nrt_allocations(thunk)
        if nrt is not None:
            temps["numba_nrt_allocations"] = nrt
    elif backend == "torch":
        if impl.kind == "compiled":
            notes.append("torch.compile: Dynamo does not run under a dispatch mode, so the "
                         "op list is empty; the profiler table shows the compiled region")
        else:
            events, traced_wall, outs = _trace_torch(thunk, k, impl.device)
        rows, mem = _torch_profiler(thunk, k, impl.device, trace_path)
        temps.update(mem)
        profiler = ("torch.profiler (self CUDA time per op/kernel)" if impl.device == "cuda"
                    else "torch.profiler (self CPU time per op)")
    else:  # cupy
        rows, note = _cupy_profile(thunk, k)
        notes.append(note)
        profiler = "cupyx.profiler.benchmark"
        if trace_path:
            notes.append("no trace file: CuPy gives no in-process timeline")
            trace_path = None

    ops = _aggregate(events, k)
    ops_seconds = sum(e.dt for e in events) / k if events else None
    temps.update(_temporaries(events, outs, k) if events else {})
    try:
        temps["peak_workspace_bytes"] = int(workspace_bytes(thunk, impl.array, impl.device))
        temps["peak_method"] = ("CUDA allocator statistics" if impl.device == "cuda" else
                                "torch profiler memory events" if impl.array == "torch"
                                else "tracemalloc peak minus outputs")
    except Exception as e:  # noqa: BLE001
        notes.append(f"peak workspace not measured: {type(e).__name__}: {e}")

    op_bytes = sum(o.bytes_read + o.bytes_written for o in ops)
    opaque = not events or (traced_wall and ops_seconds is not None
                            and ops_seconds < 0.5 * traced_wall and op_bytes < case.nbytes_min)
    if not opaque:
        moved, method = op_bytes, "ops"
    else:
        moved, method = _boundary_bytes(thunk, outs) + op_bytes, "boundary"
        notes.append("bytes moved: boundary model (the arrays the thunk holds read once, the "
                     "outputs written once) - the ops hide the work of a compiled kernel")
    cb = copy_bandwidth(impl.device)
    gbps = case.nbytes_min / sec / 1e9
    eff = moved / sec / 1e9 if moved else None
    return ProfileResult(
        impl=impl.name, case=case.name, M=case.M, N=case.N, dtype=case.dtype, dist=case.dist,
        device=impl.device, backend=backend, profiler=profiler,
        seconds=sec, seconds_q25=timing.q25, seconds_q75=timing.q75,
        samples=len(timing.samples), iterations=k,
        nbytes_min=case.nbytes_min, bytes_moved=moved or None, bytes_method=method,
        moves_x_min=moved / case.nbytes_min if moved else None,
        gbps=gbps, effective_gbps=eff, copy_gbps=cb,
        pct_copy=100 * gbps / cb if cb else None,
        effective_pct_copy=100 * eff / cb if cb and eff else None,
        page_faults_per_call=faults,
        fault_seconds=fault_cost_seconds() if faults is not None else None,
        traced_seconds=traced_wall, ops_seconds=ops_seconds,
        ops=ops, ops_total=len(ops), profiler_rows=rows, temporaries=temps,
        trace=trace_path,
        machine={"name": machine_name(), "cpu_model": cpu_model(), "threads": _threads()},
        notes=notes,
    )


def _threads() -> int | None:
    if "torch" in sys.modules:
        import torch

        return int(torch.get_num_threads())
    return os.cpu_count()


def _write_numpy_trace(path: str, events: list[_Event], spans: list[tuple[float, float]],
                       impl: str, case: str) -> None:
    """A Chrome trace (chrome://tracing, Perfetto) of the recorded ops inside each call."""
    t00 = spans[0][0] if spans else (events[0].t0 if events else 0.0)
    evs: list[dict[str, Any]] = [{
        "name": f"lnbench backward #{i}", "cat": "call", "ph": "X", "pid": 0, "tid": 0,
        "ts": (a - t00) * 1e6, "dur": (b - a) * 1e6, "args": {"impl": impl, "case": case},
    } for i, (a, b) in enumerate(spans)]
    evs += [{
        "name": e.name, "cat": "op", "ph": "X", "pid": 0, "tid": 0,
        "ts": (e.t0 - t00) * 1e6, "dur": e.dt * 1e6,
        "args": {"where": e.where, "signature": e.signature, "bytes_read": e.read,
                 "bytes_written": e.written},
    } for e in events]
    doc = {"traceEvents": evs, "displayTimeUnit": "ms",
           "otherData": {"impl": impl, "case": case, "tool": "lnbench profile"}}
    Path(path).write_text(json.dumps(doc))
