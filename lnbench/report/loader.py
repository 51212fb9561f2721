"""Load an asv results directory into tidy pandas frames.

Reads the on-disk format of asv 0.6 (``asv/results.py``: ``Results.save``/``Results.load``,
results ``version`` 2; ``benchmarks.json`` version 2; ``machine.json`` version 1) without
importing asv, plus lnbench's own machine facts in ``DIR/lnbench-machines/<machine>.json``.

One row per (machine, commit, environment, benchmark, parameter combination):

=================  ==========================================================================
column             meaning
=================  ==========================================================================
machine            ``params["machine"]`` of the result file (else its directory name)
commit             full commit hash as stored; ``commit_order`` ranks commits by asv ``date``
                   (the commit date), ties broken by the earliest ``started_at``, then hash
date               commit date (UTC); ``started_at`` when that benchmark ran (UTC)
env                asv environment name
benchmark          full asv name, e.g. ``bench_backward.Backward.time_backward``
<param names>      one column per parameter (``impl``, ``shape``, ``dtype``, ``dist`` …),
                   asv's repr strings unquoted (``"'float32'"`` -> ``float32``)
metric, unit       method name (``time_backward``) and the unit from benchmarks.json
higher_is_better   see ``lnbench.report.metrics``
value              the stored number (asv: median of samples for timings); NaN unless ok
status             ``ok``; ``failed`` (asv stored null); ``skipped`` (asv stored NaN);
                   ``invalid`` (stored value not a finite number, e.g. Infinity or a string,
                   or one its metric cannot take: a time <= 0, negative bytes or rel_err —
                   see ``metrics.lower_bound``; listed in ``errors`` per file and benchmark,
                   and never used)
ci_99_a … repeat   asv's stored statistics (``stats_*`` columns), NaN where absent
samples            list of raw samples (``--record-samples``) or None
version_ok         False when the stored benchmark version differs from benchmarks.json
                   (asv itself ignores such results when publishing)
file               the result file the row came from
=================  ==========================================================================

Every file that cannot be read (bad JSON, truncated, unknown format version, missing keys,
a ``date`` or ``started_at`` that is not a time in milliseconds between 1970 and 2262, a
results entry whose length does not match its parameters) becomes a :class:`LoadError`
with its path and a one-line reason; everything else still loads. Stored values that are not
finite numbers and machine facts of the wrong type are listed the same way (file and what)
and treated as unknown.

The frame is assembled column-wise from flat Python lists and numpy ``take``; the per-file
work is ``json.loads`` plus list extension, so 1,000 result files of 500 series load in well
under a second on a 2-core machine (``scripts/bench-report --perf``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report import metrics

#: asv's ``Results.api_version`` / ``Benchmarks.api_version`` / ``Machine.api_version``.
RESULTS_VERSION = 2
BENCHMARKS_VERSION = 2
MACHINE_VERSION = 1

FACTS_DIR = "lnbench-machines"
INTERFERENCE_DIR = "lnbench-interference"
INTERFERENCE_VERSION = 1
STAT_KEYS = ("ci_99_a", "ci_99_b", "q_25", "q_75", "number", "repeat")
FACT_FIELDS = (
    "recorded_at", "cpu_model", "cpu_cores", "memory_bytes", "gpu_name", "gpu_memory_bytes",
    "driver", "cuda", "malloc",
)
_QUOTED = [re.compile(r"^'(.+)'$"), re.compile(r"^u'(.+)'$"), re.compile(r"^<class '(.+)'>$")]
_REQUIRED = ("commit_hash", "date", "params", "result_columns", "results")
#: stored times (asv: milliseconds since 1970) must lie in [1970, 2262): pandas' nanosecond
#: range, and far enough below a time in microseconds (~1.8e15 today) to catch that mix-up
MS_MIN = 0
MS_MAX = 9_223_372_036_854 - 86_400_000
#: numeric machine facts; a value of another type is listed in ``errors`` and treated as unknown
_NUMERIC_FACTS = ("cpu_cores", "memory_bytes", "gpu_memory_bytes")


class ResultsDirError(Exception):
    """The results directory itself is missing or is not a directory (CLI exit code 2)."""


@dataclass(frozen=True)
class LoadError:
    """A file that could not be read, or could be read only in part."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class LoadedResults:
    """Everything a report needs, read from one results directory."""

    results_dir: Path
    frame: pd.DataFrame
    machines: pd.DataFrame
    errors: list[LoadError] = field(default_factory=list)
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)
    param_names: list[str] = field(default_factory=list)
    #: commits whose results were left out: not on the first-parent history given
    off_history: list[str] = field(default_factory=list)
    #: how commits were ordered: "first-parent" or "date"
    order: str = "date"

    @property
    def has_results(self) -> bool:
        return not self.frame.empty


def param_value(value_repr: str) -> str:
    """asv's parameter repr without quotes (the rule of ``asv.results._format_param_value``)."""
    for regex in _QUOTED:
        m = regex.match(value_repr)
        if m and m.group(1).strip():
            return m.group(1)
    return value_repr


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_json(path: Path) -> Any:
    """Parse a JSON file; raises ValueError with a one-line reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read: {_one_line(exc)}") from None
    if not text.strip():
        raise ValueError("empty file")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON (truncated or corrupted?): {_one_line(exc)}") from None


def _check_version(data: Any, expected: int) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    if "version" not in data:
        raise ValueError("no 'version' key: not an asv file")
    if data["version"] != expected:
        raise ValueError(
            f"unknown format version {data['version']!r} (this reader knows {expected})"
        )


def _load_benchmarks(results_dir: Path, errors: list[LoadError]) -> dict[str, dict[str, Any]]:
    path = results_dir / "benchmarks.json"
    if not path.is_file():
        errors.append(LoadError(str(path), "missing: units and parameter names are guessed"))
        return {}
    try:
        data = _read_json(path)
        _check_version(data, BENCHMARKS_VERSION)
    except ValueError as exc:
        errors.append(LoadError(str(path), f"{exc}; units and parameter names are guessed"))
        return {}
    return {k: v for k, v in data.items() if k != "version" and isinstance(v, dict)}


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not a string, not NaN or infinity)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _short_repr(value: Any, limit: int = 40) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _facts_row(machine: str, facts: dict[str, Any], bad: list[str]) -> dict[str, Any]:
    """One ``machines`` row; a value of the wrong type becomes None and is named in ``bad``."""
    row: dict[str, Any] = {"machine": machine}
    for key in FACT_FIELDS:
        row[key] = facts.get(key)
    for key in _NUMERIC_FACTS:
        value = row[key]
        if value is not None and not (_is_number(value) and value >= 0):
            bad.append(f"{key} {_short_repr(value)} is not a number ≥ 0")
            row[key] = None
    if row["malloc"] is not None and not isinstance(row["malloc"], str):
        bad.append(f"malloc {_short_repr(row['malloc'])} is not a string")
        row["malloc"] = None
    copy = facts.get("copy_gbps")
    if copy is not None and not isinstance(copy, dict):
        bad.append(f"copy_gbps {_short_repr(copy)} is not an object")
        copy = None
    for dev in ("cpu", "cuda"):
        value = (copy or {}).get(dev)
        if value is not None and not (_is_number(value) and value > 0):
            bad.append(f"copy_gbps.{dev} {_short_repr(value)} is not a positive number")
            value = None
        row[f"copy_gbps_{dev}"] = value
    versions = facts.get("versions")
    if isinstance(versions, dict):
        for name, ver in versions.items():
            row[f"version_{name}"] = ver
    elif versions is not None:
        bad.append(f"versions {_short_repr(versions)} is not an object")
    return row


def _load_facts(facts_dir: Path, errors: list[LoadError]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(facts_dir.glob("*.json")):
        try:
            data = _read_json(path)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            errors.append(LoadError(str(path), str(exc)))
            continue
        machine = data.get("machine") if isinstance(data.get("machine"), str) else path.stem
        bad: list[str] = []
        rows[machine] = _facts_row(machine, data, bad)
        if bad:
            errors.append(LoadError(str(path), "; ".join(bad) + ": treated as unknown"))
    return rows


class _Columns:
    """Per-row and per-chunk data of all files, appended one file at a time.

    A chunk is one benchmark entry of one result file (``len`` rows, one per parameter
    combination). Row data are kept as per-file numpy arrays (values, statistics), so the
    parsed JSON of a file can be freed once it is read.
    """

    def __init__(self) -> None:
        self.values: list[np.ndarray] = []
        self.status: list[np.ndarray] = []
        self.samples: list[Any] = []
        self.stats: dict[str, list[np.ndarray]] = {k: [] for k in STAT_KEYS}
        self.combo_ids: list[np.ndarray] = []
        self.chunk_len: list[int] = []
        self.chunk_file: list[np.ndarray] = []
        self.chunk_bench: list[np.ndarray] = []  # codes into bench_names
        self.chunk_started: list[np.ndarray] = []
        self.chunk_version: list[np.ndarray] = []  # codes into version_names
        self.bench_names: list[str] = []
        self.bench_code: dict[str, int] = {}
        self.version_names: list[str | None] = []
        self.version_code: dict[str | None, int] = {}
        self.file_rows: list[tuple[int, int]] = []  # [start, stop) rows of each kept file
        self._codes: dict[tuple[str, tuple[Any, ...]], np.ndarray] = {}
        self.n_rows = 0

    def codes(self, items: list[Any], code: Callable[[Any], int]) -> np.ndarray:
        """``code`` of each item, cached per distinct list (files of one suite share them)."""
        try:
            key = (code.__name__, tuple(items))
            hit = self._codes.get(key)
        except TypeError:  # an unhashable stored version
            key, hit = None, None
        if hit is None:
            hit = np.fromiter(map(code, items), dtype=np.int64, count=len(items))
            if key is not None:
                self._codes[key] = hit
        return hit

    def bench(self, name: str) -> int:
        code = self.bench_code.get(name)
        if code is None:
            code = self.bench_code[name] = len(self.bench_names)
            self.bench_names.append(name)
        return code

    def version(self, value: Any) -> int:
        key = value if value is None or isinstance(value, str) else json.dumps(value)
        code = self.version_code.get(key)
        if code is None:
            code = self.version_code[key] = len(self.version_names)
            self.version_names.append(key)
        return code


class _Irregular(Exception):
    """A result file the columnar fast path cannot take: it is read entry by entry."""


@dataclass
class _FileChunks:
    """The benchmark entries of one file as flat lists: per row (values, samples, stats) and
    per chunk (names, lens, ids, started, versions)."""

    names: list[str]
    lens: list[int]
    ids: list[np.ndarray]
    values: list[Any]
    samples: list[Any]
    stats: dict[str, list[Any]]
    started: list[Any]
    versions: list[Any]
    params: list[Any] = field(default_factory=list)


def _check_time(value: Any, what: str, allow_none: bool = False) -> float:
    """A stored time in ms since 1970 as a float (NaN for an allowed None); raises ValueError
    with a one-line reason when it is not a number or lies outside [1970, 2262)."""
    if value is None and allow_none:
        return math.nan
    if not (isinstance(value, int | float) and not isinstance(value, bool)):
        raise ValueError(f"{what} {_short_repr(value)} is not a number "
                         "(expected milliseconds since 1970)")
    if not math.isfinite(value):
        raise ValueError(f"{what} {_short_repr(value)} is not a finite number "
                         "(expected milliseconds since 1970)")
    if not MS_MIN <= value < MS_MAX:
        hint = " (microseconds or nanoseconds?)" if value > 0 else ""
        raise ValueError(f"{what} {_short_repr(value)} is out of range: expected milliseconds "
                         f"since 1970, a time between 1970 and 2262{hint}")
    return float(value)


def _as_list(value: Any, n: int) -> list[Any]:
    if isinstance(value, list) and len(value) == n:
        return value
    return [None] * n


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """An asv results version-1 document converted as ``asv update`` does
    (``asv.results.Results.update_to_2``), in memory; ValueError with asv's reason when it
    cannot be converted."""
    from asv.results import Results
    from asv.util import UserError

    try:
        out = Results.update_to_2(data)
    except (UserError, AttributeError, TypeError, ValueError, KeyError) as exc:
        raise ValueError("asv results version 1 that asv's own conversion ('asv update') "
                         f"cannot read: {_one_line(exc)}") from None
    out["version"] = RESULTS_VERSION
    return out


def _flat(column: Sequence[Any] | None, lens: list[int], total: int) -> list[Any]:
    """Per-chunk lists (an entry None: all None) flattened; _Irregular on a wrong length."""
    if column is None or column.count(None) == len(column):
        return [None] * total
    if None in column:
        column = [[None] * n if c is None else c for c, n in zip(column, lens, strict=True)]
    try:
        if list(map(len, column)) != lens:
            raise _Irregular
    except TypeError:
        raise _Irregular from None
    if column and set(map(type, column)) != {list}:
        raise _Irregular
    return list(itertools.chain.from_iterable(column))


def _fast_chunks(
    results: dict[str, Any], col_index: dict[str, int], combos: _ComboTable,
    benchmarks: dict[str, dict[str, Any]],
) -> _FileChunks:
    """Columnar read of a well-formed file (every entry a list, params and lengths right)."""
    names = list(results)
    rows = list(results.values())
    if rows and set(map(type, rows)) != {list}:
        raise _Irregular
    nb = len(rows)
    transposed = list(itertools.zip_longest(*rows)) if rows else []

    def column(key: str) -> tuple[Any, ...] | None:
        i = col_index.get(key)
        return transposed[i] if i is not None and i < len(transposed) else None

    params = column("params")
    if nb and (params is None or None in params):
        raise _Irregular
    ids, lens = combos.layout(names, params or (), benchmarks)
    total = sum(lens)
    started = column("started_at")
    versions = column("version")
    return _FileChunks(
        names, lens, ids, _flat(column("result"), lens, total),
        _flat(column("samples"), lens, total),
        {k: _flat(column("stats_" + k), lens, total) for k in STAT_KEYS},
        list(started) if started is not None else [None] * nb,
        list(versions) if versions is not None else [None] * nb,
        list(params or ()),
    )


def _slow_chunks(
    path: Path, results: dict[str, Any], col_index: dict[str, int], combos: _ComboTable,
    benchmarks: dict[str, dict[str, Any]], errors: list[LoadError],
) -> _FileChunks:
    """Entry-by-entry read: every entry that cannot be used is a LoadError, the rest loads."""
    out = _FileChunks([], [], [], [], [], {k: [] for k in STAT_KEYS}, [], [])
    for bench, row in results.items():
        if not isinstance(row, list):
            errors.append(LoadError(str(path), f"{bench}: results entry is not a list"))
            continue

        def get(key: str, row: list[Any] = row) -> Any:
            i = col_index.get(key)
            return row[i] if i is not None and i < len(row) else None

        params = get("params")
        if params is None:
            params = benchmarks.get(bench, {}).get("params", [])
        try:
            combo_ids = combos.ids(bench, params, benchmarks.get(bench))
        except ValueError as exc:
            errors.append(LoadError(str(path), f"{bench}: {exc}"))
            continue
        n = len(combo_ids)
        result = get("result")
        if result is not None and (not isinstance(result, list) or len(result) != n):
            got = len(result) if isinstance(result, list) else type(result).__name__
            errors.append(
                LoadError(str(path), f"{bench}: {got} values for {n} parameter combinations")
            )
            continue
        out.names.append(bench)
        out.lens.append(n)
        out.ids.append(combo_ids)
        out.values.extend(_as_list(result, n))
        out.samples.extend(_as_list(get("samples"), n))
        for key in STAT_KEYS:
            out.stats[key].extend(_as_list(get("stats_" + key), n))
        out.started.append(get("started_at"))
        out.versions.append(get("version"))
        out.params.append(params)
    return out


def _stat_array(values: list[Any]) -> np.ndarray:
    try:
        return np.array(values, dtype=float)
    except (TypeError, ValueError):
        return _numeric(values)[0]


def _value_array(
    path: Path, ch: _FileChunks, errors: list[LoadError]
) -> tuple[np.ndarray, np.ndarray]:
    """(values, status codes 0 ok / 1 failed / 2 skipped / 3 invalid) of one file; stored
    values that are not finite numbers are one LoadError per benchmark."""
    fast = True
    try:
        out = np.array(ch.values, dtype=float)  # None -> NaN
        fast = not np.isinf(out).any()
    except (TypeError, ValueError):
        fast = False
    if fast:
        bad = np.zeros(len(out), dtype=bool)
        is_none = np.zeros(len(out), dtype=bool)
        nan = np.flatnonzero(np.isnan(out))
        if len(nan):
            is_none[nan] = [ch.values[i] is None for i in nan]
    else:
        out, is_none, bad = _numeric(ch.values)
        starts = np.cumsum([0, *ch.lens])
        for k, name in enumerate(ch.names):
            hit = np.flatnonzero(bad[starts[k]:starts[k + 1]]) + starts[k]
            if len(hit):
                shown = ", ".join(dict.fromkeys(_short_repr(ch.values[i], 20) for i in hit[:20]))
                errors.append(LoadError(str(path), f"{name}: {len(hit)} stored value(s) not a "
                                        f"finite number ({shown}): not used"))
    status = np.where(is_none, 1, np.where(bad, 3, np.where(np.isnan(out), 2, 0)))
    return out, status.astype(np.int8)


def _started_array(ch: _FileChunks) -> np.ndarray:
    """started_at per chunk (ms, NaN where absent); ValueError naming the first bad one."""
    arr: np.ndarray | None = None
    try:
        if bool not in set(map(type, ch.started)):
            arr = np.array(ch.started, dtype=float)
            nan = np.isnan(arr)
            if not np.all(nan | ((arr >= MS_MIN) & (arr < MS_MAX))):
                arr = None
            elif nan.any() and any(ch.started[i] is not None for i in np.flatnonzero(nan)):
                arr = None  # a stored NaN, not an absent time
    except (TypeError, ValueError):
        arr = None
    if arr is None:
        for name, v in zip(ch.names, ch.started, strict=True):
            _check_time(v, f"{name}: started_at", allow_none=True)
        arr = np.array([math.nan if v is None else float(v) for v in ch.started], dtype=float)
    return arr


@dataclass
class _FileRead:
    """One result file read (in this process or a worker): everything but the row ids."""

    path: Path
    rec: dict[str, Any] | None
    chunks: _FileChunks | None = None
    values: np.ndarray | None = None
    status: np.ndarray | None = None
    stats: np.ndarray | None = None
    started: np.ndarray | None = None
    errors: list[LoadError] = field(default_factory=list)


def _read_result_file(
    path: Path, dir_machine: str, combos: _ComboTable, benchmarks: dict[str, dict[str, Any]],
) -> _FileRead:
    """Read one result file into arrays; every problem is a LoadError in the result.

    asv results version 1 (asv < 0.5) is converted in memory as ``asv update`` would.
    """
    errors: list[LoadError] = []
    try:
        data = _read_json(path)
        if isinstance(data, dict) and data.get("version") == 1:
            data = _v1_to_v2(data)
        _check_version(data, RESULTS_VERSION)
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"missing key {missing[0]!r}")
        columns = data["result_columns"]
        results = data["results"]
        if not isinstance(columns, list) or not isinstance(results, dict):
            raise ValueError("'result_columns' must be a list and 'results' an object")
        date = _check_time(data["date"], "date")
        col_index = {name: i for i, name in enumerate(columns)}
        try:
            ch = _fast_chunks(results, col_index, combos, benchmarks)
        except _Irregular:
            ch = _slow_chunks(path, results, col_index, combos, benchmarks, errors)
        try:  # one bad clock reading discredits the whole file
            started = _started_array(ch)
        except ValueError:
            errors.clear()
            raise
    except ValueError as exc:
        return _FileRead(path, None, errors=[LoadError(str(path), str(exc))])

    env_params = data.get("params") if isinstance(data.get("params"), dict) else {}
    machine = env_params.get("machine") if isinstance(env_params.get("machine"), str) else None
    values, status = _value_array(path, ch, errors)
    n = len(values)
    try:
        stats = np.array([ch.stats[k] for k in STAT_KEYS], dtype=float).reshape(len(STAT_KEYS), n)
    except (TypeError, ValueError):
        stats = np.stack([_stat_array(ch.stats[k]) for k in STAT_KEYS]) if n else \
            np.zeros((len(STAT_KEYS), 0))
    requirements = data.get("requirements") if isinstance(data.get("requirements"), dict) else {}
    rec = {
        "machine": machine or dir_machine,
        "commit": str(data.get("commit_hash")),
        "date": date,
        "env": str(data.get("env_name") or path.stem.split("-", 1)[-1]),
        "file": str(path),
        "first_started": float(np.nanmin(started)) if np.isfinite(started).any() else math.inf,
        "python": str(env_params.get("python", data.get("python", ""))),
        "requirements": json.dumps(requirements, sort_keys=True, default=str),
        "rows": n,
    }
    ch.ids = []
    ch.values = []
    ch.stats = {}
    _share(ch, combos)
    return _FileRead(path, rec, ch, values, status, stats, started, errors)


def _share(ch: _FileChunks, combos: _ComboTable) -> None:
    """Make equal names, versions and parameter lists of different files the same objects,
    so a batch pickled from a worker carries each once (pickle's memo)."""
    intern = sys.intern
    ch.names = [intern(n) for n in ch.names]
    ch.versions = [intern(v) if type(v) is str else v for v in ch.versions]
    hit = combos._layouts.get(tuple(ch.names))
    if hit is not None and hit[0] == tuple(ch.params):
        ch.params = list(hit[0])
    if ch.samples.count(None) == len(ch.samples):
        ch.samples = [None] * len(ch.samples)


def _append_file(cols: _Columns, combos: _ComboTable, benchmarks: dict[str, dict[str, Any]],
                 fr: _FileRead, file_idx: int) -> None:
    """Add a read file's rows to ``cols`` (row ids from this process's combination table)."""
    ch = fr.chunks
    assert ch is not None and fr.values is not None and fr.stats is not None
    ids, _ = combos.layout(ch.names, ch.params, benchmarks)
    n = len(fr.values)
    cols.values.append(fr.values)
    cols.status.append(fr.status)
    cols.samples.extend(ch.samples)
    for key, row in zip(STAT_KEYS, fr.stats, strict=True):
        cols.stats[key].append(row)
    cols.combo_ids.extend(ids)
    cols.chunk_len.extend(ch.lens)
    cols.chunk_file.append(np.full(len(ch.names), file_idx, dtype=np.int64))
    cols.chunk_bench.append(cols.codes(ch.names, cols.bench))
    cols.chunk_started.append(fr.started)
    cols.chunk_version.append(cols.codes(ch.versions, cols.version))
    cols.file_rows.append((cols.n_rows, cols.n_rows + n))
    cols.n_rows += n


#: with ``LNBENCH_REPORT_WORKERS=N`` (N > 1, at most ``MAX_WORKERS``), histories of at least
#: this many result files are read by N worker processes; the default reads in this process
#: (on a 2-core machine shared with other jobs the workers did not pay: 11.5-16.5 s against
#: 10.3-11.1 s in-process for a django-size history)
PARALLEL_MIN_FILES = 400
MAX_WORKERS = 4
_WORKER_COMBOS: _ComboTable | None = None


def _read_batch(tasks: list[tuple[Path, str]], benchmarks: dict[str, dict[str, Any]]
                ) -> list[_FileRead]:
    """Worker: read a batch of result files (parameters validated with its own table)."""
    global _WORKER_COMBOS
    if _WORKER_COMBOS is None:
        _WORKER_COMBOS = _ComboTable()
    return [_read_result_file(p, m, _WORKER_COMBOS, benchmarks) for p, m in tasks]


def _read_all(tasks: list[tuple[Path, str]], combos: _ComboTable,
              benchmarks: dict[str, dict[str, Any]]) -> Iterator[_FileRead]:
    """Every result file read, in order: in worker processes (fork) for large histories when
    ``LNBENCH_REPORT_WORKERS`` asks for them -- JSON parsing is most of the work and is per
    file -- else here."""
    try:
        workers = min(int(os.environ.get("LNBENCH_REPORT_WORKERS", "1")), MAX_WORKERS)
    except ValueError:
        workers = 1
    if workers > 1 and len(tasks) >= PARALLEL_MIN_FILES:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        try:
            ctx = multiprocessing.get_context("fork")
        except ValueError:
            ctx = None
        if ctx is not None:
            size = max(50, len(tasks) // (workers * 8))
            batches = [tasks[i:i + size] for i in range(0, len(tasks), size)]
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for out in pool.map(_read_batch, batches, [benchmarks] * len(batches)):
                    yield from out
            return
    for path, machine in tasks:
        yield _read_result_file(path, machine, combos, benchmarks)


class _ComboTable:
    """Parameter combinations, expanded once per (benchmark, params) in itertools.product order."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._layouts: dict[tuple[str, ...], tuple[tuple[Any, ...], list[np.ndarray],
                                                   list[int]]] = {}
        self.rows: list[dict[str, str]] = []
        self.names: list[str] = []

    def ids(self, bench: str, params: Any, meta: dict[str, Any] | None) -> np.ndarray:
        key = (bench, json.dumps(params))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if not isinstance(params, list) or not all(isinstance(p, list) for p in params):
            raise ValueError("'params' is not a list of lists")
        names = (meta or {}).get("param_names")
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

    def layout(self, names: list[str], params: Sequence[Any],
               benchmarks: dict[str, dict[str, Any]]) -> tuple[list[np.ndarray], list[int]]:
        """Combination ids (one array for the whole file) and per-entry lengths of a file's
        entries; files with the same entries and parameters share one cached layout."""
        key = tuple(names)
        params = tuple(params)
        hit = self._layouts.get(key)
        if hit is not None and hit[0] == params:
            return hit[1], hit[2]
        try:
            parts = [self.ids(b, p, benchmarks.get(b)) for b, p in zip(names, params,
                                                                       strict=True)]
        except ValueError:
            raise _Irregular from None
        ids = [np.concatenate(parts)] if parts else []
        lens = [len(p) for p in parts]
        self._layouts[key] = (tuple(params), ids, lens)
        return ids, lens


def _numeric(values: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float array, is-None mask, unreadable mask) of a list holding numbers, None and NaN.

    Unreadable: a value that is neither None, NaN nor a finite number (infinity, any string,
    a list); it becomes NaN in the array.
    """
    is_none = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    try:
        out = np.array(values, dtype=float)  # None -> NaN
        bad = np.isinf(out)
    except (TypeError, ValueError):  # a stray string or list
        obj = np.empty(len(values), dtype=object)
        obj[:] = values
        out = np.array(pd.to_numeric(pd.Series(obj), errors="coerce"), dtype=float)
        stored_nan = np.fromiter((isinstance(v, float) and v != v for v in values), dtype=bool,
                                 count=len(values))
        is_str = np.fromiter((isinstance(v, str) for v in values), dtype=bool,
                             count=len(values))
        bad = np.isinf(out) | (np.isnan(out) & ~is_none & ~stored_nan) | is_str
    out[bad] = np.nan
    return out, is_none, bad


def _categorical(small: Sequence[Any], codes: np.ndarray) -> pd.Categorical:
    """``small[codes]`` as a Categorical, factorizing only the small table (None -> NaN)."""
    labels = np.asarray([None if v is None else str(v) for v in small], dtype=object)
    present = np.fromiter((v is not None for v in labels), dtype=bool, count=len(labels))
    uniq, inv = np.unique(labels[present].astype(str), return_inverse=True)
    table = np.full(len(labels), -1, dtype=np.int64)
    table[present] = inv
    return pd.Categorical.from_codes(table[codes] if len(codes) else codes, categories=uniq)


def _bound_text(benchmark: str, unit: str) -> str:
    bound = metrics.lower_bound(benchmark, unit)
    assert bound is not None
    return f"impossible for {unit} (must be {'>' if bound[1] else '>='} {bound[0]:g})"


def _impossible(values: np.ndarray, bench_of_row: np.ndarray, bench_names: list[str],
                unit_of: list[str]) -> np.ndarray:
    """Mask of finite values below their metric's lower bound (``metrics.lower_bound``)."""
    bounds = [metrics.lower_bound(b, u) for b, u in zip(bench_names, unit_of, strict=True)]
    lo = np.asarray([-np.inf if b is None else b[0] for b in bounds], dtype=float)[bench_of_row]
    strict = np.asarray([b is not None and b[1] for b in bounds], dtype=bool)[bench_of_row]
    with np.errstate(invalid="ignore"):
        return np.where(strict, values <= lo, values < lo) & np.isfinite(values)


def _impossible_errors(
    bad: np.ndarray, values: np.ndarray, chunk_of_row: np.ndarray, chunk_file: np.ndarray,
    chunk_bench: np.ndarray, cols: _Columns, files: list[dict[str, Any]], unit_of: list[str],
    errors: list[LoadError],
) -> None:
    """One LoadError per (file, benchmark) holding values its metric cannot take."""
    rows = np.flatnonzero(bad)  # ascending, so their chunks are too
    chunks, starts, counts = np.unique(chunk_of_row[rows], return_index=True, return_counts=True)
    for chunk, start, count in zip(chunks, starts, counts, strict=True):
        first = rows[start:start + min(count, 20)]
        shown = ", ".join(dict.fromkeys(_short_repr(float(values[i]), 20) for i in first))
        code = chunk_bench[chunk]
        name = cols.bench_names[code]
        errors.append(LoadError(
            files[chunk_file[chunk]]["file"],
            f"{name}: {count} stored value(s) {_bound_text(name, unit_of[code])} "
            f"({shown}): not used"))


#: ``existing-py_<interpreter path>``: asv's environment name for ``--python=PATH``/``same``
_EXISTING = re.compile(r"^existing-py_(.*)$")
_PY_VERSION = re.compile(r"python(\d+(?:\.\d+)*)|(\d+\.\d+)(?:\.\d+)*")
#: hash-like parts of a name (a conda/virtualenv hash, a commit): 7+ hex digits with a digit
_HASHLIKE = re.compile(r"(?<![0-9a-z])(?=[0-9a-f]*\d)[0-9a-f]{7,}(?![0-9a-z])", re.IGNORECASE)


def env_family(env: str, requirements: str = "{}") -> str:
    """The environment an ``env`` name stands for, with its path and hash-like parts dropped.

    Two asv environments of one machine with the same family hold comparable results: asv
    names an existing interpreter ``existing-py_<its path>`` (``--python=same`` in a fresh
    virtualenv gives a new name each time the path changes), and hash-like name parts
    change without the packages changing. The requirements (asv's stored package versions)
    stay part of the family, so another numpy or astropy is another family.
    """
    name = env
    m = _EXISTING.match(env)
    if m:
        ver = None
        for hit in _PY_VERSION.finditer(m.group(1)):
            ver = hit.group(1) or hit.group(2)
        name = f"existing-py{ver or ''}"
    name = _HASHLIKE.sub("#", name)
    return name if requirements in ("{}", "") else f"{name} {requirements}"


def _assemble(
    cols: _Columns,
    files: list[dict[str, Any]],
    combos: _ComboTable,
    benchmarks: dict[str, dict[str, Any]],
    errors: list[LoadError],
    first_parent: Sequence[str] | None = None,
) -> pd.DataFrame:
    lens = np.asarray(cols.chunk_len, dtype=np.int64)
    chunk_file = np.concatenate(cols.chunk_file)
    chunk_bench = np.concatenate(cols.chunk_bench)
    file_of_row = np.repeat(chunk_file, lens)
    chunk_of_row = np.repeat(np.arange(len(lens)), lens)
    bench_of_row = chunk_bench[chunk_of_row]
    combo_of_row = np.concatenate(cols.combo_ids) if cols.combo_ids else np.zeros(0, np.int64)

    fdf = pd.DataFrame(files)
    commit_rank = _commit_order(fdf, first_parent)

    def per_file(values: list[Any]) -> pd.Categorical:
        return _categorical(values, file_of_row)

    frame: dict[str, Any] = {"machine": per_file(fdf["machine"].tolist()),
                             "commit": per_file(fdf["commit"].tolist())}
    frame["commit_order"] = commit_rank[file_of_row]
    frame["date"] = pd.to_datetime(fdf["date"].to_numpy()[file_of_row], unit="ms", utc=True)
    frame["env"] = per_file(fdf["env"].tolist())
    names = cols.bench_names
    frame["benchmark"] = _categorical(names, bench_of_row)
    for name in combos.names:
        frame[name] = _categorical([r.get(name) for r in combos.rows], combo_of_row)

    meta = [benchmarks.get(b, {}) for b in names]
    unit_of = [str(m.get("unit") or metrics.default_unit(b)) for b, m in zip(names, meta,
                                                                             strict=True)]
    hib_of = [metrics.higher_is_better(b, m or {"unit": u})
              for b, m, u in zip(names, meta, unit_of, strict=True)]
    frame["metric"] = _categorical([metrics.method_name(b) for b in names], bench_of_row)
    frame["unit"] = _categorical(unit_of, bench_of_row)
    frame["higher_is_better"] = np.asarray(hib_of, dtype=bool)[bench_of_row]

    values = np.concatenate(cols.values)
    status = np.concatenate(cols.status)
    cols.values.clear()
    cols.status.clear()
    impossible = _impossible(values, bench_of_row, names, unit_of)
    if impossible.any():
        _impossible_errors(impossible, values, chunk_of_row, chunk_file, chunk_bench, cols,
                           files, unit_of, errors)
        values[impossible] = np.nan
        status[impossible] = 3
    frame["value"] = values
    frame["status"] = pd.Categorical.from_codes(status, categories=list(STATUSES))
    for key in STAT_KEYS:
        frame[key] = np.concatenate(cols.stats[key])
        cols.stats[key].clear()
    samples = np.empty(len(cols.samples), dtype=object)
    samples[:] = cols.samples
    cols.samples.clear()
    frame["samples"] = samples
    frame["started_at"] = pd.to_datetime(
        np.concatenate(cols.chunk_started)[chunk_of_row], unit="ms", utc=True
    )
    chunk_version = np.concatenate(cols.chunk_version)
    current = [m.get("version") for m in meta]
    # per (benchmark, stored version) pair: is it the version benchmarks.json holds?
    pair = chunk_bench * max(len(cols.version_names), 1) + chunk_version
    uniq, inv = np.unique(pair, return_inverse=True)
    nv = max(len(cols.version_names), 1)
    ok_pair = np.asarray([
        cols.version_names[int(p % nv)] is None or current[int(p // nv)] is None
        or cols.version_names[int(p % nv)] == current[int(p // nv)] for p in uniq], dtype=bool)
    frame["version_ok"] = ok_pair[inv][chunk_of_row]
    frame["bench_version"] = _categorical(cols.version_names, chunk_version[chunk_of_row])
    known = bool(benchmarks)
    frame["retired"] = np.asarray([known and b not in benchmarks for b in names],
                                  dtype=bool)[bench_of_row]
    fam = [env_family(e, r) for e, r in zip(fdf["env"], fdf["requirements"], strict=True)]
    frame["env_family"] = per_file(fam)
    frame["noise_reason"] = np.full(len(values), None, dtype=object)
    frame["file"] = per_file(fdf["file"].tolist())
    return pd.DataFrame(frame, copy=False)


#: row statuses, in the order of their codes
STATUSES = ("ok", "failed", "skipped", "invalid", "noisy")


def _commit_order(files: pd.DataFrame, first_parent: Sequence[str] | None = None) -> np.ndarray:
    """Rank of each file's commit.

    With ``first_parent`` (the project's first-parent history, newest first, as ``git
    rev-list --first-parent`` prints it and as asv orders commits): the position on it,
    oldest 0; commits not on it get -1 (the caller leaves them out). Without: by commit date,
    then earliest started_at, then hash.
    """
    if files.empty:
        return np.zeros(0, dtype=np.int64)
    if first_parent is not None:
        n = len(first_parent)
        rank = {c: n - 1 - i for i, c in enumerate(first_parent)}
        return files["commit"].map(lambda c: rank.get(c, -1)).to_numpy(dtype=np.int64)
    per_commit = files.groupby("commit", sort=False).agg(
        date=("date", "min"), started=("first_started", "min")
    )
    per_commit = per_commit.reset_index().sort_values(
        ["date", "started", "commit"], na_position="last", kind="stable"
    )
    rank = dict(zip(per_commit["commit"], range(len(per_commit)), strict=True))
    return files["commit"].map(rank).to_numpy(dtype=np.int64)


def _empty_frame(param_names: list[str]) -> pd.DataFrame:
    cols = ["machine", "commit", "commit_order", "date", "env", "benchmark", *param_names,
            "metric", "unit", "higher_is_better", "value", "status", *STAT_KEYS, "samples",
            "started_at", "version_ok", "bench_version", "retired", "env_family",
            "noise_reason", "file"]
    return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})


def _load_interference(root: Path, errors: list[LoadError]) -> list[dict[str, Any]]:
    """The interference sidecars ``DIR/lnbench-interference/<machine>/*.json``.

    Each is ``{"version": 1, "machine", "commit", "env", "points": [{"benchmark", "params",
    "status": "ok"|"noisy", "reason", ...}]}`` (written by the asv suite next to each asv
    run). Returns the valid documents; a malformed one is a LoadError and is not used.
    """
    docs = []
    for path in sorted((root / INTERFERENCE_DIR).glob("*/*.json")):
        try:
            data = _read_json(path)
            _check_version(data, INTERFERENCE_VERSION)
            for key in ("machine", "commit", "env"):
                if not isinstance(data.get(key), str) or not data[key]:
                    raise ValueError(f"{key!r} missing or not a string")
            points = data.get("points")
            if not isinstance(points, list):
                raise ValueError("'points' missing or not a list")
            for i, p in enumerate(points):
                if not isinstance(p, dict) or not isinstance(p.get("benchmark"), str):
                    raise ValueError(f"points[{i}]: not an object with a 'benchmark' string")
                if not isinstance(p.get("params", {}), dict):
                    raise ValueError(f"points[{i}]: 'params' is not an object")
                if p.get("status") not in ("ok", "noisy"):
                    raise ValueError(f"points[{i}]: status {_short_repr(p.get('status'))} "
                                     "is not 'ok' or 'noisy'")
        except ValueError as exc:
            errors.append(LoadError(str(path), f"{exc}; interference not used"))
            continue
        data["path"] = str(path)
        docs.append(data)
    return docs


def _mark_noisy(frame: pd.DataFrame, docs: list[dict[str, Any]], param_names: list[str],
                errors: list[LoadError]) -> None:
    """Give rows named ``noisy`` by a sidecar status ``noisy`` and their ``noise_reason``."""
    wanted: dict[tuple[str, str, str], dict[tuple[str, tuple[tuple[str, str], ...]], str]] = {}
    for doc in docs:
        noisy = {(p["benchmark"], tuple(sorted((str(k), str(v))
                                               for k, v in (p.get("params") or {}).items()))):
                 str(p.get("reason") or "noisy") for p in doc["points"]
                 if p.get("status") == "noisy"}
        if noisy:
            wanted.setdefault((doc["machine"], doc["commit"], doc["env"]), {}).update(noisy)
    if not wanted or frame.empty:
        return
    sel = frame["commit"].isin({c for _, c, _ in wanted})
    sub = frame.loc[sel & (frame["status"] == "ok")]
    status = frame["status"].astype(object).to_numpy().copy()
    reason = frame["noise_reason"].to_numpy().copy()
    found: set[tuple[Any, ...]] = set()
    for (machine, commit, env), points in wanted.items():
        rows = sub[(sub["machine"] == machine) & (sub["commit"] == commit) & (sub["env"] == env)]
        for idx, bench, *pv in zip(rows.index, rows["benchmark"].astype(str),
                                   *(rows[p] for p in param_names), strict=True):
            params = tuple(sorted((n, str(v)) for n, v in zip(param_names, pv, strict=True)
                                  if isinstance(v, str)))
            why = points.get((bench, params))
            if why is not None:
                status[idx] = "noisy"
                reason[idx] = why
                found.add((machine, commit, env, bench, params))
    frame["status"] = pd.Categorical(status, categories=list(STATUSES))
    frame["noise_reason"] = reason
    missing = sum(1 for key, points in wanted.items() for p in points
                  if (*key, *p) not in found)
    if missing:
        errors.append(LoadError(str(frame.attrs.get("root", "")) + "/" + INTERFERENCE_DIR,
                                f"{missing} noisy point(s) match no stored ok value"))


def _machine_info(path: Path, errors: list[LoadError]) -> dict[str, Any]:
    try:
        data = _read_json(path)
        _check_version(data, MACHINE_VERSION)
    except ValueError as exc:
        errors.append(LoadError(str(path), f"{exc}; results in this folder still loaded"))
        return {}
    return {f"asv_{k}": data.get(k) for k in ("arch", "cpu", "num_cpu", "os", "ram")}


def load_results(
    results_dir: str | os.PathLike[str], first_parent: Sequence[str] | None = None
) -> LoadedResults:
    """Read an asv results directory (asv 0.6 format; version-1 files converted as ``asv
    update`` does) into :class:`LoadedResults`.

    ``frame`` has one row per stored value (columns in the module docstring), ``machines``
    one row per machine seen in results or in ``lnbench-machines/`` (facts are None where
    no facts file exists), ``errors`` every unreadable file with a one-line reason.
    ``first_parent``: the project's first-parent history, newest first (``git rev-list
    --first-parent``, as asv orders commits); ``commit_order`` is then the position on it and
    results of commits off it are left out (``off_history``). Without it commits are ordered
    by date.

    Raises :class:`ResultsDirError` only when ``results_dir`` is not a directory.
    """
    root = Path(results_dir)
    if not root.exists():
        raise ResultsDirError(f"--results {root}: no such directory")
    if not root.is_dir():
        raise ResultsDirError(f"--results {root}: not a directory")

    errors: list[LoadError] = []
    benchmarks = _load_benchmarks(root, errors)
    facts: dict[str, dict[str, Any]] = {}
    asv_info: dict[str, dict[str, Any]] = {}
    cols = _Columns()
    combos = _ComboTable()
    files: list[dict[str, Any]] = []
    tasks: list[tuple[Path, str]] = []
    infos: dict[str, dict[str, Any]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name == FACTS_DIR:
            facts = _load_facts(sub, errors)
            continue
        if sub.name == INTERFERENCE_DIR:
            continue
        machine_json = sub / "machine.json"
        jsons = sorted(p for p in sub.glob("*.json") if p.name != "machine.json")
        if not machine_json.is_file():
            if jsons:
                errors.append(LoadError(str(sub), "no machine.json: not an asv machine folder"))
            continue
        infos[sub.name] = _machine_info(machine_json, errors)
        tasks.extend((path, sub.name) for path in jsons)
    for fr in _read_all(tasks, combos, benchmarks):
        errors.extend(fr.errors)
        if fr.rec is not None:
            _append_file(cols, combos, benchmarks, fr, len(files))
            files.append(fr.rec)
            asv_info.setdefault(fr.rec["machine"], infos[fr.path.parent.name])

    if files and cols.chunk_len:
        frame = _assemble(cols, files, combos, benchmarks, errors, None)
        _mark_noisy(frame, _load_interference(root, errors), combos.names, errors)
    else:
        frame = _empty_frame(combos.names)
    machines = _machines_frame(asv_info, facts)
    loaded = LoadedResults(root, frame, machines, errors, benchmarks, list(combos.names))
    if first_parent is not None:
        apply_first_parent(loaded, first_parent)
    return loaded


def apply_first_parent(loaded: LoadedResults, first_parent: Sequence[str]) -> None:
    """Order ``loaded``'s commits by the first-parent history ``first_parent`` (newest first,
    full hashes, as ``git rev-list --first-parent`` prints them), in place: ``commit_order``
    becomes the position on it (oldest 0) and rows of commits off it are left out and named
    in ``loaded.off_history``. asv orders commits the same way (its branch history), where
    commit dates would mix pull-request branch commits into the history."""
    frame = loaded.frame
    loaded.order = "first-parent"
    if frame.empty:
        return
    n = len(first_parent)
    rank = {c: n - 1 - i for i, c in enumerate(first_parent)}
    cats = frame["commit"].cat.categories
    table = np.asarray([rank.get(str(c), -1) for c in cats], dtype=np.int64)
    order = table[frame["commit"].cat.codes.to_numpy()]
    away = order < 0
    used = np.zeros(len(cats), dtype=bool)
    used[np.unique(frame["commit"].cat.codes.to_numpy())] = True
    loaded.off_history = sorted(str(c) for c, r, u in zip(cats, table, used, strict=True)
                                if r < 0 and u)
    frame = frame.assign(commit_order=order)
    if away.any():
        frame = frame.loc[~away].reset_index(drop=True)
        for col in frame.select_dtypes("category").columns:
            frame[col] = frame[col].cat.remove_unused_categories()
    loaded.frame = frame


def share_on_history(loaded: LoadedResults, first_parent: Sequence[str]) -> float:
    """The share of the results' commits that lie on ``first_parent`` (0 when none)."""
    if loaded.frame.empty:
        return 0.0
    commits = set(map(str, loaded.frame["commit"].unique()))
    return len(commits & set(first_parent)) / len(commits)


def git_first_parent(repo: str | os.PathLike[str], rev: str = "HEAD") -> list[str]:
    """``git rev-list --first-parent REV`` in ``repo``: full hashes, newest first.

    Raises ValueError with a one-line reason when ``repo`` is not a git repository (or git
    is missing)."""
    import subprocess

    try:
        proc = subprocess.run(["git", "-C", str(repo), "rev-list", "--first-parent", rev],
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"cannot run git: {_one_line(exc)}") from None
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["git rev-list failed"])[0]
        raise ValueError(f"not a git repository with commits ({msg})")
    return proc.stdout.split()


def read_first_parent(path: str | os.PathLike[str]) -> list[str]:
    """A first-parent list file: one full commit hash a line, newest first (``git rev-list
    --first-parent main > FILE``); blank lines and ``#`` comments ignored. ValueError with a
    one-line reason when it cannot be read or holds something else than hashes."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read: {_one_line(exc)}") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not re.fullmatch(r"[0-9a-fA-F]{7,64}", line):
            raise ValueError(f"line {i}: {_short_repr(line)} is not a commit hash")
        out.append(line.lower())
    if not out:
        raise ValueError("no commit hashes in it")
    return out


def _machines_frame(
    asv_info: dict[str, dict[str, Any]], facts: dict[str, dict[str, Any]]
) -> pd.DataFrame:
    rows = []
    for machine in sorted(set(asv_info) | set(facts)):
        row = {"machine": machine, "has_facts": machine in facts, "in_results": machine in asv_info}
        row.update(asv_info.get(machine, {}))
        row.update(facts.get(machine, {"machine": machine}))
        rows.append(row)
    base = ["machine", "has_facts", "in_results", *FACT_FIELDS, "copy_gbps_cpu", "copy_gbps_cuda"]
    frame = pd.DataFrame(rows)
    for col in base:
        if col not in frame.columns:
            frame[col] = pd.Series([None] * len(frame), dtype=object)
    rest = [c for c in frame.columns if c not in base]
    return frame[base + rest]
