"""Nightly triage: every alarm of the regression report is re-measured A/B, interleaved, before
it may fail the gate, and a confirmed one is bisected to the commit that caused it.

Why. The regression report (``lnbench report regressions``, docs/reports.md) compares values
stored on different nights. On a shared runner a slow spell, a neighbour's job or heap state
moves a night's numbers as a whole, and a step between two nights can be the machine, not the
code (on the 2-core VM a slow spell produced 11 false regressions in one report). The only
measurement that separates the two is one where the commit before the step (A) and the commit
after it (B) are timed *in the same run, round by round* (A B, then B A, ...), so a slow spell
hits both alike: asv's ``--interleave-rounds``, the method of Google Benchmark's random
interleaving (Bruns et al. cite it as the cure for "measurement bias from run order"; see also
Mytkowicz et al., "Producing wrong data without doing anything obviously wrong!", ASPLOS 2009).

Method (``triage``):

1. Alarms. ``lnbench report regressions --results R --latest-only --format json`` lists the
   open regressions in series measured at the machine's newest commit. Each alarm names the
   series (benchmark, parameters, machine, environment, metric), the first commit at the new
   level (``commit``, B) and the last one before it (``prev_commit``, A), and the flagged
   ``ratio``. An alarm at the newest commit is tonight's; an older open one whose series is
   still measured has usually just been confirmed by its second point (the detector needs
   ``persistence`` points at the new level). Every alarm without a stored verdict is triaged;
   verdicts are kept in ``R/lnbench-triage.json`` (one per series and A, B), so a confirmed
   regression keeps failing the gate on later nights without being re-run, and an alarm found
   to be noise is not re-run either.
   A second source (``collect_alarms``, ``lnbench.nightly.screen``; ``--no-screen`` turns it
   off): the report's own method and thresholds run on the 10th percentile (``QUANTILE``) of
   each timing point's recorded samples (at least ``MIN_SAMPLES`` = 20) instead of asv's
   median. Interference only adds time, so a commit's samples are an undisturbed body plus a
   slowed part whose share changes from minute to minute; the median lands in either, a low
   quantile stays in the body (Chen and Revels 2016; Kalibera and Jones 2013). On the busy
   2-core x86_64 VM the medians of identical code spread by 13 % between the commits of one
   interleaved run, their 10th percentiles by 3 %: a 1.3x step is 2 standard deviations of
   the first and 9 of the second, so the report misses it and the screen does not. Where
   both flag a series, the screen's alarm is triaged (unless the report's has a stored
   verdict). The screen only adds re-runs: the gate still fails only on confirmed alarms.
   A is re-anchored when needed (``anchor``): if the stored value at ``prev_commit`` lies
   nearer the alarm's ``after`` level than its ``before`` level (log scale), A becomes the
   newest measured commit before it that is nearer ``before`` -- a change judged at the newest
   point alone can name as "previous" a commit already past the step, and re-running that
   against B would find nothing.
2. A/B. For each (A, B), one ``asv run --interleave-rounds --record-samples -b REGEX...
   HASHFILE:[A, B]`` in the environments asv.conf.json builds (one environment per commit
   cannot be ``--python=same``), into a temporary results folder, with ``-b`` selecting exactly
   the flagged parameter combinations (asv matches ``name(p1, p2, ...)``). Alarms on other
   machines cannot be re-run here: they are "unchecked" (below).
3. Confirmation rule (``Rule``). Let ``q`` be the A/B ratio in badness orientation
   (``B/A`` for lower-is-better metrics such as times, ``A/B`` for higher-is-better ones, as
   flagged by the report's ``ratio < 1``), from asv's stored values (the median of the samples
   for timings) -- for the screen's alarms from the 10th percentiles of the re-run's samples,
   the statistic they were flagged on (``AB.statistic``; the anchor and the bisection use it
   too). The alarm is **confirmed** when

   * ``q >= max(factor, r ** share)`` with ``r`` the flagged ratio (badness orientation),
     ``factor = 1.05`` (the report's own ``min_ratio``) and ``share = 0.5``: the re-run
     reproduces at least half of the flagged step in log space, so a 2x alarm needs a 1.41x
     re-run and a 1.1x alarm a 1.05x one; *and*
   * the difference is significant: with recorded samples, a one-sided Mann-Whitney U test
     (``scipy.stats.mannwhitneyu``, B worse than A) at ``p < alpha = 0.002``, the threshold
     of asv's own ``asv compare`` / ``asv continuous`` (``asv._stats.is_different``; Mann and
     Whitney 1947). The test needs no normality and is robust to the heavy right tail of
     timings under interference; it can only reach ``alpha`` with enough samples
     (``1 / C(n_a + n_b, n_a) < alpha``, e.g. 6 + 6), otherwise, as in asv, the 99 %
     confidence intervals asv stores must not overlap; with neither (one value per commit:
     ``track_*`` benchmarks) the ratio alone decides, and the report says so.

   Otherwise the alarm is **not reproduced**: listed with its A/B numbers, never failing.
4. Bisection. A confirmed alarm with commits between A and B (``git rev-list --first-parent
   A..B``; asv may have measured only some nights' commits) is bisected by halving: one
   interleaved run of (lo, mid, hi) per step; ``mid`` is bad when it lies nearer hi's level
   than lo's, ``log(mid/lo) >= 0.5 * log(hi/lo)`` in badness orientation (the three-way split
   of ``asv find``, here with the three commits measured in the same interleaved run instead
   of one after another, so a drift of the machine during the search cannot move the
   decision). The levels are those of the alarm's statistic, except that a timing alarm
   flagged on asv's median is decided on the samples' 10th percentile whenever the step shows
   in it: in one run the medians of identical code can differ by more than half the step
   (``bisection._levels``). A step not visible in a bisection run (``hi/lo < factor``) stops
   the search and names the remaining range. ``ceil(log2(k + 1))`` runs for ``k`` commits
   between. The first bad commit is named with its subject.

Exit codes (the gate): 0 when no alarm was confirmed; 1 when one was confirmed (now or on an
earlier night) or could not be re-run ("unchecked": another machine's series, a benchmark that
failed or is missing in the re-run; an alarm nobody could check stands, as it did before
triage); 2 bad usage or unreadable results (the report's own exit 2).

Cost: each triaged (A, B) pair costs one asv run of the flagged benchmarks over 2 commits,
plus 3 commits per bisection step, each round reinstalling the commit into its environment;
docs/nightly.md has the figures measured on the 2-core x86_64 VM.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lnbench.argtypes import OneLineParser
from lnbench.nightly.bisection import _bisect, between, git, subject
from lnbench.nightly.remeasure import AsvMeasure, Measure, StoredHistory
from lnbench.nightly.render import gate, render_md
from lnbench.nightly.rule import (
    AB,
    Point,
    Rule,
    at_quantile,
    badness_ratio,
    compare,
    mid_is_bad,
    statistic_name,
)
from lnbench.nightly.screen import QUANTILE, SOURCE, low_quantile_alarms
from lnbench.nightly.verdicts import (
    STORE,
    Alarm,
    Series,
    UsageError,
    Verdict,
    load_store,
    save_store,
)

__all__ = ["AB", "STORE", "Alarm", "AsvMeasure", "Measure", "Point", "Rule", "Series",
           "StoredHistory", "UsageError", "Verdict", "anchor", "badness_ratio", "between",
           "compare", "gate", "git", "load_store", "main", "mid_is_bad", "newest_commits",
           "render_md", "report_cmd", "report_json", "save_store", "subject", "triage"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def report_cmd(results: Path, py: str = sys.executable) -> list[str]:
    """``lnbench report regressions --results R --latest-only``. Run in the project's checkout
    (``cwd``), the report orders commits by its first-parent history when the results' commits
    are on it, else by commit date (its own default)."""
    return [py, "-m", "lnbench", "report", "regressions", "--results", str(results),
            "--latest-only"]


def report_json(results: Path, cwd: Path | None = None) -> dict[str, Any]:
    """The report's JSON document (``report_cmd`` with ``--format json``, run in ``cwd``)."""
    cmd = [*report_cmd(results), "--format", "json"]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)
    if p.returncode:
        line = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        raise UsageError(line.removeprefix("lnbench: error: "))
    try:
        return json.loads(p.stdout)
    except ValueError as e:
        raise UsageError(f"lnbench report regressions: not JSON ({e})") from None


def newest_commits(results: Path) -> dict[str, str]:
    """Each machine's newest measured commit (asv's result ``date``, the commit's date)."""
    newest: dict[str, tuple[float, str]] = {}
    for sub in results.iterdir() if results.is_dir() else []:
        if not (sub / "machine.json").is_file():
            continue
        for f in sub.glob("*.json"):
            if f.name == "machine.json":
                continue
            try:
                d = json.loads(f.read_text())
                date, commit = float(d.get("date") or 0), str(d["commit_hash"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if sub.name not in newest or date > newest[sub.name][0]:
                newest[sub.name] = (date, commit)
    return {m: c for m, (_, c) in newest.items()}


#: ``history(series) -> [(commit, stored value), ...]`` oldest first
History = Callable[[Series], list[tuple[str, float]]]


def anchor(al: Alarm, history: list[tuple[str, float]]) -> str | None:
    """The A of the A/B: the alarm's ``prev_commit``, unless its stored value already lies
    nearer the alarm's ``after`` level than its ``before`` level (log scale) -- then the newest
    measured commit before it that is nearer ``before``. (A change judged at the newest point
    can name as "previous" a commit that is itself past the step; re-running it against B
    would find nothing.)"""
    a = al.prev_commit
    if not a or not al.before or not al.after or al.before <= 0 or al.after <= 0:
        return a
    mid = math.sqrt(al.before * al.after)
    values = dict(history)
    if a not in values or (values[a] < mid) == (al.before < mid):
        return a
    order = [c for c, _ in history]
    for c in reversed(order[:order.index(a)]):
        if (values[c] < mid) == (al.before < mid):
            return c
    return a


def triage(alarms: list[Alarm], measure: Measure, repo: Path, machine: str,
           store: dict[str, Verdict], rule: Rule | None = None, log: Any = None,
           history: History | None = None) -> list[Verdict]:
    """Verdicts for ``alarms`` (module docstring): stored ones reused, the others re-measured
    with ``measure`` (A/B per (A, commit), A from ``anchor``, then bisection)."""
    log = log or sys.stderr
    rule = rule or Rule()
    verdicts: dict[str, Verdict] = {}
    todo: dict[tuple[str, str], list[Alarm]] = {}
    for al in alarms:
        k = al.key()
        if k in store:
            old = store[k]
            old.earlier = True
            old.alarm.newest = al.newest
            verdicts[k] = old
        elif al.series.machine != machine:
            verdicts[k] = Verdict(al, "unchecked", f"measured on machine {al.series.machine}, "
                                  f"not this one ({machine}): re-run it there")
        elif not al.prev_commit:
            verdicts[k] = Verdict(al, "unchecked", "no commit before the step")
        else:
            a = anchor(al, history(al.series)) if history else al.prev_commit
            if a != al.prev_commit:
                print(f"triage: {al.series.label()}: A is {str(a)[:8]}, not "
                      f"{al.prev_commit[:8]} (already at the new level)", file=log)
            todo.setdefault((a or al.prev_commit, al.commit), []).append(al)

    for (a, b), group in todo.items():
        print(f"triage: A/B {a[:8]} -> {b[:8]}: {len(group)} alarm(s)", file=log, flush=True)
        pts = measure([a, b], [al.series for al in group])
        confirmed: list[Verdict] = []
        for al in group:
            pa, pb = pts.get((al.series, a)), pts.get((al.series, b))
            if pa is not None and pb is not None:
                pa, pb = at_quantile(pa, al.quantile), at_quantile(pb, al.quantile)
            if pa is None or pb is None:
                miss = ", ".join(c[:8] for c, p in ((a, pa), (b, pb)) if p is None)
                v = Verdict(al, "unchecked", f"the re-run has no value at {miss} (a failed or "
                            "missing benchmark: see the asv log)")
            else:
                ab = compare(pa, pb, al.flagged, al.higher_is_better, rule, a, b)
                ab.statistic = statistic_name(al.quantile)
                v = Verdict(al, "confirmed" if ab.confirmed else "not reproduced", ab=ab)
                if ab.confirmed:
                    confirmed.append(v)
            verdicts[al.key()] = v
        if confirmed:
            _bisect(confirmed, a, b, measure, repo, rule, log)
    for k, v in verdicts.items():
        if not v.earlier and v.status != "unchecked":
            store[k] = v
    return [verdicts[al.key()] for al in alarms]


# --- command line --------------------------------------------------------------------------------


class _Parser(OneLineParser):
    error_name = "triage"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--results", required=True, metavar="DIR", help="asv results directory")
    ap.add_argument("--config", default="asv.conf.json", metavar="FILE",
                    help="asv config whose environments re-run the alarms")
    ap.add_argument("--machine", metavar="NAME",
                    help="asv machine of this run (default: asv's, the host name)")
    ap.add_argument("--factor", type=float, default=Rule.factor,
                    help=f"least A/B ratio (default {Rule.factor})")
    ap.add_argument("--alpha", type=float, default=Rule.alpha,
                    help=f"Mann-Whitney U significance level (default {Rule.alpha})")
    ap.add_argument("--rounds", type=int, metavar="N",
                    help="asv rounds per commit in the re-runs (default: the benchmarks')")
    ap.add_argument("--no-screen", action="store_true",
                    help="triage the report's alarms only, not also those of its method on the "
                         "10th percentile of the recorded samples (lnbench.nightly.screen)")
    ap.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")


def _series_key(al: Alarm) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    s = al.series
    return s.machine, s.env, s.benchmark, s.params


def collect_alarms(results: Path, here: Path | None, store: dict[str, Verdict],
                   screen: bool = True) -> list[Alarm]:
    """The alarms to triage (module docstring, step 1): the report's, and with ``screen`` those
    of ``lnbench.nightly.screen`` (the report's method on the samples' 10th percentile). Where
    both flag a series, the screen's alarm is triaged (the more robust level), unless the
    report's already has a stored verdict."""
    newest = newest_commits(results)

    def alarm(e: dict[str, Any], source: str = "") -> Alarm:
        al = Alarm.from_report(e)
        al.source = source
        al.newest = bool(e["newest"]) if "newest" in e else \
            newest.get(al.series.machine) == al.commit
        return al

    alarms = [alarm(e) for e in report_json(results, here).get("regressions", [])]
    if not screen:
        return alarms
    where = {_series_key(al): i for i, al in enumerate(alarms)}
    for e in low_quantile_alarms(results, here):
        al = alarm(e, SOURCE)
        i = where.get(_series_key(al))
        if i is None:
            where[_series_key(al)] = len(alarms)
            alarms.append(al)
        elif alarms[i].key() not in store:
            alarms[i] = al
    return alarms


def run(args: argparse.Namespace) -> int:
    from lnbench.nightly.pipeline import config_repo, needs_machine

    results = Path(args.results).resolve()
    config = Path(args.config).resolve()
    if not config.is_file():
        raise UsageError(f"--config {args.config}: no such file")
    if args.factor < 1 or not 0 < args.alpha < 1:
        raise UsageError("--factor must be >= 1 and --alpha in (0, 1)")
    repo = config_repo(config)
    here = repo if repo.is_dir() else None
    store = load_store(results)
    alarms = collect_alarms(results, here, store, screen=not args.no_screen)
    machine = args.machine
    if machine is None:
        from asv.machine import Machine

        machine = Machine.get_unique_machine_name()
    work = Path(tempfile.mkdtemp(prefix="lnbench-triage-"))
    try:
        if any(al.key() not in store and al.series.machine == machine for al in alarms) \
                and needs_machine(machine):
            subprocess.call([sys.executable, "-m", "asv", "machine", "--yes", "--machine",
                             machine, "--config", str(config)], cwd=config.parent,
                            stdout=sys.stderr, stderr=sys.stderr)
        measure = AsvMeasure(config, machine, work, rounds=args.rounds)
        rule = Rule(factor=args.factor, alpha=args.alpha)
        stored, low = StoredHistory(results), StoredHistory(results, QUANTILE)
        screened = {al.series for al in alarms if al.quantile is not None}
        verdicts = triage(alarms, measure, repo, machine, store, rule,
                          history=lambda s: low(s) if s in screened else stored(s))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if measure.runs:
        save_store(results, store)
        print(f"triage: {measure.runs} asv run(s), {measure.seconds:.0f} s", file=sys.stderr)
    report_md = subprocess.run(report_cmd(results), capture_output=True, text=True, check=False,
                               cwd=here).stdout
    sys.stdout.write(render_md(verdicts, report_md))
    if args.json:
        Path(args.json).write_text(json.dumps({"verdicts": [v.to_dict() for v in verdicts]},
                                              indent=1) + "\n")
    return gate(verdicts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = _Parser(prog="python -m lnbench.nightly triage",
                 description="Re-run the regression report's alarms A/B, interleaved; bisect")
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"triage: error: {e}", file=sys.stderr)
        return EXIT_USAGE
