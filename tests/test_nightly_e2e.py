"""The nightly end to end on a real, throwaway git repository: measured, reported, triaged and
bisected to the commit that made the code slower.

The test builds, in tmp_path, a tiny Python project: a NumPy LayerNorm backward
(``lnkern.layernorm_backward``, 16x512 float64) and an unrelated reduction
(``lnkern.row_norms``), with an asv suite timing both. asv makes a virtualenv (numpy from
pip), checks each commit out and installs that commit's package into it, so every number is
that commit's code, not the working tree's. Eleven commits, one hour apart:

    c0 baseline · c1 docstring · c2 README · c3 a rare extra reduction (noise only: 10 % of
    calls) · c4 README · c5 comments · c6 the statistics computed three times (two extra
    passes over the data: 1.5x) · c7..c10 README edits

One nightly (``scripts/nightly --range HASHFILE:...``: asv's ``--interleave-rounds`` over the
listed commits) measures c0..c5 and c9, c10 -- the nights in between skipped -- then
publishes, builds the dashboard and gates through the triage. The report flags time_backward
at c9 (the step lies between c5 and c9); the triage re-runs c5 against c9 interleaved,
confirms it, bisects c6 c7 c8 and names c6; the gate exits 1, and no other commit is named.
Then a planted false alarm (row_norms' stored values at c9 and c10 raised 1.5x, as a slow
spell during those nights would) is triaged: the interleaved re-run does not reproduce it, and
time_backward's confirmed verdict is reused, not re-run.

The step is flagged by the report (asv's medians) or by the triage's screen
(``lnbench.nightly.screen``: the report's method on the 10th percentile of the recorded
samples), whichever sees it first: on a busy 2-core VM the medians asv stores for identical
code spread by 10-30 % between the commits of one interleaved run, which once hid a 1.3x step
from the report. The A/B compares the statistic the alarm was flagged on; the bisection
decides on the 10th percentiles either way, since the medians of identical code measured 1.28x
apart in one of its runs and named the wrong commit.
8 interleaved rounds x 100 samples per commit. Several minutes on the 2-core VM
(docs/nightly.md). ``LNBENCH_SKIP_E2E=1`` skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NIGHTLY = ROOT / "scripts" / "nightly"
MACHINE = "e2e-box"

pytestmark = [
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
    pytest.mark.skipif(os.environ.get("LNBENCH_SKIP_E2E") == "1", reason="LNBENCH_SKIP_E2E=1"),
]

KERNEL = '''"""A LayerNorm backward in NumPy: rows normalised over the last axis."""

import numpy as np

_rng = np.random.default_rng(0)


def _stats(x, eps):
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=1, keepdims=True)
    return xc, 1.0 / np.sqrt(var + eps)


def layernorm_backward(dy, x, gamma, eps=1e-5):
    """(dx, dgamma, dbeta) of y = (x - mean) / std * gamma + beta."""
    xc, rstd = _stats(x, eps)
#SLOW#
    xhat = xc * rstd
    g = dy * gamma
    dgamma = np.sum(dy * xhat, axis=0)
    dbeta = np.sum(dy, axis=0)
#NOISE#
    dx = rstd * (g - g.mean(axis=1, keepdims=True)
                 - xhat * np.mean(g * xhat, axis=1, keepdims=True))
    return dx, dgamma, dbeta


def row_norms(x):
    return np.sqrt(np.sum(x * x, axis=1))
'''

SUITE = '''import numpy as np

import lnkern


def _inputs(obj):
    rng = np.random.default_rng(1)
    obj.x = rng.standard_normal((16, 512))
    obj.dy = rng.standard_normal((16, 512))
    obj.gamma = rng.standard_normal(512)


class Kernel:
    # 16x512 float64: 64 KiB an array, the working set stays in cache, so a neighbour's
    # memory traffic moves it less (at 64x512 a busy 2-core VM tripled the median and
    # squeezed a 1.3x step to 1.13x). 10 calls a sample (~0.5 ms), 100 samples a round
    # (the round's cost is the reinstall and the new process, not the samples), 8 rounds
    # interleaved across the commits: a slow spell of the machine is spread over all the
    # commits of the run, and the 10th percentile of 800 samples is that of the fast rounds
    number = 10
    repeat = 100
    rounds = 8
    warmup_time = 0.02

    def setup(self):
        _inputs(self)

    def time_backward(self):
        lnkern.layernorm_backward(self.dy, self.x, self.gamma)


class Reduce:
    # code no commit changes (~5 us a call): 100 calls a sample
    number = 100
    repeat = 100
    rounds = 8
    warmup_time = 0.02

    def setup(self):
        _inputs(self)

    def time_row_norms(self):
        lnkern.row_norms(self.x)
'''

PYPROJECT = '''[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "lnkern"
version = "0.1.0"
dependencies = ["numpy"]

[tool.setuptools]
packages = ["lnkern"]
'''


def asv_conf() -> dict:
    return {
        "version": 1, "project": "lnkern", "project_url": "https://example.invalid/lnkern",
        "repo": ".", "branches": ["main"], "dvcs": "git",
        "environment_type": "virtualenv",
        "pythons": [f"{sys.version_info.major}.{sys.version_info.minor}"],
        "matrix": {"req": {"numpy": [""]}},
        # the project is one pure-Python package: asv checks the commit out into its build
        # folder and the install copies that package into the virtualenv (a pip install per
        # commit and round would cost a second or more each; --interleave-rounds reinstalls
        # the commit for every round)
        "build_command": [],
        "install_command": [
            "in-dir={env_dir} python -c \"import shutil, sys, sysconfig; shutil.copytree("
            "sys.argv[1] + '/lnkern', sysconfig.get_paths()['purelib'] + '/lnkern', "
            "dirs_exist_ok=True)\" {build_dir}"],
        "uninstall_command": [
            "in-dir={env_dir} python -c \"import shutil, sysconfig; shutil.rmtree("
            "sysconfig.get_paths()['purelib'] + '/lnkern', ignore_errors=True)\""],
        "benchmark_dir": "benchmarks", "env_dir": ".asv/env", "results_dir": "results",
        "html_dir": "html", "build_cache_size": 16,
    }


COMMITS = [  # (subject, what changes)
    ("baseline: LayerNorm backward in NumPy and its asv suite", {}),
    ("docs: say what the kernel returns", {"doc": True}),
    ("README", {"doc": True, "readme": 1}),
    ("backward: a rare extra reduction (noise only)", {"doc": True, "readme": 1, "noise": True}),
    ("README: usage", {"doc": True, "readme": 2, "noise": True}),
    ("comments", {"doc": True, "readme": 2, "noise": True, "comment": True}),
    ("backward: compute the statistics three times (two extra passes over the data)",
     {"doc": True, "readme": 2, "noise": True, "comment": True, "slow": True}),
    ("README: license", {"doc": True, "readme": 3, "noise": True, "comment": True, "slow": True}),
    ("README: install", {"doc": True, "readme": 4, "noise": True, "comment": True, "slow": True}),
    ("README: cite", {"doc": True, "readme": 5, "noise": True, "comment": True, "slow": True}),
    ("README: links", {"doc": True, "readme": 6, "noise": True, "comment": True, "slow": True}),
]
# measured: six commits before the step (a baseline and a noise estimate worth the name) and
# the two newest; the nights in between were skipped
SLOW_AT, MEASURED = 6, (0, 1, 2, 3, 4, 5, 9, 10)


def kernel_source(change: dict) -> str:
    src = KERNEL
    if change.get("doc"):
        src = src.replace('"""(dx, dgamma, dbeta) of', '"""Gradients (dx, dgamma, dbeta) of')
    again = "    xc, rstd = _stats(x, eps)  # re-normalised for stability\n"
    src = src.replace("#SLOW#\n", again * 2 if change.get("slow") else "")
    src = src.replace("#NOISE#\n", "    if _rng.random() < 0.1:\n        np.sum(x)\n"
                      if change.get("noise") else "")
    if change.get("comment"):
        src = src.replace("def row_norms(x):", "# a reduction no commit changes\ndef row_norms(x):")
    return src


def build_repo(repo: Path) -> list[str]:
    """The throwaway project and its history; the commits' hashes, oldest first."""
    (repo / "lnkern").mkdir(parents=True)
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "benchmarks" / "bench_kernel.py").write_text(SUITE)
    (repo / "pyproject.toml").write_text(PYPROJECT)
    (repo / "asv.conf.json").write_text(json.dumps(asv_conf(), indent=2) + "\n")
    (repo / ".gitignore").write_text(".asv/\nresults/\nhtml/\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")

    def git(*args: str, **extra: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env={**env, **extra}, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    hashes = []
    for i, (subject, change) in enumerate(COMMITS):
        (repo / "lnkern" / "__init__.py").write_text(kernel_source(change))
        if change.get("readme"):
            (repo / "README.md").write_text("# lnkern\n" + "more\n" * change["readme"])
        git("add", "-A")
        date = f"2026-01-01T{10 + i:02d}:00:00+00:00"  # asv orders results by commit date
        git("commit", "-q", "-m", subject, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        hashes.append(git("rev-parse", "HEAD"))
    return hashes


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LNBENCH_", "ASV_", "GITHUB_"))}
    env["HOME"] = str(home)
    try:
        import matplotlib

        env.setdefault("MPLCONFIGDIR", matplotlib.get_cachedir())
    except ImportError:
        pass
    return env


def _verdicts(results: Path) -> list[dict]:
    return json.loads((results / "lnbench-triage.json").read_text())["verdicts"]


def _name(v: dict) -> str:
    return v["alarm"]["series"]["benchmark"].rsplit(".", 1)[-1]


def _plant_slow_spell(results: Path, commits: list[str], factor: float) -> None:
    """Raise row_norms' stored values (and samples) at ``commits`` by ``factor``."""
    for c in commits:
        for f in (results / MACHINE).glob(f"{c[:8]}-*.json"):
            d = json.loads(f.read_text())
            cols = d["result_columns"]
            row = d["results"]["bench_kernel.Reduce.time_row_norms"]
            for col in ("result", "samples", "stats_q_25", "stats_q_75", "stats_ci_99_a",
                        "stats_ci_99_b"):
                if col in cols and row[cols.index(col)] is not None:
                    v = row[cols.index(col)]
                    row[cols.index(col)] = [[x * factor for x in s] if isinstance(s, list)
                                            else (None if s is None else s * factor)
                                            for s in v]
            f.write_text(json.dumps(d))


def test_nightly_confirms_and_bisects_a_real_slowdown(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    repo, home, out = tmp_path / "lnkern", tmp_path / "home", tmp_path / "out"
    home.mkdir()
    commits = build_repo(repo)
    hashfile = tmp_path / "nights.txt"
    hashfile.write_text("\n".join(commits[i] for i in MEASURED) + "\n")
    results = out / "results"
    cmd = [sys.executable, str(NIGHTLY), "--config", str(repo / "asv.conf.json"),
           "--range", f"HASHFILE:{hashfile}", "--machine", MACHINE, "--results", str(results),
           "--html", str(out / "html"), "--site", str(out / "site")]
    proc = subprocess.run(cmd, env=_env(home), capture_output=True, text=True, timeout=1500,
                          check=False)
    log = proc.stdout + proc.stderr
    print(f"nightly: {time.perf_counter() - t0:.0f} s")
    for line in log.splitlines():  # the steps' and the triage's own timings
        if line.startswith(("--- exit", "triage:", "==> [")):
            print(line)
    assert proc.returncode == 1, log[-6000:]
    assert "step 'regression gate (triage)' failed with exit code 1" in proc.stderr, log[-3000:]
    # every measured commit has results with samples
    for i in MEASURED:
        (f,) = (results / MACHINE).glob(f"{commits[i][:8]}-*.json")
        d = json.loads(f.read_text())
        assert "samples" in d["result_columns"], d["result_columns"]
    # the gate's report: one confirmed regression, bisected to c3 by name
    md = (out / "site" / "regressions.md").read_text()
    assert "## Confirmed regressions" in md, md
    slow = commits[SLOW_AT]
    assert f"**{slow[:8]}** {COMMITS[SLOW_AT][0]}" in md, md
    verdicts = _verdicts(results)
    confirmed = [v for v in verdicts if v["status"] == "confirmed"]
    assert [_name(v) for v in confirmed] == ["time_backward"], verdicts
    (v,) = confirmed
    assert v["first_bad"] == slow, v
    # the step lies between c5 and c9; the report names c9 (persistence) or, judging the
    # newest point at once, c10 with c9 as "previous": the A/B starts from c5 either way
    ab = v["ab"]
    assert ab["a"] == commits[5] and ab["b"] == v["alarm"]["commit"], v
    assert v["alarm"]["commit"] in (commits[9], commits[10]), v
    assert ab["test"] == "mann-whitney" and ab["p"] < 0.002 and ab["n_a"] >= 6, ab
    # the real step, measured A/B. Timed interleaved in one process (10th percentiles), the
    # statistics computed three times are 1.52x on an Intel Xeon VM and twice 1.19x there
    # (1.3x on an AMD EPYC VM): one extra pass is too small a step to plant on every CPU.
    # The A/B compares what the alarm was flagged on: the screen's 10th percentiles, or the
    # report's medians (the step is large enough for either to flag it first)
    stat = "p10" if v["alarm"]["source"] else "value"
    assert ab["statistic"] == stat and 1.25 < ab["ratio"] < 2.0, ab
    # bisection: c6 c7 c8 (c9) lay between; two halving runs (c7, then c6)
    assert [s["mid"] for s in v["bisect"]] == [commits[7], commits[6]], v["bisect"]
    # decided on the 10th percentiles, whichever source flagged it (medians misled it once)
    assert all(s["statistic"] == "p10" for s in v["bisect"]), v["bisect"]
    # nothing else is named: no other first bad commit, no other confirmed series
    named = {x["first_bad"] for x in verdicts if x["first_bad"]}
    assert named == {slow}, named
    for i, c in enumerate(commits):
        if i != SLOW_AT:
            assert f"**{c[:8]}**" not in md, (i, md)
    print(f"A/B {ab['a_value'] * 1e6:.1f} -> {ab['b_value'] * 1e6:.1f} us = {ab['ratio']:.3f}x,"
          f" p={ab['p']:.2g}; flagged {v['alarm']['ratio']:.3f}x at {v['alarm']['commit'][:8]}"
          f" ({v['alarm']['source'] or 'report'})")
    for x in verdicts:
        print(f"verdict {_name(x)} {x['status']} ({x['alarm']['source'] or 'report'}) "
              f"{x['alarm']['ratio']:.3f}x A/B {x['ab'] and x['ab']['ratio']}")

    # a planted false alarm: row_norms 1.5x slower at c9 and c10 in the stored history only
    _plant_slow_spell(results, [commits[9], commits[10]], 1.5)
    t1 = time.perf_counter()
    cmd = [sys.executable, "-m", "lnbench.nightly", "triage", "--results", str(results),
           "--config", str(repo / "asv.conf.json"), "--machine", MACHINE,
           "--json", str(tmp_path / "triage.json")]
    proc = subprocess.run(cmd, env=_env(home), capture_output=True, text=True, timeout=900,
                          check=False, cwd=ROOT)
    print(f"triage of the planted alarm: {time.perf_counter() - t1:.0f} s")
    print("\n".join(ln for ln in proc.stderr.splitlines() if ln.startswith("triage:")))
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-6000:]  # time_backward stands
    tri = json.loads((tmp_path / "triage.json").read_text())["verdicts"]
    by = {_name(x): x for x in tri}
    assert set(by) == {"time_backward", "time_row_norms"}, tri
    assert by["time_row_norms"]["status"] == "not reproduced", by["time_row_norms"]
    # no bound on the A/B ratio itself: identical code measured A/B interleaved on the 2-core
    # VM came out 1.16x and 1.23x in two runs (the machine's own noise); the verdict above is
    # what the triage must get right, and it needs the significance test as well as the ratio
    assert by["time_backward"]["status"] == "confirmed" and by["time_backward"]["earlier"]
    if not any(_name(x) == "time_row_norms" for x in verdicts):  # no noise alarm on the night
        assert proc.stderr.count("triage: A/B") == 1, proc.stderr  # only the new alarm re-ran
    assert "## Not reproduced" in proc.stdout and "time_row_norms" in proc.stdout
    print(f"total {time.perf_counter() - t0:.0f} s")
