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
from collections.abc import Callable, Sequence
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
    """Flat per-row lists, filled one benchmark entry (a "chunk") at a time."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.samples: list[Any] = []
        self.stats: dict[str, list[Any]] = {k: [] for k in STAT_KEYS}
        self.combo_ids: list[np.ndarray] = []
        self.chunk_len: list[int] = []
        self.chunk_file: list[int] = []
        self.chunk_bench: list[str] = []
        self.chunk_started: list[float] = []
        self.chunk_version: list[Any] = []


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


def _parse_result_file(
    path: Path,
    dir_machine: str,
    file_idx: int,
    cols: _Columns,
    combos: _ComboTable,
    benchmarks: dict[str, dict[str, Any]],
    errors: list[LoadError],
) -> dict[str, Any] | None:
    """Append one result file's rows to ``cols``; return its file-level record, or None."""
    try:
        data = _read_json(path)
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
        i_started = col_index.get("started_at")
        if i_started is not None:  # one bad clock reading discredits the whole file
            for bench, row in results.items():
                if isinstance(row, list) and i_started < len(row):
                    _check_time(row[i_started], f"{bench}: started_at", allow_none=True)
    except ValueError as exc:
        errors.append(LoadError(str(path), str(exc)))
        return None

    env_params = data.get("params") if isinstance(data.get("params"), dict) else {}
    machine = env_params.get("machine") if isinstance(env_params.get("machine"), str) else None
    first_started = math.inf
    n_rows = 0
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
        cols.values.extend(_as_list(result, n))
        cols.samples.extend(_as_list(get("samples"), n))
        for key in STAT_KEYS:
            cols.stats[key].extend(_as_list(get("stats_" + key), n))
        started = _check_time(get("started_at"), "started_at", allow_none=True)
        if started == started:
            first_started = min(first_started, started)
        cols.combo_ids.append(combo_ids)
        cols.chunk_len.append(n)
        cols.chunk_file.append(file_idx)
        cols.chunk_bench.append(bench)
        cols.chunk_started.append(started)
        cols.chunk_version.append(get("version"))
        n_rows += n
    return {
        "machine": machine or dir_machine,
        "commit": str(data.get("commit_hash")),
        "date": date,
        "env": str(data.get("env_name") or path.stem.split("-", 1)[-1]),
        "file": str(path),
        "first_started": first_started,
    }


class _ComboTable:
    """Parameter combinations, expanded once per (benchmark, params) in itertools.product order."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], np.ndarray] = {}
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


def _impossible(values: np.ndarray, chunk_of_row: np.ndarray, chunk_bench: list[str],
                unit_of: dict[str, str]) -> np.ndarray:
    """Mask of finite values below their metric's lower bound (``metrics.lower_bound``)."""
    bounds = [metrics.lower_bound(b, unit_of[b]) for b in chunk_bench]
    lo = np.asarray([-np.inf if b is None else b[0] for b in bounds], dtype=float)[chunk_of_row]
    strict = np.asarray([b is not None and b[1] for b in bounds], dtype=bool)[chunk_of_row]
    with np.errstate(invalid="ignore"):
        return np.where(strict, values <= lo, values < lo) & np.isfinite(values)


def _bound_text(benchmark: str, unit: str) -> str:
    bound = metrics.lower_bound(benchmark, unit)
    assert bound is not None
    return f"impossible for {unit} (must be {'>' if bound[1] else '>='} {bound[0]:g})"


def _unreadable_values(
    bad: np.ndarray, values: list[Any], chunk_of_row: np.ndarray, cols: _Columns,
    files: list[dict[str, Any]], errors: list[LoadError],
    what: Callable[[str], str] = lambda _: "not a finite number",
) -> None:
    """One LoadError per (file, benchmark) holding stored values that are not finite numbers
    (or, with ``what``, values the metric cannot take)."""
    rows = np.flatnonzero(bad)  # ascending, so their chunks are too
    chunks, starts, counts = np.unique(chunk_of_row[rows], return_index=True, return_counts=True)
    for chunk, start, count in zip(chunks, starts, counts, strict=True):
        first = rows[start:start + min(count, 20)]
        shown = ", ".join(dict.fromkeys(_short_repr(values[i], 20) for i in first))
        errors.append(LoadError(
            files[cols.chunk_file[chunk]]["file"],
            f"{cols.chunk_bench[chunk]}: {count} stored value(s) {what(cols.chunk_bench[chunk])} "
            f"({shown}): not used"))


def _assemble(
    cols: _Columns,
    files: list[dict[str, Any]],
    combos: _ComboTable,
    benchmarks: dict[str, dict[str, Any]],
    errors: list[LoadError],
) -> pd.DataFrame:
    lens = np.asarray(cols.chunk_len, dtype=np.int64)
    file_of_row = np.repeat(np.asarray(cols.chunk_file, dtype=np.int64), lens)
    chunk_of_row = np.repeat(np.arange(len(lens)), lens)
    combo_of_row = np.concatenate(cols.combo_ids)

    fdf = pd.DataFrame(files)
    commit_rank = _commit_order(fdf)

    def per_file(key: str) -> pd.Categorical:
        return _categorical(fdf[key].tolist(), file_of_row)

    frame: dict[str, Any] = {"machine": per_file("machine"), "commit": per_file("commit")}
    frame["commit_order"] = commit_rank[file_of_row]
    frame["date"] = pd.to_datetime(fdf["date"].to_numpy()[file_of_row], unit="ms", utc=True)
    frame["env"] = per_file("env")
    frame["benchmark"] = _categorical(cols.chunk_bench, chunk_of_row)
    for name in combos.names:
        frame[name] = _categorical([r.get(name) for r in combos.rows], combo_of_row)

    meta = {b: benchmarks.get(b, {}) for b in set(cols.chunk_bench)}
    unit_of = {b: str(meta[b].get("unit") or metrics.default_unit(b)) for b in meta}
    hib_of = {b: metrics.higher_is_better(b, meta[b] or {"unit": unit_of[b]}) for b in meta}
    frame["metric"] = _categorical([metrics.method_name(b) for b in cols.chunk_bench],
                                   chunk_of_row)
    frame["unit"] = _categorical([unit_of[b] for b in cols.chunk_bench], chunk_of_row)
    frame["higher_is_better"] = np.asarray([hib_of[b] for b in cols.chunk_bench], dtype=bool)[
        chunk_of_row
    ]

    values, is_none, bad = _numeric(cols.values)
    if bad.any():
        _unreadable_values(bad, cols.values, chunk_of_row, cols, files, errors)
    impossible = _impossible(values, chunk_of_row, cols.chunk_bench, unit_of)
    if impossible.any():
        _unreadable_values(impossible, cols.values, chunk_of_row, cols, files, errors,
                           what=lambda b: _bound_text(b, unit_of[b]))
        values[impossible] = np.nan
        bad |= impossible
    status = np.where(is_none, 1, np.where(bad, 3, np.where(np.isnan(values), 2, 0)))
    frame["value"] = values
    frame["status"] = pd.Categorical.from_codes(
        status, categories=["ok", "failed", "skipped", "invalid"])
    for key in STAT_KEYS:
        frame[key] = _numeric(cols.stats[key])[0]
    samples = np.empty(len(cols.samples), dtype=object)
    samples[:] = cols.samples
    frame["samples"] = samples
    frame["started_at"] = pd.to_datetime(
        np.asarray(cols.chunk_started, dtype=float)[chunk_of_row], unit="ms", utc=True
    )
    version_ok = [
        v is None or meta[b].get("version") is None or v == meta[b].get("version")
        for b, v in zip(cols.chunk_bench, cols.chunk_version, strict=True)
    ]
    frame["version_ok"] = np.asarray(version_ok, dtype=bool)[chunk_of_row]
    frame["file"] = per_file("file")
    return pd.DataFrame(frame)


def _commit_order(files: pd.DataFrame) -> np.ndarray:
    """Rank of each file's commit: by commit date, then earliest started_at, then hash."""
    if files.empty:
        return np.zeros(0, dtype=np.int64)
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
            "started_at", "version_ok", "file"]
    return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})


def _machine_info(path: Path, errors: list[LoadError]) -> dict[str, Any]:
    try:
        data = _read_json(path)
        _check_version(data, MACHINE_VERSION)
    except ValueError as exc:
        errors.append(LoadError(str(path), f"{exc}; results in this folder still loaded"))
        return {}
    return {f"asv_{k}": data.get(k) for k in ("arch", "cpu", "num_cpu", "os", "ram")}


def load_results(results_dir: str | os.PathLike[str]) -> LoadedResults:
    """Read an asv results directory (asv 0.6 format) into :class:`LoadedResults`.

    ``frame`` has one row per stored value (columns in the module docstring), ``machines``
    one row per machine seen in results or in ``lnbench-machines/`` (facts are None where
    no facts file exists), ``errors`` every unreadable file with a one-line reason.

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
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name == FACTS_DIR:
            facts = _load_facts(sub, errors)
            continue
        machine_json = sub / "machine.json"
        jsons = sorted(p for p in sub.glob("*.json") if p.name != "machine.json")
        if not machine_json.is_file():
            if jsons:
                errors.append(LoadError(str(sub), "no machine.json: not an asv machine folder"))
            continue
        info = _machine_info(machine_json, errors)
        for path in jsons:
            rec = _parse_result_file(path, sub.name, len(files), cols, combos, benchmarks, errors)
            if rec is not None:
                files.append(rec)
                asv_info.setdefault(rec["machine"], info)

    if files and cols.chunk_len:
        frame = _assemble(cols, files, combos, benchmarks, errors)
    else:
        frame = _empty_frame(combos.names)
    machines = _machines_frame(asv_info, facts)
    return LoadedResults(root, frame, machines, errors, benchmarks, list(combos.names))


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
