"""Regression detection per series across commits, for a loader frame (``find_changes``) or a
plain matrix of series (``detect_matrix``).

Series (``detection_keys``): machine, environment *family* (``loader.env_family``), benchmark,
stored benchmark version and parameters: no step across asv versions, and a new environment
whose name differs only by its path or a hash continues its machine's history. Changes of
retired benchmarks (absent from benchmarks.json) and old versions are never open.

The method lives with its derivation where it is implemented:

- ``lnbench.report.steps``: steps 1-6 -- badness space, the run-to-run noise scale, the
  persistent robust lookback test (short runs and a 20-point run of new points), the split
  refined by a two-level L1 fit without isolated outliers, the re-derivation of every change
  (direction, ratio, z) from the final segments around it, and the "open" rule.
- ``lnbench.report.newest``: step 7 -- the newest point, when it has stored samples, judged
  at once (Mann–Whitney U of its samples *and* the run-to-run test of its value), and the
  Neyman–Pearson bound on what any such test can catch: ``Φ(s/σ − z_α)`` for a step ``s``
  in one run with run-to-run noise σ (below 90 % for 10 % steps at 3 % noise).
  Persistence (two points) for the rest.

Everything is vectorised over a (series × position) matrix; only flagged commits are looked at
one by one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report import metrics
from lnbench.report.newest import NEWEST, NewestConfig, newest_change, usable
from lnbench.report.steps import (
    ACCURACY,
    MIN_LEVEL_POINTS,
    SPEED,
    Change,
    DetectConfig,
    _badness,
    _change_points,
    _describe,
    _evidence,
    _final_steps,
    _window_median,
    noise_sigma,
)

__all__ = ["ACCURACY", "CHANGE_COLUMNS", "FRAME_COLUMNS", "MIN_LEVEL_POINTS", "NEWEST", "SPEED",
           "Change", "DetectConfig", "NewestConfig", "detect_matrix", "detection_keys",
           "find_changes", "noise_sigma", "series_columns"]

#: rows per block of the vectorised tests (their sliding-window copies stay ~10 MB)
BLOCK_ROWS = 64


def detect_matrix(
    y: np.ndarray, lengths: np.ndarray, higher: np.ndarray, cfg: DetectConfig = SPEED,
    samples: dict[int, list[Any]] | None = None, newest: NewestConfig | None = None,
) -> list[Change]:
    """Changes in each row of ``y`` (values left-aligned, ``lengths[s]`` valid per row).

    ``higher[s]`` is True where larger values are better. ``before``/``after`` of each change
    are medians of the raw values on each side of its final position (up to ``window``
    points each, within the neighbouring segments). ``samples[s]`` (optional): the raw
    samples of each point of row ``s`` (None where not stored); where the newest point has
    them, it is judged at once (``newest``, see :func:`lnbench.report.newest.newest_change`).
    See the module docstring for the method and its sources.
    """
    y = np.asarray(y, dtype=float)
    n_series, n = y.shape
    lengths = np.asarray(lengths)
    higher = np.asarray(higher, dtype=bool)
    if n_series == 0 or n == 0:
        return []
    b = _badness(y, higher, cfg)
    b[np.arange(n)[None, :] >= lengths[:, None]] = np.nan
    sig = noise_sigma(b)
    direction = np.zeros(b.shape, dtype=np.int8)
    run = np.zeros(b.shape, dtype=np.int16)
    for lo in range(0, n_series, BLOCK_ROWS):  # blocks of rows bound the window copies
        part = slice(lo, lo + BLOCK_ROWS)
        base, count = _window_median(b[part], cfg.window)  # only this block's baselines
        direction[part], run[part] = _evidence(b[part], base,
                                             np.broadcast_to(count, b[part].shape), sig[part],
                                             cfg)
    samples = samples or {}
    newest = newest or NEWEST

    changes: list[Change] = []
    flagged = set(np.nonzero(direction.any(axis=1))[0].tolist())
    for s in sorted(flagged | set(samples)):
        bs = b[s, : lengths[s]]
        cps: list[int] = []
        if s in flagged:
            cps = _change_points(bs, direction[s], run[s], float(sig[s]), cfg)
        steps = _final_steps(bs, cps, float(sig[s]), cfg)
        extra = None
        if s in samples and len(bs) > cfg.min_history:
            extra = newest_change(bs, steps, samples[s], higher[s], float(sig[s]), cfg, newest)
        changes.extend(_describe(int(s), y[s, : lengths[s]], bs, steps, cfg, extra))
    return changes




def series_columns(frame: pd.DataFrame, param_names: list[str] | None = None) -> list[str]:
    """Columns that identify one series: machine, env, benchmark and the parameter columns."""
    if param_names is None:
        param_names = [c for c in frame.columns if c not in FRAME_COLUMNS]
    return ["machine", "env", "benchmark", *param_names]


#: loader columns that are not parameters
FRAME_COLUMNS = {"machine", "commit", "commit_order", "date", "env", "benchmark", "metric",
                 "unit", "higher_is_better", "value", "status", "samples", "started_at",
                 "version_ok", "file", "ci_99_a", "ci_99_b", "q_25", "q_75", "number", "repeat",
                 "bench_version", "retired", "env_family", "noise_reason"}


def detection_keys(frame: pd.DataFrame, param_names: list[str] | None = None) -> list[str]:
    """Columns whose values make one detection series.

    Like :func:`series_columns`, but the environment is its family (``loader.env_family``:
    the name without its path or hash-like parts, plus the stored requirements), so a new
    environment of a known machine continues that machine's history, and the stored
    benchmark version is part of the key: a new version starts a new series, so no step is
    ever reported across versions.
    """
    keys = series_columns(frame, param_names)
    keys = ["env_family" if k == "env" and "env_family" in frame.columns else k for k in keys]
    if "bench_version" in frame.columns:
        keys.insert(keys.index("benchmark") + 1, "bench_version")
    return keys


CHANGE_COLUMNS = ["kind", "commit", "commit_order", "date", "prev_commit", "metric", "unit",
                  "before", "after", "ratio", "z", "n_before", "open", "newest", "p_value",
                  "retired", "old_version", "env_family"]


def find_changes(
    frame: pd.DataFrame,
    param_names: list[str] | None = None,
    speed: DetectConfig = SPEED,
    accuracy: DetectConfig = ACCURACY,
    newest: NewestConfig = NEWEST,
) -> pd.DataFrame:
    """Regressions and improvements in a loader frame, one row per detected change.

    Uses rows with ``status == "ok"`` (never ``noisy`` ones) and a finite value, per
    detection series (:func:`detection_keys`). Accuracy metrics (``rel_err``) use
    ``accuracy``; all others ``speed``. Columns: the series columns, then ``CHANGE_COLUMNS``;
    ``ratio = after / before`` in the metric's own units (for higher-is-better metrics a
    regression has ratio < 1). ``newest``: judged at the series' newest point from its
    samples; ``retired``: the benchmark is not in benchmarks.json any more; ``old_version``:
    the series is of a benchmark version benchmarks.json no longer holds. Changes of retired
    or old-version series are never open.
    """
    show = series_columns(frame, param_names)
    keys = detection_keys(frame, param_names)
    out_cols = show + CHANGE_COLUMNS
    if frame.empty:
        return pd.DataFrame(columns=out_cols)
    ok = frame["status"].eq("ok").to_numpy() & np.isfinite(frame["value"].to_numpy(float))
    # Work on column arrays and row positions of ``frame``: no copy of the frame (on a
    # django-size history two copies of it were most of the report's memory).
    rows = np.flatnonzero(ok)
    if not len(rows):
        return pd.DataFrame(columns=out_cols)
    sid = np.zeros(len(rows), dtype=np.int64)
    for k in keys:  # combine key codes, re-factorizing so the ids never overflow
        col = frame[k]
        code = (col.cat.codes.to_numpy()[rows].astype(np.int64) if isinstance(col.dtype,
                pd.CategoricalDtype) else pd.factorize(col.iloc[rows].astype(object).fillna(""))[0])
        sid = pd.factorize(sid * (int(code.max()) + 2) + code + 1, sort=False)[0]
    started = (frame["started_at"].to_numpy("datetime64[ns]").astype(np.int64)[rows]
               if "started_at" in frame else np.zeros(len(rows), np.int64))
    order = np.lexsort((started, frame["commit_order"].to_numpy()[rows], sid))
    del started, ok
    rows = rows[order]
    sid = sid[order]
    del order
    first = np.r_[0, np.flatnonzero(np.diff(sid)) + 1]
    lengths = np.diff(np.r_[first, len(sid)])
    pos = np.arange(len(sid)) - np.repeat(first, lengths)
    n_series = len(first)
    y = np.full((n_series, int(lengths.max())), np.nan)
    row_of = np.full((n_series, int(lengths.max())), -1,
                     dtype=np.int32 if len(frame) < 2**31 else np.int64)
    y[sid, pos] = frame["value"].to_numpy(float)[rows]
    row_of[sid, pos] = rows
    del sid, pos
    higher = frame["higher_is_better"].to_numpy(bool)[rows[first]]
    acc = np.array([metrics.is_accuracy(b)
                    for b in frame["benchmark"].iloc[rows[first]].to_numpy()])
    smp_col = frame["samples"].to_numpy() if "samples" in frame else None
    last_row = rows[first + lengths - 1]
    with_samples = (np.flatnonzero([usable(smp_col[r]) for r in last_row])
                    if smp_col is not None else np.zeros(0, dtype=np.int64))
    retired = (frame["retired"].to_numpy(bool) if "retired" in frame
               else np.zeros(len(frame), bool))
    old = (~frame["version_ok"].to_numpy(bool) if "version_ok" in frame
           else np.zeros(len(frame), bool))
    env_col = "env_family" if "env_family" in frame else "env"

    def at(col: str, r: int) -> Any:
        return frame[col].iat[r]

    records = []
    for mask, cfg in ((~acc, speed), (acc, accuracy)):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        local = {int(i): k for k, i in enumerate(idx)}
        smp = {local[int(s)]: list(smp_col[rows[first[s]:first[s] + lengths[s]]])
               for s in with_samples if int(s) in local} if cfg is speed else {}
        for ch in detect_matrix(y[idx], lengths[idx], higher[idx], cfg, smp, newest):
            s = idx[ch.series]
            r = row_of[s, ch.pos]
            prev = at("commit", row_of[s, ch.pos - 1]) if ch.pos > 0 else None
            gone, stale = bool(retired[r]), bool(old[r])
            rec = {k: at(k, r) for k in show}
            rec.update(
                kind=ch.kind, commit=at("commit", r), commit_order=int(at("commit_order", r)),
                date=at("date", r), prev_commit=prev, metric=at("metric", r), unit=at("unit", r),
                before=ch.before, after=ch.after,
                ratio=ch.after / ch.before if ch.before else math.inf,
                z=ch.z, n_before=ch.n_before, open=ch.open and not gone and not stale,
                newest=ch.newest, p_value=ch.p_value, retired=gone, old_version=stale,
                env_family=at(env_col, r),
            )
            records.append(rec)
    if not records:
        return pd.DataFrame(columns=out_cols)
    out = pd.DataFrame.from_records(records, columns=out_cols)
    return out.sort_values(["commit_order", "machine", "benchmark"], kind="stable").reset_index(
        drop=True
    )
