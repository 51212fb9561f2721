"""The newest commit judged from stored samples, noisy points from interference sidecars,
new environments of a known machine, and first-parent commit order from a real git repo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lnbench.cli import main as cli_main
from lnbench.report import synthetic as syn
from lnbench.report.loader import env_family, load_results
from lnbench.report.regressions import regression_report

BENCH = "suite.Timing.time_op"
SPEC = syn.BenchSpec(BENCH, [syn.quoted(["a", "b"])], ["case"], "seconds", "time")


def _history(root: Path, n: int = 16, *, last_factor: float = 1.0, samples: bool = True,
             envs: list[str] | None = None, seed: int = 0, run_noise: float = 0.02,
             requirements: dict | None = None) -> list[str]:
    """``n`` commits of BENCH (cases a and b) on machine "ci"; the newest one's case "a"
    multiplied by ``last_factor``. Each run has a run-level offset (``run_noise``) and 7
    samples with 1 % spread around it."""
    rng = np.random.default_rng(seed)
    syn.write_benchmarks_json(root, [SPEC])
    syn.write_machine_json(root, "ci")
    commits = []
    for c in range(n):
        vals, smp = [], []
        for j in range(2):
            level = 1e-3 * (1 + j) * np.exp(rng.normal(0, run_noise))
            if c == n - 1 and j == 0:
                level *= last_factor
            draws = level * np.exp(rng.normal(0, 0.01, size=7))
            vals.append(float(np.median(draws)))
            smp.append(draws.tolist())
        env = (envs or ["virtualenv-py3.11"])[min(c, len(envs or [""]) - 1)] if envs is None \
            else envs[c]
        path = syn.write_result_file(root, "ci", syn.commit_hash(c), syn.T0_MS + c * syn.DAY_MS,
                                     {BENCH: vals}, {BENCH: SPEC}, env_name=env,
                                     samples={BENCH: smp} if samples else None)
        if requirements and c == n - 1:
            data = json.loads(path.read_text())
            data["requirements"] = requirements
            path.write_text(json.dumps(data))
        commits.append(syn.commit_hash(c))
    return commits


def _regs(root: Path, **kw) -> dict:
    return regression_report(load_results(root), **kw)


def test_step_on_newest_commit_flagged_from_samples(tmp_path: Path) -> None:
    commits = _history(tmp_path, last_factor=1.3)
    doc = _regs(tmp_path)
    (hit,) = doc["regressions"]
    assert hit["commit"] == commits[-1] and hit["params"] == {"case": "a"}
    assert hit["newest"] and hit["open"] and hit["p_value"] < 0.01
    assert hit["ratio"] == pytest.approx(1.3, rel=0.08)


def test_newest_without_samples_waits_for_persistence(tmp_path: Path) -> None:
    _history(tmp_path, last_factor=1.3, samples=False)
    assert _regs(tmp_path)["regressions"] == []


def test_newest_improvement_direction(tmp_path: Path) -> None:
    commits = _history(tmp_path, last_factor=0.7)
    doc = _regs(tmp_path)
    assert doc["regressions"] == []
    (hit,) = doc["improvements"]
    assert hit["commit"] == commits[-1] and hit["ratio"] < 1 and hit["newest"]


def test_within_run_confidence_alone_never_flags(tmp_path: Path) -> None:
    """A +4 % newest run: its 7 samples are far outside the baseline's (Mann-Whitney p tiny,
    what asv compare would call significant), but under the 5 % threshold and within the
    run-to-run noise: no change."""
    _history(tmp_path, last_factor=1.04, run_noise=0.005, seed=2)
    assert _regs(tmp_path)["regressions"] == []


def test_flat_histories_with_samples_raise_nothing(tmp_path: Path) -> None:
    found = 0
    for seed in range(20):
        root = tmp_path / str(seed)
        _history(root, seed=seed)
        found += len(_regs(root)["regressions"])
    assert found == 0


def _sidecar(root: Path, commit: str, env: str, points: list[dict]) -> Path:
    path = root / "lnbench-interference" / "ci" / f"{commit[:8]}-{env}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "machine": "ci", "commit": commit, "env": env,
                                "points": points}))
    return path


def test_noisy_point_from_sidecar_is_listed_not_failed(tmp_path: Path, capsys) -> None:
    commits = _history(tmp_path, last_factor=1.5)
    _sidecar(tmp_path, commits[-1], "virtualenv-py3.11", [
        {"benchmark": BENCH, "params": {"case": "a"}, "status": "noisy",
         "reason": "load 3.1 > 1.5 over the sampling window", "load": 3.1},
        {"benchmark": BENCH, "params": {"case": "b"}, "status": "ok", "reason": ""},
    ])
    loaded = load_results(tmp_path)
    f = loaded.frame
    noisy = f[f["status"] == "noisy"]
    assert len(noisy) == 1 and noisy["case"].iloc[0] == "a"
    assert noisy["noise_reason"].iloc[0].startswith("load 3.1")
    doc = regression_report(loaded)
    assert doc["regressions"] == []
    assert doc["noisy"] == [{"benchmark": BENCH, "params": {"case": "a"}, "machine": "ci",
                             "commit": commits[-1], "env": "virtualenv-py3.11",
                             "metric": "time_op", "value": pytest.approx(noisy["value"].iloc[0]),
                             "reason": "load 3.1 > 1.5 over the sampling window"}]
    rc = cli_main(["report", "regressions", "--results", str(tmp_path), "--format", "json",
                   "--fail-on-regression"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["summary"]["noisy_points"] == 1


@pytest.mark.parametrize("text,why", [
    ("{not json", "not valid JSON"),
    (json.dumps({"version": 7, "machine": "ci", "commit": "x", "env": "e", "points": []}),
     "unknown format version"),
    (json.dumps({"version": 1, "machine": "ci", "commit": "x", "env": "e",
                 "points": [{"benchmark": BENCH, "status": "awful"}]}), "status"),
    (json.dumps({"version": 1, "machine": "ci", "env": "e", "points": []}), "'commit'"),
])
def test_malformed_sidecar_is_an_error_not_a_crash(tmp_path: Path, text: str, why: str) -> None:
    commits = _history(tmp_path, last_factor=1.5)
    path = _sidecar(tmp_path, commits[-1], "virtualenv-py3.11", [])
    path.write_text(text)
    loaded = load_results(tmp_path)
    assert [e.path for e in loaded.errors] == [str(path)]
    assert why in loaded.errors[0].reason
    assert (loaded.frame["status"] == "ok").all()
    assert len(regression_report(loaded)["regressions"]) == 1  # the step is still seen


def test_new_environment_of_known_machine_uses_its_history(tmp_path: Path) -> None:
    """A fresh virtualenv under --python=same: the env name holds the new path. Its single
    point is judged against the machine's history in the old path's environment."""
    old = "existing-py_home_ci_old_.venv_bin_python3.11"
    new = "existing-py_tmp_clone42_.venv_bin_python3.11"
    assert env_family(old) == env_family(new) == "existing-py3.11"
    commits = _history(tmp_path, last_factor=1.4, envs=[old] * 15 + [new])
    doc = regression_report(load_results(tmp_path), latest_only=True)
    (hit,) = doc["regressions"]
    assert hit["commit"] == commits[-1] and hit["env"] == new and hit["newest"]
    assert doc["no_baseline"] == []


def test_new_environment_with_other_packages_says_no_baseline(tmp_path: Path) -> None:
    _history(tmp_path, last_factor=1.4, envs=["virtualenv-py3.11"] * 15 + ["virtualenv-py3.12"],
             requirements={"numpy": "2.5"})
    doc = regression_report(load_results(tmp_path), latest_only=True)
    assert doc["regressions"] == []
    assert sorted(e["params"]["case"] for e in doc["no_baseline"]) == ["a", "b"]
    assert all(e["env"] == "virtualenv-py3.12" and e["earlier_points"] == 0
               for e in doc["no_baseline"])
    assert any(n.startswith("No baseline yet: 2 series") for n in doc["notes"])


def test_benchmark_version_change_starts_a_new_series(tmp_path: Path) -> None:
    """The same benchmark 2x slower under a new asv version: no step across versions."""
    syn.write_machine_json(tmp_path, "ci")
    for c in range(20):
        spec = syn.BenchSpec(BENCH, [syn.quoted(["a"])], ["case"], "seconds", "time",
                             version="v1" if c < 10 else "v2")
        syn.write_benchmarks_json(tmp_path, [spec])
        syn.write_result_file(tmp_path, "ci", syn.commit_hash(c), syn.T0_MS + c * syn.DAY_MS,
                              {BENCH: [1e-3 * (1 if c < 10 else 2) * (1 + 0.01 * (c % 3))]},
                              {BENCH: spec})
    doc = regression_report(load_results(tmp_path), include_resolved=True)
    assert doc["regressions"] == [] and doc["improvements"] == []


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                                          "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                                          "PATH": "/usr/bin:/bin"}).stdout.strip()


def test_repo_first_parent_order_leaves_branch_commits_out(tmp_path: Path, capsys) -> None:
    """A branch commit measured between two main commits (by date) holds a slow result; with
    --repo it is left out and counted, and no change is reported from it."""
    repo = tmp_path / "proj"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    main_commits = []
    for i in range(14):
        (repo / "f").write_text(str(i))
        _git(repo, "add", "f")
        _git(repo, "commit", "-q", "-m", f"c{i}")
        main_commits.append(_git(repo, "rev-parse", "HEAD"))
        if i == 9:  # a pull-request branch, never merged
            _git(repo, "checkout", "-q", "-b", "pr")
            (repo / "g").write_text("x")
            _git(repo, "add", "g")
            _git(repo, "commit", "-q", "-m", "for testing")
            branch = _git(repo, "rev-parse", "HEAD")
            _git(repo, "checkout", "-q", "main")
    results = tmp_path / "results"
    syn.write_benchmarks_json(results, [SPEC])
    syn.write_machine_json(results, "ci")
    order = main_commits[:10] + [branch] + main_commits[10:]
    for k, commit in enumerate(order):
        slow = 3.0 if commit == branch else 1.0
        syn.write_result_file(results, "ci", commit, syn.T0_MS + k * syn.DAY_MS,
                              {BENCH: [1e-3 * slow * (1 + 0.01 * (k % 3)), 2e-3]}, {BENCH: SPEC})
    out = tmp_path / "r.json"
    assert cli_main(["report", "regressions", "--results", str(results), "--repo", str(repo),
                     "--format", "json", "--include-resolved", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["summary"]["commit_order"] == "first-parent"
    assert doc["summary"]["off_history_commits"] == [branch]
    assert doc["regressions"] == [] and doc["improvements"] == []
    assert cli_main(["report", "regressions", "--results", str(results), "--repo",
                     str(tmp_path / "nope")]) == 2
    assert "--repo" in capsys.readouterr().err
