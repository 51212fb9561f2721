"""How well regression detection works, measured on generated histories with injected steps.

For each noise model and step size, ``n_series`` histories of ``n_commits`` commits are drawn
(``lnbench.report.synthetic.noisy_history``: log-normal noise, optional outliers), with a
persistent slowdown of ``step`` from commit ``step_at`` on (none for the flat histories).
Each detector sees the same matrix.

- **recall**: share of step histories with a regression reported within ``tolerance``
  commits of the true step.
- **false alarms per series**: regressions reported anywhere else (on flat histories, and
  separately the extra ones on step histories), per history.
- **latency** ("commits until caught"): the detector is re-run on every prefix that ends
  1, 2, … ``max_latency`` commits after the step; the latency is the number of commits at the
  new level (the step commit counts as 1) in the shortest prefix where the step is reported.

- **false-alarm series**: share of histories with at least one regression reported outside
  the tolerance (on flat histories: any regression).

``EvalSpec.newest`` puts the step on the newest commit (``step_at = n_commits - 1``) and
``EvalSpec.samples`` stores raw samples with every point: each run has a run-level offset
(log-normal, s.d. ``noise``: what a shared runner does to a whole run) and ``samples`` draws
with within-run spread ``within`` around it; the stored value is their median, as asv stores
it. Detectors get the samples where they use them (lnbench's newest-commit test).

Limits printed next to the figures: for newest-commit steps, ``bound`` -- the Neyman–Pearson
bound on the recall of *any* test of one new run at a per-series false-alarm rate of 1 %
(``lnbench.report.newest.power_bound``: ``Φ(s/σ_x − z_0.01)``, σ_x the stored value's
run-to-run noise) -- and ``bound_rule``, the same with the report's 5 % minimum ratio; for
steps inside the history, ``location_error``: the share of histories where even the
least-squares split with both levels known lies more than ``tolerance`` commits off the
step (such a report counts as a false alarm). ``criteria`` checks the targets on the rows
where these limits allow them (recall ≥ 0.95 on 10 % steps; ≥ 0.90 on newest-commit rows
whose ``bound_rule`` is ≥ 0.90; ≤ 1 % series with a false alarm on flat histories and on
step rows whose ``location_error`` is ≤ 1 %).

Detectors: ``lnbench`` (``lnbench.report.detect``; counts every reported regression, open
or resolved) and ``asv`` (``asv.step_detect.detect_steps`` followed by
``detect_regressions(steps, threshold=0.05)``, the defaults ``asv publish`` uses to write
``regressions.json``; unweighted, as for benchmarks without stored confidence intervals).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report.detect import NEWEST, SPEED, DetectConfig, detect_matrix
from lnbench.report.newest import power_bound, run_level_sigma
from lnbench.report.synthetic import noisy_history, sampled_history

#: A detector maps a (series × commits) matrix (lower is better) and, optionally, the stored
#: samples (``samples[s][t]``: an array, or None) to (series, position) pairs, one per reported
#: regression; the position is the first commit at the new level.
Detector = Callable[..., list[tuple[int, int]]]


def lnbench_detector(cfg: DetectConfig = SPEED, open_only: bool = False) -> Detector:
    """``lnbench.report.detect.detect_matrix`` with ``cfg``, regressions only.

    ``open_only`` keeps only regressions still present at the last commit (what
    ``lnbench report regressions`` lists by default, and what asv's regressions page shows).
    """

    def run(y: np.ndarray, samples: list[list[Any]] | None = None) -> list[tuple[int, int]]:
        lengths = np.full(y.shape[0], y.shape[1])
        higher = np.zeros(y.shape[0], dtype=bool)
        smp = {s: row for s, row in enumerate(samples)} if samples is not None else None
        return [(c.series, c.pos) for c in detect_matrix(y, lengths, higher, cfg, smp)
                if c.kind == "regression" and (c.open or not open_only)]

    return run


def asv_detector(threshold: float = 0.05) -> Detector:
    """asv's own: ``detect_steps`` then ``detect_regressions`` (asv publish defaults)."""
    from asv.step_detect import detect_regressions, detect_steps

    def run(y: np.ndarray, samples: Any = None) -> list[tuple[int, int]]:
        out = []
        for s, row in enumerate(y):
            steps = detect_steps(row.tolist())
            _, _, jumps = detect_regressions(steps, threshold)
            for _before, after, *_ in jumps or []:
                out.append((s, int(after)))
        return out

    return run


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation grid; the defaults are the ones quoted in docs/reports.md."""

    n_series: int = 1000
    n_commits: int = 60
    step_at: int = 40
    noise: float = 0.03
    outlier_rate: float = 0.0
    steps: Sequence[float] = (0.05, 0.10, 0.20, 0.50)
    tolerance: int = 2
    max_latency: int = 8
    seed: int = 0
    newest: bool = False
    samples: int = 0
    within: float = 0.01

    @property
    def step_position(self) -> int:
        return self.n_commits - 1 if self.newest else self.step_at


def _score(hits: list[tuple[int, int]], step_at: int | None, tol: int
           ) -> tuple[set[int], int, int]:
    caught: set[int] = set()
    extra = 0
    wrong: set[int] = set()
    for s, pos in hits:
        if step_at is not None and abs(pos - step_at) <= tol:
            caught.add(s)
        else:
            extra += 1
            wrong.add(s)
    return caught, extra, len(wrong)


def _draw(rng: np.random.Generator, spec: EvalSpec, step: float
          ) -> tuple[np.ndarray, list[list[Any]] | None]:
    at = spec.step_position if step else None
    if spec.samples:
        return sampled_history(rng, spec.n_series, spec.n_commits, noise=spec.noise,
                               within=spec.within, n_samples=spec.samples, step=step,
                               step_at=at, outlier_rate=spec.outlier_rate)
    return noisy_history(rng, spec.n_series, spec.n_commits, noise=spec.noise,
                         outlier_rate=spec.outlier_rate, step=step, step_at=at), None


def evaluate(
    spec: EvalSpec = EvalSpec(),
    detectors: dict[str, Detector] | None = None,
    latency: bool = True,
) -> pd.DataFrame:
    """Recall, false alarms and latency of each detector on the same generated histories.

    Returns one row per (detector, step): ``detector, noise, outlier_rate, step, at``
    ("newest" or the step commit), ``recall, false_alarms_per_series`` (on flat histories
    for ``step == 0``, else the extra reports on step histories), ``false_alarm_series``
    (share of histories with any such report), ``latency_median, latency_p90`` (commits
    until caught, among histories caught within ``max_latency``; not for newest-commit
    steps), ``caught_within_max`` and ``seconds`` (detector time).
    """
    if detectors is None:
        detectors = {"lnbench (all)": lnbench_detector(),
                     "lnbench (open)": lnbench_detector(open_only=True), "asv": asv_detector()}
    rng = np.random.default_rng(spec.seed)
    histories = {0.0: _draw(rng, spec, 0.0)}
    for step in spec.steps:
        histories[step] = _draw(rng, spec, step)
    tol = 0 if spec.newest else spec.tolerance
    rows = []
    for name, det in detectors.items():
        for step, (y, smp) in histories.items():
            t0 = time.perf_counter()
            hits = det(y, smp) if smp is not None else det(y)
            seconds = time.perf_counter() - t0
            caught, extra, extra_series = _score(hits, spec.step_position if step else None,
                                                 tol)
            row = {
                "detector": name, "noise": spec.noise, "outlier_rate": spec.outlier_rate,
                "step": step, "at": "newest" if spec.newest else str(spec.step_at),
                "recall": len(caught) / spec.n_series if step else np.nan,
                "false_alarms_per_series": extra / spec.n_series,
                "false_alarm_series": extra_series / spec.n_series,
                "latency_median": np.nan, "latency_p90": np.nan, "caught_within_max": np.nan,
                "seconds": seconds,
            }
            if step and latency and not spec.newest and smp is None:
                row.update(_latency(det, y, spec))
            row.update(_limits(spec, step))
            rows.append(row)
    return pd.DataFrame(rows)


def _limits(spec: EvalSpec, step: float) -> dict[str, float]:
    """The statistical limits of a row (module docstring): ``bound``/``bound_rule`` for a
    newest-commit step, ``location_error`` for a step inside the history."""
    out = {"bound": np.nan, "bound_rule": np.nan, "location_error": np.nan}
    if not step:
        return out
    if spec.newest:
        sx = run_level_sigma(spec.noise, spec.within if spec.samples else 0.0,
                             spec.samples or 1)
        out["bound"] = power_bound(step, sx, 0.01)
        out["bound_rule"] = power_bound(step, sx, 0.01, NEWEST.min_ratio)
    else:
        out["location_error"] = location_error(step, spec.noise, spec.n_commits, spec.step_at,
                                               spec.tolerance)
    return out


def location_error(step: float, noise: float, n_commits: int = 60, step_at: int = 40,
                   tolerance: int = 2, n: int = 20_000, seed: int = 12345) -> float:
    """Share of histories whose least-squares split, *both levels known*, lies more than
    ``tolerance`` commits off a step of ``step`` at ``step_at`` under log-normal ``noise``:
    what no detector can locate better (the split maximising the two-level Gaussian
    likelihood, searched ±20 commits around the step). Deterministic (own ``seed``)."""
    if noise <= 0:
        return 0.0
    rng = np.random.default_rng(seed)
    d = math.log1p(step)
    x = rng.normal(0.0, noise, size=(n, n_commits))
    x[:, step_at:] += d
    # cost of splitting at c: Σ_{i<c} x_i² + Σ_{i≥c} (x_i − d)², as prefix sums
    before = np.concatenate([np.zeros((n, 1)), np.cumsum(x * x, axis=1)], axis=1)[:, :n_commits]
    after = np.cumsum(((x - d) ** 2)[:, ::-1], axis=1)[:, ::-1]
    lo, hi = max(1, step_at - 20), min(n_commits - 1, step_at + 20)
    split = (before + after)[:, lo:hi + 1].argmin(axis=1) + lo
    return float(np.mean(np.abs(split - step_at) > tolerance))


def share_interval(share: float, n: int, percent: bool = True) -> str:
    """The exact (Clopper–Pearson) 95 % interval of a share measured on ``n`` histories, as
    ``"lo–hi"`` in percent (``percent=False``: as fractions, for a recall): the sampling
    uncertainty of the figure beside it. With 1,000 histories a true rate of 1.0 % is measured
    anywhere in about 0.4–1.6 % (binomial s.d. 0.31 points), so a judged share near its target
    says little about which side the rate is on; more histories (``--series``) narrow it as
    1/√n. (Clopper and Pearson, *Biometrika* 26, 1934; ``scipy.stats.binomtest``.)"""
    from scipy.stats import binomtest

    ci = binomtest(round(share * n), n).proportion_ci(0.95)
    return f"{ci.low:.1%}–{ci.high:.1%}" if percent else f"{ci.low:.3f}–{ci.high:.3f}"


def criteria(results: Sequence[tuple[EvalSpec, pd.DataFrame]], detector: str = "lnbench (all)"
             ) -> list[tuple[str, bool]]:
    """The targets, on the rows where the statistical limits allow them: ``(line, met)``.

    - recall ≥ 0.95 on 10 % steps inside the history;
    - recall ≥ 0.90 on newest-commit steps whose ``bound_rule`` is ≥ 0.90 (the others are
      listed with their bound, not judged);
    - ≤ 1 % of series with a false alarm on flat histories and on step rows whose
      ``location_error`` is ≤ 1 % (a step that even a known-level split puts off by more
      than the tolerance in more histories than that is not a place to judge false alarms).

    Each judged share carries its 95 % interval (:func:`share_interval`); the verdict is on
    the measured share itself.
    """
    out: list[tuple[str, bool]] = []
    for spec, df in results:
        n = spec.n_series

        def ci(share: float, n: int = n, percent: bool = True) -> str:
            return f" (95 % interval {share_interval(share, n, percent)})"

        rows = df[df["detector"] == detector]
        where = "newest" if spec.newest else f"commit {spec.step_at}"
        label = (f"{spec.noise:.0%} noise, {spec.outlier_rate:.0%} outliers, step at {where}, "
                 f"seed {spec.seed}")
        for _, r in rows.iterrows():
            step = float(r["step"])
            name = f"{step:.0%} step" if step else "flat"
            rec = ci(r["recall"], percent=False) if step else ""
            if step and not spec.newest and abs(step - 0.10) < 1e-9:
                out.append((f"{label}, {name}: recall {r['recall']:.3f}{rec} ≥ 0.95",
                            bool(r["recall"] >= 0.95)))
            if step and spec.newest:
                if r["bound_rule"] >= 0.90:
                    out.append((f"{label}, {name}: recall {r['recall']:.3f}{rec} "
                                f"≥ 0.90 (bound {r['bound_rule']:.3f})",
                                bool(r["recall"] >= 0.90)))
                else:
                    out.append((f"{label}, {name}: recall {r['recall']:.3f}, not judged: "
                                f"bound {r['bound_rule']:.3f} < 0.90", True))
            if not step or (not spec.newest and r["location_error"] <= 0.01) or spec.newest:
                out.append((f"{label}, {name}: series with a false alarm "
                            f"{r['false_alarm_series']:.1%}{ci(r['false_alarm_series'])} ≤ 1 %",
                            bool(r["false_alarm_series"] <= 0.01 + 1e-12)))
    return out


def _latency(det: Detector, y: np.ndarray, spec: EvalSpec) -> dict[str, float]:
    first = np.full(y.shape[0], np.nan)
    for k in range(1, spec.max_latency + 1):
        todo = np.flatnonzero(np.isnan(first))
        if not len(todo):
            break
        sub = y[todo, : spec.step_at + k]
        caught, _, _ = _score(det(sub), spec.step_at, spec.tolerance)
        first[todo[sorted(caught)]] = k
    got = first[~np.isnan(first)]
    return {
        "latency_median": float(np.median(got)) if len(got) else np.nan,
        "latency_p90": float(np.percentile(got, 90)) if len(got) else np.nan,
        "caught_within_max": len(got) / y.shape[0],
    }


def markdown_table(df: pd.DataFrame) -> str:
    """The evaluation as a markdown table (one row per detector and step)."""
    show = df.copy()
    show["step"] = [f"{s:.0%}" if s else "flat" for s in show["step"]]
    show["recall"] = [f"{r:.2f}" if r == r else "–" for r in show["recall"]]
    show["false_alarms_per_series"] = [f"{v:.3f}" for v in show["false_alarms_per_series"]]
    show["false_alarm_series"] = [f"{v:.1%}" for v in show["false_alarm_series"]]
    for col in ("latency_median", "latency_p90"):
        show[col] = [f"{v:g}" if v == v else "–" for v in show[col]]
    show["caught_within_max"] = [f"{v:.2f}" if v == v else "–" for v in show["caught_within_max"]]
    show["seconds"] = [f"{v:.2f}" for v in show["seconds"]]
    cols = ["detector", "step", "at", "recall", "false_alarms_per_series", "false_alarm_series",
            "latency_median", "latency_p90", "caught_within_max", "seconds"]
    header = ["detector", "step", "at commit", "recall", "false alarms / series",
              "series with a false alarm", "commits to catch (median)", "(p90)", "caught ≤ max",
              "seconds"]
    extra = [("bound", "recall bound (α = 1 %)"), ("bound_rule", "bound with the 5 % rule"),
             ("location_error", "known-level split off > tolerance")]
    pos = 4
    for col, title in extra:
        if col in show and show[col].notna().any():
            show[col] = [f"{v:.3f}" if v == v else "–" for v in show[col]]
            cols.insert(pos, col)
            header.insert(pos, title)
            pos += 1
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in show[cols].iterrows():
        lines.append("| " + " | ".join(str(v) for v in r) + " |")
    return "\n".join(lines)


def real_comparison(loaded: Any) -> dict[str, int]:
    """lnbench and asv detection on a real results history, side by side.

    Per detection series (``detect.detection_keys``, ok values in commit order): asv's
    ``detect_steps`` + ``detect_regressions(threshold=0.05)`` (what ``asv publish`` lists
    on its regressions page: jumps still visible at the latest value) against lnbench's
    open regressions (what ``lnbench report regressions`` lists). Counts series with a
    regression listed by each, by both, and how many listed regressions of each detector got
    faster (after/before in the regression direction).
    """
    from asv.step_detect import detect_regressions, detect_steps

    from lnbench.report.detect import detection_keys, find_changes

    frame = loaded.frame
    ok = frame[frame["status"].astype(str).eq("ok") & np.isfinite(frame["value"].astype(float))]
    keys = detection_keys(ok, loaded.param_names)
    changes = find_changes(frame, loaded.param_names)
    ours = changes[changes["kind"].eq("regression") & changes["open"].astype(bool)]
    fam = "env_family" if "env_family" in ours else "env"
    show = [fam if k == "env_family" else k for k in keys if k != "bench_version"]
    ours_series = set(zip(*(ours[k].astype(object).map(str) for k in show), strict=True))
    ours_faster = int(sum((r < 1) != h for r, h in zip(ours["ratio"], [
        bool(ok.loc[ok["benchmark"] == b, "higher_is_better"].iloc[0])
        for b in ours["benchmark"]], strict=True)))
    asv_series: set[tuple[str, ...]] = set()
    asv_faster = 0
    for key, g in ok.sort_values(["commit_order", "started_at"]).groupby(
            keys, observed=True, dropna=False, sort=False):
        if bool(g["retired"].iloc[0]) or not bool(g["version_ok"].iloc[0]):
            continue  # asv publish shows only current benchmarks
        y = g["value"].to_numpy(float)
        if bool(g["higher_is_better"].iloc[0]):
            y = 1.0 / y
        if len(y) < 3:
            continue
        _, _, jumps = detect_regressions(detect_steps(y.tolist()), 0.05)
        if jumps:
            k = dict(zip(keys, key, strict=True))
            asv_series.add(tuple(str(k[c]) for c in show))
            asv_faster += sum(1 for _, _, before, after in jumps if after < before)
    return {"series": int(ok.groupby(keys, observed=True, dropna=False).ngroups),
            "lnbench_open_regression_series": len(ours_series),
            "asv_regression_series": len(asv_series),
            "both": len(ours_series & asv_series),
            "lnbench_listed_faster": ours_faster, "asv_listed_faster": int(asv_faster)}
