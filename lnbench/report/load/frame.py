"""The tidy frame assembled from the files read: one row per stored value.

Method. :class:`Collector` keeps, per kept file, only what cannot be shared: the file facts,
its :class:`~lnbench.report.load.layout.Layout`, and numpy arrays (values, status codes,
started times, version codes; statistics and samples only where the file stores them). The
frame is then built column by column, never row by row:

* per-file columns (machine, commit, env, environment family, file, date, commit order) are
  computed on the small table of files and spread to the rows with one ``take`` of the
  file index of each row (``numpy.repeat`` of the file lengths);
* per-benchmark and per-combination columns (benchmark, metric, unit, direction, retired,
  parameters) the same way, from the layouts' benchmark and combination codes;
* string columns are ``pandas.Categorical`` built by :func:`categorical` from the small table
  and the row codes, so about a million rows cost a byte or two each, not a Python string;
* columns no file stores (statistics, samples of a CI history) are one shared array of NaN
  (or None) -- ``pandas.DataFrame(..., copy=False)`` keeps each column as given, and with
  copy-on-write a later change of one column copies it first.

Times are milliseconds since 1970; whole milliseconds (what asv writes) are turned into
``datetime64[us, UTC]`` by integer arithmetic, anything else by ``pandas.to_datetime``, which
gives the same values either way. Commits are ordered by date here (the earliest commit date
of the commit's files, then the earliest ``started_at``, then the hash); the project's
first-parent order replaces that in ``lnbench.report.load.history``.

Stored values below their metric's lower bound (``metrics.lower_bound``: a time <= 0,
negative bytes or rel_err) become ``invalid``, one LoadError per file and benchmark.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report import metrics
from lnbench.report.load.envfamily import env_family
from lnbench.report.load.interference import NoisyPoints
from lnbench.report.load.jsonfile import LoadError, short_repr
from lnbench.report.load.layout import Combos, Layout
from lnbench.report.load.resultfile import STAT_KEYS, FileRead

#: row statuses, in the order of their codes
STATUSES = ("ok", "failed", "skipped", "invalid", "noisy")
NOISY = STATUSES.index("noisy")


def _small_int(n: int) -> type[np.signedinteger[Any]]:
    return np.int8 if n < 127 else np.int16 if n < 32_767 else np.int32


def categorical(small: Sequence[Any], codes: np.ndarray) -> pd.Categorical:
    """``small[codes]`` as a Categorical, factorizing only the small table (None -> NaN)."""
    labels = np.asarray([None if v is None else str(v) for v in small], dtype=object)
    present = np.fromiter((v is not None for v in labels), dtype=bool, count=len(labels))
    uniq, inv = np.unique(labels[present].astype(str), return_inverse=True)
    table = np.full(len(labels), -1, dtype=_small_int(len(uniq)))
    table[present] = inv
    return pd.Categorical.from_codes(table[codes] if len(codes) else codes, categories=uniq)


def utc_from_ms(ms: np.ndarray) -> pd.DatetimeIndex:
    """Milliseconds since 1970 (NaN: NaT) as UTC times, as ``pandas.to_datetime(ms,
    unit="ms", utc=True)`` gives them."""
    finite = np.isfinite(ms)
    whole = ms[finite]
    if not np.array_equal(whole, np.trunc(whole)):
        return pd.to_datetime(ms, unit="ms", utc=True)
    us = np.full(len(ms), np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    us[finite] = whole.astype(np.int64) * 1000
    return pd.DatetimeIndex(us.view("M8[us]")).tz_localize("UTC")


class Collector:
    """The kept files of a results folder, in the order read (see the module docstring)."""

    def __init__(self, combos: Combos) -> None:
        self.combos = combos
        self.files: list[dict[str, Any]] = []
        self.layouts: list[Layout] = []
        self.values: list[np.ndarray] = []
        self.status: list[np.ndarray] = []
        self.stats: list[np.ndarray | None] = []
        self.samples: list[list[Any] | None] = []
        self.started: list[np.ndarray] = []
        self.vcodes: list[np.ndarray] = []
        self.version_names: list[str | None] = []
        self._version_code: dict[str | None, int] = {}
        self.n_rows = 0

    def _version(self, value: Any) -> int:
        key = value if value is None or isinstance(value, str) else json.dumps(value)
        code = self._version_code.get(key)
        if code is None:
            code = self._version_code[key] = len(self.version_names)
            self.version_names.append(key)
        return code

    def add(self, fr: FileRead) -> None:
        """Keep a file read (by this process, or by a worker: then laid out again here)."""
        assert fr.rec is not None and fr.values is not None and fr.status is not None
        lay = fr.layout
        if lay is None or lay.owner is not self.combos:
            lay = self.combos.layout(fr.names, fr.params)
        self.combos.code(lay)
        if lay.vcodes is None or (fr.versions is not lay.versions
                                  and fr.versions != lay.versions):
            lay.vcodes = np.fromiter(map(self._version, fr.versions), dtype=np.int32,
                                     count=len(fr.versions))
            lay.versions = fr.versions
        self.files.append(fr.rec)
        self.layouts.append(lay)
        self.values.append(fr.values)
        self.status.append(fr.status)
        self.stats.append(fr.stats)
        self.samples.append(fr.samples)
        self.started.append(fr.started)
        self.vcodes.append(lay.vcodes)
        self.n_rows += len(fr.values)

    def row_starts(self) -> np.ndarray:
        """First row of each kept file, and the number of rows at the end."""
        return np.r_[0, np.cumsum([lay.total for lay in self.layouts])].astype(np.int64)


def _commit_order_by_date(files: pd.DataFrame) -> np.ndarray:
    """Rank of each file's commit: by commit date, then earliest started_at, then hash."""
    per_commit = files.groupby("commit", sort=False).agg(
        date=("date", "min"), started=("first_started", "min")
    )
    per_commit = per_commit.reset_index().sort_values(
        ["date", "started", "commit"], na_position="last", kind="stable"
    )
    rank = dict(zip(per_commit["commit"], range(len(per_commit)), strict=True))
    return files["commit"].map(rank).to_numpy(dtype=np.int64)


def _bound_text(benchmark: str, unit: str) -> str:
    bound = metrics.lower_bound(benchmark, unit)
    assert bound is not None
    return f"impossible for {unit} (must be {'>' if bound[1] else '>='} {bound[0]:g})"


def _impossible(values: np.ndarray, bench_of_row: np.ndarray, bench_names: list[str],
                unit_of: list[str]) -> np.ndarray:
    """Mask of finite values below their metric's lower bound (``metrics.lower_bound``)."""
    bounds = [metrics.lower_bound(b, u) for b, u in zip(bench_names, unit_of, strict=True)]
    lo = np.asarray([-np.inf if b is None else b[0] for b in bounds], dtype=float)
    strict = np.asarray([b is not None and b[1] for b in bounds], dtype=bool)
    if not np.isfinite(lo).any():
        return np.zeros(len(values), dtype=bool)
    lo_row, strict_row = lo[bench_of_row], strict[bench_of_row]
    with np.errstate(invalid="ignore"):
        return np.where(strict_row, values <= lo_row, values < lo_row) & np.isfinite(values)


def _impossible_errors(bad: np.ndarray, values: np.ndarray, col: Collector,
                       unit_of: list[str], errors: list[LoadError]) -> None:
    """One LoadError per (file, benchmark) holding values its metric cannot take."""
    lens = np.concatenate([lay.lens for lay in col.layouts])
    chunk_bench = np.concatenate([lay.bench for lay in col.layouts])
    chunk_file = np.repeat(np.arange(len(col.layouts)), [len(lay.lens) for lay in col.layouts])
    chunk_of_row = np.repeat(np.arange(len(lens)), lens)
    rows = np.flatnonzero(bad)  # ascending, so their chunks are too
    chunks, starts, counts = np.unique(chunk_of_row[rows], return_index=True, return_counts=True)
    for chunk, start, count in zip(chunks, starts, counts, strict=True):
        first = rows[start:start + min(count, 20)]
        shown = ", ".join(dict.fromkeys(short_repr(float(values[i]), 20) for i in first))
        code = chunk_bench[chunk]
        name = col.combos.bench_names[code]
        errors.append(LoadError(
            col.files[chunk_file[chunk]]["file"],
            f"{name}: {count} stored value(s) {_bound_text(name, unit_of[code])} "
            f"({shown}): not used"))


def _joined(parts: list[Any], starts: np.ndarray, n: int, fill: Any, dtype: Any
            ) -> np.ndarray:
    """Per-file arrays (None: ``fill``) joined into one row array."""
    out = np.full(n, fill, dtype=dtype)
    for k, part in enumerate(parts):
        if part is not None:
            out[starts[k]:starts[k + 1]] = part
    return out


def assemble(col: Collector, errors: list[LoadError], noisy: NoisyPoints | None = None
             ) -> pd.DataFrame:
    """The frame of everything in ``col`` (columns in ``lnbench.report.loader``).

    ``noisy``: the rows interference sidecars name noisy; those that are ok become
    ``noisy`` with their ``noise_reason``, and ``noisy.missing`` counts the points that
    matched no ok row."""
    combos, lays = col.combos, col.layouts
    starts = col.row_starts()
    n = col.n_rows
    file_of_row = np.repeat(np.arange(len(lays), dtype=np.int32), np.diff(starts))
    bench_of_row = np.concatenate([lay.bench_of_row for lay in lays])
    combo_of_row = np.concatenate([lay.ids for lay in lays])
    fdf = pd.DataFrame(col.files)

    def per_file(values: list[Any]) -> pd.Categorical:
        return categorical(values, file_of_row)

    frame: dict[str, Any] = {"machine": per_file(fdf["machine"].tolist()),
                             "commit": per_file(fdf["commit"].tolist())}
    frame["commit_order"] = _commit_order_by_date(fdf)[file_of_row]
    frame["date"] = utc_from_ms(fdf["date"].to_numpy(dtype=float)[file_of_row])
    frame["env"] = per_file(fdf["env"].tolist())
    names = combos.bench_names
    frame["benchmark"] = categorical(names, bench_of_row)
    for name in combos.names:
        frame[name] = categorical([r.get(name) for r in combos.rows], combo_of_row)

    meta = [combos.benchmarks.get(b, {}) for b in names]
    unit_of = [str(m.get("unit") or metrics.default_unit(b)) for b, m in zip(names, meta,
                                                                             strict=True)]
    hib_of = [metrics.higher_is_better(b, m or {"unit": u})
              for b, m, u in zip(names, meta, unit_of, strict=True)]
    frame["metric"] = categorical([metrics.method_name(b) for b in names], bench_of_row)
    frame["unit"] = categorical(unit_of, bench_of_row)
    frame["higher_is_better"] = np.asarray(hib_of, dtype=bool)[bench_of_row]

    values = np.concatenate(col.values)
    status = np.concatenate(col.status)
    col.values.clear()
    col.status.clear()
    impossible = _impossible(values, bench_of_row, names, unit_of)
    if impossible.any():
        _impossible_errors(impossible, values, col, unit_of, errors)
        values[impossible] = np.nan
        status[impossible] = STATUSES.index("invalid")
    reason = np.full(n, None, dtype=object)
    if noisy is not None:
        hit = status[noisy.rows] == 0
        status[noisy.rows[hit]] = NOISY
        reason[noisy.rows[hit]] = noisy.why[hit]
        noisy.missing = noisy.n_points - len(np.unique(noisy.point[hit]))
    frame["value"] = values
    frame["status"] = pd.Categorical.from_codes(status, categories=list(STATUSES))
    if all(s is None for s in col.stats):
        nan = np.full(n, np.nan)
        for key in STAT_KEYS:
            frame[key] = nan  # one shared array: pandas copies a column before changing it
    else:
        for j, key in enumerate(STAT_KEYS):
            frame[key] = _joined([None if s is None else s[j] for s in col.stats], starts, n,
                                 np.nan, float)
    col.stats.clear()
    if all(s is None for s in col.samples):
        frame["samples"] = reason if noisy is None else np.full(n, None, dtype=object)
    else:
        frame["samples"] = np.fromiter(
            itertools.chain.from_iterable(itertools.repeat(None, lay.total) if s is None else s
                                          for s, lay in zip(col.samples, lays, strict=True)),
            dtype=object, count=n)
    col.samples.clear()
    lens = np.concatenate([lay.lens for lay in lays])
    started = np.concatenate(col.started)
    frame["started_at"] = utc_from_ms(started if len(started) == n
                                      else np.repeat(started, lens))
    vcode = np.concatenate(col.vcodes)
    if len(vcode) != n:
        vcode = np.repeat(vcode, lens)
    frame["version_ok"] = _version_ok(col, meta, bench_of_row, vcode)
    frame["bench_version"] = categorical(col.version_names, vcode)
    known = bool(combos.benchmarks)
    frame["retired"] = np.asarray([known and b not in combos.benchmarks for b in names],
                                  dtype=bool)[bench_of_row]
    fam = [env_family(e, r) for e, r in zip(fdf["env"], fdf["requirements"], strict=True)]
    frame["env_family"] = per_file(fam)
    frame["noise_reason"] = reason
    frame["file"] = per_file(fdf["file"].tolist())
    return pd.DataFrame(frame, copy=False)


def _version_ok(col: Collector, meta: list[dict[str, Any]], bench_of_row: np.ndarray,
                vcode: np.ndarray) -> np.ndarray:
    """Per row: is the stored benchmark version the one benchmarks.json holds (or is
    either unknown)? asv itself ignores results of other versions when publishing."""
    current = [m.get("version") for m in meta]
    # the current version of each benchmark as a version code: -1 unknown, -2 never stored
    cur = np.asarray([-1 if v is None else col._version_code.get(v, -2) if isinstance(v, str)
                      else -2 for v in current], dtype=np.int64)
    stored_none = np.asarray([v is None for v in col.version_names], dtype=bool)
    cur_row = cur[bench_of_row]
    return (cur_row == -1) | (cur_row == vcode) | stored_none[vcode]


def empty_frame(param_names: list[str]) -> pd.DataFrame:
    """The frame of a folder without results: every column, no rows."""
    cols = ["machine", "commit", "commit_order", "date", "env", "benchmark", *param_names,
            "metric", "unit", "higher_is_better", "value", "status", *STAT_KEYS, "samples",
            "started_at", "version_ok", "bench_version", "retired", "env_family",
            "noise_reason", "file"]
    return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
