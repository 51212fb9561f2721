"""The GPU check (``lnbench gpu-check``, lnbench/gpu/, and the thin scripts/gpu-check that runs
it where lnbench does not import yet) on machines without a usable GPU: the paths a GPU box can
take before anything is measured (no GPU, lnbench not importable, CPU-only torch, carried
wheels) and the bar's arithmetic on hand-written points. Nothing here measures; the GPU run
itself is in docs/gpu.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from wheels import make_wheel

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check"


@pytest.fixture(scope="module")
def gc():
    """The check's functions the tests call, from the modules that hold them."""
    from lnbench.gpu import bar, judging, markdown, measure, preflight

    return SimpleNamespace(use_wheels=preflight.use_wheels, probe=preflight.probe,
                           lnbench_import_problem=preflight.lnbench_import_problem,
                           summarize=bar.summarize, render=markdown.render,
                           device_reference=judging.device_reference,
                           uses_exact_reference=judging.uses_exact_reference,
                           ROUNDS=measure.ROUNDS)


@pytest.fixture
def fake_gpu(tmp_path: Path) -> Path:
    """A PATH folder whose nvidia-smi lists one GPU (what gpu-check asks first)."""
    b = tmp_path / "bin"
    b.mkdir()
    smi = b / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-test)"\n')
    smi.chmod(0o755)
    return b


def _run(args: list[str], env_extra: dict[str, str], path_first: Path | None = None):
    env = dict(os.environ)
    env.pop("OUT", None)
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    env.update(env_extra)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path: Path) -> None:
    empty = tmp_path / "nobin"
    empty.mkdir()
    env = {"PATH": f"{empty}{os.pathsep}{Path(sys.executable).parent}"}
    r = _run([str(tmp_path / "out"), "--no-install"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SKIP: no NVIDIA GPU here" in r.stdout
    rep = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert rep["status"] == "skipped" and "no NVIDIA GPU" in rep["reason"]


def test_lnbench_not_importable_is_one_line_and_exit_2(tmp_path: Path, fake_gpu: Path) -> None:
    block = tmp_path / "block" / "ml_dtypes"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('ml_dtypes blocked by the test')\n")
    r = _run([str(tmp_path / "out"), "--no-install", "--no-tests", "--wheels",
              str(tmp_path / "none")], {"PYTHONPATH": str(block.parent)}, fake_gpu)
    assert r.returncode == 2, r.stdout + r.stderr
    err = [ln for ln in r.stdout.splitlines() if "ERROR" in ln]
    assert len(err) == 1 and "ml_dtypes" in err[0] and "scripts/gpu-prep" in err[0]
    rep = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert rep["status"] == "error" and "ml_dtypes" in rep["reason"]
    assert not (tmp_path / "out" / "gpu-check.jsonl").exists()  # nothing measured


def test_cpu_only_torch_on_a_gpu_box_stops_with_the_reason(tmp_path: Path,
                                                           fake_gpu: Path) -> None:
    import torch

    if torch.version.cuda:
        pytest.skip("this torch is a CUDA build")
    r = _run([str(tmp_path / "out"), "--no-install", "--no-tests", "--wheels",
              str(tmp_path / "none")], {}, fake_gpu)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "torch cannot use the GPU" in r.stdout
    rep = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert rep["status"] == "skipped" and "CPU-only build" in rep["missing"]["torch"]


def test_carried_wheels_reach_every_process_it_starts(gc, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    make_wheel(tmp_path / "whl", "lnbench_wheel_probe", body="VALUE = 42\n")
    report: dict = {}
    gc.use_wheels(tmp_path / "whl", report)
    assert report["wheels"]["rc"] == 0, report
    assert report["wheels"]["files"] == ["lnbench_wheel_probe-1.0-py3-none-any.whl"]
    r = subprocess.run([sys.executable, "-c", "import lnbench_wheel_probe as m, lnbench;"
                        " print(m.VALUE)"], capture_output=True, text=True, cwd="/",
                       env=dict(os.environ), timeout=60)
    assert r.stdout.strip() == "42", r.stderr
    assert gc.lnbench_import_problem() is None


def test_a_broken_wheel_is_reported_not_fatal(gc, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    (tmp_path / "whl").mkdir()
    (tmp_path / "whl" / "broken-1.0-py3-none-any.whl").write_text("not a zip")
    report: dict = {}
    gc.use_wheels(tmp_path / "whl", report)
    assert report["wheels"]["rc"] != 0
    assert os.environ["PYTHONPATH"] == ""  # nothing half-installed put on the path


def _pt(impl: str, kind: str, case: str, gbps: float | None, *, status: str = "ok",
        det: bool = True, copy: float = 3000.0) -> dict:
    return {"type": "point", "impl": impl, "kind": kind, "case": case, "status": status,
            "gbps": gbps, "pct_copy": None if gbps is None else 100 * gbps / copy,
            "deterministic": det, "M": 1, "N": 1, "dtype": "float32", "reason": ""}


def test_bar_needs_geomean_85_every_point_and_beating_every_peer(gc) -> None:
    pts = [_pt("cupy.fused", "custom", "a", 2700), _pt("cupy.fused", "custom", "b", 2700),
           _pt("triton.fused", "custom", "a", 2700), _pt("triton.fused", "custom", "b", 2000),
           _pt("liger", "peer", "a", 2600), _pt("liger", "peer", "b", 2100),
           _pt("torch.native", "vendor", "b", 900)]
    s = gc.summarize(pts)
    assert s["cupy.fused"]["meets_bar"] and s["cupy.fused"]["geomean_pct_copy"] == pytest.approx(90)
    t = s["triton.fused"]
    assert not t["meets_bar"]
    assert [b["case"] for b in t["below_best_peer"]] == ["b"]
    assert t["below_best_peer"][0]["best_peer"] == "liger"


@pytest.mark.parametrize("change", ["missing", "wrong", "nondeterministic", "slow"])
def test_bar_fails_for_each_reason(gc, change: str) -> None:
    pts = [_pt("cupy.fused", "custom", c, 2800) for c in "abc"] + [
        _pt("liger", "peer", c, 1000) for c in "abc"]
    if change == "missing":
        pts = [p for p in pts if not (p["impl"] == "cupy.fused" and p["case"] == "c")]
        pts.append(_pt("cupy.fused", "custom", "c", None, status="error"))
    elif change == "wrong":
        pts[2] = _pt("cupy.fused", "custom", "c", 2800, status="fail")
    elif change == "nondeterministic":
        pts[1] = _pt("cupy.fused", "custom", "b", 2800, det=False)
    else:
        pts = [_pt("cupy.fused", "custom", c, 2000) for c in "abc"] + pts[3:]
    s = gc.summarize(pts)["cupy.fused"]
    assert not s["meets_bar"], (change, s)


def test_render_names_the_card_and_marks_wrong_results(gc) -> None:
    pts = [_pt("cupy.fused", "custom", "4096x1024-float32-normal", 2700),
           _pt("torch.native", "vendor", "4096x1024-float32-normal", 1000, status="fail")]
    for p in pts:
        p.update(M=4096, N=1024, rel_err={"dx": 1e-7, "dgamma": 1e-7, "dbeta": 1e-7},
                 median_s=1e-5, workspace_bytes=0)
    rep = {"points": pts, "shapes": [[4096, 1024]], "device": {"name": "NVIDIA H100 80GB HBM3"},
           "copy_gbps": 3000.0, "summary": gc.summarize(pts), "tests": {"summary": "5 passed"}}
    md = gc.render(rep)
    assert "NVIDIA H100 80GB HBM3" in md and "3000 GB/s" in md
    assert "| cupy.fused | 2700 (90%) |" in md and "| torch.native | 1000 WRONG |" in md


# --------------------------------------------------------------------------- orchestration
# The CPU stands in for the GPU (a sitecustomize that only this test puts on PYTHONPATH), so the
# real script runs end to end: workers, a crashing backend, a sticky CUDA error, an out-of-memory
# point, a wrong result, a plugin that does not load, resumption, the report. The timings it
# takes are CPU timings inside a temp folder; nothing is kept.

STANDIN = '''
import os
if os.environ.get("LNBENCH_CPU_STANDS_IN_FOR_GPU") == "1":
    import time
    import torch
    torch.version.cuda = "standin"
    torch.cuda.is_available = lambda: True
    torch.cuda.synchronize = lambda *a, **k: None
    import lnbench.arrays as A
    _to, _un = A.to_array, A.unavailable
    A.to_array = lambda a, array, device="cpu": _to(a, array, "cpu" if device == "cuda" else device)
    A.unavailable = lambda array, device: (None if (array, device) == ("torch", "cuda")
                                           else _un(array, device))
    import lnbench.measure.cuda as mc
    def time_cuda(thunk, *, warmup=3, rep=20, flush_l2=True):
        for _ in range(warmup):
            thunk()
        out = []
        for _ in range(rep):
            t = time.perf_counter()
            thunk()
            out.append(time.perf_counter() - t)
        return out
    mc.time_cuda = time_cuda
    mc.cuda_workspace_bytes = lambda thunk: 0
    mc.copy_bandwidth_cuda = lambda *a, **k: 10.0
    mc.device_info = lambda: {"name": "CPU standing in for a GPU", "sms": 2}
    mc.free_device_memory = lambda: None
'''

# the backward in float64 on torch tensors: what the stand-in plugins return (or spoil)
BWD = '''
import os
import torch

def _bwd(dy, x, gamma, mean, rstd):
    d = torch.float64
    xh = (x.to(d) - mean.to(d).reshape(-1, 1)) * rstd.to(d).reshape(-1, 1)
    g = dy.to(d) * gamma.to(d)
    dx = rstd.to(d).reshape(-1, 1) * (g - g.mean(1, keepdim=True)
                                      - xh * (g * xh).mean(1, keepdim=True))
    t = x.dtype
    return dx.to(t), (dy.to(d) * xh).sum(0).to(t), dy.to(d).sum(0).to(t)
'''

PLUGIN = BWD + '''
from lnbench import register

def ok(dy, x, gamma, mean, rstd, eps):
    return _bwd(dy, x, gamma, mean, rstd)

def wrong(dy, x, gamma, mean, rstd, eps):
    dx, dg, db = _bwd(dy, x, gamma, mean, rstd)
    return dx * 1.5, dg, db

def crash(dy, x, gamma, mean, rstd, eps):
    os._exit(9)

def sticky(dy, x, gamma, mean, rstd, eps):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")

def oom(dy, x, gamma, mean, rstd, eps):
    if x.shape[0] >= 128:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
    return _bwd(dy, x, gamma, mean, rstd)

for name, fn in (("fake.ok", ok), ("fake.wrong", wrong), ("fake.crash", crash),
                 ("fake.sticky", sticky), ("fake.oom", oom)):
    register(name, fn, array="torch", device="cuda", dtypes=("float32",))
'''


def _standin_run(tmp_path: Path, fake_gpu: Path, plugin_src: str, args: list[str],
                 env_extra: dict[str, str] | None = None, standin_extra: str = "") -> dict:
    """scripts/gpu-check with the CPU standing in for the GPU and ``plugin_src`` loaded; the
    report (gpu-check.json, with gpu-check.md's text under "md", the exit status under "rc",
    stdout's last line under "last" and stdout under "stdout")."""
    site = tmp_path / "standin"
    site.mkdir()
    (site / "sitecustomize.py").write_text(STANDIN + standin_extra)
    plugin = tmp_path / "plugin.py"
    plugin.write_text(plugin_src)
    out = tmp_path / "out"
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
           "LNBENCH_CPU_STANDS_IN_FOR_GPU": "1", "LNBENCH_TORCH_DEVICE": "cpu", **(env_extra or {})}
    r = _run([str(out), "--no-install", "--no-tests", "--wheels", str(tmp_path / "none"),
              "--plugin", str(plugin), "--dtype", "float32", "--budget-s", "240", *args],
             env, fake_gpu)
    return json.loads((out / "gpu-check.json").read_text()) | {
        "md": (out / "gpu-check.md").read_text(), "rc": r.returncode,
        "last": (r.stdout.strip().splitlines() or [""])[-1], "stdout": r.stdout}


def test_orchestration_survives_crashes_sticky_errors_and_oom(tmp_path: Path,
                                                              fake_gpu: Path) -> None:
    # a missing --plugin file is bad usage (exit 2, below); one named by LNBENCH_PLUGINS is
    # listed in the report while the rest runs
    rep = _standin_run(tmp_path, fake_gpu, PLUGIN, [
        "--impl", "fake.*", "--impl", "cupy.fused", "--shape", "64x256", "--shape", "128x512"],
        env_extra={"LNBENCH_PLUGINS": str(tmp_path / "missing.py")})
    # wrong, crashed, sticky and out-of-memory points: exit 1 (docs/interface.md), naming them
    assert rep["rc"] == 1 and "fake.wrong" in rep["last"] and "fake.ok" not in rep["last"]
    pts = {(p["impl"], p["M"]): p for p in rep["points"]}
    assert {k[0] for k in pts} == {"fake.ok", "fake.wrong", "fake.crash", "fake.sticky",
                                   "fake.oom", "cupy.fused"}
    assert pts["fake.ok", 64]["status"] == pts["fake.ok", 128]["status"] == "ok"
    assert pts["fake.ok", 64]["deterministic"] is True and pts["fake.ok", 64]["gbps"] > 0
    # the judge's per-element verdict, in its words (the element, its error, its bound)
    assert pts["fake.wrong", 64]["status"] == "fail" and "its bound" in pts["fake.wrong", 64][
        "reason"] and pts["fake.wrong", 64]["reason"].startswith("dx error")
    # one of the two shapes took the worker down; the other is skipped, never run again
    crash = sorted((pts["fake.crash", m]["status"], pts["fake.crash", m]["reason"])
                   for m in (64, 128))
    assert crash[0][0] == "error" and "worker died (exit 9)" in crash[0][1]
    assert crash[1] == ("skipped", "excluded after it crashed a worker")
    sticky = sorted(pts["fake.sticky", m]["status"] for m in (64, 128))
    assert sticky == ["error", "skipped"]
    assert pts["fake.oom", 64]["status"] == "ok"
    assert pts["fake.oom", 128]["status"] == "error"
    assert pts["fake.oom", 128]["reason"].startswith("out of memory")
    # no CuPy (CI) or CuPy without a driver (here): skipped either way, with that reason
    assert pts["cupy.fused", 64]["status"] == "skipped"
    assert "cupy" in pts["cupy.fused", 64]["reason"].lower()
    assert len(rep["plugin_errors"]) == 1 and "missing.py" in rep["plugin_errors"][0]
    assert set(rep["summary"]) == {"fake.ok", "fake.wrong", "fake.crash", "fake.sticky",
                                   "fake.oom", "cupy.fused"}
    for name in ("fake.wrong", "fake.crash", "fake.oom", "cupy.fused"):
        assert not rep["summary"][name]["meets_bar"], name
    assert rep["summary"]["cupy.fused"]["geomean_pct_copy"] is None
    assert len(rep["summary"]["fake.wrong"]["wrong"]) == 2
    assert rep["summary"]["fake.crash"]["deterministic"] is None  # nothing ran: not "True"
    md = rep["md"]
    assert "CPU standing in for a GPU" in md and "WRONG" in md and "plugin not loaded" in md


def test_a_peer_cut_by_the_budget_means_no_bar(gc) -> None:
    pts = [_pt("cupy.fused", "custom", c, 2800) for c in "ab"]
    pts += [_pt("liger", "peer", "a", 1000),
            {**_pt("liger", "peer", "b", None, status="skipped"),
             "reason": "time budget of the check spent"},
            {**_pt("apex", "peer", "a", None, status="skipped"),
             "reason": "fused_layer_norm_cuda is not installed"}]
    s = gc.summarize(pts)["cupy.fused"]
    assert s["peers_not_measured"] == ["liger at b"]  # an absent package is not a cut
    assert not s["meets_bar"]


def _acc(impl: str, kind: str, case: str, dx: float, dtype: str = "float32") -> dict:
    p = _pt(impl, kind, case, 2800 if kind == "custom" else 1000)
    p.update(dtype=dtype, rel_err={"dx": dx, "dgamma": 1e-7, "dbeta": 1e-7})
    return p


def test_bar_needs_error_no_larger_than_torch_natives(gc) -> None:
    # within one rounding of fp32 (6e-8) of native's error: the same error; 4e-7 vs 1e-7: worse
    same = gc.summarize([_acc("cupy.fused", "custom", "a", 1.5e-7),
                         _acc("torch.native", "vendor", "a", 1.0e-7)])["cupy.fused"]
    assert same["less_accurate_than_native"] == [] and same["meets_bar"]
    worse = gc.summarize([_acc("cupy.fused", "custom", "a", 4e-7),
                          _acc("torch.native", "vendor", "a", 1e-7)])["cupy.fused"]
    assert [(w["case"], w["grad"]) for w in worse["less_accurate_than_native"]] == [("a", "dx")]
    assert not worse["meets_bar"]
    # bf16's unit roundoff is 2^-8: 3e-3 against native's 2e-3 is the same error
    bf = gc.summarize([_acc("cupy.fused", "custom", "a", 3e-3, "bfloat16"),
                       _acc("torch.native", "vendor", "a", 2e-3, "bfloat16")])["cupy.fused"]
    assert bf["less_accurate_than_native"] == []
    md = gc.render({"points": [], "shapes": [], "summary": {"cupy.fused": worse}})
    assert "less accurate than torch.native at a dx" in md


PLUGIN_SWEEP = BWD + '''
from lnbench.arrays import to_array
from lnbench.registry import Impl, add

def _inputs(data):
    return [to_array(a, "torch", "cuda") for a in (data.dy, data.x, data.gamma,
                                                   data.mean.reshape(-1), data.rstd.reshape(-1))]

def make(data):
    ins = _inputs(data)
    return lambda: _bwd(*ins)

def _build(ins, scale):
    def call():
        dx, dg, db = _bwd(*ins)
        return dx * scale, dg, db
    call()
    return call

def sweep(data):
    ins = _inputs(data)
    yield "good", {"k": 1}, lambda: _build(ins, 1.0)
    yield "wrong", {"k": 2}, lambda: _build(ins, 1.5)
    def boom():
        raise RuntimeError("too many resources requested for launch")
    yield "boom", {"k": 3}, boom

def crashing_sweep(data):
    yield "dies", {}, lambda: os._exit(7)

for name, sw in (("fake.tuned", sweep), ("fake.sweepcrash", crashing_sweep)):
    add(Impl(name=name, make=make, kind="custom", array="torch", device="cuda",
             dtypes=("float32",), sweep=sw))
'''


def test_sweep_times_each_variant_and_survives_a_crash(tmp_path: Path, fake_gpu: Path) -> None:
    rep = _standin_run(tmp_path, fake_gpu, PLUGIN_SWEEP, [
        "--impl", "fake.*", "--shape", "64x256", "--shape", "32x128", "--sweep"])
    assert rep["rc"] == 0  # both measured correctly; a failing sweep variant is not a failure
    rows = {(s["impl"], s["case"].split("-")[0], s["label"]): s for s in rep["sweep"]}
    for shape in ("64x256", "32x128"):
        assert rows["fake.tuned", shape, "good"]["status"] == "ok"
        assert rows["fake.tuned", shape, "good"]["gbps"] > 0
        assert rows["fake.tuned", shape, "wrong"]["status"] == "fail"
        assert rows["fake.tuned", shape, "wrong"]["reason"].startswith("dx error")
        assert rows["fake.tuned", shape, "boom"]["status"] == "error"
        assert "too many resources" in rows["fake.tuned", shape, "boom"]["reason"]
    # the crashing sweep took one worker down once; it is excluded afterwards, the rest done
    crashed = [s for s in rep["sweep"] if s["impl"] == "fake.sweepcrash"]
    assert [s["label"] for s in crashed] == ["(crashed)"]
    assert "worker died (exit 7)" in crashed[0]["reason"]
    best = {(b["impl"], b["case"].split("-")[0]): b for b in rep["sweep_best"]}
    b = best["fake.tuned", "64x256"]
    assert b["default"] == b["best"] == "good" and b["not_ok"] == 2 and b["variants"] == 3
    assert "Launch-plan sweep" in rep["md"] and "| fake.tuned |" in rep["md"]


def test_all_points_correct_exits_0(tmp_path: Path, fake_gpu: Path) -> None:
    # a repeated --impl, --dtype or --shape (also spelt differently) is one point, as in the CLI
    rep = _standin_run(tmp_path, fake_gpu, PLUGIN, [
        "--impl", "fake.ok", "--impl", "fake.ok", "--dtype", "float32", "--shape", "32x128",
        "--shape", "32X128", "--shape", "32x128"])
    assert rep["rc"] == 0 and [p["status"] for p in rep["points"]] == ["ok"]
    assert rep["shapes"] == [[32, 128]] and "nothing_measured" not in rep
    assert len(re.findall(r"\] worker \d+$", rep["stdout"], re.M)) == 1
    assert rep["worker_failure"] is None


@pytest.mark.parametrize("dist", ["normal", "offset", "constant", "outlier"])
@pytest.mark.parametrize("shape,dtype", [((64, 1023), "float32"), ((2, 4), "float64"),
                                         ((256, 1024), "bfloat16"), ((32, 4096), "float16")])
def test_gpu_reference_gives_the_judges_tolerances(gc, monkeypatch, shape, dtype, dist) -> None:
    """gpu-check judges with a float64 reference and tolerances made on the device (the CPU's
    extended-precision reference costs up to 30 s per large anchor case); run here on torch's CPU
    they must be the judge's own numbers."""
    import numpy as np

    import lnbench.arrays as A
    from lnbench.grid import Case, make_data
    from lnbench.judge import tolerance

    to = A.to_array
    monkeypatch.setattr(A, "to_array", lambda a, array, device="cpu": to(a, array, "cpu"))
    data = make_data(Case(*shape, dtype, dist))
    for affine in (True, False):
        ref = gc.device_reference(data, affine, "cpu")
        (dx, dg, db), tols = ref.arrays, ref.tols
        for g, got, want in zip(("dx", "dgamma", "dbeta"), (dx, dg, db),
                                data.reference(affine), strict=True):
            assert tols[g] == pytest.approx(tolerance(data, g, affine), rel=1e-6), g
            scale = max(float(np.max(np.abs(want))), 1e-300)
            err = float(np.max(np.abs(got.numpy() - want))) / scale
            if dtype == "float64":  # not exact enough to judge float64: the CPU reference is used
                assert gc.uses_exact_reference(False, data.case)
            else:  # float64 against extended precision: far inside the judge's tolerance
                assert err < 1e-3 * tols[g], g
