"""The GPU check's bad usage and early stops, on any machine: wrong arguments, an unwritable output
folder, a glob or plugin that names nothing to measure, a worker that keeps failing outside any
point; the interleaved order of a case's points; the device verdicts are the judge's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import test_gpu_check
from test_gpu_check import PLUGIN, ROOT, _run, _standin_run  # helpers shared with it

gc = test_gpu_check.gc  # the fixtures of test_gpu_check.py, found here by name
fake_gpu = test_gpu_check.fake_gpu

# --------------------------------------------------------------------------- bad usage, early stops
# What a GPU session must never spend device time on: wrong arguments, an unwritable output
# folder, a glob or plugin that names nothing to measure, a worker that keeps failing outside
# any point.


def _no_gpu_env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "nobin"
    empty.mkdir(exist_ok=True)
    return {"PATH": f"{empty}{os.pathsep}{Path(sys.executable).parent}"}


def _one_line_exit_2(r: subprocess.CompletedProcess, *names: str) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == "", r.stdout  # nothing started: no log, no worker
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in names), r.stderr
    return lines[0]


@pytest.mark.parametrize("flag,value,says", [
    ("--shape", "garbage", "expected MxN"), ("--shape", "0x5", "at least 1"),
    ("--shape", "32x128x4", "expected MxN"), ("--budget-s", "nan", "finite"),
    ("--budget-s", "-5", "> 0"), ("--budget-s", "inf", "finite")])
def test_bad_arguments_exit_2_in_one_line_on_any_machine(tmp_path: Path, flag: str, value: str,
                                                          says: str) -> None:
    out = tmp_path / "out"
    r = _run([str(out), "--no-install", "--shape", "64x256", flag, value], _no_gpu_env(tmp_path))
    line = _one_line_exit_2(r, flag, value, says)
    rep = json.loads((out / "gpu-check.json").read_text())  # the folder works: files written
    assert rep["status"] == "error" and line.split(": ", 1)[1] in rep["reason"]
    assert flag in (out / "gpu-check.md").read_text()


def test_bad_shape_on_a_gpu_box_starts_nothing(tmp_path: Path, fake_gpu: Path) -> None:
    r = _run([str(tmp_path / "out"), "--no-install", "--no-tests", "--wheels",
              str(tmp_path / "none"), "--shape", "32x128", "--shape", "0x5"], {}, fake_gpu)
    _one_line_exit_2(r, "--shape", "'0x5'")
    assert not (tmp_path / "out" / "gpu-check.jsonl").exists()


@pytest.mark.parametrize("target", ["/proc/gpu-check-xx", "a-file"])
def test_unwritable_out_is_one_line_exit_2_first(tmp_path: Path, target: str) -> None:
    folder = target if target.startswith("/") else str(tmp_path / target)
    if not folder.startswith("/proc"):
        Path(folder).write_text("a file, not a folder\n")
    # given by $OUT, with a bad argument too: the folder is checked first
    r = _run(["--no-install", "--budget-s", "nan"], {**_no_gpu_env(tmp_path), "OUT": folder})
    _one_line_exit_2(r, folder, "not writable")


def _usage_on_gpu_box(tmp_path: Path, fake_gpu: Path, args: list[str]):
    out = tmp_path / "out"
    r = _run([str(out), "--no-install", "--no-tests", "--wheels", str(tmp_path / "none"), *args],
             {}, fake_gpu)
    return r, out


@pytest.mark.parametrize("case", ["nomatch", "missing", "broken"])
def test_impl_matching_nothing_or_a_bad_plugin_exit_2_before_any_device_work(
        tmp_path: Path, fake_gpu: Path, case: str) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import lnbench\nraise RuntimeError('this plugin is broken')\n")
    args, names = {
        "nomatch": (["--impl", "cupy.fused", "--impl", "nomatch*"], ("--impl", "'nomatch*'")),
        "missing": (["--plugin", str(tmp_path / "missing.py")], ("--plugin", "missing.py",
                                                                 "no such file")),
        "broken": (["--plugin", str(broken)], ("--plugin", "broken.py", "this plugin is broken")),
    }[case]
    r, out = _usage_on_gpu_box(tmp_path, fake_gpu, args)
    # the probe ran (one line only: nothing logged before it counts against this)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in names), r.stderr
    assert "worker" not in r.stdout and "tests:" not in r.stdout
    assert "unavailable" not in r.stdout  # not even the package probes ran
    rep = json.loads((out / "gpu-check.json").read_text())
    assert rep["status"] == "error" and names[0] in rep["reason"]
    assert not (out / "gpu-check.jsonl").exists()


CPU_PLUGIN = '''
import numpy as np
from lnbench import register

def backward(dy, x, gamma, mean, rstd, eps):
    return np.zeros_like(x), None, None

register("mine.v1", backward, array="numpy", device="cpu", dtypes=("float32",))
'''


def test_only_cpu_implementations_means_nothing_measured_said_plainly(tmp_path: Path,
                                                                      fake_gpu: Path) -> None:
    plugin = tmp_path / "cpu_plugin.py"
    plugin.write_text(CPU_PLUGIN)
    r, out = _usage_on_gpu_box(tmp_path, fake_gpu, [
        "--plugin", str(plugin), "--impl", "mine.*", "--impl", "numpy.c9", "--impl", "numpy.c9"])
    assert r.returncode == 0, r.stdout + r.stderr
    said = "nothing measured: mine.v1, numpy.c9 are not CUDA implementations"
    assert said in r.stdout.strip().splitlines()[-1]
    rep = json.loads((out / "gpu-check.json").read_text())
    assert rep["status"] == "skipped" and rep["reason"] == said
    assert said in (out / "gpu-check.md").read_text()
    assert "worker" not in r.stdout and not (out / "gpu-check.jsonl").exists()


def test_probe_names_a_plugins_cpu_implementations_and_keeps_the_cuda_ones(gc,
                                                                           tmp_path: Path) -> None:
    plugin = tmp_path / "cpu_plugin.py"
    plugin.write_text(CPU_PLUGIN)
    sel = gc.probe(plugin=[str(plugin)])  # no --impl: every CUDA implementation, listed always
    assert sel["import_problem"] is None and sel["usage"] is None
    assert sel["not_cuda"] == ["mine.v1"] and "cupy.fused" in sel["selected"]
    assert "torch.autograd" not in sel["selected"]  # skipped by default, as before
    assert gc.probe(shape=["2x"])["usage"].startswith("--shape: bad shape '2x'")


def test_a_budget_too_small_to_start_says_why_nothing_was_measured(tmp_path: Path,
                                                                   fake_gpu: Path) -> None:
    rep = _standin_run(tmp_path, fake_gpu, PLUGIN, ["--impl", "fake.ok", "--shape", "32x128",
                                                    "--budget-s", "1"])
    assert rep["rc"] == 0 and rep["points"] == []
    assert rep["nothing_measured"].startswith("the time budget was spent")
    assert "nothing measured" in rep["md"] and "] worker " not in rep["stdout"]


def _failing_inputs(exc: str, why: str) -> str:
    """Stand-in code making the inputs of the 128x512 case raise ``exc(why)``."""
    return f'''
if os.environ.get("LNBENCH_CPU_STANDS_IN_FOR_GPU") == "1":
    import lnbench.grid as G
    _make_data = G.make_data
    def make_data(case, *a, **k):
        if case.M == 128:
            raise {exc}("{why}")
        return _make_data(case, *a, **k)
    G.make_data = make_data
'''


def test_a_crash_outside_any_point_stops_at_its_first_repeat_and_exits_1(tmp_path: Path,
                                                                          fake_gpu: Path) -> None:
    rep = _standin_run(tmp_path, fake_gpu, PLUGIN, [
        "--impl", "fake.ok", "--shape", "32x128", "--shape", "128x512"],
        standin_extra=_failing_inputs("RuntimeError", "a bug making 128x512 (test)"))
    assert rep["rc"] == 1, rep["stdout"]
    assert "crashed outside any point" in rep["last"] and "RuntimeError" in rep["last"]
    # worker 1 measured 32x128 and died making 128x512's inputs; worker 2 died the same way
    assert len(re.findall(r"\] worker \d+$", rep["stdout"], re.M)) == 2
    assert "same failure again" in rep["stdout"]
    assert [(p["impl"], p["M"], p["status"]) for p in rep["points"]] == [("fake.ok", 32, "ok")]
    fail = rep["worker_failure"]
    assert fail["reason"] == "RuntimeError: a bug making 128x512 (test)"
    assert "make_data" in fail["traceback"] and len(rep["worker_crashes"]) == 2
    assert not rep["summary"]["fake.ok"]["meets_bar"]  # 128x512 never measured
    assert "crashed outside any point" in rep["md"] and fail["reason"] in rep["md"]


def test_inputs_out_of_memory_are_that_cases_error_and_the_run_goes_on(tmp_path: Path,
                                                                       fake_gpu: Path) -> None:
    """As in the one case loop (lnbench.caseloop): inputs too large for the machine are an
    error of every point of that case; the worker does not die, the other cases are measured."""
    rep = _standin_run(tmp_path, fake_gpu, PLUGIN, [
        "--impl", "fake.ok", "--shape", "128x512", "--shape", "32x128"],
        standin_extra=_failing_inputs("MemoryError", "no room for the inputs of 128x512 (test)"))
    assert rep["rc"] == 1, rep["stdout"]
    got = {(p["impl"], p["M"]): p for p in rep["points"]}
    assert got[("fake.ok", 32)]["status"] == "ok", got
    err = got[("fake.ok", 128)]
    assert err["status"] == "error"
    assert err["reason"].startswith("inputs: out of memory") and "128x512 (test)" in err["reason"]
    assert not rep["worker_crashes"], rep["worker_crashes"]


def _interleave_order(n: int, rounds: int, seed: int) -> list[list[int]]:
    """The order of each round of lnbench's one interleaved measurement over n thunks."""
    from lnbench.measure.timing import time_interleaved

    seq: list[tuple[int, int]] = []
    time_interleaved([(lambda: None, "cpu")] * n, repeat=rounds, seed=seed, min_sample=1e-5,
                     before_sample=lambda k, r: seq.append((r, k)))
    return [[k for r, k in seq if r == j] for j in range(rounds)]


def test_the_points_of_a_case_are_timed_round_by_round_interleaved(gc, tmp_path: Path,
                                                                   fake_gpu: Path) -> None:
    orders = _interleave_order(3, 5, seed=7)
    assert all(sorted(o) == [0, 1, 2] for o in orders) and len(set(map(tuple, orders))) > 1
    assert orders == _interleave_order(3, 5, seed=7)  # a fixed seed
    plugin = PLUGIN + '''
for name in ("fake.ok2", "fake.ok3"):
    register(name, ok, array="torch", device="cuda", dtypes=("float32",))
'''
    rep = _standin_run(tmp_path, fake_gpu, plugin, [
        "--impl", "fake.ok", "--impl", "fake.ok2", "--impl", "fake.ok3", "--shape", "32x128"])
    assert rep["rc"] == 0 and [p["status"] for p in rep["points"]] == ["ok"] * 3
    rows = [json.loads(x) for x in (tmp_path / "out" / "gpu-check.jsonl").read_text().split("\n")
            if x.strip()]
    timing = [r for r in rows if r.get("type") == "timing"]
    rounds = [[r["impl"] for r in timing if r["round"] == k] for k in range(gc.ROUNDS)]
    assert all(sorted(r) == ["fake.ok", "fake.ok2", "fake.ok3"] for r in rounds), rounds
    # every point is written after the last round, never one contender timed to the end first
    last_timing = max(i for i, r in enumerate(rows) if r.get("type") == "timing")
    assert all(i > last_timing for i, r in enumerate(rows) if r.get("type") == "point")
    assert all(p["reps"] == gc.ROUNDS for p in rep["points"])  # one timed call per round


# --------------------------------------------------------------------------- one judge, one command


@pytest.mark.parametrize("name", ["numpy.kevin", "numpy.caffe2", "torch.native"])
@pytest.mark.parametrize("case", [(64, 1023, "float32", "offset"), (256, 768, "bfloat16", "normal"),
                                  (32, 4096, "float16", "correlated")])
def test_device_verdicts_are_the_judges(monkeypatch, name: str, case: tuple) -> None:
    """The GPU path's verdicts (float64 reference and the declared style's element bounds on
    the device, lnbench.judge.judge_array) are judge_grad's, run here on torch's CPU: the same
    status and err_ratio for real implementations and for planted errors in each gradient."""
    import numpy as np

    import lnbench.arrays as A
    from lnbench.gpu import judging
    from lnbench.grid import Case, make_data
    from lnbench.judge import grads_for, judge_grad
    from lnbench.registry import as_triple, get

    to = A.to_array
    monkeypatch.setattr(A, "to_array", lambda a, array, device="cpu": to(a, array, "cpu"))
    impl = get(name)
    data = make_data(Case(*case))
    outs = [A.to_numpy(o) for o in as_triple(impl.make(data)())]
    ref = judging.device_reference(data, impl.affine, "cpu")
    grads = grads_for(impl)  # no-affine implementations: dx only
    planted = {"ok": outs}
    for k, g in enumerate(grads):  # 1 % off in one element of each gradient
        bad = [None if o is None else np.array(o, copy=True) for o in outs]
        flat = bad[k].reshape(-1)
        flat[flat.size // 2] = flat[flat.size // 2] * 1.01 + 0.01 * float(np.abs(flat).max())
        planted[g] = bad
    for label, got in planted.items():
        dev = judging.judge(got, ref, data, grads, impl.numerics)
        assert set(dev) == set(grads)
        for k, g in enumerate(grads):
            status, reason, nums = judge_grad(got[k], data.reference(impl.affine)[k], g, data,
                                              impl.affine, impl.numerics)
            assert dev[g]["status"] == status, (label, g, dev[g]["reason"], reason)
            assert dev[g]["err_ratio"] == pytest.approx(nums["err_ratio"], rel=1e-3), (label, g)
            assert dev[g]["tol"] == pytest.approx(nums["tol"], rel=1e-6), (label, g)
        if label != "ok":
            assert dev[label]["status"] == "fail", label


def test_preflight_needs_only_the_standard_library() -> None:
    """scripts/gpu-check loads lnbench/gpu/preflight.py before lnbench can import."""
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('p', "
            f"{str(ROOT / 'lnbench' / 'gpu' / 'preflight.py')!r}); m = importlib.util."
            "module_from_spec(s); s.loader.exec_module(m); m.parser().parse_args(['x']);"
            " print(sorted(n for n in sys.modules if n.split('.')[0] in"
            " ('numpy', 'lnbench', 'ml_dtypes', 'torch', 'pandas')))")
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                       cwd="/", timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_lnbench_gpu_check_is_the_command(tmp_path: Path) -> None:
    env = {**os.environ, **_no_gpu_env(tmp_path)}
    env.pop("OUT", None)
    cmd = [sys.executable, "-m", "lnbench", "gpu-check"]
    r = subprocess.run([*cmd, str(tmp_path / "out"), "--no-install"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0 and "SKIP: no NVIDIA GPU here" in r.stdout, r.stdout + r.stderr
    rep = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert rep["status"] == "skipped" and "no NVIDIA GPU" in rep["reason"]
    r = subprocess.run([*cmd, str(tmp_path / "out2"), "--budget-s", "nan"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=300)
    _one_line_exit_2(r, "--budget-s", "finite")
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("usage: lnbench gpu-check")
