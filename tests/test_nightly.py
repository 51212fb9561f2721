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
    assert "step 'regression gate' failed with exit code 1" in proc.stderr
    # the gate comes last: asv's site and the dashboard were still written
    assert (tmp / "html" / "index.html").exists()
    assert (tmp / "site" / "index.html").exists()
    report = (tmp / "site" / "regressions.md").read_text()
    assert "numpy.kevin" in report and "synthetic-box" in report

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


def test_range_mode_runs_asv_over_commits_in_built_environments(tmp_path: Path) -> None:
    proc = nightly(tmp_path, "--dry-run", "--range", "HEAD~3..HEAD", "--steps", "2",
                   "--machine", MACHINE, "--no-gate")
    assert proc.returncode == 0, proc.stderr
    run = next(ln for ln in proc.stdout.splitlines() if ln.startswith("$ ") and " run " in ln)
    assert "--python=same" not in run and "--set-commit-hash" not in run
    assert run.endswith(("HEAD~3..HEAD", "'HEAD~3..HEAD'")) and "--skip-existing-commits" in run
    assert "--steps 2" in run and f"--machine {MACHINE}" in run


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
    assert wf["permissions"]["pages"] == "write" or any(
        j.get("permissions", {}).get("pages") == "write" for j in wf["jobs"].values())


def test_pr_workflow_compares_with_the_base() -> None:
    wf = _workflow("pr.yml")
    assert "pull_request" in wf["on"]
    runs = "\n".join(_runs(j) for j in wf["jobs"].values())
    assert "asv continuous" in runs and "--factor" in runs
    assert "github.event.pull_request.base.sha" in runs or "base.sha" in json.dumps(wf)
