"""The triage's Markdown report and its gate (exit 1 on confirmed or unchecked alarms)."""

from __future__ import annotations

from lnbench.nightly.verdicts import Verdict
from lnbench.report.render import fmt_value

EXIT_OK, EXIT_FAIL = 0, 1


def _fmt(x: float | None, unit: str) -> str:
    """A value with its unit, as the regression report writes it."""
    return fmt_value(x, None if unit == "unknown" else unit)


def render_md(verdicts: list[Verdict], report_md: str = "") -> str:
    groups = {s: [v for v in verdicts if v.status == s]
              for s in ("confirmed", "unchecked", "not reproduced")}
    out = ["# Nightly triage", ""]
    n = len(verdicts)
    out.append(f"{n} alarm(s) from `lnbench report regressions --latest-only` (marked "
               "\"p10 of the samples\": its method on the samples' 10th percentile): "
               f"{len(groups['confirmed'])} confirmed, {len(groups['unchecked'])} unchecked, "
               f"{len(groups['not reproduced'])} not reproduced. The gate fails on confirmed "
               "and unchecked alarms only.")
    out.append("")
    titles = {"confirmed": "Confirmed regressions",
              "unchecked": "Unchecked alarms (could not be re-run here; they fail the gate)",
              "not reproduced": "Not reproduced (the interleaved A/B re-run did not show the "
                                "step; they do not fail the gate)"}
    for status, vs in groups.items():
        if not vs:
            continue
        out += [f"## {titles[status]}", ""]
        out.append("| benchmark | machine | flagged | A → B | A | B | A/B ratio (needed) | test "
                   "| first bad commit |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for v in vs:
            al, ab = v.alarm, v.ab
            flagged = f"{al.ratio:.3g}× at {al.commit[:8]}" + (" (newest)" if al.newest else "")
            if al.source:
                flagged += f" ({al.source})"
            if ab is not None:
                ratio = "–" if ab.ratio is None else f"{ab.ratio:.3f}× (≥ {ab.threshold:.3f})"
                if ab.statistic != "value":
                    ratio += f" of the {ab.statistic}"
                test = ab.test + ("" if ab.p is None else f" p={ab.p:.2g}") + \
                    f", n={ab.n_a}+{ab.n_b}"
                vals = (_fmt(ab.a_value, al.unit), _fmt(ab.b_value, al.unit))
            else:
                ratio, test, vals = "–", v.reason or "–", ("–", "–")
            if v.first_bad:
                bad = f"**{v.first_bad[:8]}** {v.first_bad_subject}".strip()
            elif v.remaining:
                bad = f"between {v.remaining[0][:8]} and {v.remaining[1][:8]}: {v.reason}"
            else:
                bad = "–" if status != "confirmed" else v.reason or "–"
            if v.earlier:
                bad += " (verdict of an earlier night)"
            a_used = ab.a if ab is not None and ab.a else al.prev_commit
            ab_commits = f"{(a_used or '?')[:8]} → {al.commit[:8]}"
            out.append(f"| {al.series.label()} | {al.series.machine} | {flagged} | {ab_commits} "
                       f"| {vals[0]} | {vals[1]} | {ratio} | {test} | {bad} |")
        out.append("")
    if report_md:
        out += ["---", "", report_md.rstrip(), ""]
    return "\n".join(out) + "\n"


def gate(verdicts: list[Verdict]) -> int:
    return EXIT_FAIL if any(v.status in ("confirmed", "unchecked") for v in verdicts) \
        else EXIT_OK
