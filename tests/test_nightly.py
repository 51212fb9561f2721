"""scripts/nightly end to end on a tiny grid (asv --quick, two implementations, float32), and the
CI workflows that call it.

Everything runs in a temporary HOME (so ~/.asv-machine.json is created there, never touched in
the real home) with results/html/site in tmp dirs. About 30-60 s on a 2-core box.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NIGHTLY = ROOT / "scripts" / "nightly"
MACHINE = "nightly-test"
TINY = {"LNBENCH_IMPLS": "numpy.kevin,torch.native", "LNBENCH_DTYPES": "float32"}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LNBENCH_", "ASV_", "GITHUB_"))}
    env.update(TINY, HOME=str(home))
    try:  # reuse matplotlib's font cache instead of rebuilding it in the new HOME
        import matplotlib

        env.setdefault("MPLCONFIGDIR", matplotlib.get_cachedir())
    except ImportError:
        pass
    return env


def nightly(tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(NIGHTLY), "--results", str(tmp / "results"), "--html",
           str(tmp / "html"), "--site", str(tmp / "site"), *args]
    return subprocess.run(cmd, env=_env(tmp / "home"), capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def first_night(tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("nightly")
    (tmp / "home").mkdir()
    proc = nightly(tmp, "--quick", "--grid", "quick", "--machine", MACHINE)
    return tmp, proc


def _is_commit(sha: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=ROOT,
                          capture_output=True, check=False).returncode == 0


def test_first_night_produces_results_html_site_and_passes_the_gate(first_night) -> None:
    tmp, proc = first_night
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # every step announced itself, in order
    heads = re.findall(r"==> \[(\d)/5\] (\S+ \S+)", proc.stdout)
    assert [h[0] for h in heads] == ["1", "2", "3", "4", "5"], heads
    assert "--python=same --set-commit-hash" in proc.stdout
    # step 1 created the machine file in the (temporary) home, under the name asked for
    assert MACHINE in json.loads((tmp / "home" / ".asv-machine.json").read_text())
    # step 2: asv results for HEAD on this machine, with real numbers for the tiny grid
    res = tmp / "results"
    # (the commit the script read as HEAD; the checkout may have moved on since)
    head = re.search(r"--set-commit-hash ([0-9a-f]{40})", proc.stdout)
    assert head, proc.stdout[-2000:]
    assert _is_commit(head.group(1))
    files = list((res / MACHINE).glob(f"{head.group(1)[:8]}-*.json"))
    assert len(files) == 1, sorted(p.name for p in (res / MACHINE).iterdir())
    data = json.loads(files[0].read_text())
    row = data["results"]["bench_backward.Backward.time_backward"]
    impls = [p.strip("'") for p in row[1][0]]
    assert impls == ["numpy.kevin", "torch.native"]
    assert any(isinstance(v, float) and v > 0 for v in row[0])
    assert (res / "benchmarks.json").exists()
    assert (res / "lnbench-machines" / f"{MACHINE}.json").exists()
    # step 3: asv's site; step 4: the dashboard linking to it by a relative path
    assert (tmp / "html" / "index.html").exists()
    index = (tmp / "site" / "index.html").read_text()
    assert 'href="../html/index.html"' in index
    assert list((tmp / "site").glob("*.png"))
    # step 5: the gate ran, found nothing, and left its report on the site
    assert "0 regression(s)" in (tmp / "site" / "regressions.md").read_text()


def _seed_open_regression(results: Path, tmp: Path) -> None:
    """A 12-commit synthetic history on another machine whose numpy.kevin time_backward got
    1.5x slower at commit 8, written with the real suite's benchmark versions (detection
    ignores results of another version, as asv does)."""
    from lnbench.report.synthetic import Injection, write_suite_history

    bj = json.loads((results / "benchmarks.json").read_text())
    unq = [[p.strip("'") for p in ps] for ps in bj["bench_backward.Accuracy.track_rel_err_dx"]
           ["params"]]
    synth = tmp / "synthetic"
    write_suite_history(
        synth, machines=("synthetic-box",), n_commits=12, impls=unq[0], shapes=unq[1],
        dtypes=unq[2], dists=unq[3],
        injections=[Injection("synthetic-box", "time_backward", {"impl": "numpy.kevin"}, 8, 1.5)],
    )
    out = results / "synthetic-box"
    out.mkdir()
    for f in (synth / "synthetic-box").iterdir():
        d = json.loads(f.read_text())
        for name, row in d.get("results", {}).items():
            row[2] = bj[name]["version"]
        (out / f.name).write_text(json.dumps(d))
    shutil.copy(synth / "lnbench-machines" / "synthetic-box.json",
                results / "lnbench-machines" / "synthetic-box.json")


def test_open_regression_fails_the_gate_after_publishing(first_night, tmp_path: Path) -> None:
    tmp0, proc0 = first_night
    assert proc0.returncode == 0, (proc0.stdout + proc0.stderr)[-3000:]
    tmp = tmp_path
    shutil.copytree(tmp0 / "results", tmp / "results")
    shutil.copytree(tmp0 / "home", tmp / "home")
    _seed_open_regression(tmp / "results", tmp)

    proc = nightly(tmp, "--quick", "--machine", MACHINE, "--bench", "Backward.time_backward")
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-4000:]
    # an alarm on another machine cannot be re-run here: unchecked, and it fails the gate
    assert "step 'regression gate (triage)' failed with exit code 1" in proc.stderr
    # the gate comes last: asv's site and the dashboard were still written
    assert (tmp / "html" / "index.html").exists()
    assert (tmp / "site" / "index.html").exists()
    report = (tmp / "site" / "regressions.md").read_text()
    assert "numpy.kevin" in report and "synthetic-box" in report
    assert "## Unchecked alarms" in report and "measured on machine synthetic-box" in report

    proc = nightly(tmp, "--quick", "--machine", MACHINE, "--bench", "Backward.time_backward",
                   "--no-gate")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "regression gate" not in proc.stdout
    assert "==> [4/4]" in proc.stdout


def test_a_failing_step_stops_with_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    proc = nightly(tmp_path, "--quick", "--bench", "NoSuchBenchmark", "--machine", MACHINE)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # asv: "No benchmarks selected"
    assert "failed with exit code 1" in proc.stderr
    assert "asv publish" not in proc.stdout
    assert not (tmp_path / "html").exists() and not (tmp_path / "site").exists()


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    for args in (["--steps", "3"], ["--range", "main"], ["--grid", "huge"],
                 ["--config", str(tmp_path / "missing.json")]):
        proc = nightly(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)


def _one_line(err: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _dry(tmp: Path, *args: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """scripts/nightly --dry-run (nothing runs) with extra environment variables."""
    (tmp / "home").mkdir(exist_ok=True)
    cmd = [sys.executable, str(NIGHTLY), "--dry-run", *args]
    return subprocess.run(cmd, env={**_env(tmp / "home"), **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_lnbench_grid_is_checked_like_the_option(tmp_path: Path) -> None:
    # argparse never checks a default against choices: an env default used to get through
    proc = _dry(tmp_path, env={"LNBENCH_GRID": "bogus"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    _one_line(proc.stderr, "LNBENCH_GRID", "bogus")
    assert "==>" not in proc.stdout
    proc = _dry(tmp_path, env={"LNBENCH_GRID": "full"})
    assert proc.returncode == 0, proc.stderr
    assert "grid full" in proc.stdout and "LNBENCH_GRID=full" in proc.stdout
    proc = _dry(tmp_path, "--grid", "anchors", env={"LNBENCH_GRID": "bogus"})  # option wins
    assert proc.returncode == 0, proc.stderr
    assert "grid anchors" in proc.stdout
    proc = _dry(tmp_path, env={"LNBENCH_GRID": ""})
    assert proc.returncode == 0 and "grid quick" in proc.stdout, proc.stderr


def test_bad_paths_and_values_exit_2_with_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    (tmp_path / "list.json").write_text("[1]\n")
    cases = [
        (["--results", str(afile)], ["--results", "not a directory"]),
        (["--html", str(afile / "sub")], ["--html", "afile"]),
        (["--site", str(afile)], ["--site", "afile"]),
        (["--bench", "("], ["--bench", "regular expression"]),
        (["--range", "a..b", "--steps", "-5"], ["--steps", "-5"]),
        (["--range", "a..b", "--steps", "0"], ["--steps"]),
        (["--grid", "huge"], ["--grid", "huge"]),
        (["--config", str(tmp_path / "list.json")], ["--config", "list.json"]),
    ]
    if Path("/proc/self").is_dir():  # a folder nobody can create anything in
        cases.append((["--results", "/proc/nores"], ["--results", "/proc/nores"]))
    for args, names in cases:
        proc = _dry(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        _one_line(proc.stderr, *names)
        assert "Traceback" not in proc.stderr
    assert afile.read_text() == "not a folder\n"
    assert not (tmp_path / "site").exists()  # the check creates nothing
    # a folder that does not exist yet is fine, and is not created by --dry-run
    proc = _dry(tmp_path, "--results", str(tmp_path / "new" / "results"), "--bench", "Back.*",
                "--range", "HEAD~2..HEAD", "--steps", "1")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nightly-probe-")]


def test_relative_plugins_become_absolute_and_missing_ones_exit_2(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "k").mkdir(parents=True)
    (work / "k" / "mine.py").write_text("# a plugin\n")
    (work / "abs.py").write_text("# another\n")
    listed = f"k/mine.py::{work / 'abs.py'}"
    proc = _dry(tmp_path, env={"LNBENCH_PLUGINS": listed}, cwd=work)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("nightly: LNBENCH_PLUG"))
    assert line == f"nightly: LNBENCH_PLUGINS={work / 'k' / 'mine.py'}:{work / 'abs.py'}"
    proc = _dry(tmp_path, env={"LNBENCH_PLUGINS": "k/mine.py:k/gone.py"}, cwd=work)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    _one_line(proc.stderr, "LNBENCH_PLUGINS", "k/gone.py")
    assert "==>" not in proc.stdout


def _load_nightly():
    from lnbench.nightly import pipeline

    return pipeline


@pytest.mark.parametrize(("codes", "keep_going", "expect", "ran"), [
    # asv fails (1), the dashboard then fails (2): the first failure's code, as documented
    ({"asv run": 1, "lnbench dashboard": 2}, True, 1, ["asv run", "asv publish",
                                                      "lnbench dashboard"]),
    ({"asv run": 2, "regression gate": 1}, True, 2, ["asv run", "asv publish",
                                                    "lnbench dashboard", "regression gate"]),
    ({"asv run": 2}, True, 2, ["asv run", "asv publish", "lnbench dashboard",
                               "regression gate"]),
    ({"asv publish": 3}, True, 3, ["asv run", "asv publish"]),
    ({"asv run": 1, "lnbench dashboard": 2}, False, 1, ["asv run"]),
    ({"regression gate": 1}, False, 1, ["asv run", "asv publish", "lnbench dashboard",
                                        "regression gate"]),
])
def test_keep_going_exits_with_the_first_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], codes,
                                                 keep_going, expect, ran) -> None:
    mod = _load_nightly()
    titles: list[str] = []

    def fake_run(self, title, cmd, env=None, capture=False, cwd=None):
        self.header(title)
        titles.append(title)
        rc = next((c for k, c in codes.items() if title.startswith(k)), 0)
        return rc, ""

    monkeypatch.setattr(mod.Pipeline, "run", fake_run)
    monkeypatch.setattr(mod, "needs_machine", lambda name: False)
    monkeypatch.setattr(mod, "head_commit", lambda repo=None: "0" * 40)
    for k in [k for k in os.environ if k.startswith(("LNBENCH_", "GITHUB_"))]:
        monkeypatch.delenv(k)
    argv = ["--results", str(tmp_path / "r"), "--html", str(tmp_path / "h"), "--site",
            str(tmp_path / "s"), *(["--keep-going"] if keep_going else [])]
    assert mod.main(argv) == expect
    assert [next(k for k in ("asv run", "asv publish", "lnbench dashboard", "regression gate")
                 if t.startswith(k)) for t in titles] == ran
    capsys.readouterr()


def test_range_mode_runs_asv_over_commits_in_built_environments(tmp_path: Path) -> None:
    proc = nightly(tmp_path, "--dry-run", "--range", "HEAD~3..HEAD", "--steps", "2",
                   "--machine", MACHINE, "--no-gate")
    assert proc.returncode == 0, proc.stderr
    run = next(ln for ln in proc.stdout.splitlines() if ln.startswith("$ ") and " run " in ln)
    assert "--python=same" not in run and "--set-commit-hash" not in run
    assert run.endswith(("HEAD~3..HEAD", "'HEAD~3..HEAD'")) and "--skip-existing-commits" in run
    assert "--steps 2" in run and f"--machine {MACHINE}" in run
    assert "--interleave-rounds" in run  # consecutive commits' rounds alternate
    assert "--record-samples" in run  # the report and the triage test significance on them
    for extra, want in (([], "-m lnbench.nightly triage"),
                        (["--no-triage"], "--fail-on-regression --latest-only")):
        proc = nightly(tmp_path, "--dry-run", "--range", "HEAD~1^!", "--machine", MACHINE,
                       *extra)
        assert proc.returncode == 0, proc.stderr
        gate = [ln for ln in proc.stdout.splitlines() if ln.startswith("$ ")][-1]
        assert want in gate, gate
        if not extra:
            assert f"--machine {MACHINE}" in gate and "--config" in gate
    proc = nightly(tmp_path, "--dry-run", "--no-gate", "--no-triage")
    assert proc.returncode == 2 and "--no-triage" in proc.stderr


# --- the workflows -------------------------------------------------------------------------------


def _workflow(name: str) -> dict:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    assert isinstance(doc, dict)
    # YAML 1.1 reads the key `on` as True
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def _runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


def _uses(job: dict) -> list[str]:
    return [s["uses"] for s in job["steps"] if "uses" in s]


def test_nightly_workflow_is_scheduled_and_calls_the_script() -> None:
    wf = _workflow("nightly.yml")
    assert "schedule" in wf["on"] and "workflow_dispatch" in wf["on"]
    assert all(re.fullmatch(r"[\d*/,-]+( [\d*/,-]+){4}", c["cron"]) for c in wf["on"]["schedule"])
    cpu = wf["jobs"]["cpu"]
    assert cpu["runs-on"] == "ubuntu-latest"
    setup = next(s for s in cpu["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert str(setup["with"]["python-version"]) == "3.11"
    assert "pip install -e ." in _runs(cpu)
    assert re.search(r"scripts/nightly [^\n]*--grid", _runs(cpu)) and "full" in _runs(cpu)
    assert "results" in _runs(cpu)  # the results branch is checked out and pushed
    gpu = wf["jobs"]["gpu"]
    assert gpu["runs-on"] == ["self-hosted", "gpu"]
    assert "pip install -e '.[gpu]'" in _runs(gpu) and "scripts/gpu-check" in _runs(gpu)
    assert "scripts/nightly" in _runs(gpu) and "anchors" in _runs(gpu)
    uses = [u for job in wf["jobs"].values() for u in _uses(job)]
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    assert wf.get("permissions", {}).get("pages") == "write" or any(
        j.get("permissions", {}).get("pages") == "write" for j in wf["jobs"].values())


def test_pr_workflow_compares_with_the_base() -> None:
    wf = _workflow("pr.yml")
    assert "pull_request" in wf["on"]
    runs = "\n".join(_runs(j) for j in wf["jobs"].values())
    assert "asv continuous" in runs and "--factor" in runs
    assert "github.event.pull_request.base.sha" in runs or "base.sha" in json.dumps(wf)


# --- triage (lnbench.nightly.triage): the rule and the bisection, on a fake measurement -------

from lnbench.nightly import triage as tri  # noqa: E402


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
