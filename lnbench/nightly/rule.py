"""The triage's confirmation rule: an A/B re-run confirms an alarm, or it does not.

The rule (``compare``) and the bisection's decision (``mid_is_bad``) are documented with their
thresholds and sources in :mod:`lnbench.nightly.triage` (steps 3 and 4 of the method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """Thresholds of the confirmation and bisection rules (module docstring, step 3-4)."""

    factor: float = 1.05
    share: float = 0.5
    alpha: float = 0.002

    def threshold(self, flagged: float) -> float:
        """The A/B badness ratio an alarm of badness ratio ``flagged`` needs."""
        return max(self.factor, max(flagged, 1.0) ** self.share)


@dataclass
class Point:
    """One commit's re-measured value of one series: asv's value, samples and stats."""

    value: float | None
    samples: list[float] | None = None
    ci: tuple[float, float] | None = None  # asv's 99 % confidence interval


@dataclass
class AB:
    """The outcome of one interleaved A/B comparison."""

    a: str
    b: str
    a_value: float | None
    b_value: float | None
    ratio: float | None  # badness orientation: > 1 is worse at B
    threshold: float
    p: float | None
    n_a: int
    n_b: int
    test: str  # "mann-whitney" | "ci99" | "ratio only"
    confirmed: bool
    statistic: str = "value"  # what a_value, b_value are: asv's "value" or a sample quantile


def statistic_name(q: float | None) -> str:
    """How the JSON names the statistic of quantile ``q``: ``value`` (asv's, ``q`` None) or
    ``p10`` and the like."""
    return "value" if q is None else f"p{round(100 * q)}"


def at_quantile(p: Point, q: float | None) -> Point:
    """``p`` with its value replaced by the ``q`` quantile of its samples (``q`` None, or too
    few samples: ``p`` itself); the samples and CI stay, for the significance test."""
    from lnbench.nightly.screen import low_quantile

    v = low_quantile(p.samples, q) if q is not None and p.samples else None
    return p if v is None else Point(v, p.samples, p.ci)


def badness_ratio(a: float, b: float, higher_is_better: bool) -> float:
    """B against A, > 1 when B is worse."""
    return a / b if higher_is_better else b / a


def compare(a: Point, b: Point, flagged: float, higher_is_better: bool, rule: Rule,
            a_commit: str = "", b_commit: str = "") -> AB:
    """Apply the confirmation rule to A and B (module docstring, step 3)."""
    thr = rule.threshold(flagged)
    sa = [x for x in a.samples or [] if x is not None and math.isfinite(x)]
    sb = [x for x in b.samples or [] if x is not None and math.isfinite(x)]
    if a.value is None or b.value is None or a.value <= 0 or b.value <= 0:
        return AB(a_commit, b_commit, a.value, b.value, None, thr, None, len(sa), len(sb),
                  "none", False)
    q = badness_ratio(a.value, b.value, higher_is_better)
    p: float | None = None
    if sa and sb and 1 / math.comb(len(sa) + len(sb), min(len(sa), len(sb))) < rule.alpha:
        from scipy.stats import mannwhitneyu

        worse = "less" if higher_is_better else "greater"
        p = float(mannwhitneyu(sb, sa, alternative=worse).pvalue)
        test, significant = "mann-whitney", p < rule.alpha
    elif a.ci is not None and b.ci is not None:
        test = "ci99"
        significant = not (a.ci[1] >= b.ci[0] and a.ci[0] <= b.ci[1])
    else:
        test, significant = "ratio only", True
    return AB(a_commit, b_commit, a.value, b.value, q, thr, p, len(sa), len(sb), test,
              bool(q >= thr and significant))


def mid_is_bad(lo: float, mid: float, hi: float, higher_is_better: bool) -> bool:
    """Bisection: ``mid`` nearer ``hi``'s level than ``lo``'s (log scale, badness)."""
    step = math.log(badness_ratio(lo, hi, higher_is_better))
    return math.log(badness_ratio(lo, mid, higher_is_better)) >= 0.5 * step
