"""Bisection of a confirmed regression: halving runs of (lo, mid, hi), interleaved, between
the A and B of its A/B (:mod:`lnbench.nightly.triage`, step 4), and the git queries it needs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from lnbench.nightly.remeasure import Measure
from lnbench.nightly.rule import (
    Point,
    Rule,
    at_quantile,
    badness_ratio,
    mid_is_bad,
    statistic_name,
)
from lnbench.nightly.verdicts import Verdict


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def between(repo: Path, a: str, b: str) -> list[str] | None:
    """Commits strictly between A and B on B's first-parent line, oldest first; None when A is
    not an ancestor of B."""
    if subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=repo,
                      capture_output=True, check=False).returncode != 0:
        return None
    line = git(repo, "rev-list", "--first-parent", "--reverse", f"{a}..{b}").split()
    return line[:-1]


def subject(repo: Path, commit: str) -> str:
    try:
        return git(repo, "log", "-1", "--format=%s", commit)
    except subprocess.CalledProcessError:
        return ""


#: one verdict's bisection state: (lo, hi, candidates strictly between, oldest first)
_State = tuple[str, str, list[str]]


def _bisect(found: list[Verdict], a: str, b: str, measure: Measure, repo: Path, rule: Rule,
            log: Any) -> None:
    """Halve (a, b] for every confirmed verdict, sharing runs between series whose ranges
    agree (module docstring, step 4)."""
    inner = between(repo, a, b)
    if inner is None:
        for v in found:
            v.first_bad, v.reason = None, f"{a[:8]} is not a first-parent ancestor of {b[:8]}"
        return
    state: dict[int, _State] = {id(v): (a, b, list(inner)) for v in found}
    for v in found:
        if not inner:
            v.first_bad = b
    while True:
        groups: dict[tuple[str, str, str], list[Verdict]] = {}
        for v in found:
            lo, hi, cands = state[id(v)]
            if cands:
                groups.setdefault((lo, cands[(len(cands) - 1) // 2], hi), []).append(v)
        if not groups:
            break
        for (lo, mid, hi), vs in groups.items():
            print(f"triage: bisect {lo[:8]} < {mid[:8]} < {hi[:8]}: {len(vs)} series",
                  file=log, flush=True)
            pts = measure([lo, mid, hi], [v.alarm.series for v in vs])
            for v in vs:
                levels = [pts.get((v.alarm.series, c)) for c in (lo, mid, hi)]
                points, stat = _levels(v, levels, rule)
                state[id(v)] = _step(v, state[id(v)], mid, points, rule, stat)
    for v in found:
        if v.first_bad:
            v.first_bad_subject = subject(repo, v.first_bad)


def _levels(v: Verdict, levels: list[Point | None],
            rule: Rule) -> tuple[list[Point | None], str]:
    """The (lo, mid, hi) levels one halving step decides on, and their statistic's name.

    The alarm's own statistic (asv's value, or the screen's quantile), except that a timing
    alarm flagged on asv's value (a median) is decided on the samples' low quantile when all
    three commits have samples and the step shows in it (``hi/lo >= factor``): the medians
    move with the rounds a neighbour slowed, the low quantiles far less
    (:mod:`lnbench.nightly.screen`). On a 2-core Intel Xeon VM one bisection run measured the
    medians of two builds of identical code 1.28x apart, and the decision fell on the wrong
    commit.
    A step in the medians only (a slowdown of some calls, not of all) keeps the medians."""
    from lnbench.nightly.screen import QUANTILE

    q = v.alarm.quantile
    own = [None if p is None else at_quantile(p, q) for p in levels]
    if q is not None or v.alarm.higher_is_better or any(p is None for p in levels):
        return own, statistic_name(q)
    low = [at_quantile(p, QUANTILE) for p in levels if p is not None]
    if any(a is b for a, b in zip(low, levels, strict=True)):  # too few samples
        return own, statistic_name(q)
    if badness_ratio(low[0].value, low[2].value, higher_is_better=False) < rule.factor:
        return own, statistic_name(q)
    return low, statistic_name(QUANTILE)


def _step(v: Verdict, st: _State, mid: str, points: list[Point | None], rule: Rule,
          statistic: str) -> _State:
    """One halving step of ``v`` from the (lo, mid, hi) ``points``: the next state (no
    candidates left: done, ``v.first_bad`` or ``v.remaining`` set)."""
    lo, hi, cands = st
    p_lo, p_mid, p_hi = points
    step: dict[str, Any] = {"lo": lo, "mid": mid, "hi": hi, "statistic": statistic,
                            "values": [None if p is None else p.value for p in points]}
    v.bisect.append(step)
    if p_lo is None or p_mid is None or p_hi is None:
        v.remaining, v.reason = [lo, hi], "a bisection run failed (see the asv log)"
        return lo, hi, []
    hib = v.alarm.higher_is_better
    if badness_ratio(p_lo.value, p_hi.value, hib) < rule.factor:
        v.remaining = [lo, hi]
        v.reason = (f"the step was not visible in the bisection run of {lo[:8]} < "
                    f"{mid[:8]} < {hi[:8]}")
        return lo, hi, []
    i = cands.index(mid)
    bad = mid_is_bad(p_lo.value, p_mid.value, p_hi.value, hib)
    step["bad"] = bad
    if bad:
        if not cands[:i]:
            v.first_bad = mid
        return lo, mid, cands[:i]
    if not cands[i + 1:]:
        v.first_bad = hi
    return mid, hi, cands[i + 1:]
