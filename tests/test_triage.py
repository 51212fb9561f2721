"""Nightly triage (lnbench.nightly.triage and its screen): bisection to the first slow commit, noise
alarms not reproduced, stored verdicts reused, the confirmation rule, alarms mapped to exact asv
selections on a real history, the low-quantile screen."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_nightly import (  # helpers shared with test_nightly.py
    ROOT,
    _env,
    _one_line,
)

from lnbench.nightly import triage as tri

# --- triage (lnbench.nightly.triage): the rule and the bisection, on a fake measurement -------


def _git_line(repo: Path, n: int) -> list[str]:
    """A real git repository with ``n`` empty commits on main; their hashes, oldest first."""
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x")
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, env=env, check=True)
    out = []
    for i in range(n):
        subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", f"c{i}"], cwd=repo,
                       env=env, check=True)
        out.append(subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, env=env, check=True,
                                  capture_output=True, text=True).stdout.strip())
    return out


class FakeMeasure:
    """Samples around a per-commit level (seconds), with seeded lognormal noise and a shared
    per-run drift (the slow spell that interleaving cancels)."""

    def __init__(self, level, n: int = 20, noise: float = 0.05, seed: int = 0) -> None:
        import numpy as np

        self.level, self.n, self.noise = level, n, noise
        self.rng = np.random.default_rng(seed)
        self.calls: list[list[str]] = []

    def __call__(self, commits, series):
        self.calls.append(list(commits))
        drift = float(self.rng.uniform(0.5, 2.0))
        out = {}
        for s in series:
            for c in commits:
                lv = self.level(s, c)
                if lv is None:
                    continue
                smp = list(lv * drift * self.rng.lognormal(0, self.noise, self.n))
                out[(s, c)] = tri.Point(float(sorted(smp)[self.n // 2]), smp)
        return out


def _alarm(a: str, b: str, ratio: float = 1.3, machine: str = "m", bench: str = "b.time_x",
           params: dict | None = None) -> tri.Alarm:
    return tri.Alarm.from_report({
        "benchmark": bench, "params": params or {"impl": "k"}, "machine": machine,
        "commit": b, "prev_commit": a, "metric": "time_x", "before": 1.0, "after": ratio,
        "ratio": ratio, "unit": "seconds", "env": "e"})


@pytest.mark.parametrize("bad_at", range(1, 9))
def test_bisection_names_the_first_slow_commit(tmp_path: Path, bad_at: int) -> None:
    cs = _git_line(tmp_path / "r", 9)
    idx = {c: i for i, c in enumerate(cs)}
    m = FakeMeasure(lambda s, c: 1e-3 * (1.3 if idx[c] >= bad_at else 1.0), seed=bad_at)
    store: dict = {}
    (v,) = tri.triage([_alarm(cs[0], cs[8])], m, tmp_path / "r", "m", store)
    assert v.status == "confirmed" and v.first_bad == cs[bad_at], (bad_at, v)
    assert v.first_bad_subject == f"c{bad_at}"
    assert m.calls[0] == [cs[0], cs[8]]  # the A/B first, then halving runs of (lo, mid, hi)
    assert all(len(c) == 3 for c in m.calls[1:]) and len(m.calls) - 1 <= 3  # ceil(log2(8))
    assert tri.gate([v]) == 1 and list(store) == [v.alarm.key()]


def test_noise_alarm_is_not_reproduced_and_passes(tmp_path: Path) -> None:
    cs = _git_line(tmp_path / "r", 3)
    m = FakeMeasure(lambda s, c: 2e-4)  # the code never changed: the stored step was a spell
    vs = tri.triage([_alarm(cs[0], cs[2], 1.4)], m, tmp_path / "r", "m", {})
    assert [v.status for v in vs] == ["not reproduced"] and vs[0].first_bad is None
    assert len(m.calls) == 1 and tri.gate(vs) == 0
    md = tri.render_md(vs)
    assert "## Not reproduced" in md and "Confirmed" not in md


def test_stored_verdicts_are_reused_and_keep_failing(tmp_path: Path) -> None:
    cs = _git_line(tmp_path / "r", 2)
    (tmp_path / "res").mkdir()
    m = FakeMeasure(lambda s, c: 1e-3 * (1.5 if c == cs[1] else 1.0))
    store: dict = {}
    first = tri.triage([_alarm(cs[0], cs[1], 1.5)], m, tmp_path / "r", "m", store)
    assert first[0].status == "confirmed" and first[0].first_bad == cs[1]  # nothing between
    tri.save_store(tmp_path / "res", store)
    loaded = tri.load_store(tmp_path / "res")
    again = tri.triage([_alarm(cs[0], cs[1], 1.5)], m, tmp_path / "r", "m", loaded)
    assert len(m.calls) == 1  # not re-run
    assert again[0].status == "confirmed" and again[0].earlier and tri.gate(again) == 1
    assert "verdict of an earlier night" in tri.render_md(again)
    (tmp_path / "res" / tri.STORE).write_text("{broken")
    with pytest.raises(tri.UsageError, match="lnbench-triage.json"):
        tri.load_store(tmp_path / "res")


def test_alarms_that_cannot_be_rerun_are_unchecked_and_fail(tmp_path: Path) -> None:
    cs = _git_line(tmp_path / "r", 2)
    m = FakeMeasure(lambda s, c: None if c == cs[0] else 1e-3)  # A fails in the re-run
    vs = tri.triage([_alarm(cs[0], cs[1], machine="other"), _alarm(cs[0], cs[1])], m,
                    tmp_path / "r", "m", {})
    assert [v.status for v in vs] == ["unchecked", "unchecked"]
    assert "machine other" in vs[0].reason and cs[0][:8] in vs[1].reason
    assert tri.gate(vs) == 1


def test_bisection_stops_when_the_step_vanishes(tmp_path: Path) -> None:
    cs = _git_line(tmp_path / "r", 5)
    calls = {"n": 0}

    def level(s, c):  # the A/B shows the step; the bisection runs do not
        return 1e-3 * (1.3 if c == cs[4] and calls["n"] == 1 else 1.0)

    m = FakeMeasure(level)
    orig = m.__call__

    def counted(commits, series):
        calls["n"] += 1
        return orig(commits, series)

    vs = tri.triage([_alarm(cs[0], cs[4])], counted, tmp_path / "r", "m", {})
    assert vs[0].status == "confirmed" and vs[0].first_bad is None
    assert vs[0].remaining == [cs[0], cs[4]] and "not visible" in vs[0].reason
    assert "between" in tri.render_md(vs)


class MixtureMeasure:
    """100 samples a commit: ``level(c)`` for the code, a ``share(c)`` of them slowed 1.6x (a
    neighbour's rounds); what interference does to asv's median but not to a low quantile."""

    def __init__(self, level, share) -> None:
        import numpy as np

        self.level, self.share, self.rng = level, share, np.random.default_rng(7)

    def __call__(self, commits, series):
        out = {}
        for s in series:
            for c in commits:
                k = round(100 * self.share(c))
                smp = [self.level(c) * (1.6 if i < k else 1.0) * self.rng.lognormal(0, 0.01)
                       for i in range(100)]
                out[(s, c)] = tri.Point(float(sorted(smp)[50]), smp)
        return out


def test_bisection_of_a_median_alarm_decides_on_the_low_quantile(tmp_path: Path) -> None:
    # c1 is 1.5x slower code; c2 (the same code) had 60 % of its samples slowed in every run,
    # so c2's median is 2.4x c0's and c1's 1.5x lies nearer c0 in log space: decided on the
    # medians, the first bad commit would be c2; on the 10th percentiles it is c1
    cs = _git_line(tmp_path / "r", 3)
    m = MixtureMeasure(lambda c: 1e-3 * (1.0 if c == cs[0] else 1.5),
                       lambda c: 0.6 if c == cs[2] else 0.0)
    (v,) = tri.triage([_alarm(cs[0], cs[2], 2.0)], m, tmp_path / "r", "m", {})
    assert v.status == "confirmed" and v.ab.statistic == "value", v
    assert v.first_bad == cs[1], v.bisect
    assert v.bisect[0]["statistic"] == "p10" and v.bisect[0]["bad"] is True, v.bisect


def test_bisection_keeps_the_median_when_only_the_median_steps(tmp_path: Path) -> None:
    # c1 slows 60 % of the calls (the code, in every run): the 10th percentile does not move,
    # the median does; the bisection decides on the median and names c1
    cs = _git_line(tmp_path / "r", 3)
    m = MixtureMeasure(lambda c: 1e-3, lambda c: 0.0 if c == cs[0] else 0.6)
    (v,) = tri.triage([_alarm(cs[0], cs[2], 1.6)], m, tmp_path / "r", "m", {})
    assert v.status == "confirmed" and v.first_bad == cs[1], v.bisect
    assert v.bisect[0]["statistic"] == "value", v.bisect


def test_confirmation_rule() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    rule = tri.Rule()

    def pt(level: float, n: int = 10, noise: float = 0.03):
        s = list(level * rng.lognormal(0, noise, n))
        return tri.Point(float(np.median(s)), s)

    assert tri.compare(pt(1.0), pt(1.3), 1.3, False, rule).confirmed
    # half the flagged step in log space: a 2x alarm needs >= 1.414x
    ab = tri.compare(pt(1.0), pt(1.3), 2.0, False, rule)
    assert not ab.confirmed and abs(ab.threshold - 2 ** 0.5) < 1e-12
    assert tri.Rule().threshold(1.02) == 1.05  # never below the factor
    # significance: a big ratio on wildly spread samples is not enough
    wide_a, wide_b = pt(1.0, noise=0.8), pt(1.3, noise=0.8)
    ab = tri.compare(wide_a, wide_b, 1.3, False, rule)
    assert ab.test == "mann-whitney" and (ab.p >= 0.002) == (not ab.confirmed)
    # too few samples for p < 0.002 (5 + 5): asv's 99 % CI overlap decides
    a = tri.Point(1.0, [1.0] * 5, (0.95, 1.05))
    b = tri.Point(1.3, [1.3] * 5, (1.2, 1.4))
    assert tri.compare(a, b, 1.3, False, rule).test == "ci99"
    assert tri.compare(a, b, 1.3, False, rule).confirmed
    assert not tri.compare(a, tri.Point(1.3, [1.3] * 5, (1.0, 1.6)), 1.3, False, rule).confirmed
    # one value per commit (track_*): the ratio alone, and it says so
    ab = tri.compare(tri.Point(10.0), tri.Point(7.0), 1 / 0.7, True, rule)
    assert ab.test == "ratio only" and ab.confirmed and abs(ab.ratio - 10 / 7) < 1e-12
    # higher is better: a rise is no regression
    assert not tri.compare(pt(1.0), pt(1.3), 1.3, True, rule).confirmed


def test_alarm_from_report_orientation_and_key() -> None:
    al = _alarm("a" * 40, "b" * 40, ratio=0.7)
    assert al.higher_is_better and abs(al.flagged - 1 / 0.7) < 1e-12
    assert al.key() != _alarm("a" * 40, "b" * 40, ratio=0.7, params={"impl": "j"}).key()
    assert al.series.label() == "b.time_x(k)"


def test_regex_selects_exactly_the_flagged_combination() -> None:
    import itertools

    params = [["'numpy.kevin'", "'torch.native'"], ["'64x1023'", "'1x768'"], ["'float32'"]]
    names = ["impl", "shape", "dtype"]
    s = tri.Series("bench_backward.Backward.time_backward",
                   (("impl", "torch.native"), ("shape", "1x768"), ("dtype", "float32")),
                   "m", "e", "time_backward")
    rx = tri.AsvMeasure.regex(s, params, names)
    # asv matches re.search(regex, f"{name}({', '.join(param_reprs)})") (asv.benchmarks)
    hits = [c for c in itertools.product(*params)
            if re.search(rx, f"{s.benchmark}({', '.join(c)})")]
    assert hits == [("'torch.native'", "'1x768'", "'float32'")]
    assert not re.search(rx, f"{s.benchmark}x({', '.join(hits[0])})")


def test_triage_command_bad_input_exits_2(tmp_path: Path) -> None:
    env = _env(tmp_path)
    for args, names in (
        (["--results", str(tmp_path / "nothing"), "--config", str(ROOT / "asv.conf.json")],
         ["--results"]),
        (["--results", str(tmp_path), "--config", str(tmp_path / "none.json")], ["--config"]),
    ):
        proc = subprocess.run([sys.executable, "-m", "lnbench.nightly", "triage", *args],
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        _one_line(proc.stderr, *names)
    proc = subprocess.run([sys.executable, "-m", "lnbench.nightly", "bogus"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "run | triage" in proc.stderr


def _histories() -> Path | None:
    base = Path(os.environ.get("LNBENCH_ASV_HISTORIES")
                or ROOT.parent / "shared" / "data" / "asv-histories")
    return base if (base / "kedro.tar.gz").is_file() else None


def test_alarms_of_a_real_history_map_to_exact_asv_selections(tmp_path: Path) -> None:
    """kedro's committed asv results (outside data): every alarm the latest-only report
    raises becomes an Alarm, and its ``-b`` regex selects exactly its parameter combination
    among the benchmark's combinations in kedro's own benchmarks.json."""
    import itertools
    import tarfile

    base = _histories()
    if base is None:
        pytest.skip("../shared/data/asv-histories/kedro.tar.gz is absent "
                    "(set LNBENCH_ASV_HISTORIES)")
    with tarfile.open(base / "kedro.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    results = next(p.parent for p in tmp_path.rglob("benchmarks.json"))
    doc = tri.report_json(results)
    bj = json.loads((results / "benchmarks.json").read_text())
    newest = tri.newest_commits(results)
    assert newest, "no machine found"
    alarms = [tri.Alarm.from_report(e) for e in doc["regressions"]]
    for al in alarms:
        info = bj.get(al.series.benchmark)
        assert info is not None, al
        params, names = info.get("params") or [], info.get("param_names") or []
        rx = tri.AsvMeasure.regex(al.series, params, names)
        combos = [f"{al.series.benchmark}({', '.join(c)})" for c in itertools.product(*params)]
        hits = [c for c in combos if re.search(rx, c)] if params else \
            [al.series.benchmark] if re.search(rx, al.series.benchmark) else []
        assert len(hits) == 1, (al, rx, hits)
        assert al.flagged > 1 and al.prev_commit and al.commit != al.prev_commit


def test_a_is_moved_back_when_the_reported_previous_commit_is_past_the_step(
        tmp_path: Path) -> None:
    """A change judged at the newest point can name as 'previous' a commit already at the new
    level; the A/B must start from the last stored point at the old level."""
    cs = _git_line(tmp_path / "r", 6)
    idx = {c: i for i, c in enumerate(cs)}
    stored = [(cs[0], 1.0e-3), (cs[1], 1.02e-3), (cs[3], 2.1e-3), (cs[5], 2.2e-3)]
    al = tri.Alarm.from_report({"benchmark": "b.time_x", "params": {}, "machine": "m",
                                "commit": cs[5], "prev_commit": cs[3], "metric": "time_x",
                                "before": 1.0e-3, "after": 2.2e-3, "ratio": 2.2,
                                "unit": "seconds", "env": "e"})
    assert tri.anchor(al, stored) == cs[1]
    assert tri.anchor(al, stored[:1] + stored[2:3]) == cs[0]
    m = FakeMeasure(lambda s, c: 1e-3 * (2.0 if idx[c] >= 2 else 1.0))
    (v,) = tri.triage([al], m, tmp_path / "r", "m", {}, history=lambda s: stored)
    assert m.calls[0] == [cs[1], cs[5]]
    assert v.status == "confirmed" and v.first_bad == cs[2], v
    assert tri.anchor(al, [(cs[3], 1.01e-3)]) == cs[3]  # already at the old level: kept


def _mixture_history(results: Path, step_at: int | None, n: int = 10, seed: int = 3) -> list[str]:
    """``n`` commits of one timing benchmark whose samples are an undisturbed body (50 µs,
    1 % spread) plus a slowed part (1.2-1.9x) whose share is drawn per commit from 35-65 %,
    as interference on a busy machine makes them: the medians jump, the 10th percentiles do
    not. From ``step_at`` on the code is 1.3x slower."""
    import numpy as np

    from lnbench.report.synthetic import (
        BenchSpec,
        commit_hash,
        write_benchmarks_json,
        write_machine_json,
        write_result_file,
    )

    rng = np.random.default_rng(seed)
    spec = BenchSpec("bench.Kernel.time_backward", [], [], "seconds", "time")
    write_benchmarks_json(results, [spec])
    write_machine_json(results, "box")
    commits = []
    for i in range(n):
        base = 50e-6 * (1.3 if step_at is not None and i >= step_at else 1.0)
        share = rng.uniform(0.35, 0.65)
        body = base * np.exp(rng.normal(0, 0.01, 400))
        slow = rng.random(400) < share
        smp = np.where(slow, body * rng.uniform(1.2, 1.9, 400), body)
        c = commit_hash(i)
        write_result_file(results, "box", c, 1_700_000_000_000 + i * 3_600_000,
                          {spec.name: [float(np.median(smp))]}, {spec.name: spec},
                          samples={spec.name: [smp.tolist()]})
        commits.append(c)
    return commits


def test_screen_flags_a_step_in_the_low_quantile_of_mixed_samples(tmp_path: Path) -> None:
    from lnbench.nightly.screen import QUANTILE, low_quantile, low_quantile_alarms

    commits = _mixture_history(tmp_path / "step", step_at=8)
    (al,) = low_quantile_alarms(tmp_path / "step")
    assert al["benchmark"] == "bench.Kernel.time_backward" and al["machine"] == "box"
    assert (al["prev_commit"], al["commit"]) in ((commits[7], commits[8]), (commits[8],
                                                                           commits[9])), al
    assert 1.2 < al["ratio"] < 1.4, al  # the 1.3x of the body, not the medians' jumps
    # the same mixtures without a step: nothing
    _mixture_history(tmp_path / "flat", step_at=None)
    assert low_quantile_alarms(tmp_path / "flat") == []
    # too few samples: no level
    assert low_quantile([1.0] * 19) is None and low_quantile([2.0] * 20, QUANTILE) == 2.0


def test_alarms_of_the_screen_join_the_reports(tmp_path: Path) -> None:
    """collect_alarms: the screen's alarm is triaged where the report has none (or replaces
    the report's on the same series), marked with its source; --no-screen leaves it out."""
    commits = _mixture_history(tmp_path, step_at=8)
    alarms = tri.collect_alarms(tmp_path, None, {})
    screened = [a for a in alarms if a.source]
    assert len(screened) == 1 and screened[0].quantile == 0.1, alarms
    assert screened[0].commit in commits[8:], screened
    assert all(not a.source for a in tri.collect_alarms(tmp_path, None, {}, screen=False))
