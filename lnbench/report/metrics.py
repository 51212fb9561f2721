"""What a stored number means: which way is better, and whether it is an accuracy metric.

Rules, in order (first that applies wins):

1. ``benchmarks.json`` says so: a benchmark attribute ``higher_is_better`` (bool) or
   ``direction`` (``"higher"``/``"lower"``); asv copies user-defined benchmark attributes into
   ``benchmarks.json``, so the measuring side can set them on a method.
2. The method name contains ``gbps``, ``pct_copy``, ``throughput``, ``bandwidth`` or ``flops``,
   or the unit is a rate (``.../s``): higher is better.
3. Otherwise lower is better (times, bytes, relative errors, unknown ``track_`` values).

Accuracy metrics are the methods whose name contains ``rel_err``; they get their own
detection thresholds (see ``lnbench.report.detect.ACCURACY``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_HIGHER_NAME = re.compile(r"gbps|pct_copy|throughput|bandwidth|flops", re.IGNORECASE)
_RATE_UNIT = re.compile(r"/\s*s(ec(ond)?)?$", re.IGNORECASE)

#: Units asv assigns by benchmark type when benchmarks.json is missing.
DEFAULT_UNITS = {"time": "seconds", "peakmem": "bytes", "mem": "bytes", "timeraw": "seconds"}

#: Parameter names of the lnbench suite, used when benchmarks.json is missing or lacks them.
KNOWN_PARAM_NAMES = {
    "bench_backward.Backward": ["impl", "shape", "dtype"],
    "bench_backward.Metrics": ["impl", "shape", "dtype"],
    "bench_backward.Accuracy": ["impl", "shape", "dtype", "dist"],
}


def method_name(benchmark: str) -> str:
    """The last dotted component of an asv benchmark name (``time_backward``)."""
    return benchmark.rsplit(".", 1)[-1]


def higher_is_better(benchmark: str, meta: Mapping[str, Any] | None = None) -> bool:
    """True when a larger value of ``benchmark`` is better (rules in the module docstring)."""
    meta = meta or {}
    flag = meta.get("higher_is_better")
    if isinstance(flag, bool):
        return flag
    direction = meta.get("direction")
    if isinstance(direction, str) and direction.lower() in ("higher", "lower"):
        return direction.lower() == "higher"
    if _HIGHER_NAME.search(method_name(benchmark)):
        return True
    unit = meta.get("unit")
    return isinstance(unit, str) and bool(_RATE_UNIT.search(unit.strip()))


def lower_bound(benchmark: str, unit: str | None) -> tuple[float, bool] | None:
    """``(bound, strict)`` that every real value of ``benchmark`` lies above, or None.

    A time (unit ``seconds``), a bandwidth or a % of copy is > 0; a byte count or a relative
    error is >= 0. A stored value outside is impossible (a broken timer or a hand-edited file):
    the loader marks it ``invalid``. Other ``track_`` values may be anything.
    """
    name = method_name(benchmark)
    # by unit, or by name where the unit was guessed (no benchmarks.json): track_seconds
    if (unit == "seconds" or name.startswith(("time_", "timeraw_")) or name.endswith("_seconds")
            or _HIGHER_NAME.search(name)):
        return 0.0, True
    if (unit == "bytes" or name.startswith(("mem_", "peakmem_")) or name.endswith("_bytes")
            or is_accuracy(benchmark)):
        return 0.0, False
    return None


def is_accuracy(benchmark: str) -> bool:
    """True for relative-error metrics (``track_rel_err_*``)."""
    return "rel_err" in method_name(benchmark)


def default_unit(benchmark: str) -> str:
    """The unit asv would give ``benchmark`` from its name prefix alone."""
    prefix = method_name(benchmark).split("_", 1)[0]
    return DEFAULT_UNITS.get(prefix, "unit")


def default_param_names(benchmark: str, n_params: int) -> list[str]:
    """Parameter names when ``benchmarks.json`` cannot tell: known suite names, else ``param1``…"""
    known = KNOWN_PARAM_NAMES.get(benchmark.rsplit(".", 1)[0])
    if known is not None and len(known) == n_params:
        return list(known)
    return [f"param{i + 1}" for i in range(n_params)]
