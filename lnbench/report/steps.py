"""Step detection on one badness matrix: the persistent robust lookback test and the
re-derivation of every change from the segments around it (``lnbench.report.detect`` runs it).

Method, on each series (a row of values in commit order, missing commits skipped):

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
   the threshold", with asv's factor idea (asv compare 1.1, asv publish 0.05) -- *and* the
   location of the next ``k`` points, for some ``k`` in ``persistence..span`` or
   ``k = lookahead``, is ``z`` standard errors past it (``se = σ·sqrt(v(k) + π/(2n))``, the
   error of a k-point location minus an n-point median). The long run (``lookahead`` = 20,
   as many points as step 6 tests) catches every sustained step that step 6 would confirm,
   also where σ is overestimated: σ from 59 differences scatters by ±12 % (5–95 %: 0.8–1.22σ
   on 3 %-noise histories, up to 1.35σ with outliers), and the short runs alone missed 2–5 %
   of 10 % steps at 3 % noise that way.
5. The first flagged commit of a run is moved to the best split from ``span`` commits before
   it to as many after it as the run of points that flagged it (``_refine``): the least L1
   error of a two-level fit over up to ``context`` = 60 points before it -- asv's Potts
   cost, locally -- over the points that are not isolated outliers (``_inliers``: more than
   ``CLIP`` = 4 σ from the running median of 5 and from the levels of the 3 points on each
   side, so an excursion of one or two points; ties ranked with all points). An outlier
   just before a step otherwise pulls the split onto itself (one above the new level costs
   ``|δ|`` less on the new side). Never fewer than ``persistence`` points after the split;
   it starts a new segment: later baselines use only points from the new segment, so one
   step is reported once and a later revert is seen as the opposite change.
   Measured with ``scripts/bench-report --quick --no-asv --series 3000 --seed 123``: series
   with a 10 % step at 3 % noise found more than 2 commits off, 0.4 % (0.5 % with the
   previous ``context`` 20 and ``CLIP`` 3), with 2 % outliers 0.9 % (1.1 %); 5 % steps 3.0 %
   and 2.5 % (3.4 % and 2.8 %). Two more draws of 3,000 from the same generator: 0.37–0.63 %
   (0.63–0.93 %), and 1.03–1.17 % (1.10–1.27 %) with outliers, where a least-squares split
   told which points are outliers misplaces 0.57 %. A screen at 3 σ also drops ordinary
   points, and in the misplaced histories one dropped next to the step had moved the split;
   a longer context locates the old level better.
   *Measured and not used:* least squares over the same points (no better there), and the
   bounded biweight loss ``Σ min(r², max((3σ)², (δ/2)²))`` (Fearnhead & Rigaill,
   "Changepoint detection in the presence of outliers", JASA 114 (2019) 169–183), which on
   those histories brought the 2 %-outlier cell to 0.80–0.93 %, but on kedro's real
   history (GitHub runners whose timings switch between two or three speed modes) raised
   the open regressions from 11 to 24 (31 with ``context`` 20); the new ones looked at were
   switches between modes: a squared loss weighs the points of another mode far more than
   L1 does.
6. Re-derivation (``_final_steps``): every split is re-fitted between its final neighbours
   and re-tested on the segments around it -- medians of up to ``window`` points on each side,
   ``min_ratio`` and ``z`` apart with ``se = σ·sqrt(v(n_b) + v(n_a))`` (``v(n) = π/(2n)``,
   ``1/n`` for n ≤ 2); a segment inside the history needs ``MIN_LEVEL_POINTS`` points, the
   final one ``persistence`` (then each past the threshold). The weakest failing change is
   dropped and the rest re-tested until all hold (the merge step of asv's ``step_detect``).
   Direction, before, after, ratio and z come from this test only, never from the first
   flag -- the first flag's direction, kept after the split moved, was wrong on real
   histories (django, photutils).

Where a change can be located: even with both levels known, the least-squares split of a
step of δ = 1.6 σ (5 % at 3 % noise) lies more than 2 commits off in 12 % of histories, of
δ = 3.2 σ (10 %) in 0.3 % (``lnbench.report.evaluate.location_error``); a step found that far
off counts as a false alarm in the evaluation.

A change is "open" (``_describe``) while no later segment came back to within ``min_ratio``
of its "before" level and the latest robust level (median of the last ``window`` points of the
newest segment with ≥ ``MIN_LEVEL_POINTS`` points; a shorter final segment must agree) is still
past ``min_ratio`` of it -- the semantics of ``asv publish``'s regressions page, which lists
only jumps still visible at the latest commit, without trusting a 2-point level.
"""

from __future__ import annotations

import heapq
import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


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
    lookahead: int = 20
    #: points before a split (and after, when re-fitted) that locate it
    context: int = 60


#: Speed, memory and bandwidth metrics.
SPEED = DetectConfig()
#: Relative-error metrics: ≥ 2× and above 1e-6; results are deterministic, so one point is
#: enough and no noise test is applied.
ACCURACY = DetectConfig(persistence=1, span=1, min_ratio=2.0, z=0.0, min_history=1,
                        abs_floor=1e-6, lookahead=1)


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
    newest: bool = False  # judged at the newest point from its samples
    p_value: float | None = None  # Mann–Whitney U p of that test


def _badness(y: np.ndarray, higher: np.ndarray, cfg: DetectConfig) -> np.ndarray:
    floor = cfg.abs_floor / cfg.min_ratio if cfg.abs_floor > 0 else 1e-300
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.maximum(y, floor)  # the one new matrix: log and sign in place (NaN stays NaN)
        np.log(b, out=b)
    b[higher] *= -1
    return b


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
    """Test every position against its baseline: (direction ±1/0, the number ``k`` of new
    points whose location flagged it).

    Position ``t`` is flagged up when the first ``persistence`` points from ``t`` are all at
    least ``min_ratio`` past ``base`` and, for some ``k`` in ``persistence..span`` or
    ``k = lookahead``, the location of the first ``k`` points (their median; for ``k <= 2``
    the point nearer the baseline) is past ``min_ratio`` and ``z`` standard errors past
    ``base``. The short runs catch a step soon after it; the long one (as many points as the
    final test of :func:`_test_split` uses) catches every step that test would confirm, also
    where a noise estimate above the truth hides it from the short ones.
    Incomplete windows (the series ends) compare as NaN and never flag.
    """
    n_series, n = b.shape
    span = max(cfg.span, cfg.persistence)
    ks = list(range(cfg.persistence, span + 1))
    if cfg.lookahead > span:
        ks.append(cfg.lookahead)
    width = ks[-1]
    thr = math.log(cfg.min_ratio)
    win = sliding_window_view(
        np.concatenate([b, np.full((n_series, width - 1), np.nan)], axis=1), width, axis=1
    )[:, :n]
    direction = np.zeros((n_series, n), dtype=np.int8)
    run = np.zeros((n_series, n), dtype=np.int16)
    with np.errstate(invalid="ignore", divide="ignore"):
        first = win[:, :, : cfg.persistence]
        ok = count >= cfg.min_history
        up_p = ok & (first.min(axis=2) - base >= thr)
        down_p = ok & (base - first.max(axis=2) >= thr)
        # only positions whose first `persistence` points are all past min_ratio can flag:
        # the location tests run on those alone (most positions of a flat series are not)
        at = np.nonzero(up_p | down_p)
        if not len(at[0]):
            return direction, run
        w, bc, up_p, down_p = win[at], base[at], up_p[at], down_p[at]
        cnt, sc = np.broadcast_to(count, (n_series, n))[at], sig[at[0]]
        dirc = np.zeros(len(bc), dtype=np.int8)
        runc = np.zeros(len(bc), dtype=np.int16)
        for k in ks:
            # location of the k new points, robust to one outlier: the median for k >= 3;
            # for k <= 2 the nearer point to the baseline, tested like a single point
            pts = w[:, :k]
            if k >= 3:
                ex = np.median(pts, axis=1) - bc
                var = math.pi / (2 * k)
            else:
                ex = np.where(pts.min(axis=1) - bc >= 0, pts.min(axis=1), pts.max(axis=1))
                ex = ex - bc
                var = 1.0
            se = sc * np.sqrt(var + np.pi / (2 * np.maximum(cnt, 1)))
            zk = np.where(se > 0, ex / np.where(se > 0, se, 1.0), np.sign(ex) * np.inf)
            up = up_p & (ex >= thr) & (zk >= cfg.z)
            down = down_p & (-ex >= thr) & (-zk >= cfg.z)
            new = (dirc == 0) & (up | down)
            dirc[new] = np.where(up, 1, -1)[new]
            runc[new] = k
        direction[at], run[at] = dirc, runc
    return direction, run


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


#: a point farther than this many σ from the median of its 5 neighbours (and from the levels
#: of the 3 points on each side) is an outlier
CLIP = 4.0


def _inliers(bs: np.ndarray, sig: float) -> np.ndarray:
    """Points that are not isolated outliers. An outlier is more than ``CLIP`` σ from the
    running median of 5 (the point and two on each side) *and* from the median of the 3
    points before it and of the 3 after it (series mirrored at the ends).

    The median of 5 stays at the level while at most two of them stray, so an excursion of
    one or two points -- a noisy neighbour, a clock dip, the one half-way point of a step --
    is far from it, while three or more points at a new level are a level, not outliers (a
    segment needs ``MIN_LEVEL_POINTS`` = 3; running medians: Tukey, *Exploratory Data
    Analysis*, 1977, ch. 7). A point next to a step is near the level on its side, so it is
    kept even where the running median already sits at the other level. With ``σ = 0``
    (deterministic series) nothing is screened.
    """
    if sig <= 0 or len(bs) < 3:
        return np.ones(len(bs), dtype=bool)
    lim = CLIP * sig
    med = np.median(sliding_window_view(np.pad(bs, 2, mode="reflect"), 5), axis=1)
    by3 = np.median(sliding_window_view(np.pad(bs, 3, mode="reflect"), 3), axis=1)
    before, after = by3[: len(bs)], by3[4: 4 + len(bs)]
    return ~((np.abs(bs - med) > lim) & (np.abs(bs - before) > lim) & (np.abs(bs - after) > lim))


def _split_cost(bs: np.ndarray, keep: np.ndarray, lo: int, c: int, hi: int
                ) -> tuple[float, float]:
    """Cost of a two-level fit of ``bs[lo:hi]`` split at ``c``: ``(L1 error about each side's
    median over the points :func:`_inliers` keeps, L1 error over all points)``, compared in
    that order (:func:`_better`).

    The L1 cost is asv's ``step_detect`` (Potts) cost. Isolated outliers are left out of it
    because under any cost that grows with the residual an outlier just before a step pulls
    the split onto itself: one above the new level costs ``|δ|`` less on the new side, which
    outweighs the one inlier it moves to the wrong side. Splits that differ only in screened
    points are then ranked with all points, which puts a half-way point on the side of the
    level it is nearer to.
    """
    cost = l1 = 0.0
    for a, b in ((lo, c), (c, hi)):
        side, k = bs[a:b], keep[a:b]
        if not len(side):
            continue
        l1 += float(np.abs(side - np.median(side)).sum())
        if k.any():
            inl = side[k]
            cost += float(np.abs(inl - np.median(inl)).sum())
    return cost, l1


def _better(cost: tuple[float, float], best: tuple[float, float], prefer: bool) -> bool:
    """``cost`` beats ``best`` (lexicographic, with rounding slack); ties go to ``prefer``."""
    if cost[0] < best[0] - 1e-12:
        return True
    if cost[0] > best[0] + 1e-12:
        return False
    return cost[1] < best[1] - 1e-12 or (prefer and cost[1] <= best[1] + 1e-12)


def _least_cost(bs: np.ndarray, keep: np.ndarray, lo: int, hi: int, cands: range, t: int) -> int:
    """The split ``c`` of ``cands`` strictly inside ``lo..hi`` with the least cost
    (:func:`_split_cost`) of a two-level fit of ``bs[lo:hi]``; ties go to ``t``, and ``t``
    when no candidate is inside."""
    best, best_cost = t, (math.inf, math.inf)
    for c in cands:
        if lo < c < hi:
            cost = _split_cost(bs, keep, lo, c, hi)
            if _better(cost, best_cost, c == t):
                best, best_cost = c, cost
    return best


def _refine(bs: np.ndarray, t: int, seg: int, cfg: DetectConfig, keep: np.ndarray,
            run: int = 0) -> int:
    """Best split near a flagged commit ``t`` (:func:`_least_cost`, fitted over ``context``
    points before ``t`` and the new points after it), for splits from ``span`` commits before
    ``t`` to ``max(span, run)`` after it, ``run`` being the number of new points whose
    location flagged ``t``.

    The first flagged commit lags the step when noisy points sit at it, and leads it when
    the flag came from the median of the next ``lookahead`` points (the step lies somewhere
    among them); a flag from a short run is not moved that far, where a stronger step
    nearby would capture it. The split never leaves fewer than ``persistence`` points after
    it (never a change on the last point).
    """
    back = max(cfg.span, 2)
    ahead = max(cfg.span, run, 2)
    lo = max(seg, t - cfg.context)
    hi = min(len(bs), t + ahead + cfg.span)
    last = min(t + ahead, hi - 1, len(bs) - max(cfg.persistence, 1))
    return _least_cost(bs, keep, lo, hi, range(max(lo + cfg.min_history, t - back), last + 1),
                       t)


def _best_split(bs: np.ndarray, lo_seg: int, t: int, hi_seg: int, cfg: DetectConfig,
                keep: np.ndarray) -> int:
    """The split within ``span`` of ``t``, strictly inside its neighbours' segments
    (:func:`_least_cost`, fitted over up to ``context`` points on each side within them)."""
    lo = max(lo_seg, t - cfg.context - cfg.span)
    hi = min(hi_seg, t + cfg.context + cfg.span)
    cands = range(max(lo_seg + 1, t - cfg.span), min(hi_seg - 1, t + cfg.span) + 1)
    return _least_cost(bs, keep, lo, hi, cands, t)


def _location_var(n: int) -> float:
    """Variance of a location estimate of ``n`` points, in units of σ²: the mean for n ≤ 2,
    the median's asymptotic π/(2n) above."""
    return 1.0 / n if n <= 2 else math.pi / (2 * n)


@dataclass(frozen=True)
class _Step:
    t: int
    direction: int
    z: float
    lo: int  # first point of the "before" window
    hi: int  # end of the "after" window
    base: float  # badness level before


def _test_split(bs: np.ndarray, lo_seg: int, t: int, hi_seg: int, sig: float,
                cfg: DetectConfig) -> tuple[bool, _Step]:
    """Re-derive a change at ``t`` from the segments around it: direction, size and z of the
    median after (``t .. hi_seg``, up to ``window`` points) against the median before
    (``lo_seg .. t``, up to ``window``); True when it still holds: ≥ ``min_history`` points
    before, ≥ ``MIN_LEVEL_POINTS`` after (≥ ``persistence`` for the final segment, whose
    points must then each lie past the threshold), the medians ``min_ratio`` and ``z``
    standard errors apart. A 2-point excursion inside the history is therefore no segment
    of its own."""
    lo = max(lo_seg, t - cfg.window)
    hi = min(hi_seg, t + cfg.window)
    left, right = bs[lo:t], bs[t:hi]
    if len(left) == 0 or len(right) == 0:
        return False, _Step(t, 0, 0.0, lo, hi, math.nan)
    base = float(np.median(left))
    delta = float(np.median(right)) - base
    direction = 1 if delta > 0 else -1
    se = sig * math.sqrt(_location_var(len(left)) + _location_var(len(right)))
    z = delta / se if se > 0 else math.copysign(math.inf, delta)
    thr = math.log(cfg.min_ratio)
    first = right[: cfg.persistence] - base
    # a segment inside the history needs a robust level (MIN_LEVEL_POINTS); only the final
    # one may be as short as the persistence rule allows (the change is that new)
    need = cfg.persistence if hi_seg == len(bs) else max(cfg.persistence, MIN_LEVEL_POINTS)
    # the first points must each be past only where they are all there is (a final segment
    # too short for a robust level); elsewhere the segment's median carries the test
    short = hi_seg - t < MIN_LEVEL_POINTS
    holds = (len(left) >= cfg.min_history and hi_seg - t >= need
             and abs(delta) >= thr and abs(z) >= cfg.z
             and (not short or bool(np.all(first * direction >= thr))))
    return holds, _Step(t, direction, z, lo, hi, base)


def _final_steps(bs: np.ndarray, ts: list[int], sig: float, cfg: DetectConfig) -> list[_Step]:
    """The change points that hold once each is re-tested between its final neighbours.

    Every change's direction and size come from the segments around its final position
    (after ``_refine`` moved it), never from the first flag. A change that does not hold is
    dropped (its neighbours' segments merge) and the rest re-tested, weakest first, until all
    hold -- the merge step of asv's ``step_detect`` (``solve_potts`` + merging) done on
    lnbench's thresholds.
    """
    ts = sorted(set(ts))
    keep = _inliers(bs, sig)
    while ts:
        for i in range(len(ts)):  # each split re-fitted between its current neighbours
            ts[i] = _best_split(bs, ts[i - 1] if i else 0, ts[i],
                                ts[i + 1] if i + 1 < len(ts) else len(bs), cfg, keep)
        bounds = [0, *ts, len(bs)]
        tested = [_test_split(bs, bounds[i], t, bounds[i + 2], sig, cfg)
                  for i, t in enumerate(ts)]
        bad = [(abs(st.z) if st.direction else -1.0, i) for i, (ok, st) in enumerate(tested)
               if not ok]
        if not bad:
            return [st for _, st in tested]
        del ts[min(bad)[1]]
    return []


#: a level is "robust" over at least this many points (the "open" test never uses fewer)
MIN_LEVEL_POINTS = 3


def _change_points(bs: np.ndarray, dir_s: np.ndarray, run_s: np.ndarray, sig_s: float,
                   cfg: DetectConfig) -> list[int]:
    """Candidate change points of one series: flagged commits in order, each moved to its
    best split (within the run of new points that flagged it), later baselines restarted at
    it (steps 4-5 of the method)."""
    todo = np.nonzero(dir_s)[0].tolist()  # sorted: already a heap
    queued = set(todo)
    local: dict[int, tuple[int, int]] = {}
    seg = -1
    cps: list[int] = []
    sig_row = np.array([sig_s])
    keep = _inliers(bs, sig_s)
    while todo:
        t = heapq.heappop(todo)
        if t < seg + cfg.min_history:
            continue
        d, k = local[t] if t in local else (int(dir_s[t]), int(run_s[t]))
        if not d:
            continue
        t = _refine(bs, t, max(seg, 0), cfg, keep, k)
        if cps and t <= cps[-1]:
            continue
        cps.append(t)
        seg = t
        # re-test the commits whose window crosses the new segment start
        sb, sc = _segment_baseline(bs, seg, cfg)
        part = slice(seg, min(len(bs), seg + cfg.window + max(cfg.span, cfg.persistence,
                                                               cfg.lookahead)))
        sd, sk = _evidence(bs[None, part], sb[None, part], sc[None, part], sig_row, cfg)
        local = {u: (int(sd[0, u - seg]), int(sk[0, u - seg]))
                 for u in range(seg + cfg.min_history, min(seg + cfg.window, len(bs)))}
        for u, (du, _) in local.items():
            if du and u not in queued:
                queued.add(u)
                heapq.heappush(todo, u)
    return cps


def _describe(
    s: int, ys: np.ndarray, bs: np.ndarray, steps: list[_Step], cfg: DetectConfig,
    extra: tuple[_Step, float] | None = None,
) -> list[Change]:
    """Changes with before/after from the final segments, and whether each is still open.

    Open: no later segment came back to within ``min_ratio`` of the change's "before"
    level, and the series' latest robust level -- the
    median of the last ``window`` points of the newest segment with at least
    ``MIN_LEVEL_POINTS`` points -- is still ``min_ratio`` past the change's "before" level,
    and so is the newest level when the final segment is shorter (a newer change in it can
    only close older ones, never open them). A change that starts a final segment too short
    for a robust level is open by its own test. In a series that flips between two levels
    only the newest step can be open.
    """
    thr = math.log(cfg.min_ratio)
    starts = [0, *(st.t for st in steps), len(bs)]
    levels: list[float] = []
    for i in range(len(starts) - 2, -1, -1):  # newest segment first
        lo, hi = starts[i], starts[i + 1]
        if hi - lo >= MIN_LEVEL_POINTS or i == 0:
            levels.append(float(np.median(bs[max(lo, hi - cfg.window):hi])))
            break
        levels.append(float(np.median(bs[lo:hi])))
    robust = levels[-1]
    seg_levels = [float(np.median(bs[a:b])) for a, b in zip(starts[:-1], starts[1:],
                                                               strict=True)]
    final_short = len(bs) - starts[-2] < MIN_LEVEL_POINTS
    out = []
    for i, st in enumerate(steps):
        before = float(np.median(ys[st.lo:st.t]))
        after = float(np.median(ys[st.t:st.hi]))
        if final_short and st.t == starts[-2]:
            still = True
        elif any((lv - st.base) * st.direction < thr for lv in seg_levels[i + 2:]):
            still = False  # the level came back once: a newer step of the series is new
        else:
            still = all((lv - st.base) * st.direction >= thr for lv in (robust, levels[0]))
        kind = "regression" if st.direction > 0 else "improvement"
        out.append(Change(s, st.t, kind, before, after, float(st.z), st.t - st.lo, bool(still)))
    if extra is not None:
        st, p = extra
        before = float(np.median(ys[st.lo:st.t]))
        kind = "regression" if st.direction > 0 else "improvement"
        out.append(Change(s, st.t, kind, before, float(ys[st.t]), float(st.z), st.t - st.lo,
                          True, newest=True, p_value=p))
    return out


