"""The judge's mutation score (tests): every detectable planted bug of tests/mutants.py (the ports
of outside LayerNorm backwards, their mutants and the cases) fails the judge and every correct
port passes; ``python tests/test_mutations.py [--undeclared]`` prints the score."""

from __future__ import annotations

import sys

import pytest
from mutants import (  # the ports, their mutants and the cases
    CORRECT,
    DECLARED,
    LARGE_CASES,
    MUTANTS,
    QUICK_CASES,
    _judged,
    detectable_by_set,
    evaluate,
    flagged,
    flax,
    score,
)

from lnbench.grid import Case, make_data
from lnbench.judge import GRADS

# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("case", QUICK_CASES + LARGE_CASES, ids=lambda c: c.name)
def test_correct_implementations_pass(case: Case) -> None:
    ev = evaluate(case)
    bad = [f"{n} {g}: err_ratio {ev[n][g][1]:.3g}" for n in CORRECT if n in ev
           for g in GRADS if ev[n][g][0] != "ok"]
    assert not bad, bad


@pytest.mark.parametrize("case", QUICK_CASES + LARGE_CASES, ids=lambda c: c.name)
def test_detectable_mutants_are_flagged(case: Case) -> None:
    ev = evaluate(case)
    missed = [m.name for m in MUTANTS if m.name in ev
              and detectable_by_set(ev, m.name) and not flagged(ev[m.name])]
    assert not missed, [(n, ev[n]) for n in missed]


def test_every_mutant_is_detectable_and_flagged_somewhere() -> None:
    """No mutant is vacuous: each is flagged on some case. The 8-rounding bias of dγ is
    detectable only with M <= 2 rows (a correct sum of more terms errs by more), and flagged
    there: one or two products dy·x̂ from the saved statistics err by at most γ_{M+2} plus the
    saved rstd's rounding, the deterministic bound the judge takes when it is the smaller."""
    cases = QUICK_CASES + LARGE_CASES
    for m in MUTANTS:
        mine = [c for c in cases if m.name in evaluate(c)]
        det = [c for c in mine if detectable_by_set(evaluate(c), m.name)]
        if m.name == "dgamma_scale_8u":
            assert det and all(c.M <= 2 for c in det), [c.name for c in det]
            assert all(flagged(evaluate(c)[m.name]) for c in det), m.name
        else:  # 16-bit partial sums: max |err| is 5x the final rounding's, 220x its bound
            assert any(flagged(evaluate(c)[m.name]) for c in det or mine), m.name


def test_issue_examples_fail() -> None:
    """The errors the previous (normwise) tolerance let through."""
    for c in (Case(256, 1024, "float32", "offset"), Case(4096, 768, "float32", "offset"),
              Case(32768, 768, "float32", "offset")):
        assert flagged(evaluate(c)["dgamma_scale_1e-2"]), c.name
    assert flagged(evaluate(Case(32768, 768, "float32", "offset"))["dgamma_missing_tail"])
    assert flagged(evaluate(Case(32768, 768, "float32", "normal"))["partials_float16"])
    for dt in ("float32", "float64"):
        assert flagged(evaluate(Case(64, 1023, dt, "constant"))["dropped_xhat_term"])


def test_flax_own_mean_six_ulps_off_passes() -> None:
    """The false alarm of the normwise tolerance: flax's float64 jnp.mean of 768 equal values is
    6 ulps off, which on a zero-variance row (rstd = 1/sqrt(eps) = 316) makes x̂ ≈ 6 ulps·316,
    not 0; a sound own mean, judged as such."""
    for c in (Case(1, 768, "float64", "constant"), Case(64, 1023, "float64", "constant"),
              Case(1, 768, "float32", "constant")):
        data = make_data(c)
        for k in (6, -6):
            outs = flax(data.dy, data.x, data.gamma, data.mean, data.rstd, data.eps,
                        mean_ulps=k)
            res = _judged(outs, data, DECLARED["flax"])
            assert all(res[g][0] == "ok" for g in GRADS), (c.name, k, res)
        assert res["dgamma"][2] > 0  # the shifted mean did change dγ


if __name__ == "__main__":
    import time

    import mutants

    mutants.UNDECLARED = "--undeclared" in sys.argv[1:]
    t0 = time.perf_counter()
    s = score(QUICK_CASES + LARGE_CASES)
    print(f"mutation score: {s['flagged']}/{s['detectable']} detectable (mutant, case) pairs "
          f"flagged; {len(MUTANTS)} mutants, {len(CORRECT)} correct implementations, "
          f"{len(QUICK_CASES) + len(LARGE_CASES)} cases")
    print("  (detectable: error >= 10x that of every correct implementation on the case)")
    print(f"against the mutated implementation alone: {s['flagged_base']}/{s['detectable_base']}")
    print(f"false alarms: {len(s['false_alarms'])}")
    for line in s["false_alarms"]:
        print("  false alarm:", line)
    for line in s["missed"]:
        print("  missed:", line)
    for line in s["missed_base"]:
        print("  missed (against its base only):", line)
    print("worst err_ratio of the correct implementations:",
          ", ".join(f"{k} {v:.3g}" for k, v in s["worst_correct"].items()))
    print(f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
