"""The newest commit judged at once from the samples stored with it, and the limit of any
such judgement.

``newest_change`` (called by ``lnbench.report.detect.detect_matrix`` for series whose newest
point stored samples, ``asv run --record-samples``) requires two tests to agree: the newest
run's samples against the last runs' (Mann–Whitney U, ``scipy.stats.mannwhitneyu``, as
``asv compare`` does with samples) and the newest value against the current segment's
median, ``z`` standard errors of the series' *run-to-run* noise σ (``NewestConfig``).

**The limit** (``power_bound``). On a shared runner a whole run is offset by run-to-run noise
(log-normal, s.d. σ); the samples of one run share that offset, so their spread says nothing
about it, and all that one new run tells about a step ``s = log(1 + step)`` is its level
``x ~ N(μ₀ + s, σ_x²)``, ``σ_x² = σ² + (π/2)·w²/m`` (its value is the median of ``m`` samples
of within-run spread ``w``). Even with the baseline ``μ₀`` known exactly, the most powerful
test of ``s = 0`` against ``s > 0`` at false-alarm rate α rejects when ``x − μ₀ > z_α σ_x``
(Neyman–Pearson lemma; Lehmann & Romano, *Testing Statistical Hypotheses*, 3rd ed., 2005,
§3.2 and §3.4), so no detector of a step on the newest commit reaches a recall above

    Φ(s/σ_x − z_α)

at a per-series false-alarm rate α; an estimated baseline (n points) only lowers it
(``σ_x² + σ²·π/(2n)``). For 10 % steps at 3 % run-to-run noise, 7 samples with 1 %
within-run spread (``s/σ_x = 3.14``) and α = 1 % (``z_α = 2.33``): 0.79 -- no detector can
catch 90 % of them at once. The ideal test that also requires the report's ``min_ratio``
(asv publish's 5 %) catches ``Φ((s − max(z_α σ_x, log min_ratio))/σ_x)``: 0.5 for a 5 %
step whatever the noise (an estimated baseline scatters that either way). Both reach 90 %
where ``s ≥ z_α σ_x + 1.28 σ_x`` and ``s ≥ log min_ratio + 1.28 σ_x``: steps of about 3.6 σ
and more at α = 1 %, and 5 % steps never. This detector
tests at ``z = 3`` (α = 0.13 %, one-sided), its own bound ``Φ(s/σ_x − 3)``; the evaluation
(``lnbench.report.evaluate``) prints both bounds next to each newest-commit recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from lnbench.report.steps import DetectConfig, _Step


def power_bound(step: float, sigma: float, alpha: float = 0.01, min_ratio: float = 1.0) -> float:
    """The highest recall any test of one new run can reach on a persistent ``step`` (a
    fraction: 0.1 for +10 %) at per-series false-alarm rate ``alpha``, when the run's level
    has log-normal noise ``sigma`` and the baseline is known: ``Φ((s − max(z_α σ,
    log min_ratio)) / σ)`` with ``s = log(1 + step)`` (module docstring). ``sigma = 0``: 1."""
    s = math.log1p(step)
    if sigma <= 0:
        return 1.0 if s >= math.log(min_ratio) else 0.0
    nd = NormalDist()
    need = max(nd.inv_cdf(1 - alpha) * sigma, math.log(min_ratio))
    return nd.cdf((s - need) / sigma)


def run_level_sigma(noise: float, within: float = 0.0, n_samples: int = 1) -> float:
    """σ_x of a stored value that is the median of ``n_samples`` samples of within-run spread
    ``within`` around a run level with run-to-run noise ``noise`` (log scale)."""
    return math.sqrt(noise * noise + (math.pi / 2) * within * within / max(n_samples, 1))


@dataclass(frozen=True)
class NewestConfig:
    """The newest point judged from its stored samples (see :func:`newest_change`)."""

    alpha: float = 0.01
    z: float = 3.0
    min_ratio: float = 1.05
    baseline_points: int = 5


NEWEST = NewestConfig()


def newest_change(
    bs: np.ndarray, steps: list[_Step], smp: list[Any], higher: bool, sig: float,
    cfg: DetectConfig, ncfg: NewestConfig,
) -> tuple[_Step, float] | None:
    """A change at the newest point, judged at once from the samples stored with it.

    Two tests must agree (asv compare's sample test, made safe on shared runners):

    1. Within-run evidence: the newest run's samples against the pooled samples of the last
       ``baseline_points`` runs of the current segment that stored samples, Mann–Whitney U
       (``scipy.stats.mannwhitneyu``, two-sided, p < ``alpha``) -- what ``asv compare``
       uses when samples are stored.
    2. Run-to-run evidence: the newest value against the median of the current segment (up
       to ``window`` points) is past ``min_ratio`` and ``z`` standard errors of the series'
       run-to-run noise (``se = σ·sqrt(1 + π/(2n))``), in the same direction as 1.

    Within-run confidence alone would flag every run whose machine was slow for its whole
    duration; the run-to-run test alone cannot tell a slow run from an outlier-ridden one.
    Persistence (two points) remains the rule for series without samples.
    """
    from scipy.stats import mannwhitneyu

    n = len(bs)
    last = smp[n - 1] if len(smp) >= n else None
    if not usable(last) or (steps and steps[-1].t >= n - 1):
        return None
    seg = steps[-1].t if steps else 0
    lo = max(seg, n - 1 - cfg.window)
    if n - 1 - lo < cfg.min_history:
        return None
    base = float(np.median(bs[lo:n - 1]))
    delta = float(bs[n - 1]) - base
    se = sig * math.sqrt(1.0 + math.pi / (2 * (n - 1 - lo)))
    z = delta / se if se > 0 else math.copysign(math.inf, delta)
    if abs(delta) < math.log(ncfg.min_ratio) or abs(z) < ncfg.z:
        return None
    pool = [np.asarray(smp[i], dtype=float) for i in range(n - 2, lo - 1, -1)
            if i < len(smp) and usable(smp[i])][: ncfg.baseline_points]
    if not pool:
        return None
    sign = -1.0 if higher else 1.0
    new = sign * np.log(np.asarray(last, dtype=float))
    old = sign * np.log(np.concatenate(pool))
    if min(len(new), len(old)) < 2:
        return None
    p = float(mannwhitneyu(new, old, alternative="two-sided").pvalue)
    if p >= ncfg.alpha or (np.median(new) - np.median(old)) * delta <= 0:
        return None
    return _Step(n - 1, 1 if delta > 0 else -1, z, lo, n, base), p


def usable(s: Any) -> bool:
    """Stored samples that can be tested: a list of at least two positive numbers."""
    if not isinstance(s, list | tuple | np.ndarray) or len(s) < 2:
        return False
    try:
        a = np.asarray(s, dtype=float)
    except (TypeError, ValueError):
        return False
    return bool(np.all(np.isfinite(a) & (a > 0)))


