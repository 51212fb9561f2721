"""What a stored number means: which way is better, whether it is an accuracy metric, and
the values it cannot take.

Direction (:func:`higher_is_better`), first rule that applies wins:

1. ``benchmarks.json`` says so: a benchmark attribute ``higher_is_better`` (bool) or
   ``direction`` (``"higher"``/``"lower"``); asv copies user-defined benchmark attributes into
   ``benchmarks.json``, so any suite can declare it on a method.
2. lnbench declares the metric (``lnbench.metrics.METRICS``, looked up by method name:
   ``track_gbps`` and ``track_pct_copy`` are higher-is-better, times, bytes and errors lower).
3. The declared unit is a rate (``.../s``, e.g. ``ops/s``): higher is better.
4. Otherwise asv's own convention: lower is better, for ``time_``, ``peakmem_``, ``mem_`` and
   ``track_`` alike (asv counts an upward step as the regression, ``asv/step_detect.py``
   ``detect_regressions``, and a smaller value as better, ``asv/commands/compare.py``
   ``_is_result_better``). A method's name is never read for its direction: a suite whose
   ``track_throughput`` is higher-is-better declares it (rule 1).

Accuracy metrics (:func:`is_accuracy`) are the ones declared with kind ``accuracy``
(``track_rel_err_*``); they get their own detection thresholds
(``lnbench.report.detect.ACCURACY``). Lower bounds: :func:`lower_bound`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lnbench import metrics as declared

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
    known = declared.metric(benchmark)
    if known is not None:
        return known.higher_is_better
    unit = meta.get("unit")
    return isinstance(unit, str) and bool(_RATE_UNIT.search(unit.strip()))


def lower_bound(benchmark: str, unit: str | None) -> tuple[float, bool] | None:
    """``(bound, strict)`` that every real value of ``benchmark`` lies above, or None.

    A declared metric's own bound (``lnbench.metrics``: a time, a bandwidth or a % of copy is
    > 0; a byte count or a relative error is >= 0); else by the unit (``seconds`` > 0,
    ``bytes`` >= 0) or asv's benchmark type (``time_``/``timeraw_`` > 0, ``mem_``/``peakmem_``
    >= 0). A stored value outside is impossible (a broken timer or a hand-edited file): the
    loader marks it ``invalid``. Other ``track_`` values may be anything.
    """
    known = declared.metric(benchmark)
    if known is not None:
        return known.lower_bound, known.strict
    name = method_name(benchmark)
    if unit == "seconds" or name.startswith(("time_", "timeraw_")):
        return 0.0, True
    if unit == "bytes" or name.startswith(("mem_", "peakmem_")):
        return 0.0, False
    return None


def is_accuracy(benchmark: str) -> bool:
    """True for metrics declared as accuracy (``track_rel_err_*``, ``lnbench.metrics``)."""
    known = declared.metric(benchmark)
    return known is not None and known.kind == "accuracy"


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
