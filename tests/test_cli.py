"""The command line as the interface states it: JSON keys, exit codes 0/1/2, plugins, --inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from lnbench.cli import main
from lnbench.grid import DISTS

LIST_KEYS = {"name", "family", "array", "device", "dtypes", "affine", "available", "reason"}
RESULT_KEYS = {"impl", "case", "M", "N", "dtype", "dist", "grad", "max_abs_err", "rel_err", "tol",
               "err_ratio",
               "passed", "status", "reason"}
TINY = ["--shape", "2x4", "--shape", "3x40", "--dtype", "float32", "--dist", "normal"]

PLUGIN = '''
    import numpy as np
    import lnbench

    def kevin(dy, x, gamma, mean, rstd, eps):
        f = np.float64
        xhat = (x.astype(f) - mean.astype(f)) * rstd.astype(f)
        g = dy.astype(f) * gamma.astype(f)
        dx = rstd.astype(f) * (g - g.mean(1, keepdims=True)
                               - xhat * (g * xhat).mean(1, keepdims=True))
        return (dx.astype(x.dtype), (dy.astype(f) * xhat).sum(0).astype(x.dtype),
                dy.astype(f).sum(0).astype(x.dtype))

    {body}
'''


def plugin_src(body: str) -> str:
    return textwrap.dedent(PLUGIN.replace("{body}", body))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *names: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lnbench: error: ")
    for n in names:
        assert n in lines[0], (n, lines[0])


def check_json(capsys, *argv):
    code, out, err = run(capsys, "check", *argv, "--json")
    return code, json.loads(out), err


# ------------------------------------------------------------------ list


def test_list_json_keys(capsys):
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert isinstance(rows, list) and rows
    for r in rows:
        assert LIST_KEYS <= set(r), set(r) ^ LIST_KEYS
        assert isinstance(r["dtypes"], list) and isinstance(r["available"], bool)
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names))
    assert {"numpy.kevin", "numpy.caffe2", "torch.autograd", "torch.native", "cupy.kevin"} <= \
        set(names)
    caffe2 = next(r for r in rows if r["name"] == "numpy.caffe2")
    assert caffe2["affine"] is False and caffe2["available"] is True and caffe2["reason"] == ""


def test_list_table_and_plugin(capsys, write_plugin):
    path = write_plugin(plugin_src('lnbench.register("cli.listed", kevin)'))
    code, out, _ = run(capsys, "list", "--plugin", path)
    assert code == 0 and "numpy.kevin" in out and "cli.listed" in out
    code, out, _ = run(capsys, "list", "--json", "--plugin", path)
    row = next(r for r in json.loads(out) if r["name"] == "cli.listed")
    assert row["family"] == "cli" and row["available"] is True


# ------------------------------------------------------------------ check: success


def test_check_json_contract_keys_and_exit_0(capsys):
    code, doc, err = check_json(capsys, "--impl", "numpy.*", "--impl", "torch.native", *TINY)
    assert code == 0, err
    assert set(doc) >= {"results", "summary"}
    rows = doc["results"]
    assert rows and all(set(r) == RESULT_KEYS for r in rows)
    assert all(r["status"] == "ok" and r["passed"] is True for r in rows)
    assert {r["grad"] for r in rows} == {"dx", "dgamma", "dbeta"}
    assert {r["grad"] for r in rows if r["impl"] == "numpy.caffe2"} == {"dx"}
    assert {(r["M"], r["N"], r["dtype"], r["dist"]) for r in rows} == \
        {(2, 4, "float32", "normal"), (3, 40, "float32", "normal")}
    assert all(r["rel_err"] <= r["tol"] for r in rows)
    s = doc["summary"]
    assert s["total"] == len(rows) == s["ok"] and s["fail"] == s["error"] == 0
    assert "numpy.kevin" in s["impls"]


def test_check_text_output_exit_0(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich reads the width at print time
    code, out, _ = run(capsys, "check", "--impl", "numpy.kevin", *TINY)
    assert code == 0
    assert "numpy.kevin" in out and "ok 6, fail 0, error 0, skipped 0" in out


def test_check_skips_unavailable_and_still_exits_0(capsys):
    code, doc, _ = check_json(capsys, "--impl", "cupy.kevin", "--impl", "numpy.kevin", *TINY)
    assert code == 0  # skipped is not a failure; on a GPU machine both are ok
    cupy_rows = [r for r in doc["results"] if r["impl"] == "cupy.kevin"]
    assert len(cupy_rows) == 6
    skipped = [r for r in cupy_rows if r["status"] == "skipped"]
    assert all(r["reason"] and r["passed"] is False and r["rel_err"] is None for r in skipped)
    assert doc["summary"]["skipped"] == len(skipped)
    assert all(r["status"] == "ok" for r in cupy_rows if r not in skipped)


# ------------------------------------------------------------------ check: judged failures


def test_failing_plugin_exits_1_and_builtins_still_ok(capsys, write_plugin):
    path = write_plugin(plugin_src('''
        def sign_error(dy, x, gamma, mean, rstd, eps):
            dx, dg, db = kevin(dy, x, gamma, mean, rstd, eps)
            return -dx, dg, db

        lnbench.register("cli.sign", sign_error)
    '''.replace("\n        ", "\n    ")))
    code, doc, _ = check_json(capsys, "--plugin", path, "--impl", "cli.*", "--impl", "numpy.kevin",
                              *TINY)
    assert code == 1
    rows = doc["results"]
    bad = [r for r in rows if r["impl"] == "cli.sign" and r["grad"] == "dx"]
    assert bad and all(r["status"] == "fail" and "rel_err" in r["reason"] for r in bad)
    assert all(r["status"] == "ok" for r in rows if r["impl"] == "numpy.kevin")
    assert doc["summary"]["fail"] == len(bad)
    code, out, _ = run(capsys, "check", "--plugin", path, "--impl", "cli.sign", *TINY)
    assert code == 1 and "FAIL cli.sign" in out


def test_raising_plugin_is_error_rows_exit_1_others_ok(capsys, write_plugin):
    path = write_plugin(plugin_src('''
        def boom(dy, x, gamma, mean, rstd, eps):
            raise RuntimeError("kernel launch failed")

        lnbench.register("cli.boom", boom)
        lnbench.register("cli.good", kevin)
    '''.replace("\n        ", "\n    ")))
    code, doc, _ = check_json(capsys, "--plugin", path, "--impl", "cli.*", "--impl", "numpy.kevin",
                              *TINY)
    assert code == 1
    rows = doc["results"]
    boom = [r for r in rows if r["impl"] == "cli.boom"]
    assert len(boom) == 6
    assert all(r["status"] == "error" and r["passed"] is False for r in boom)
    assert all(r["reason"] == "RuntimeError: kernel launch failed" for r in boom)
    assert all(r["status"] == "ok" for r in rows if r["impl"] in ("cli.good", "numpy.kevin"))
    assert len([r for r in rows if r["impl"] == "cli.good"]) == 6
    assert doc["summary"]["error"] == 6 and doc["summary"]["impls"]["cli.boom"]["error"] == 6


def test_plugin_judged_exactly_like_builtin(capsys, write_plugin):
    """A plugin declaring the built-in's numerics (docs/plugins.md) is judged exactly like it;
    an undeclared one (the judge's room for any style) reaches the same verdicts."""
    from lnbench.registry import get

    n = get("numpy.kevin").numerics
    path = write_plugin(plugin_src(
        f'lnbench.register("cli.kevin", kevin, stats="{n.stats}", formula="{n.formula}", '
        f'acc="{n.acc}")\n    lnbench.register("cli.undeclared", kevin)'))
    code, doc, _ = check_json(capsys, "--plugin", path, "--impl", "cli.*",
                              "--impl", "numpy.kevin", "--shape", "64x1023", "--dist", "offset")
    assert code == 0
    rows = doc["results"]
    by = {}
    for r in rows:
        by.setdefault(r["impl"], []).append((r["case"], r["grad"], r["tol"], r["status"]))
    assert by["cli.kevin"] == by["numpy.kevin"]  # same cases, grads, tolerances, verdicts
    assert {r["dtype"] for r in rows} == {"float64", "float32", "float16", "bfloat16"}
    assert [(c, g, st) for c, g, _, st in by["cli.undeclared"]] == \
        [(c, g, st) for c, g, _, st in by["numpy.kevin"]]


def test_check_json_is_strict_json_with_nonfinite_results(capsys, write_plugin):
    path = write_plugin(plugin_src('''
        def infs(dy, x, gamma, mean, rstd, eps):
            dx, dg, db = kevin(dy, x, gamma, mean, rstd, eps)
            return np.full_like(dx, np.inf), dg, db

        lnbench.register("cli.inf", infs)
    '''.replace("\n        ", "\n    ")))
    code, out, _ = run(capsys, "check", "--plugin", path, "--impl", "cli.inf", *TINY, "--json")
    assert code == 1

    def reject(token):
        raise ValueError(f"not JSON: {token}")

    json.loads(out, parse_constant=reject)


# ------------------------------------------------------------------ check: --inputs


def _npz(path, dtype, M=5, N=48, **extra):
    rng = np.random.default_rng(11)
    arrays = dict(x=rng.standard_normal((M, N)) * 3 + 1, dy=rng.standard_normal((M, N)),
                  gamma=rng.standard_normal(N))
    np.savez(path, **{k: v.astype(dtype) for k, v in arrays.items()}, **extra)
    return str(path)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ml_dtypes.bfloat16],
                         ids=["float32", "float64", "bfloat16"])
def test_inputs_user_case(capsys, tmp_path, dtype):
    path = _npz(tmp_path / "captured_acts.npz", dtype, beta=np.zeros(48, dtype))
    code, doc, err = check_json(capsys, "--inputs", path, "--impl", "numpy.kevin",
                                "--impl", "numpy.caffe2")
    assert code == 0, err
    rows = doc["results"]
    assert len(rows) == 4  # kevin: dx, dγ, dβ; caffe2: dx — and no grid cases
    name = np.dtype(dtype).name
    assert all(r["dtype"] == name and r["M"] == 5 and r["N"] == 48 for r in rows)
    assert all(r["dist"] == "inputs:captured_acts" for r in rows)
    assert all(r["status"] == "ok" for r in rows)


def test_inputs_with_filters_adds_the_grid_cases(capsys, tmp_path):
    path = _npz(tmp_path / "u.npz", np.float32)
    code, doc, _ = check_json(capsys, "--inputs", path, "--impl", "numpy.kevin", *TINY)
    assert code == 0
    assert {r["dist"] for r in doc["results"]} == {"normal", "inputs:u"}


# ------------------------------------------------------------------ exit 2: bad usage


def test_bad_usage_exit_2_one_line(capsys, tmp_path, write_plugin):
    npz_missing = str(tmp_path / "nody.npz")
    np.savez(npz_missing, x=np.zeros((2, 4), np.float32), gamma=np.ones(4, np.float32))
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    broken = write_plugin("raise ImportError('needs libfoo')\n", name="broken_plugin.py")
    cases = [
        (["--impl", "no.such.impl"], ["no.such.impl"]),
        (["--impl", "numpy.kevin", "--shape", "12by3"], ["12by3"]),
        (["--impl", "numpy.kevin", "--shape", "0x4"], ["0x4"]),
        (["--impl", "numpy.kevin", "--dtype", "float8"], ["float8"]),
        (["--impl", "numpy.kevin", "--dist", "cauchy"], ["cauchy"]),
        (["--impl", "numpy.kevin", "--inputs", npz_missing], ["nody.npz", "dy"]),
        (["--impl", "numpy.kevin", "--inputs", str(garbage)], ["garbage.npz"]),
        (["--impl", "numpy.kevin", "--inputs", str(tmp_path / "gone.npz")], ["gone.npz"]),
        (["--plugin", str(tmp_path / "nofile.py")], ["nofile.py"]),
        (["--plugin", broken], ["broken_plugin.py", "needs libfoo"]),
    ]
    for argv, names in cases:
        code, out, err = run(capsys, "check", *argv, "--json")
        assert code == 2, (argv, out, err)
        assert out == "", argv
        one_line_error(err, *names)
    code, _, err = run(capsys, "list", "--plugin", broken)
    assert code == 2
    one_line_error(err, "broken_plugin.py")


def test_argparse_errors_exit_2(capsys):
    for argv in (["check", "--grid", "huge"], ["frobnicate"], [], ["check", "--shape"]):
        with pytest.raises(SystemExit) as ei:
            main(argv)
        assert ei.value.code == 2, argv
        err = capsys.readouterr().err
        assert "error" in err


def test_inputs_npy_file_is_exit_2(capsys, tmp_path):
    p = tmp_path / "acts.npy"
    np.save(p, np.zeros((2, 4), np.float32))
    code, _, err = run(capsys, "check", "--impl", "numpy.kevin", "--inputs", str(p))
    assert code == 2
    one_line_error(err, "acts.npy")


# ------------------------------------------------------------------ a real process


def _lnbench(*argv, env=None):
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "lnbench", *argv], capture_output=True,
                          text=True, cwd=root, env=env or os.environ.copy(), timeout=120)


def test_subprocess_check_json_and_exit_codes(tmp_path):
    p = _lnbench("check", "--impl", "numpy.kevin", "--impl", "numpy.caffe2", "--shape", "2x4",
                 "--dtype", "float64", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert all(set(r) == RESULT_KEYS and r["status"] == "ok" for r in doc["results"])
    assert doc["summary"]["total"] == len(doc["results"]) == len(DISTS) * (3 + 1)

    plugin = tmp_path / "neg.py"
    plugin.write_text(plugin_src('lnbench.register("sub.zero", lambda *a: tuple(0 * o for o in '
                                 'kevin(*a)))'))
    p = _lnbench("check", "--plugin", str(plugin), "--impl", "sub.zero", "--shape", "2x4",
                 "--dtype", "float32", "--dist", "normal")
    assert p.returncode == 1, p.stderr
    assert "all zeros" in p.stdout

    p = _lnbench("check", "--impl", "nope.*")
    assert p.returncode == 2
    assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1 and "nope.*" in p.stderr
