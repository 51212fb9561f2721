"""The ops table: one event per array operation a backward performs, and its rows per call.

Both tracers (:mod:`.numpy_tracer`, :mod:`.torch_tracer`) hand each operation they see to a
:class:`Recorder`: its name, operand signature, start and wall time, the bytes of the input arrays
it read (an operand used twice, ``x * x``, is read once; a broadcast operand counts its own bytes
once), the bytes of the outputs it wrote, the arrays it allocated (none for views and in-place
writes) and the process's minor page faults during it. The recorder also notes *where* the op
was issued: the first stack frame outside the array libraries and this package, narrowed with
``co_positions`` (PEP 657) to the source span of the instruction, so ``dy * gamma`` and
``xp.sum(dy, axis=0, keepdims=True)`` on the same line are told apart.

:func:`aggregate` groups the events by (op, source expression, signature) into :class:`OpStat`
rows, each value divided by the number of traced backward calls, slowest first; ``pct`` is the
share of the traced op time and ``gbps`` is (read + written) / seconds — a model of traffic
between operations, not a hardware counter (see :mod:`.bytes_moved`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Library code an op passes through before reaching the formula line that issued it.
_LIB_MARKERS = tuple(
    os.sep + p + os.sep for p in ("numpy", "array_api_compat", "torch", "ml_dtypes", "cupy")
)
# This package's own frames (the tracers and the recorder) are skipped too.
_HERE = os.path.dirname(os.path.abspath(__file__))


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
class Event:
    """One recorded operation (absolute times; bytes of this one call)."""

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


class Recorder:
    """Collects :class:`Event` s in time order, each with the source span that issued it."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, name: str, signature: str, t0: float, dt: float, read: int, written: int,
            alloc: int, nalloc: int, ptrs: tuple[int, ...], faults: int) -> None:
        self.events.append(Event(name, where(1), signature, t0, dt, read, written, alloc,
                                 nalloc, ptrs, faults))


@functools.cache
def _is_lib(filename: str) -> bool:
    return (os.path.dirname(os.path.abspath(filename)) == _HERE
            or any(m in filename for m in _LIB_MARKERS))


def where(depth: int = 1) -> str:
    """``file:line:col:end_line:end_col`` of the expression that issued the op: the first frame
    outside array libraries and this package, narrowed to its instruction's source span."""
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


def source(where: str) -> tuple[str, str]:
    """(``path:line``, the source text of the expression) for a :func:`where` string."""
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
    return f"{short_path(fname)}:{ln}", " ".join(text.split())


def short_path(fname: str) -> str:
    """A path from its last ``lnbench`` folder on (``lnbench/formulas.py``), else its name."""
    p = Path(fname)
    parts = p.parts
    if "lnbench" in parts:
        i = len(parts) - 1 - parts[::-1].index("lnbench")
        return "/".join(parts[i:])
    return p.name


def aggregate(events: list[Event], iterations: int) -> list[OpStat]:
    """Group by (op, source expression, signature); values per backward call; slowest first."""
    groups: dict[tuple[str, str, str], list[Event]] = {}
    for e in events:
        groups.setdefault((e.name, e.where, e.signature), []).append(e)
    total = sum(e.dt for e in events) or 1.0
    out = []
    for (name, where_, sig), es in groups.items():
        sec = sum(e.dt for e in es)
        short, code = source(where_) if where_ else ("", "")
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


# --- operand signatures (shared by the tracers) ------------------------------------------------


def dt_short(dt: Any) -> str:
    """``f64``/``f32``/``f16``/``bf16`` for the float dtypes, the dtype's name otherwise."""
    s = str(dt)
    return {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}.get(s, s)


def shape_str(a: Any) -> str:
    """``64x256`` for an array, ``0-d`` for a 0-d one, ``scalar`` for a Python number."""
    shp = getattr(a, "shape", None)
    if shp is None:
        return "scalar"
    return "x".join(str(n) for n in shp) if len(shp) else "0-d"


def leaves(v: Any, cls: type) -> Iterator[Any]:
    """Instances of ``cls`` in ``v`` and its tuples, lists and dict values."""
    if isinstance(v, cls):
        yield v
    elif isinstance(v, tuple | list):
        for x in v:
            yield from leaves(x, cls)
    elif isinstance(v, dict):
        for x in v.values():
            yield from leaves(x, cls)
