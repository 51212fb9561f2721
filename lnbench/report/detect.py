"""Regression detection per series across commits: a persistent robust lookback test.

Method (``detect_matrix``), on each series (one machine, environment, benchmark and parameter
combination, in commit order, missing commits skipped):

1. Work in "badness" space: ``b = log(value)`` for lower-is-better metrics and ``-log(value)``
   for higher-is-better ones, so a regression is always an upward step and a ratio threshold
   is an additive one. Values below ``abs_floor / min_ratio`` are raised to it, which makes
   "at least ``min_ratio`` times the old value *and* above ``abs_floor``" one condition
   (used for accuracy: rel_err ≥ 2× and > 1e-6).
2. Noise scale ``sigma``: a trimmed variance of first differences over the whole series
   (robust to outliers, and a step spoils only one difference; ``noise_sigma``); a
   run-to-run, not within-run, noise estimate -- within-run CIs (what ``asv compare`` uses)
   underestimate CI-runner noise, the cause of asv's 11–30 % false positives on GPU runners.
3. Baseline at commit ``t``: the median of the previous ``window`` points of the current
   segment (a lookback window as in conbench's lookback z-score, which uses up to 100
   ancestors and z = 5; at least ``min_history`` points).
4. ``t`` is a change point when the next ``persistence`` points (``t`` included) *all* lie
   past the baseline by the factor ``min_ratio`` -- PyTorch HUD's "2+ consecutive points past
   the threshold", with asv's factor idea (asv compare 1.1, asv publish 0.05) -- *and* their
   mean is ``z`` standard errors past it (``se = sigma · sqrt(1/P + π/(2n))``, the error of a
   P-point mean minus an n-point median).
5. The first flagged commit of a run starts a new segment: later baselines use only points
   from the new segment, so one step is reported once and a later revert is seen as the
   opposite change.

A regression is "open" while the series' latest level (median of the final segment's last
``window`` points) is still past ``min_ratio`` of the regression's baseline -- the semantics of
``asv publish``'s regressions page, which lists only jumps still visible at the latest commit.

Everything is vectorised over a (series × position) matrix; only flagged commits are looked at
one by one. ``find_changes`` wraps it for the tidy frame of ``lnbench.report.loader``.
"""

from __future__ import annotations

import heapq
import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from lnbench.report import metrics


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds of the detector (see the module docstring for the method)."""

    window: int = 20
    persistence: int = 2
    span: int = 7
    min_ratio: float = 1.05
    z: float = 4.0
    min_history: int = 3
    abs_floor: float = 0.0


#: Speed, memory and bandwidth metrics.
SPEED = DetectConfig()
#: Relative-error metrics: ≥ 2× and above 1e-6; results are deterministic, so one point is
#: enough and no noise test is applied.
ACCURACY = DetectConfig(persistence=1, span=1, min_ratio=2.0, z=0.0, min_history=1, abs_floor=1e-6)


@dataclass(frozen=True)
class Change:
    """One detected step: series row, first position at the new level, direction."""

    series: int
    pos: int
    kind: str  # "regression" | "improvement"
    before: float
    after: float
    z: float
    n_before: int
    open: bool


def _badness(y: np.ndarray, higher: np.ndarray, cfg: DetectConfig) -> np.ndarray:
    floor = cfg.abs_floor / cfg.min_ratio if cfg.abs_floor > 0 else 1e-300
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.log(np.maximum(y, floor))
    return np.where(higher[:, None], -b, b)


def _window_median(b: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of b[s, t-window:t] for every t, and the count of points it used."""
    s, n = b.shape
    padded = np.concatenate([np.full((s, window), np.nan), b], axis=1)
    win = np.sort(sliding_window_view(padded, window, axis=1)[:, :n], axis=2)
    count = np.minimum(np.arange(n), window)
    # the NaN padding sorts to the end: the c valid values are the first c of each window
    lo = np.maximum((count - 1) // 2, 0)
    hi = count // 2
    idx = np.arange(n)
    med = 0.5 * (win[:, idx, np.minimum(lo, window - 1)] + win[:, idx, np.minimum(hi, window - 1)])
    med[:, count == 0] = np.nan
    return med, count


def noise_sigma(b: np.ndarray, keep: float = 0.8) -> np.ndarray:
    """Robust run-to-run noise scale per row, from first differences.

    ``sigma² = mean(Δb² over the smallest `keep` share of |Δb|) / (2 · c)``, with ``c`` the
    variance share a normal distribution keeps when trimmed to its central ``keep`` mass
    (a trimmed variance estimate: a step spoils one difference and an outlier two, both
    trimmed away; about 25 % less scatter than the MAD of differences on 60 points).
    """
    d = np.abs(np.diff(b, axis=1))
    zq = NormalDist().inv_cdf(0.5 + keep / 2)
    share = 1 - 2 * zq * math.exp(-zq * zq / 2) / math.sqrt(2 * math.pi) / keep
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: too short
        q = np.nanquantile(d, keep, axis=1, keepdims=True)
        var = np.nanmean(np.where(d <= q, d * d, np.nan), axis=1) / (2 * share)
    return np.nan_to_num(np.sqrt(var), nan=0.0)


def _evidence(
    b: np.ndarray, base: np.ndarray, count: np.ndarray, sig: np.ndarray, cfg: DetectConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Test every position against its baseline: (direction ±1/0, z).

    Position ``t`` is flagged up when the first ``persistence`` points from ``t`` are all at
    least ``min_ratio`` past ``base`` and, for some ``k`` in ``persistence..span``, the location
    of the first ``k`` points (their median; for ``k <= 2`` the point nearer the baseline) is
    past ``min_ratio`` and ``z`` standard errors past ``base``.
    Incomplete windows (the series ends) compare as NaN and never flag.
    """
    n_series, n = b.shape
    span = max(cfg.span, cfg.persistence)
    thr = math.log(cfg.min_ratio)
    win = sliding_window_view(
        np.concatenate([b, np.full((n_series, span - 1), np.nan)], axis=1), span, axis=1
    )[:, :n]
    direction = np.zeros((n_series, n), dtype=np.int8)
    zbest = np.zeros((n_series, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        first = win[:, :, : cfg.persistence]
        ok = count >= cfg.min_history
        up_p = ok & (first.min(axis=2) - base >= thr)
        down_p = ok & (base - first.max(axis=2) >= thr)
        for k in range(cfg.persistence, span + 1):
            # location of the k new points, robust to one outlier: the median for k >= 3;
            # for k <= 2 the nearer point to the baseline, tested like a single point
            pts = win[:, :, :k]
            if k >= 3:
                ex = np.median(pts, axis=2) - base
                var = math.pi / (2 * k)
            else:
                ex = np.where(pts.min(axis=2) - base >= 0, pts.min(axis=2), pts.max(axis=2))
                ex = ex - base
                var = 1.0
            se = sig[:, None] * np.sqrt(var + np.pi / (2 * np.maximum(count, 1)))
            zk = np.where(se > 0, ex / np.where(se > 0, se, 1.0), np.sign(ex) * np.inf)
            up = up_p & (ex >= thr) & (zk >= cfg.z)
            down = down_p & (-ex >= thr) & (-zk >= cfg.z)
            new = (direction == 0) & (up | down)
            direction[new] = np.where(up, 1, -1)[new]
            zbest[new] = zk[new]
    return direction, zbest


def _segment_baseline(bs: np.ndarray, seg: int, cfg: DetectConfig) -> tuple[np.ndarray, ...]:
    """Baselines for the positions whose lookback window would cross segment start ``seg``."""
    n = len(bs)
    base = np.full(n, np.nan)
    count = np.zeros(n, dtype=np.int64)
    for u in range(seg + cfg.min_history, min(seg + cfg.window, n)):
        pts = bs[max(seg, u - cfg.window):u]
        base[u] = np.median(pts)
        count[u] = len(pts)
    return base, count


def _refine(bs: np.ndarray, t: int, seg: int, cfg: DetectConfig) -> int:
    """Best split near ``t``: the least L1 error of a two-level fit (asv's Potts cost, local).

    The first flagged commit lags the step when noisy points sit at it; the split within
    ``span`` commits that minimises Σ|b − median| on both sides is kept.
    """
    reach = max(cfg.span, 2)
    lo = max(seg, t - cfg.window)
    hi = min(len(bs), t + reach + cfg.span)
    best, best_cost = t, math.inf
    for c in range(max(lo + cfg.min_history, t - reach), min(t + reach, hi - 1) + 1):
        left, right = bs[lo:c], bs[c:hi]
        cost = np.abs(left - np.median(left)).sum() + np.abs(right - np.median(right)).sum()
        if cost < best_cost - 1e-12 or (c == t and cost <= best_cost + 1e-12):
            best, best_cost = c, cost
    return best


def detect_matrix(
    y: np.ndarray, lengths: np.ndarray, higher: np.ndarray, cfg: DetectConfig = SPEED
) -> list[Change]:
    """Changes in each row of ``y`` (values left-aligned, ``lengths[s]`` valid per row).

    ``higher[s]`` is True where larger values are better. ``before``/``after`` of each change
    are medians of the raw values: the baseline window, and the new segment (up to ``window``
    points). See the module docstring for the method and its sources.
    """
    y = np.asarray(y, dtype=float)
    n_series, n = y.shape
    lengths = np.asarray(lengths)
    higher = np.asarray(higher, dtype=bool)
    if n_series == 0 or n == 0:
        return []
    b = _badness(y, higher, cfg)
    b = np.where(np.arange(n)[None, :] < lengths[:, None], b, np.nan)
    sig = noise_sigma(b)
    base, count = _window_median(b, cfg.window)
    direction, z = _evidence(b, base, np.broadcast_to(count, b.shape), sig, cfg)

    changes: list[Change] = []
    for s in np.nonzero(direction.any(axis=1))[0]:
        bs = b[s, : lengths[s]]
        todo = np.nonzero(direction[s])[0].tolist()  # sorted: already a heap
        queued = set(todo)
        local: dict[int, tuple[int, float, float, int]] = {}
        seg = -1
        cps: list[tuple[int, int, float, int, float]] = []
        while todo:
            t = heapq.heappop(todo)
            if t < seg + cfg.min_history:
                continue
            if t in local:  # lookback window crosses the last change point
                d, zt, bt, nt = local[t]
            else:
                d, zt, bt, nt = int(direction[s, t]), float(z[s, t]), float(base[s, t]), count[t]
            if not d:
                continue
            refined = _refine(bs, t, max(seg, 0), cfg)
            if refined != t:
                t = refined
                nt = min(t - max(seg, 0), cfg.window)
                bt = float(np.median(bs[t - nt:t]))
            cps.append((t, d, zt, int(nt), bt))
            seg = t
            # re-test the commits whose window crosses the new segment start
            sb, sc = _segment_baseline(bs, seg, cfg)
            sd, sz = _evidence(bs[None, :], sb[None, :], sc[None, :], sig[s:s + 1], cfg)
            local = {u: (int(sd[0, u]), float(sz[0, u]), float(sb[u]), int(sc[u]))
                     for u in range(seg + cfg.min_history, min(seg + cfg.window, len(bs)))}
            for u, (du, *_rest) in local.items():
                if du and u not in queued:
                    queued.add(u)
                    heapq.heappush(todo, u)
        changes.extend(_describe(int(s), y[s, : lengths[s]], bs, cps, cfg))
    return changes


def _describe(
    s: int, ys: np.ndarray, bs: np.ndarray, cps: list[tuple[int, int, float, int, float]],
    cfg: DetectConfig,
) -> list[Change]:
    out = []
    starts = [c[0] for c in cps] + [len(ys)]
    last_seg = bs[max(starts[-2], len(bs) - cfg.window):] if cps else bs
    latest = float(np.median(last_seg))
    thr = math.log(cfg.min_ratio)
    for i, (t, direction, zt, nt, base_b) in enumerate(cps):
        lo = starts[i - 1] if i else 0
        before = float(np.median(ys[max(lo, t - nt):t]))
        after = float(np.median(ys[t:min(starts[i + 1], t + cfg.window)]))
        still = (latest - base_b) * direction >= thr
        kind = "regression" if direction > 0 else "improvement"
        out.append(Change(int(s), int(t), kind, before, after, float(zt), int(nt), bool(still)))
    return out


def series_columns(frame: pd.DataFrame, param_names: list[str] | None = None) -> list[str]:
    """Columns that identify one series: machine, env, benchmark and the parameter columns."""
    if param_names is None:
        known = {"machine", "commit", "commit_order", "date", "env", "benchmark", "metric",
                 "unit", "higher_is_better", "value", "status", "samples", "started_at",
                 "version_ok", "file", "ci_99_a", "ci_99_b", "q_25", "q_75", "number", "repeat"}
        param_names = [c for c in frame.columns if c not in known]
    return ["machine", "env", "benchmark", *param_names]


CHANGE_COLUMNS = ["kind", "commit", "commit_order", "date", "prev_commit", "metric", "unit",
                  "before", "after", "ratio", "z", "n_before", "open"]


def find_changes(
    frame: pd.DataFrame,
    param_names: list[str] | None = None,
    speed: DetectConfig = SPEED,
    accuracy: DetectConfig = ACCURACY,
) -> pd.DataFrame:
    """Regressions and improvements in a loader frame, one row per detected change.

    Uses rows with ``status == "ok"``, a finite value and a current benchmark version.
    Accuracy metrics (``rel_err``) use ``accuracy``; all others ``speed``. Columns: the series
    columns, then ``CHANGE_COLUMNS``; ``ratio = after / before`` in the metric's own units
    (for higher-is-better metrics a regression has ratio < 1).
    """
    keys = series_columns(frame, param_names)
    out_cols = keys + CHANGE_COLUMNS
    if frame.empty:
        return pd.DataFrame(columns=out_cols)
    ok = frame["status"].eq("ok").to_numpy() & np.isfinite(frame["value"].to_numpy(float))
    if "version_ok" in frame:
        ok &= frame["version_ok"].to_numpy(bool)
    df = frame.loc[ok, [*keys, "commit", "commit_order", "date", "metric", "unit",
                        "higher_is_better", "value"]]
    if df.empty:
        return pd.DataFrame(columns=out_cols)
    sid = np.zeros(len(df), dtype=np.int64)
    for k in keys:  # combine key codes, re-factorizing so the ids never overflow
        code = pd.factorize(df[k].astype(object).fillna(""), sort=False)[0]
        sid = pd.factorize(sid * (int(code.max()) + 1) + code, sort=False)[0]
    order = np.lexsort((df["commit_order"].to_numpy(), sid))
    df = df.iloc[order]
    sid = sid[order]
    first = np.r_[0, np.flatnonzero(np.diff(sid)) + 1]
    lengths = np.diff(np.r_[first, len(sid)])
    pos = np.arange(len(sid)) - np.repeat(first, lengths)
    n_series = len(first)
    y = np.full((n_series, int(lengths.max())), np.nan)
    row_of = np.full((n_series, int(lengths.max())), -1, dtype=np.int64)
    y[sid, pos] = df["value"].to_numpy(float)
    row_of[sid, pos] = np.arange(len(df))
    higher = df["higher_is_better"].to_numpy(bool)[first]
    acc = np.array([metrics.is_accuracy(b) for b in df["benchmark"].to_numpy()[first]])

    records = []
    for mask, cfg in ((~acc, speed), (acc, accuracy)):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        for ch in detect_matrix(y[idx], lengths[idx], higher[idx], cfg):
            s = idx[ch.series]
            row = df.iloc[row_of[s, ch.pos]]
            prev = df.iloc[row_of[s, ch.pos - 1]]["commit"] if ch.pos > 0 else None
            rec = {k: row[k] for k in keys}
            rec.update(
                kind=ch.kind, commit=row["commit"], commit_order=int(row["commit_order"]),
                date=row["date"], prev_commit=prev, metric=row["metric"], unit=row["unit"],
                before=ch.before, after=ch.after,
                ratio=ch.after / ch.before if ch.before else math.inf,
                z=ch.z, n_before=ch.n_before, open=ch.open,
            )
            records.append(rec)
    if not records:
        return pd.DataFrame(columns=out_cols)
    out = pd.DataFrame.from_records(records, columns=out_cols)
    return out.sort_values(["commit_order", "machine", "benchmark"], kind="stable").reset_index(
        drop=True
    )
