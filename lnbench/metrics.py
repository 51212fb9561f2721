"""Every metric lnbench stores, declared once, and the arithmetic that derives them.

**Declarations.** :data:`METRICS` holds one :class:`Metric` per asv method of the suite in
``benchmarks/`` (``name``, e.g. ``track_gbps``): the key of the measured record it reads
(``key``: ``lnbench.measure.run.Record`` / ``asvbench.check_all`` fields), its asv ``unit``,
its direction (``higher_is_better``), its ``kind`` (``speed``, ``memory`` or ``accuracy``) and
the ``lower_bound`` every real value lies above. The asv suite takes its ``unit`` attributes
from here (:func:`unit`), the reports their direction, kind and bounds
(``lnbench.report.metrics``, which falls back to asv's own convention for metrics of other
suites), the dashboard its bytes model.

**Bytes model** (:func:`bytes_moved`, the denominator of every GB/s lnbench reports). The
fewest bytes one LayerNorm backward over an M×N input can move, as docs/peers.md defines it
for the peers' published figures: read x and dy, write dx (``3·M·N·elt``); read the saved mean
and rstd, counted as fp32 (``8·M``); read γ, write dγ and dβ (``3·N·elt``), with ``elt`` the
bytes per element of the case dtype (:func:`elt_bytes`). β does not enter the backward. The
stats are counted as fp32 for every dtype, as the peers' figures count them (a float64 case
saves float64 stats: 8·M bytes more, under 1/(3N) of the total), so lnbench's GB/s and the
peers' are one quantity. A kernel that re-reads x or spills intermediates moves more; what a
backward moves in fact is modelled in ``lnbench.measure.profile.bytes_moved``.

**Derived values.** :func:`gbps` = bytes / seconds / 1e9 (decimal GB, as copy bandwidths are
reported); :func:`pct_copy` = 100 · GB/s / the machine's copy bandwidth (read + write of one
buffer into another, ``lnbench.measure.machine``), so machines of any size are compared on one
scale; :func:`geomean` is the geometric mean over a grid (``scipy.stats.gmean``) of the
positive finite values -- the mean of ratios that does not depend on which side is the
numerator (Fleming & Wallace, "How not to lie with statistics: the correct way to summarize
benchmark results", CACM 29(3), 1986).

API::

    Metric(name, cls, key, unit, higher_is_better, kind, lower_bound, strict)
    METRICS: dict[str, Metric]            # by asv method name
    metric(benchmark) -> Metric | None    # "bench_backward.Metrics.track_gbps" or "track_gbps"
    unit(name) -> str                     # asv unit of a declared metric (KeyError otherwise)
    methods_of(cls) -> tuple[str, ...]    # asv method names of one benchmark class, in order
    BYTES_FORMULA: str                    # "3·M·N·elt + 8·M + 3·N·elt" (for labels)
    elt_bytes(dtype) -> int | None        # bytes per element (None: unknown dtype)
    bytes_moved(M, N, elt) -> int         # the bytes model above
    case_bytes(M, N, dtype) -> int        # bytes_moved with elt_bytes(dtype) (ValueError)
    gbps(nbytes, seconds) -> float
    pct_copy(gbps, copy_gbps) -> float | None   # None without a copy bandwidth
    geomean(values) -> float              # NaN when no positive finite value
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["speed", "memory", "accuracy"]


@dataclass(frozen=True)
class Metric:
    """One stored metric: the asv method ``name`` and what its number means."""

    name: str
    cls: str  # the benchmark class of benchmarks/bench_backward.py that has the method
    key: str | None  # field of the measured record the asv method returns (None: asv's own)
    unit: str  # asv's ``unit`` attribute
    higher_is_better: bool
    kind: Kind
    lower_bound: float = 0.0  # every real value is > (strict) or >= this bound
    strict: bool = False


_REL_ERR = "relative error"
METRICS: dict[str, Metric] = {m.name: m for m in (
    # asv's own timer and peak RSS around one call (Backward)
    Metric("time_backward", "Backward", None, "seconds", False, "speed", 0.0, True),
    Metric("peakmem_backward", "Backward", None, "bytes", False, "memory"),
    # lnbench's per-call measurement (Metrics)
    Metric("track_seconds", "Metrics", "seconds", "seconds", False, "speed", 0.0, True),
    Metric("track_gbps", "Metrics", "gbps", "GB/s", True, "speed", 0.0, True),
    Metric("track_pct_copy", "Metrics", "pct_copy", "%", True, "speed", 0.0, True),
    Metric("track_workspace_bytes", "Metrics", "workspace_bytes", "bytes", False, "memory"),
    # max|got - ref| / max|ref| against the extended-precision reference (Accuracy)
    Metric("track_rel_err_dx", "Accuracy", "rel_err_dx", _REL_ERR, False, "accuracy"),
    Metric("track_rel_err_dgamma", "Accuracy", "rel_err_dgamma", _REL_ERR, False, "accuracy"),
    Metric("track_rel_err_dbeta", "Accuracy", "rel_err_dbeta", _REL_ERR, False, "accuracy"),
)}

BYTES_FORMULA = "3·M·N·elt + 8·M + 3·N·elt"

#: bytes per element of dtypes the suite or a plugin may name beyond lnbench.dtypes
_EXTRA_ELT_BYTES = {"float8_e4m3fn": 1, "float8_e5m2": 1}


def metric(benchmark: str) -> Metric | None:
    """The declared metric of an asv benchmark (full dotted name or method name), or None."""
    return METRICS.get(benchmark.rsplit(".", 1)[-1])


def unit(name: str) -> str:
    """asv ``unit`` of the declared metric ``name`` (KeyError for an undeclared one)."""
    return METRICS[name].unit


def methods_of(cls: str) -> tuple[str, ...]:
    """asv method names of one benchmark class (``Metrics``), in declaration order."""
    return tuple(m.name for m in METRICS.values() if m.cls == cls)


def elt_bytes(dtype: str) -> int | None:
    """Bytes per element of ``dtype`` (lnbench's dtypes, float8, numpy's); None when unknown."""
    from lnbench.dtypes import DTYPES, np_dtype

    if dtype in DTYPES:
        return int(np_dtype(dtype).itemsize)
    if dtype in _EXTRA_ELT_BYTES:
        return _EXTRA_ELT_BYTES[dtype]
    try:
        return int(np.dtype(dtype).itemsize)
    except TypeError:
        return None


def bytes_moved(m: int, n: int, elt: int) -> int:
    """Minimal bytes of one LayerNorm backward over an M×N input (module docstring)."""
    return 3 * m * n * elt + 8 * m + 3 * n * elt


def case_bytes(m: int, n: int, dtype: str) -> int:
    """:func:`bytes_moved` of an M×N ``dtype`` case; ValueError for a dtype of unknown size."""
    elt = elt_bytes(dtype)
    if elt is None:
        raise ValueError(f"unknown dtype {dtype!r}: its element size is not known")
    return bytes_moved(m, n, elt)


def gbps(nbytes: float, seconds: float) -> float:
    """Decimal GB per second."""
    return nbytes / seconds / 1e9


def pct_copy(gbps_: float, copy_gbps: float | None) -> float | None:
    """``gbps_`` as a percentage of the copy bandwidth; None when that is unknown (or 0)."""
    return 100 * gbps_ / copy_gbps if copy_gbps else None


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of the positive finite ``values``; NaN when there are none."""
    from scipy.stats import gmean

    v = np.asarray([float(x) for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(gmean(v)) if len(v) else math.nan
