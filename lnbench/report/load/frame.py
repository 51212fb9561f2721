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

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report import metrics
from lnbench.report.load.collect import Collector, Growing
from lnbench.report.load.envfamily import env_family
from lnbench.report.load.interference import NoisyPoints
from lnbench.report.load.jsonfile import LoadError, short_repr
from lnbench.report.load.resultfile import STAT_KEYS

#: row statuses, in the order of their codes
STATUSES = ("ok", "failed", "skipped", "invalid", "noisy")
NOISY = STATUSES.index("noisy")
_BLOCK = 1 << 16


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


def utc_from_ms(ms: np.ndarray, repeats: np.ndarray | None = None) -> pd.DatetimeIndex:
    """Milliseconds since 1970 (NaN: NaT) as UTC times, each repeated ``repeats`` times, as
    ``pandas.to_datetime(np.repeat(ms, repeats), unit="ms", utc=True)`` gives them: whole
    milliseconds by integer arithmetic in blocks (no temporary as long as the rows but the
    result), anything else by pandas."""
    us = np.empty(len(ms), dtype=np.int64)
    for i in range(0, len(ms), _BLOCK):
        block = ms[i:i + _BLOCK]
        ok = np.isfinite(block)
        whole = block[ok]
        if not np.array_equal(whole, np.trunc(whole)):
            del us
            return pd.to_datetime(ms if repeats is None else np.repeat(ms, repeats),
                                  unit="ms", utc=True)
        out = us[i:i + _BLOCK]
        out[:] = np.iinfo(np.int64).min  # NaT
        out[ok] = whole.astype(np.int64) * 1000
    if repeats is not None:
        us = np.repeat(us, repeats)
    return pd.DatetimeIndex(us.view("M8[us]"), copy=False).tz_localize("UTC")


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
    """Mask of finite values below their metric's lower bound (``metrics.lower_bound``),
    one pass per distinct bound."""
    bounds = [metrics.lower_bound(b, u) for b, u in zip(bench_names, unit_of, strict=True)]
    bad = np.zeros(len(values), dtype=bool)
    for bound in {b for b in bounds if b is not None}:
        lo, strict = bound
        has = np.asarray([b == bound for b in bounds], dtype=bool)[bench_of_row]
        with np.errstate(invalid="ignore"):
            below = values <= lo if strict else values < lo  # NaN compares False
        bad |= below & has
    return bad


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


def assemble(col: Collector, errors: list[LoadError], noisy: NoisyPoints | None = None
             ) -> pd.DataFrame:
    """The frame of everything in ``col`` (columns in ``lnbench.report.loader``).

    ``noisy``: the rows interference sidecars name noisy; those that are ok become
    ``noisy`` with their ``noise_reason``, and ``noisy.missing`` counts the points that
    matched no ok row."""
    combos, lays = col.combos, col.layouts
    n = col.n_rows
    rows_of_file = np.fromiter((lay.total for lay in lays), dtype=np.int64, count=len(lays))
    fdf = pd.DataFrame(col.files)
    out: dict[str, Any] = {}
    # the longest temporaries first, while least is held; each buffer is let go once used
    single = all(lay.single for lay in lays)  # one row per entry
    out["started_at"] = utc_from_ms(col.started.array(), None if single else
                                    np.concatenate([lay.lens for lay in lays]))
    col.started = Growing(np.float64, 0)
    out["date"] = utc_from_ms(fdf["date"].to_numpy(dtype=float), rows_of_file)

    def per_file(values: list[Any]) -> pd.Categorical:
        cat = categorical(values, np.arange(len(values)))
        return pd.Categorical.from_codes(np.repeat(cat.codes, rows_of_file), dtype=cat.dtype)

    for key in ("machine", "commit", "env", "file"):
        out[key] = per_file(fdf[key].tolist())
    out["env_family"] = per_file([env_family(e, r) for e, r in zip(
        fdf["env"], fdf["requirements"], strict=True)])
    out["commit_order"] = np.repeat(_commit_order_by_date(fdf), rows_of_file)
    combo_of_row = np.concatenate([lay.ids for lay in lays])
    for name in combos.names:
        out[name] = categorical([r.get(name) for r in combos.rows], combo_of_row)
    del combo_of_row
    names = combos.bench_names
    meta = [combos.benchmarks.get(b, {}) for b in names]
    vcode, out["version_ok"] = _versions(col, meta)
    out["bench_version"] = categorical(col.version_names, vcode)
    del vcode

    bench_of_row = np.concatenate([lay.bench_of_row for lay in lays])
    out["benchmark"] = categorical(names, bench_of_row)
    unit_of = [str(m.get("unit") or metrics.default_unit(b)) for b, m in zip(names, meta,
                                                                             strict=True)]
    hib_of = [metrics.higher_is_better(b, m or {"unit": u})
              for b, m, u in zip(names, meta, unit_of, strict=True)]
    out["metric"] = categorical([metrics.method_name(b) for b in names], bench_of_row)
    out["unit"] = categorical(unit_of, bench_of_row)
    out["higher_is_better"] = np.asarray(hib_of, dtype=bool)[bench_of_row]
    known = bool(combos.benchmarks)
    out["retired"] = np.asarray([known and b not in combos.benchmarks for b in names],
                                dtype=bool)[bench_of_row]
    values = col.values.array()
    status = col.status.array()
    impossible = _impossible(values, bench_of_row, names, unit_of)
    del bench_of_row
    if impossible.any():
        _impossible_errors(impossible, values, col, unit_of, errors)
        values[impossible] = np.nan
        status[impossible] = STATUSES.index("invalid")
    del impossible
    # object columns as Series of dtype object: pandas would otherwise infer their type,
    # with temporaries of 24 bytes a row
    reason = np.full(n, None, dtype=object)
    if noisy is not None:
        hit = status[noisy.rows] == 0
        status[noisy.rows[hit]] = NOISY
        reason[noisy.rows[hit]] = noisy.why[hit]
        noisy.missing = noisy.n_points - len(np.unique(noisy.point[hit]))
    out["value"] = values
    out["status"] = pd.Categorical.from_codes(status, categories=list(STATUSES))
    if col.stats is None:
        nan = np.full(n, np.nan)
        for key in STAT_KEYS:
            out[key] = nan  # one shared array: pandas copies a column before changing it
    else:
        for key, grown in zip(STAT_KEYS, col.stats, strict=True):
            out[key] = grown.array()
    # (reasons, where there are any, become pandas' string dtype as pandas infers it)
    out["noise_reason"] = (reason if noisy is not None and noisy.missing < noisy.n_points
                           else pd.Series(reason, dtype=object, copy=False))
    out["samples"] = (pd.Series(col.samples.array(), dtype=object, copy=False)
                      if col.samples is not None
                      else out["noise_reason"] if noisy is None
                      else pd.Series(np.full(n, None, dtype=object), dtype=object, copy=False))
    return pd.DataFrame({c: out[c] for c in _columns(combos.names)}, copy=False)


def _columns(param_names: list[str]) -> list[str]:
    """The frame's columns, in order."""
    return ["machine", "commit", "commit_order", "date", "env", "benchmark", *param_names,
            "metric", "unit", "higher_is_better", "value", "status", *STAT_KEYS, "samples",
            "started_at", "version_ok", "bench_version", "retired", "env_family",
            "noise_reason", "file"]


def _versions(col: Collector, meta: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the stored version's code, and whether it is the version benchmarks.json
    holds (or either is unknown; asv itself ignores results of other versions when
    publishing). Worked out once per layout and list of version codes, then joined."""
    current = [m.get("version") for m in meta]
    # the current version of each benchmark as a version code: -1 unknown, -2 never stored
    cur = np.asarray([-1 if v is None else col.version_code.get(v, -2) if isinstance(v, str)
                      else -2 for v in current], dtype=np.int64)
    stored_none = np.asarray([v is None for v in col.version_names], dtype=bool)
    done: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    codes, oks = [], []
    for lay, vcodes in zip(col.layouts, col.vcodes, strict=True):
        key = (id(lay), id(vcodes))
        hit = done.get(key)
        if hit is None:
            assert lay.bench is not None
            ok = (cur[lay.bench] == -1) | (cur[lay.bench] == vcodes) | stored_none[vcodes]
            hit = done[key] = (np.repeat(vcodes, lay.lens), np.repeat(ok, lay.lens))
        codes.append(hit[0])
        oks.append(hit[1])
    return np.concatenate(codes), np.concatenate(oks)


def empty_frame(param_names: list[str]) -> pd.DataFrame:
    """The frame of a folder without results: every column, no rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in _columns(param_names)})
