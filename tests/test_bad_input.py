"""Bad input and failing backends cost only themselves (README "What is in it"): one line naming
the thing, the documented exit code, and the rest of the run completes. Each case here was found
by an adversarial pass over the CLI (third session of 2026-11-26)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from lnbench.cli import main
from lnbench.grid import CaseData

ROOT = Path(__file__).resolve().parents[1]
TWO = ["--shape", "2x4", "--shape", "3x40", "--dtype", "float32", "--dist", "normal"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_an_implementation_calling_sys_exit_is_an_error_not_the_end(capsys, write_plugin):
    path = write_plugin("""
        import sys
        import lnbench
        lnbench.register("bad.exit0", lambda *a: sys.exit(0), dtypes=("float32",))
    """)
    code, out, _ = run(capsys, "check", "--plugin", path, "--impl", "bad.exit0", "--impl",
                       "numpy.kevin", *TWO, "--json")
    assert code == 1
    rows = json.loads(out)["results"]
    mine = [r for r in rows if r["impl"] == "bad.exit0"]
    assert mine and all(r["status"] == "error" and "sys.exit(0)" in r["reason"] for r in mine)
    assert all(r["status"] == "ok" for r in rows if r["impl"] == "numpy.kevin")
    code, out, _ = run(capsys, "run", "--plugin", path, "--impl", "bad.exit0", "--impl",
                       "numpy.kevin", *TWO, "--repeat", "1", "--no-memory")
    assert code == 1 and "numpy.kevin" in out


def _oom_for(shape: tuple[int, int]):
    import lnbench.grid as G

    real = G.make_data

    def make_data(case):
        if (case.M, case.N) == shape:
            raise MemoryError(f"cannot allocate {case.M}x{case.N}")
        return real(case)

    return make_data


def test_inputs_too_large_for_the_machine_cost_only_their_case(capsys, monkeypatch, tmp_path):
    import lnbench.grid as G

    monkeypatch.setattr(G, "make_data", _oom_for((3, 40)))
    code, out, _ = run(capsys, "check", "--impl", "numpy.kevin", "--impl", "cupy.kevin", *TWO,
                       "--json")
    assert code == 1
    rows = json.loads(out)["results"]
    big = [r for r in rows if r["case"].startswith("3x40") and r["impl"] == "numpy.kevin"]
    assert big and all(r["status"] == "error" and r["reason"].startswith("inputs: out of memory")
                       for r in big)
    assert all(r["status"] == "skipped" for r in rows if r["impl"] == "cupy.kevin")
    assert all(r["status"] == "ok" for r in rows
               if r["case"].startswith("2x4") and r["impl"] == "numpy.kevin")
    import lnbench.measure.run as R

    monkeypatch.setattr(R, "make_data", _oom_for((3, 40)))
    out_file = tmp_path / "r.json"
    code, _, _ = run(capsys, "run", "--impl", "numpy.kevin", *TWO, "--repeat", "1",
                     "--no-memory", "--out", str(out_file))
    assert code == 1
    recs = json.loads(out_file.read_text())["records"]
    assert [r["status"] for r in recs] in (["ok", "error"], ["noisy", "error"])  # busy machine
    assert "out of memory" in recs[1]["reason"]


def test_a_reference_that_runs_out_of_memory_costs_only_its_case(capsys, monkeypatch):
    real = CaseData.reference

    def reference(self, affine=True):
        if self.case.N == 40:
            raise MemoryError("float128 temporaries")
        return real(self, affine)

    monkeypatch.setattr(CaseData, "reference", reference)
    code, out, _ = run(capsys, "check", "--impl", "numpy.kevin", *TWO, "--json")
    assert code == 1
    rows = json.loads(out)["results"]
    assert {r["status"] for r in rows if r["N"] == 40} == {"error"}
    assert all("reference: out of memory" in r["reason"] for r in rows if r["N"] == 40)
    assert {r["status"] for r in rows if r["N"] == 4} == {"ok"}


def test_run_out_path_is_checked_before_measuring(capsys, monkeypatch, tmp_path):
    import lnbench.measure.run as R

    monkeypatch.setattr(R, "run", lambda *a, **k: pytest.fail("measured before checking --out"))
    code, out, err = run(capsys, "run", "--impl", "numpy.kevin", *TWO,
                         "--out", str(tmp_path / "no" / "such" / "x.json"))
    assert code == 2 and out == ""
    one_line(err, "--out", "x.json")
    d = tmp_path / "adir.json"
    d.mkdir()
    code, out, err = run(capsys, "run", "--impl", "numpy.kevin", *TWO, "--out", str(d))
    assert code == 2 and out == ""
    one_line(err, "adir.json", "directory")


def test_quick_and_another_grid_conflict(capsys):
    code, out, err = run(capsys, "run", "--quick", "--grid", "full", "--impl", "numpy.kevin")
    assert code == 2 and out == ""
    one_line(err, "--quick", "--grid full")


def test_profile_of_a_raising_implementation_is_one_line_exit_1(capsys, write_plugin):
    path = write_plugin("""
        import lnbench
        def boom(*a):
            raise RuntimeError("kernel launch failed")
        lnbench.register("bad.boom", boom, dtypes=("float32",))
    """)
    code, out, err = run(capsys, "profile", "--plugin", path, "--impl", "bad.boom", "--shape",
                         "16x32")
    assert code == 1 and out == ""
    one_line(err, "bad.boom", "RuntimeError", "kernel launch failed")


def test_a_plugin_may_not_take_a_builtin_id(capsys, write_plugin):
    path = write_plugin("""
        import lnbench
        lnbench.register("numpy.c9", lambda dy, x, *a: (0 * x, None, None))
    """)
    code, out, err = run(capsys, "check", "--plugin", path, "--impl", "numpy.c9", *TWO)
    assert code == 2 and out == ""
    one_line(err, "plugin.py", "numpy.c9", "built-in")


def test_a_plugin_imports_helpers_next_to_it(capsys, write_plugin, tmp_path):
    (tmp_path / "my_helpers_ln.py").write_text(
        "def bwd(dy, x, gamma, mean, rstd, eps):\n"
        "    xh = (x - mean) * rstd\n"
        "    g = dy * gamma\n"
        "    dx = rstd * (g - g.mean(1, keepdims=True) - xh * (g * xh).mean(1, keepdims=True))\n"
        "    return dx, (dy * xh).sum(0), dy.sum(0)\n")
    path = write_plugin("""
        import lnbench
        from my_helpers_ln import bwd
        lnbench.register("mine.helped", bwd, dtypes=("float32",))
    """)
    code, out, err = run(capsys, "check", "--plugin", path, "--impl", "mine.helped", *TWO)
    assert code == 0, err


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_inputs_that_no_reference_can_judge_are_exit_2(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    g = np.ones(8, np.float32)
    nan = x.copy()
    nan[1, 2] = np.nan
    files = {
        "nan.npz": dict(x=nan, dy=x, gamma=g),
        "inf.npz": dict(x=x, dy=x * np.inf, gamma=g),
        "eps_neg.npz": dict(x=x, dy=x, gamma=g, eps=np.float64(-1e-5)),
        "eps_nan.npz": dict(x=x, dy=x, gamma=g, eps=np.float64(np.nan)),
        "half_bf16.npz": dict(x=x, dy=x.astype(ml_dtypes.bfloat16), gamma=g),
    }
    for name, arrays in files.items():
        path = _npz(tmp_path / name, **arrays)
        code, out, err = run(capsys, "check", "--impl", "numpy.kevin", "--inputs", path)
        assert code == 2 and out == "", (name, out)
        one_line(err, name)


def test_unknown_torch_device_is_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("LNBENCH_TORCH_DEVICE", "gpu")
    code, out, err = run(capsys, "list")
    assert code == 2 and out == ""
    one_line(err, "LNBENCH_TORCH_DEVICE=gpu")


def test_a_repeated_filter_value_is_one_case(capsys):
    code, out, _ = run(capsys, "check", "--impl", "numpy.kevin", "--shape", "2x4", "--shape",
                       "2x4", "--dtype", "float32", "--dtype", "float32", "--dist", "normal",
                       "--json")
    assert code == 0 and len(json.loads(out)["results"]) == 3


def test_asv_suite_says_which_plugins_did_not_load(capsys, monkeypatch, tmp_path):
    from lnbench.measure import asvbench

    monkeypatch.setenv("LNBENCH_PLUGINS", str(tmp_path / "gone.py"))
    errors = asvbench._load_plugins()
    assert len(errors) == 1
    one_line(capsys.readouterr().err, "LNBENCH_PLUGINS", "gone.py")


# what lnbench imports that a fresh `pip install -e .` must bring (tqdm was missed once: only a
# terminal run imports it); optional GPU stacks and the transitive llvmlite (numba's) aside
OPTIONAL = {"cupy", "cupyx", "triton", "liger_kernel", "apex", "fused_layer_norm_cuda", "llvmlite"}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    mods: set[str] = set()
    for f in (ROOT / "lnbench").rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Import):
                mods |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                mods.add(n.module.split(".")[0])
    third = sorted(m for m in mods - OPTIONAL - {"lnbench"} if m not in sys.stdlib_module_names)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in deps}
    dists = importlib.metadata.packages_distributions()
    missing = [m for m in third
               if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & declared]
    assert not missing, f"imported but not in pyproject's dependencies: {missing}"


def test_asv_suite_refuses_settings_that_would_give_another_suite(monkeypatch):
    from lnbench.measure import asvbench

    monkeypatch.setenv("LNBENCH_DTYPES", "float32, float16")  # spaces are fine
    assert asvbench.dtypes() == ["float32", "float16"]
    for bad in ("fp32", "float32,bogus", " , "):
        monkeypatch.setenv("LNBENCH_DTYPES", bad)
        with pytest.raises(ValueError, match="LNBENCH_DTYPES"):
            asvbench.dtypes()
    monkeypatch.delenv("LNBENCH_DTYPES")
    monkeypatch.setenv("LNBENCH_IMPLS", "numpy.kevin, numpy.kevn")
    with pytest.raises(ValueError, match="LNBENCH_IMPLS: 'numpy.kevn' matches no implementation"):
        asvbench.impl_names()
    monkeypatch.setenv("LNBENCH_IMPLS", "numpy.kevin")
    monkeypatch.setenv("LNBENCH_TORCH_DEVICE", "CPU")
    with pytest.raises(ValueError, match="LNBENCH_TORCH_DEVICE='CPU'"):
        asvbench.impl_names()


def test_inputs_too_large_to_load_are_exit_2_naming_the_file(capsys, monkeypatch, tmp_path):
    import lnbench.grid as G

    def load_inputs(path):
        raise MemoryError("Unable to allocate 5.96 GiB")

    monkeypatch.setattr(G, "load_inputs", load_inputs)
    code, out, err = run(capsys, "check", "--impl", "numpy.kevin", "--inputs",
                         str(tmp_path / "acts.npz"))
    assert code == 2 and out == ""
    one_line(err, "acts.npz", "out of memory")


def test_cases_where_nothing_would_run_make_no_inputs(capsys, monkeypatch):
    """`check --grid anchors` on a machine without a GPU: every GPU implementation skips, so the
    large anchor inputs are never made (they took a minute for nothing)."""
    import lnbench.grid as G

    monkeypatch.setattr(G, "make_data", lambda case: pytest.fail(f"made inputs for {case}"))
    code, out, _ = run(capsys, "check", "--grid", "anchors", "--impl", "cupy.kevin", "--dist",
                       "normal", "--dtype", "float32", "--json")
    rows = json.loads(out)["results"]
    assert code == 0 and rows and all(r["status"] == "skipped" and r["reason"] for r in rows)
