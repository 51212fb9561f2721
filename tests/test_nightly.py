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
