"""Parameter combinations and file layouts: the row structure shared by the files of a suite.

asv stores a parametrized benchmark's values as one flat list in ``itertools.product`` order
of its ``params`` (``asv/results.py``, ``_compatible_results``/``get_result_value``), each
parameter value as its ``repr`` (``"'float32'"``). A *combination* is one element of that
product: a row of parameter values, unquoted by :func:`param_value` (the rule of
``asv.results._format_param_value``), numbered once per (benchmark, params) and shared by
every file that stores them.

A *layout* is the sequence of (benchmark, params) entries of one result file. The files of a
history mostly repeat one layout (asv runs the same suite on each commit), so a layout is
expanded once -- combination ids per row, entries' lengths, benchmark codes per entry and per
row -- and every later file with equal entry names and equal params reuses it after one
tuple comparison, in C. That replaces per-row Python work by per-file work: the rows of a
file never become Python objects beyond what the JSON decoder made. A layout also remembers
the benchmark versions of the last file that used it with their codes, so equal version
lists (the usual case) are coded once.

Codes (benchmark, combination) belong to the :class:`Combos` table that made the layout; the
loader's table codes every file it keeps, and a file read in a worker process is laid out
again by it.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from lnbench.report import metrics

_QUOTED = [re.compile(r"^'(.+)'$"), re.compile(r"^u'(.+)'$"), re.compile(r"^<class '(.+)'>$")]


def param_value(value_repr: str) -> str:
    """asv's parameter repr without quotes (the rule of ``asv.results._format_param_value``)."""
    for regex in _QUOTED:
        m = regex.match(value_repr)
        if m and m.group(1).strip():
            return m.group(1)
    return value_repr


class Layout:
    """The entries of one kind of result file, expanded (see the module docstring)."""

    __slots__ = ("owner", "names", "params", "ids", "lens", "lens_list", "single", "bench",
                 "bench_of_row", "total", "versions", "vcodes")

    def __init__(self, owner: Combos, names: tuple[str, ...], params: tuple[Any, ...],
                 parts: list[np.ndarray]) -> None:
        self.owner = owner
        self.names = names
        self.params = params
        self.lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        self.lens_list = self.lens.tolist()
        #: every entry has one combination (one row per entry)
        self.single = bool((self.lens == 1).all())
        self.ids = (np.concatenate(parts).astype(np.int32) if parts
                    else np.zeros(0, dtype=np.int32))
        #: benchmark codes per entry and per row, given when a file of this layout is kept
        #: (:meth:`Combos.code`), so that unused benchmarks get none
        self.bench: np.ndarray | None = None
        self.bench_of_row: np.ndarray | None = None
        self.total = int(self.lens.sum())
        #: versions of the last file coded with this layout, and their codes
        self.versions: tuple[Any, ...] | None = None
        self.vcodes: np.ndarray | None = None


class Combos:
    """Benchmark names, parameter combinations and layouts, numbered as first seen."""

    def __init__(self, benchmarks: dict[str, dict[str, Any]]) -> None:
        self.benchmarks = benchmarks
        #: parameter names in first-seen order, and each combination's values by name
        self.names: list[str] = []
        self.rows: list[dict[str, str]] = []
        self.bench_names: list[str] = []
        self._bench_code: dict[str, int] = {}
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._layouts: dict[tuple[str, ...], list[Layout]] = {}

    def bench(self, name: str) -> int:
        """The code of benchmark ``name`` (a new one when first seen)."""
        code = self._bench_code.get(name)
        if code is None:
            code = self._bench_code[name] = len(self.bench_names)
            self.bench_names.append(name)
        return code

    def code(self, lay: Layout) -> Layout:
        """``lay`` with its benchmark codes (given the first time)."""
        if lay.bench is None:
            lay.bench = np.fromiter(map(self.bench, lay.names), dtype=np.int32,
                                    count=len(lay.names))
            lay.bench_of_row = np.repeat(lay.bench, lay.lens)
        return lay

    def ids(self, bench: str, params: Any) -> np.ndarray:
        """Combination ids of ``bench`` with stored ``params``; ValueError when ``params`` is
        not a list of lists."""
        key = (bench, json.dumps(params))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if not isinstance(params, list) or not all(isinstance(p, list) for p in params):
            raise ValueError("'params' is not a list of lists")
        names = self.benchmarks.get(bench, {}).get("param_names")
        if not isinstance(names, list) or len(names) != len(params):
            names = metrics.default_param_names(bench, len(params))
        for name in names:
            if name not in self.names:
                self.names.append(name)
        start = len(self.rows)
        for combo in itertools.product(*params):
            self.rows.append({n: param_value(str(v)) for n, v in zip(names, combo, strict=True)})
        ids = np.arange(start, len(self.rows))
        self._cache[key] = ids
        return ids

    def layout(self, names: tuple[str, ...], params: Sequence[Any]) -> Layout:
        """The layout of entries ``names`` with ``params`` (one per entry), made when first
        seen; ValueError when an entry's params are not a list of lists."""
        params = tuple(params)
        known = self._layouts.setdefault(names, [])
        for lay in known:
            if lay.params == params:
                return lay
        parts = [self.ids(b, p) for b, p in zip(names, params, strict=True)]
        lay = Layout(self, names, params, parts)
        known.append(lay)
        return lay
