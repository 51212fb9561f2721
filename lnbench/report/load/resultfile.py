"""One asv result file read into columnar arrays, every problem a one-line reason.

Format: asv 0.6's ``Results.save`` (``asv/results.py``, results ``version`` 2)::

    {"commit_hash", "env_name", "date", "params", "requirements", "python", "version": 2,
     "result_columns": ["result", "params", "version", "started_at", "duration",
                        "stats_ci_99_a", ..., "stats_repeat", "samples", "profile"],
     "results": {<benchmark>: [<one value per result column>], ...}}

asv drops trailing ``null`` columns of an entry, so entries can be shorter than
``result_columns``. ``result`` (and ``stats_*``, ``samples``) hold one item per parameter
combination in ``itertools.product`` order of ``params``. Results version 1 (asv < 0.5) is
converted in memory by asv's own ``Results.update_to_2`` (what ``asv update`` does).

Method. The common file -- every entry a list, every ``params`` a list of lists, every
column of the right length -- is read column-wise: the entries are transposed by one
``zip_longest`` (C), the (benchmark, params) sequence is looked up as a shared
:class:`~lnbench.report.load.layout.Layout`, each column is flattened by
``itertools.chain`` and turned into a float array by one ``numpy.array`` call after one
check of the element types (``set(map(type, ...))``: only float, int and null; ``numpy``
itself would turn the string ``"1.5"`` into 1.5). Python work per row is thereby a few
C-level passes; nothing per row is kept but the arrays. A file that is not that regular is
read entry by entry, and each entry that cannot be used is a LoadError while the rest
loads. Statistics and samples that a file does not store are kept as ``None``, not as
arrays of NaN, so a CI history without them costs nothing for them.

Statuses (codes of ``STATUSES`` in ``lnbench.report.load.frame``): 0 ok, 1 failed (asv
stored null), 2 skipped (stored NaN), 3 invalid (not a finite number: infinity, a string,
a boolean, a list, an integer too large for a float; one LoadError per benchmark).

Times (``date``, ``started_at``) are milliseconds since 1970 and must lie in [1970, 2262):
pandas' nanosecond range, and far enough below a time in microseconds (~1.8e15 today) to
catch that mix-up. One bad ``started_at`` discredits the whole file: its clock is wrong.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lnbench.report.load.jsonfile import LoadError, check_version, one_line, read_json, short_repr
from lnbench.report.load.layout import Combos, Layout

RESULTS_VERSION = 2
STAT_KEYS = ("ci_99_a", "ci_99_b", "q_25", "q_75", "number", "repeat")
_REQUIRED = ("commit_hash", "date", "params", "result_columns", "results")
MS_MIN = 0
MS_MAX = 9_223_372_036_854 - 86_400_000
#: element types a value column may hold to be converted by one numpy call
_PLAIN = {float, int, type(None)}
_NUMBERS = {float, int}


class Irregular(Exception):
    """A result file the columnar reading cannot take: it is read entry by entry."""


@dataclass(slots=True)
class FileRead:
    """One result file read: file facts (``rec``, None when unreadable), per row ``values``,
    ``status`` codes, ``stats`` (one row per ``STAT_KEYS``, or None when the file stores
    none) and ``samples`` (None when none), per entry ``started`` (ms) and ``versions``.
    ``layout`` is None for a file read in a worker process (``names``/``params`` say it)."""

    path: Path
    rec: dict[str, Any] | None
    errors: list[LoadError] = field(default_factory=list)
    layout: Layout | None = None
    names: tuple[str, ...] = ()
    params: tuple[Any, ...] = ()
    values: np.ndarray | None = None
    status: np.ndarray | None = None
    stats: np.ndarray | None = None
    samples: list[Any] | None = None
    started: np.ndarray | None = None
    versions: tuple[Any, ...] = ()


def check_time(value: Any, what: str, allow_none: bool = False) -> float:
    """A stored time in ms since 1970 as a float (NaN for an allowed None); raises ValueError
    with a one-line reason when it is not a number or lies outside [1970, 2262)."""
    if value is None and allow_none:
        return math.nan
    if not (isinstance(value, int | float) and not isinstance(value, bool)):
        raise ValueError(f"{what} {short_repr(value)} is not a number "
                         "(expected milliseconds since 1970)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} {short_repr(value)} is not a finite number "
                         "(expected milliseconds since 1970)")
    if not MS_MIN <= value < MS_MAX:
        hint = " (microseconds or nanoseconds?)" if value > 0 else ""
        raise ValueError(f"{what} {short_repr(value)} is out of range: expected milliseconds "
                         f"since 1970, a time between 1970 and 2262{hint}")
    return float(value)


def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """An asv results version-1 document converted as ``asv update`` does
    (``asv.results.Results.update_to_2``), in memory; ValueError with asv's reason when it
    cannot be converted."""
    from asv.results import Results
    from asv.util import UserError

    try:
        out = Results.update_to_2(data)
    except (UserError, AttributeError, TypeError, ValueError, KeyError) as exc:
        raise ValueError("asv results version 1 that asv's own conversion ('asv update') "
                         f"cannot read: {one_line(exc)}") from None
    out["version"] = RESULTS_VERSION
    return out


def numeric(values: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float array, is-null mask, unreadable mask) of any stored list, element by element.

    Unreadable: anything but null, NaN or a finite int/float (infinity, a string, a boolean,
    a list, an int too large for a float); it becomes NaN in the array."""
    n = len(values)
    out = np.full(n, np.nan)
    is_none = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, v in enumerate(values):
        t = type(v)
        if v is None:
            is_none[i] = True
        elif t is float or t is int:
            try:
                f = float(v)
            except OverflowError:
                bad[i] = True
                continue
            if math.isinf(f):
                bad[i] = True
            else:
                out[i] = f
        else:
            bad[i] = True
    return out, is_none, bad


def _flat(column: tuple[Any, ...] | list[Any] | None, lens: list[int], single: bool
          ) -> list[Any] | None:
    """Per-entry lists flattened (None when the column holds nothing); Irregular when an
    entry is neither a list nor null, or has the wrong length. ``single``: every entry has
    one combination (then ``[c[0] for c in column]``, which is quicker than ``chain``)."""
    if column is None:
        return None
    n_none = column.count(None)
    if n_none == len(column):
        return None
    if n_none:
        column = [[None] * n if c is None else c for c, n in zip(column, lens, strict=True)]
    if set(map(type, column)) != {list} or list(map(len, column)) != lens:
        raise Irregular
    flat = [c[0] for c in column] if single else list(itertools.chain.from_iterable(column))
    return None if flat.count(None) == len(flat) else flat


def _columns(results: dict[str, Any], col_index: dict[str, int], combos: Combos
             ) -> tuple[Layout, dict[str, Any]]:
    """Column-wise read of a regular file: its layout and flat per-row columns."""
    names = tuple(results)
    entries = list(results.values())
    if entries and set(map(type, entries)) != {list}:
        raise Irregular
    transposed = list(itertools.zip_longest(*entries)) if entries else []

    def column(key: str) -> tuple[Any, ...] | None:
        i = col_index.get(key)
        return transposed[i] if i is not None and i < len(transposed) else None

    params = column("params")
    if entries and (params is None or None in params):
        raise Irregular
    try:
        lay = combos.layout(names, params or ())
    except ValueError:
        raise Irregular from None
    lens, single = lay.lens_list, lay.single
    out = {"result": _flat(column("result"), lens, single),
           "samples": _flat(column("samples"), lens, single),
           "started_at": column("started_at"), "version": column("version"),
           "stats": _stat_block([column("stats_" + k) for k in STAT_KEYS], lens, single,
                                lay.total)}
    return lay, out


def _stat_block(columns: list[tuple[Any, ...] | None], lens: list[int], single: bool,
                total: int) -> np.ndarray | None:
    """The statistics columns of a regular file as one (len(STAT_KEYS), rows) array (None
    when it stores none): where every entry stores all of them (asv's usual file), checked
    and flattened in one pass over all six; else column by column."""
    if any(c is None for c in columns):
        if all(c is None for c in columns):
            return None
        return _stat_rows({k: _flat(c, lens, single)
                           for k, c in zip(STAT_KEYS, columns, strict=True)}, total)
    entries = list(itertools.chain.from_iterable(columns))  # type: ignore[arg-type]
    types = set(map(type, entries))
    if types != {list}:
        if types <= {list, type(None)}:  # some entries store no statistics
            return _stat_rows({k: _flat(c, lens, single)
                               for k, c in zip(STAT_KEYS, columns, strict=True)}, total)
        raise Irregular
    if list(map(len, entries)) != lens * len(columns):
        raise Irregular
    flat = [e[0] for e in entries] if single else list(itertools.chain.from_iterable(entries))
    try:
        return np.array(flat, dtype=float).reshape(len(columns), total)
    except (TypeError, ValueError, OverflowError):
        return _stat_rows({k: flat[j * total:(j + 1) * total] for j, k in enumerate(STAT_KEYS)},
                          total)


def _as_list(value: Any, n: int) -> list[Any]:
    if isinstance(value, list) and len(value) == n:
        return value
    return [None] * n


def _by_entry(path: Path, results: dict[str, Any], col_index: dict[str, int], combos: Combos,
              errors: list[LoadError]) -> tuple[Layout, dict[str, Any]]:
    """Entry-by-entry read: every entry that cannot be used is a LoadError, the rest loads
    (an entry without params takes them from benchmarks.json)."""
    names: list[str] = []
    params: list[Any] = []
    cols: dict[str, list[Any]] = {k: [] for k in ("result", "samples", "started_at", "version",
                                                  *STAT_KEYS)}
    for bench, row in results.items():
        if not isinstance(row, list):
            errors.append(LoadError(str(path), f"{bench}: results entry is not a list"))
            continue

        def get(key: str, row: list[Any] = row) -> Any:
            i = col_index.get(key)
            return row[i] if i is not None and i < len(row) else None

        p = get("params")
        if p is None:
            p = combos.benchmarks.get(bench, {}).get("params", [])
        try:
            n = len(combos.ids(bench, p))
        except ValueError as exc:
            errors.append(LoadError(str(path), f"{bench}: {exc}"))
            continue
        result = get("result")
        if result is not None and (not isinstance(result, list) or len(result) != n):
            got = len(result) if isinstance(result, list) else type(result).__name__
            errors.append(
                LoadError(str(path), f"{bench}: {got} values for {n} parameter combinations")
            )
            continue
        names.append(bench)
        params.append(p)
        cols["result"].extend(_as_list(result, n))
        cols["samples"].extend(_as_list(get("samples"), n))
        for key in STAT_KEYS:
            cols[key].extend(_as_list(get("stats_" + key), n))
        cols["started_at"].append(get("started_at"))
        cols["version"].append(get("version"))
    lay = combos.layout(tuple(names), params)
    out: dict[str, Any] = {k: (None if v.count(None) == len(v) else v) for k, v in cols.items()
                           if k not in ("started_at", "version")}
    out["started_at"] = tuple(cols["started_at"])
    out["version"] = tuple(cols["version"])
    out["stats"] = _stat_rows(out, lay.total)
    return lay, out


def _value_array(path: Path, lay: Layout, flat: list[Any] | None, errors: list[LoadError]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(values, status codes) of one file; stored values that are not finite numbers are one
    LoadError per benchmark."""
    if flat is None:
        return np.full(lay.total, np.nan), np.ones(lay.total, dtype=np.int8)
    if set(map(type, flat)) <= _PLAIN:
        try:
            out = np.array(flat, dtype=float)  # None -> NaN
        except OverflowError:  # an int beyond float range
            out = None
        if out is not None:
            finite = np.isfinite(out)
            if finite.all():
                return out, np.zeros(lay.total, dtype=np.int8)
            if not np.isinf(out).any():
                status = np.zeros(lay.total, dtype=np.int8)
                nan = np.flatnonzero(~finite)
                status[nan] = np.where([flat[i] is None for i in nan], 1, 2)
                return out, status
    out, is_none, bad = numeric(flat)
    starts = np.r_[0, np.cumsum(lay.lens)]
    for k, name in enumerate(lay.names):
        hit = np.flatnonzero(bad[starts[k]:starts[k + 1]]) + starts[k]
        if len(hit):
            shown = ", ".join(dict.fromkeys(short_repr(flat[i], 20) for i in hit[:20]))
            errors.append(LoadError(str(path), f"{name}: {len(hit)} stored value(s) not a "
                                    f"finite number ({shown}): not used"))
    status = np.where(is_none, 1, np.where(bad, 3, np.where(np.isnan(out), 2, 0)))
    return out, status.astype(np.int8)


def _stat_rows(cols: dict[str, Any], n: int) -> np.ndarray | None:
    """The statistics as a (len(STAT_KEYS), n) float array, None when the file has none;
    an entry that is not a number is NaN."""
    if all(cols[k] is None for k in STAT_KEYS):
        return None
    out = np.full((len(STAT_KEYS), n), np.nan)
    for j, key in enumerate(STAT_KEYS):
        flat = cols[key]
        if flat is None:
            continue
        try:
            out[j] = np.array(flat, dtype=float)
        except (TypeError, ValueError, OverflowError):
            out[j] = numeric(flat)[0]
    return out


def _started_array(names: tuple[str, ...], started: tuple[Any, ...] | None) -> np.ndarray:
    """started_at per entry (ms, NaN where absent); ValueError naming the first bad one."""
    if started is None:
        return np.full(len(names), np.nan)
    if set(map(type, started)) <= _NUMBERS:  # the usual file: every entry has its time
        try:
            arr = np.array(started, dtype=float)
        except OverflowError:
            arr = None
        if arr is not None and (not len(arr) or MS_MIN <= arr.min() and arr.max() < MS_MAX):
            return arr  # (a NaN fails the test: it is looked at one by one below)
    for name, v in zip(names, started, strict=True):
        check_time(v, f"{name}: started_at", allow_none=True)
    return np.array([math.nan if v is None else float(v) for v in started], dtype=float)


def read_result_file(path: Path, dir_machine: str, combos: Combos) -> FileRead:
    """Read one result file into arrays (see the module docstring); every problem is a
    LoadError in the result, and ``rec`` is None when the file cannot be used at all."""
    errors: list[LoadError] = []
    try:
        data = read_json(path)
        if isinstance(data, dict) and data.get("version") == 1:
            data = v1_to_v2(data)
        check_version(data, RESULTS_VERSION)
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"missing key {missing[0]!r}")
        columns = data["result_columns"]
        results = data["results"]
        if not isinstance(columns, list) or not isinstance(results, dict):
            raise ValueError("'result_columns' must be a list and 'results' an object")
        date = check_time(data["date"], "date")
        col_index = {name: i for i, name in enumerate(columns) if isinstance(name, str)}
        try:
            lay, cols = _columns(results, col_index, combos)
        except Irregular:
            lay, cols = _by_entry(path, results, col_index, combos, errors)
        try:  # one bad clock reading discredits the whole file
            started = _started_array(lay.names, cols["started_at"])
        except ValueError:
            errors.clear()
            raise
    except ValueError as exc:
        return FileRead(path, None, [LoadError(str(path), str(exc))])

    env_params = data.get("params") if isinstance(data.get("params"), dict) else {}
    machine = env_params.get("machine") if isinstance(env_params.get("machine"), str) else None
    values, status = _value_array(path, lay, cols["result"], errors)
    versions = cols["version"]
    if versions is None:
        versions = (None,) * len(lay.names)
    if versions == lay.versions:
        versions = lay.versions  # one object for equal lists (shared, pickled once)
    else:
        lay.versions, lay.vcodes = versions, None
    requirements = data.get("requirements") if isinstance(data.get("requirements"), dict) else {}
    finite = started[~np.isnan(started)]
    rec = {
        "machine": machine or dir_machine,
        "commit": str(data.get("commit_hash")),
        "date": date,
        "env": str(data.get("env_name") or path.stem.split("-", 1)[-1]),
        "file": str(path),
        "first_started": float(finite.min()) if len(finite) else math.inf,
        "python": str(env_params.get("python", data.get("python", ""))),
        "requirements": json.dumps(requirements, sort_keys=True, default=str),
        "rows": lay.total,
    }
    return FileRead(path, rec, errors, lay, lay.names, lay.params, values, status,
                    cols["stats"], cols["samples"], started, versions)
