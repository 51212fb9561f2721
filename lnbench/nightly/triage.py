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
   for timings). The alarm is **confirmed** when

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
   decision). A step not visible in a bisection run (``hi/lo < factor``) stops the search and
   names the remaining range. ``ceil(log2(k + 1))`` runs for ``k`` commits between. The first
   bad commit is named with its subject.

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
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
STORE = "lnbench-triage.json"


class UsageError(Exception):
    """Bad usage or unreadable input: one line on stderr, exit 2."""


# --- the rule ------------------------------------------------------------------------------------


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


# --- alarms and verdicts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    benchmark: str
    params: tuple[tuple[str, str], ...]
    machine: str
    env: str
    metric: str

    def label(self) -> str:
        ps = ", ".join(v for _, v in self.params)
        return f"{self.benchmark}({ps})" if ps else self.benchmark


@dataclass
class Alarm:
    series: Series
    commit: str
    prev_commit: str | None
    ratio: float
    before: float | None
    after: float | None
    unit: str
    newest: bool = False

    @property
    def higher_is_better(self) -> bool:
        return self.ratio < 1

    @property
    def flagged(self) -> float:
        """The flagged ratio in badness orientation (> 1)."""
        return 1 / self.ratio if self.higher_is_better else self.ratio

    def key(self) -> str:
        s = self.series
        return json.dumps([s.machine, s.env, s.benchmark, list(s.params), s.metric,
                           self.prev_commit, self.commit])

    @classmethod
    def from_report(cls, entry: dict[str, Any]) -> Alarm:
        params = tuple((str(k), str(v)) for k, v in (entry.get("params") or {}).items())
        series = Series(str(entry["benchmark"]), params, str(entry["machine"]),
                        str(entry.get("env") or ""), str(entry.get("metric") or ""))
        return cls(series, str(entry["commit"]), entry.get("prev_commit"),
                   float(entry["ratio"]), entry.get("before"), entry.get("after"),
                   str(entry.get("unit") or ""))


@dataclass
class Verdict:
    alarm: Alarm
    status: str  # "confirmed" | "not reproduced" | "unchecked"
    reason: str = ""
    ab: AB | None = None
    first_bad: str | None = None
    first_bad_subject: str = ""
    bisect: list[dict[str, Any]] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)  # an unfinished bisection's range
    earlier: bool = False  # reused from the store

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["alarm"]["series"]["params"] = dict(self.alarm.series.params)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        a = dict(d["alarm"])
        s = dict(a.pop("series"))
        s["params"] = tuple((str(k), str(v)) for k, v in (s.get("params") or {}).items())
        alarm = Alarm(Series(**s), **a)
        ab = AB(**d["ab"]) if d.get("ab") else None
        rest = {k: v for k, v in d.items() if k not in ("alarm", "ab", "earlier")}
        return cls(alarm=alarm, ab=ab, **rest)


def load_store(results: Path) -> dict[str, Verdict]:
    path = results / STORE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        verdicts = [Verdict.from_dict(v) for v in doc["verdicts"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: unreadable triage verdicts ({e})") from None
    return {v.alarm.key(): v for v in verdicts}


def save_store(results: Path, store: dict[str, Verdict]) -> None:
    doc = {"version": 1, "verdicts": [v.to_dict() for v in store.values()]}
    tmp = results / (STORE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(results / STORE)


# --- git -----------------------------------------------------------------------------------------


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


# --- measuring -----------------------------------------------------------------------------------

#: ``measure(commits, series) -> {(series, commit): Point}``; a missing key is a failed or
#: absent measurement
Measure = Callable[[list[str], list[Series]], dict[tuple[Series, str], Point]]


def _unquote(v: str) -> str:
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"" else v


class AsvMeasure:
    """Re-measure series with ``asv run --interleave-rounds --record-samples`` over a
    HASHFILE of commits, into a temporary results folder (module docstring, step 2)."""

    def __init__(self, config: Path, machine: str, work: Path, env: dict[str, str] | None = None,
                 rounds: int | None = None, log: Any = None) -> None:
        from lnbench.nightly.pipeline import load_config

        self.config, self.machine, self.work = config, machine, work
        self.env = dict(env or os.environ)
        self.rounds, self.log = rounds, log or sys.stderr
        self.conf = load_config(config)
        self.runs = 0
        self.seconds = 0.0
        self.commands: list[list[str]] = []

    def _derived(self, folder: Path) -> Path:
        base = self.config.parent
        conf = dict(self.conf)
        for key, default in (("repo", "."), ("benchmark_dir", "benchmarks"),
                             ("env_dir", "env"), ("build_cache_dir", None)):
            value = conf.get(key, default)
            if value is not None and not (key == "repo" and "://" in str(value)):
                conf[key] = str((base / value).resolve())
        conf["results_dir"] = str(folder / "results")
        conf["html_dir"] = str(folder / "html")
        path = folder / "asv.conf.json"
        path.write_text(json.dumps(conf, indent=2) + "\n")
        return path

    @staticmethod
    def regex(series: Series, bench_params: list[list[str]], names: list[str]) -> str:
        """asv ``-b`` regex for exactly this parameter combination (asv matches
        ``name(p1, p2, ...)`` with the parameters' reprs)."""
        if not bench_params:
            return f"^{re.escape(series.benchmark)}$"
        given = dict(series.params)
        parts = []
        for name, values in zip(names, bench_params, strict=False):
            want = given.get(name)
            match = [v for v in values if _unquote(v) == want]
            parts.append(re.escape(match[0]) if match else ".*")
        return f"^{re.escape(series.benchmark)}\\({', '.join(parts)}\\)$"

    def __call__(self, commits: list[str], series: list[Series]) -> dict[tuple[Series, str], Point]:
        import time

        from asv.results import iter_results_for_machine_and_hash

        folder = Path(tempfile.mkdtemp(prefix="ab-", dir=self.work))
        conf = self._derived(folder)
        bench_json = self._benchmarks_json()
        regexes = []
        for s in series:
            info = bench_json.get(s.benchmark, {})
            regexes.append(self.regex(s, info.get("params") or [], info.get("param_names") or []))
        hashfile = folder / "commits.txt"
        hashfile.write_text("\n".join(commits) + "\n")
        cmd = [sys.executable, "-m", "asv", "run", "--interleave-rounds", "--record-samples",
               "--show-stderr", "--machine", self.machine, "--config", str(conf),
               *[a for r in sorted(set(regexes)) for a in ("-b", r)],
               *(["-a", f"rounds={self.rounds}"] if self.rounds else []),
               f"HASHFILE:{hashfile}"]
        self.commands.append(cmd)
        print("$ " + " ".join(cmd), file=self.log, flush=True)
        t0 = time.perf_counter()
        env = dict(self.env, ASV_CONF_DIR=str(folder))
        rc = subprocess.call(cmd, cwd=folder, env=env, stdout=self.log, stderr=self.log)
        self.seconds += time.perf_counter() - t0
        self.runs += 1
        print(f"--- asv run exit {rc} ({time.perf_counter() - t0:.1f} s)", file=self.log,
              flush=True)
        out: dict[tuple[Series, str], Point] = {}
        results = folder / "results"
        names = {}
        try:
            fresh = json.loads((results / "benchmarks.json").read_text())
            names = {k: v.get("param_names") or [] for k, v in fresh.items()
                     if isinstance(v, dict)}
        except (OSError, ValueError):
            pass
        for commit in commits:
            try:
                found = list(iter_results_for_machine_and_hash(str(results), self.machine,
                                                               commit))
            except Exception:  # noqa: BLE001 - asv raises plain errors for a missing commit
                found = []
            for s in series:
                for res in sorted(found, key=lambda r: r.env_name):
                    point = _point(res, s, names.get(s.benchmark, []))
                    if point is not None:
                        out[(s, commit)] = point
                        break
        shutil.rmtree(folder, ignore_errors=True)
        return out

    def _benchmarks_json(self) -> dict[str, Any]:
        results = (self.config.parent / self.conf.get("results_dir", "results")).resolve()
        try:
            return json.loads((results / "benchmarks.json").read_text())
        except (OSError, ValueError):
            return {}


class StoredHistory:
    """A series' stored values per commit, oldest first (asv's result files of its machine,
    ordered by the result's commit date), for ``anchor``."""

    def __init__(self, results: Path) -> None:
        self.results = results
        self._files: dict[str, list[Any]] = {}
        try:
            bj = json.loads((results / "benchmarks.json").read_text())
        except (OSError, ValueError):
            bj = {}
        self.names = {k: v.get("param_names") or [] for k, v in bj.items() if isinstance(v, dict)}

    def __call__(self, s: Series) -> list[tuple[str, float]]:
        from asv.results import iter_results_for_machine

        if s.machine not in self._files:
            try:
                found = list(iter_results_for_machine(str(self.results), s.machine))
            except Exception:  # noqa: BLE001 - an unreadable file: no history, no re-anchoring
                found = []
            self._files[s.machine] = sorted(found, key=lambda r: r.date or 0)
        out = []
        for res in self._files[s.machine]:
            if s.env and res.env_name != s.env:
                continue
            p = _point(res, s, self.names.get(s.benchmark, []))
            if p is not None and p.value:
                out.append((res.commit_hash, p.value))
        return out


def _point(res: Any, s: Series, names: list[str]) -> Point | None:
    key = s.benchmark
    try:
        params = res.get_result_params(key)
        values = res.get_result_value(key, params)
        samples = res.get_result_samples(key, params)
        stats = res.get_result_stats(key, params)
    except KeyError:
        return None
    # asv gives lists in itertools.product order; one element when the benchmark has no params
    given = dict(s.params)
    for i, combo in enumerate(itertools.product(*params)):
        pairs = zip(names, combo, strict=False)
        if all(given.get(n) == _unquote(v) for n, v in pairs if n in given):
            value = values[i] if i < len(values) else None
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return None
            st = stats[i] if stats and i < len(stats) else None
            ci = (st["ci_99_a"], st["ci_99_b"]) if isinstance(st, dict) and \
                "ci_99_a" in st and "ci_99_b" in st else None
            smp = samples[i] if samples and i < len(samples) else None
            return Point(float(value), list(smp) if smp else None, ci)
    return None


# --- the triage ----------------------------------------------------------------------------------


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
           store: dict[str, Verdict], rule: Rule = Rule(), log: Any = None,
           history: History | None = None) -> list[Verdict]:
    """Verdicts for ``alarms`` (module docstring): stored ones reused, the others re-measured
    with ``measure`` (A/B per (A, commit), A from ``anchor``, then bisection)."""
    log = log or sys.stderr
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
            if pa is None or pb is None:
                miss = ", ".join(c[:8] for c, p in ((a, pa), (b, pb)) if p is None)
                v = Verdict(al, "unchecked", f"the re-run has no value at {miss} (a failed or "
                            "missing benchmark: see the asv log)")
            else:
                ab = compare(pa, pb, al.flagged, al.higher_is_better, rule, a, b)
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


def _bisect(found: list[Verdict], a: str, b: str, measure: Measure, repo: Path, rule: Rule,
            log: Any) -> None:
    """Halve (a, b] for every confirmed verdict, sharing runs between series whose ranges
    agree (module docstring, step 4)."""
    inner = between(repo, a, b)
    if inner is None:
        for v in found:
            v.first_bad, v.reason = None, f"{a[:8]} is not a first-parent ancestor of {b[:8]}"
        return
    state = {id(v): (a, b, list(inner)) for v in found}
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
                _, _, cands = state[id(v)]
                s = v.alarm.series
                p_lo, p_mid, p_hi = (pts.get((s, c)) for c in (lo, mid, hi))
                step = {"lo": lo, "mid": mid, "hi": hi,
                        "values": [None if p is None else p.value for p in (p_lo, p_mid, p_hi)]}
                v.bisect.append(step)
                if p_lo is None or p_mid is None or p_hi is None:
                    v.remaining, v.reason = [lo, hi], "a bisection run failed (see the asv log)"
                    state[id(v)] = (lo, hi, [])
                    continue
                hib = v.alarm.higher_is_better
                if badness_ratio(p_lo.value, p_hi.value, hib) < rule.factor:
                    v.remaining = [lo, hi]
                    v.reason = (f"the step was not visible in the bisection run of {lo[:8]} < "
                                f"{mid[:8]} < {hi[:8]}")
                    state[id(v)] = (lo, hi, [])
                    continue
                i = cands.index(mid)
                bad = mid_is_bad(p_lo.value, p_mid.value, p_hi.value, hib)
                step["bad"] = bad
                if bad:
                    state[id(v)] = (lo, mid, cands[:i])
                    if not cands[:i]:
                        v.first_bad = mid
                else:
                    state[id(v)] = (mid, hi, cands[i + 1:])
                    if not cands[i + 1:]:
                        v.first_bad = hi
    for v in found:
        if v.first_bad:
            v.first_bad_subject = subject(repo, v.first_bad)


# --- output --------------------------------------------------------------------------------------


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "–"
    if unit == "seconds":
        for scale, u in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
            if abs(x) >= scale:
                return f"{x / scale:.3g} {u}"
        return f"{x:.3g} s"
    return f"{x:.4g}{(' ' + unit) if unit and unit != 'unknown' else ''}"


def render_md(verdicts: list[Verdict], report_md: str = "") -> str:
    groups = {s: [v for v in verdicts if v.status == s]
              for s in ("confirmed", "unchecked", "not reproduced")}
    out = ["# Nightly triage", ""]
    n = len(verdicts)
    out.append(f"{n} alarm(s) from `lnbench report regressions --latest-only`: "
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
            if ab is not None:
                ratio = "–" if ab.ratio is None else f"{ab.ratio:.3f}× (≥ {ab.threshold:.3f})"
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


# --- command line --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"triage: error: {message}\n")


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
    ap.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")


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
    doc = report_json(results, here)
    newest = newest_commits(results)
    alarms = []
    for e in doc.get("regressions", []):
        al = Alarm.from_report(e)
        al.newest = bool(e["newest"]) if "newest" in e else \
            newest.get(al.series.machine) == al.commit
        alarms.append(al)
    machine = args.machine
    if machine is None:
        from asv.machine import Machine

        machine = Machine.get_unique_machine_name()
    store = load_store(results)
    work = Path(tempfile.mkdtemp(prefix="lnbench-triage-"))
    try:
        if any(al.key() not in store and al.series.machine == machine for al in alarms) \
                and needs_machine(machine):
            subprocess.call([sys.executable, "-m", "asv", "machine", "--yes", "--machine",
                             machine, "--config", str(config)], cwd=config.parent,
                            stdout=sys.stderr, stderr=sys.stderr)
        measure = AsvMeasure(config, machine, work, rounds=args.rounds)
        rule = Rule(factor=args.factor, alpha=args.alpha)
        verdicts = triage(alarms, measure, repo, machine, store, rule,
                          history=StoredHistory(results))
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
