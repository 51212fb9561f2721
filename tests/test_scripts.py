"""The table reports and helper scripts on bad input (exit 2 with one line on stderr naming the
argument or file, never a traceback): `lnbench report speed` and `lnbench report accuracy`
(scripts/speed-table and scripts/accuracy-table remain as wrappers of them),
scripts/bench-report and scripts/gpu-prep. Small temporary inputs; no network (gpu-prep is
driven with an unreachable index or a local folder of generated wheels). A few seconds."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from wheels import make_wheel

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def script(name: str, *args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPTS / name), *args]
    if name == "gpu-prep":
        cmd = ["bash", str(SCRIPTS / name), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)


def report(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``lnbench report NAME ARGS`` in this process (as ``lnbench.cli.main``; argparse's
    exit included): its exit code, stdout and stderr."""
    from lnbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["report", name, *args])
        except SystemExit as e:  # argparse: --help, usage errors
            code = e.code if isinstance(e.code, int) else 2
    return subprocess.CompletedProcess(["lnbench", "report", name, *args], code,
                                       out.getvalue(), err.getvalue())


def one_line(proc: subprocess.CompletedProcess[str], *names: str, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def bad_files(tmp: Path) -> dict[str, Path]:
    """Unreadable inputs every table script must refuse: name -> path."""
    good = json.dumps({"records": [], "results": [], "machine": {}}, indent=1)
    files = {"missing": tmp / "missing.json", "empty": tmp / "empty.json",
             "truncated": tmp / "truncated.json", "object": tmp / "object.json",
             "csv": tmp / "run.csv", "folder": tmp / "folder", "list": tmp / "list.json"}
    files["empty"].write_text("")
    files["truncated"].write_text(good[: len(good) // 2])
    files["object"].write_text("{}")
    files["csv"].write_text("impl,case,M,N,dtype,seconds\nnumpy.kevin,2x4,2,4,float32,1e-6\n")
    files["folder"].mkdir()
    files["list"].write_text("[1, 2]")
    return files


# --- lnbench report speed ---------------------------------------------------------------------


def _record(impl: str, M: int, N: int, dtype: str, seconds: float | None, *,
            status: str = "ok", copy: float = 40.0) -> dict:
    elt = {"float32": 4, "bfloat16": 2}[dtype]
    nbytes = 3 * M * N * elt + 8 * M + 3 * N * elt
    gbps = nbytes / seconds / 1e9 if seconds else None
    return {"impl": impl, "case": f"{M}x{N}-{dtype}-normal", "M": M, "N": N, "dtype": dtype,
            "dist": "normal", "device": "cpu", "status": status,
            "reason": "" if status == "ok" else "RuntimeError: boom", "seconds": seconds,
            "gbps": gbps, "pct_copy": 100 * gbps / copy if gbps else None, "copy_gbps": copy}


def run_doc(records: list[dict]) -> dict:
    return {"machine": {"machine": "box", "cpu_model": "Test CPU", "cpu_cores": 2,
                        "copy_gbps": {"cpu": 40.0, "cuda": None},
                        "versions": {"torch": "2.13.0", "numpy": "2.4.6"}},
            "records": records}


@pytest.fixture
def speed_json(tmp_path: Path) -> Path:
    """fast.v1 at 80 % of copy and 2.5x torch.native on two bar-sized points; bad.v1 errored."""
    recs = []
    for M, N, dtype in ((4096, 1024, "float32"), (2048, 2048, "bfloat16")):
        base = _record("fast.v1", M, N, dtype, 1.0)["gbps"]
        t_fast = 1.0 * base / (0.8 * 40.0)  # 80 % of the 40 GB/s copy
        recs.append(_record("fast.v1", M, N, dtype, t_fast))
        recs.append(_record("torch.native", M, N, dtype, 2.5 * t_fast, status="fail"))
        recs.append(_record("bad.v1", M, N, dtype, None, status="error"))
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run_doc(recs)))
    return path


def test_speed_table_prints_the_table_and_names_what_was_not_measured(speed_json: Path) -> None:
    proc = report("speed", str(speed_json))
    assert proc.returncode == 0, proc.stderr
    assert "Machine `box`: Test CPU, 2 cores, copy 40.0 GB/s" in proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ")]
    assert rows[0].split("|")[1].strip() == "impl"
    fast = next(r for r in rows if r.startswith("| fast.v1"))
    assert "(80%)" in fast and "| 80%" in fast and "2.50×" in fast
    native = next(r for r in rows if r.startswith("| torch.native"))
    assert "✗" in native and "1.00×" in native
    assert "Not measured: bad.v1 (error)." in proc.stdout
    assert "Bar" not in proc.stdout


def test_speed_table_bar_impl_judges_the_bar(speed_json: Path, tmp_path: Path) -> None:
    proc = report("speed", str(speed_json), "--bar-impl", "fast.v1")
    assert proc.returncode == 0, proc.stderr
    bar = proc.stdout.strip().splitlines()[-1]
    assert bar.startswith("Bar (≥ 70 % of copy and ≥ 2× torch.native") and bar.endswith("met.")
    assert "fast.v1 80 % of copy, 2.50× torch.native" in bar and "2 point(s)" in bar
    proc = report("speed", str(speed_json), "--bar-impl", "fast.v1", "--bar-copy", "85")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.strip().endswith("MISSED.")
    proc = report("speed", str(speed_json), "--bar-impl", "fast.v1", "--bar-speedup", "3")
    assert proc.returncode == 1 and "MISSED" in proc.stdout, proc.stderr
    # the bar is defined at M·N >= 4Mi only
    small = tmp_path / "small.json"
    small.write_text(json.dumps(run_doc([_record("fast.v1", 64, 1024, "float32", 1e-5),
                                         _record("torch.native", 64, 1024, "float32", 2e-5)])))
    assert report("speed", str(small)).returncode == 0
    one_line(report("speed", str(small), "--bar-impl", "fast.v1"), "--bar-impl", "4Mi")
    for bad in ("0", "-1", "nan", "inf", "x"):
        one_line(report("speed", str(speed_json), "--bar-copy", bad), "--bar-copy")


def test_speed_table_bar_every_point_against_the_fastest_peer(tmp_path: Path) -> None:
    """--bar-every-point: every point with M·N >= 4Mi on its own, against the fastest peer there;
    one point behind one peer is enough to miss it."""
    recs = []
    for M, N, dtype, ahead in ((4096, 1024, "float32", 1.2), (2048, 2048, "bfloat16", 0.9)):
        t = _record("fast.v1", M, N, dtype, 1.0)["gbps"] / (0.95 * 40.0)  # 95 % of copy
        recs += [_record("fast.v1", M, N, dtype, t),
                 _record("torch.native", M, N, dtype, 3 * t),
                 _record("torch.compile", M, N, dtype, ahead * t)]
    recs.append(_record("fast.v1", 64, 1024, "float32", 1.0))  # below 4Mi: not judged
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run_doc(recs)))
    proc = report("speed", str(path), "--bar-impl", "fast.v1", "--bar-every-point")
    assert proc.returncode == 0, proc.stderr  # default peer: the baseline, 3x slower
    assert proc.stdout.strip().endswith("meets it at 2 of 2 — met.")
    proc = report("speed", str(path), "--bar-impl", "fast.v1", "--bar-every-point",
                  "--bar-peer", "torch.native", "--bar-peer", "torch.compile")
    assert proc.returncode == 1, proc.stderr
    rows = {r.split("|")[1].strip(): r for r in proc.stdout.splitlines() if "| 4096×" in r
            or "| 2048×" in r}
    assert "torch.compile" in rows["2048×2048 bfloat16"] and "0.90×" in rows["2048×2048 bfloat16"]
    assert rows["2048×2048 bfloat16"].rstrip(" |").endswith("MISSED")
    assert "1.20×" in rows["4096×1024 float32"] and "| met" in rows["4096×1024 float32"]
    assert "meets it at 1 of 2 — MISSED" in proc.stdout
    proc = report("speed", str(path), "--bar-impl", "fast.v1", "--bar-every-point",
                  "--bar-copy", "96")
    assert proc.returncode == 1 and "meets it at 0 of 2" in proc.stdout, proc.stderr
    one_line(report("speed", str(path), "--bar-impl", "fast.v1", "--bar-every-point",
                    "--bar-peer", "nope"), "--bar-peer nope", "torch.compile")


def test_speed_table_unknown_baseline_or_bar_impl_lists_what_is_there(speed_json: Path) -> None:
    line = one_line(report("speed", str(speed_json), "--baseline", "nope"),
                    "--baseline nope", "fast.v1", "torch.native")
    assert "nan" not in line
    one_line(report("speed", str(speed_json), "--bar-impl", "nope"), "--bar-impl nope",
             "fast.v1")
    # in the file, but never measured: not a baseline either
    one_line(report("speed", str(speed_json), "--baseline", "bad.v1"), "--baseline bad.v1",
             "no measured point")
    proc = report("speed", str(speed_json), "--baseline", "fast.v1")
    assert proc.returncode == 0 and "geomean × fast.v1" in proc.stdout, proc.stderr
    assert "0.40×" in next(r for r in proc.stdout.splitlines() if r.startswith("| torch.nat"))


def test_speed_table_unreadable_input_is_one_line_naming_the_file(tmp_path: Path) -> None:
    for path in bad_files(tmp_path).values():
        one_line(report("speed", str(path)), path.name)
    bad_rec = tmp_path / "bad-record.json"
    bad_rec.write_text(json.dumps({"records": [{"impl": "x"}]}))
    one_line(report("speed", str(bad_rec)), "bad-record.json", "record 0")
    text = tmp_path / "text.json"
    text.write_text(json.dumps(run_doc([_record("a", 2, 4, "float32", 1e-6) | {"M": "two"}])))
    one_line(report("speed", str(text)), "text.json")
    one_line(report("speed"), "FILE.json")


def test_speed_table_empty_run_is_exit_2_with_a_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty-run.json"
    empty.write_text(json.dumps(run_doc([])))
    one_line(report("speed", str(empty)), "empty-run.json", "empty run", "no records")
    errored = tmp_path / "all-error.json"
    errored.write_text(json.dumps(run_doc([_record("bad.v1", 2, 4, "float32", None,
                                                   status="error")])))
    one_line(report("speed", str(errored)), "all-error.json", "no measured record",
             "1 error")


def test_speed_table_runs_on_the_stored_readme_run() -> None:
    stored = ROOT / "results" / "cpu-bar-vm.json"
    if not stored.exists():
        pytest.skip("results/cpu-bar-vm.json is not in this checkout")
    proc = report("speed", str(stored), "--bar-impl", "numba.fused")
    assert proc.returncode in (0, 1), proc.stderr
    assert "| numba.fused" in proc.stdout and "geomean × torch.native" in proc.stdout


# --- lnbench report accuracy ------------------------------------------------------------------


def _check_rows(impl: str, N: int, dtype: str, dist: str, status: str = "ok",
                err: float | None = 1e-7, fail_grad: str | None = None) -> list[dict]:
    rows = []
    for grad in ("dx", "dgamma", "dbeta"):
        st = "fail" if grad == fail_grad else status
        e = None if status in ("error", "skipped") else (err if grad == "dx" else err * 2)
        rows.append({"impl": impl, "case": f"2x{N}-{dtype}-{dist}", "M": 2, "N": N,
                     "dtype": dtype, "dist": dist, "grad": grad, "max_abs_err": e, "rel_err": e,
                     "tol": None if e is None else 1e-5, "passed": st == "ok", "status": st,
                     "reason": "RuntimeError: boom" if st == "error" else ""})
    return rows


@pytest.fixture
def check_json(tmp_path: Path) -> Path:
    rows = []
    for dist in ("normal", "offset"):
        for dtype in ("float32", "float64"):
            rows += _check_rows("good.v1", 768, dtype, dist, err=3e-7)
            rows += _check_rows("good.v1", 4, dtype, dist, err=9e-3)  # left out by MIN_N 768
            rows += _check_rows("bad.v1", 768, dtype, dist, status="error")
            rows += _check_rows("gpu.v1", 768, dtype, dist, status="skipped")
    rows += _check_rows("wrong.v1", 768, "float32", "normal", err=5e-4, fail_grad="dgamma")
    path = tmp_path / "check.json"
    path.write_text(json.dumps({"results": rows, "summary": {}}))
    return path


def _table(stdout: str) -> dict[str, dict[str, str]]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return {cells[0]: dict(zip(head[1:], cells[1:], strict=True))
            for ln in lines[2:] for cells in [[c.strip() for c in ln.strip("|").split("|")]]}


def test_accuracy_table_shows_errored_implementations(check_json: Path) -> None:
    proc = report("accuracy", str(check_json), "dx", "768")
    assert proc.returncode == 0, proc.stderr
    t = _table(proc.stdout)
    assert set(t) == {"good.v1", "bad.v1", "wrong.v1"}  # gpu.v1 only skipped: no row
    assert t["bad.v1"]["normal float32"] == "error"
    assert t["good.v1"]["offset float64"] == "3.0e-07"
    assert t["wrong.v1"]["normal float32"] == "5.0e-04 ✗"
    assert t["wrong.v1"]["offset float32"] == "–"
    assert list(t["good.v1"]) == ["normal float64", "normal float32", "offset float64",
                                  "offset float32"]
    # without MIN_N the N = 4 cases count; GRAD picks the gradient
    assert _table(report("accuracy", str(check_json)).stdout)["good.v1"][
        "normal float32"] == "9.0e-03"
    t = _table(report("accuracy", str(check_json), "dgamma", "768").stdout)
    assert t["good.v1"]["normal float32"] == "6.0e-07" and t["bad.v1"]["normal float32"] == "error"


def test_accuracy_table_bad_arguments_are_argparse_errors(check_json: Path) -> None:
    one_line(report("accuracy"), "FILE.json")
    one_line(report("accuracy", str(check_json), "dz"), "GRAD", "dz", "dgamma")
    one_line(report("accuracy", str(check_json), "dx", "abc"), "MIN_N", "abc")
    one_line(report("accuracy", str(check_json), "dx", "0"), "MIN_N")
    one_line(report("accuracy", str(check_json), "dx", "1", "more"), "more")
    one_line(report("accuracy", str(check_json), "dx", "100000"), "check.json",
             "nothing to tabulate")


def test_accuracy_table_unreadable_input_is_one_line_naming_the_file(tmp_path: Path) -> None:
    for why, path in bad_files(tmp_path).items():
        if why == "object":
            continue
        one_line(report("accuracy", str(path)), path.name)
    obj = tmp_path / "object.json"
    one_line(report("accuracy", str(obj)), "object.json", "results")
    empty = tmp_path / "no-results.json"
    empty.write_text(json.dumps({"results": []}))
    one_line(report("accuracy", str(empty)), "no-results.json", "nothing to tabulate")
    row = tmp_path / "bad-row.json"
    row.write_text(json.dumps({"results": [{"impl": "x", "grad": "dx"}]}))
    one_line(report("accuracy", str(row)), "bad-row.json", "result 0")


def test_the_table_scripts_are_the_report_commands(speed_json: Path, check_json: Path) -> None:
    """scripts/speed-table and scripts/accuracy-table: the same output and exit codes."""
    for name, path, extra in (("speed", speed_json, ["--bar-impl", "fast.v1"]),
                              ("accuracy", check_json, ["dx", "768"])):
        new, old = report(name, str(path), *extra), script(f"{name}-table", str(path), *extra)
        assert new.returncode == old.returncode == 0, (new.stderr, old.stderr)
        assert new.stdout == old.stdout and "|" in new.stdout
        one_line(script(f"{name}-table", str(path.parent / "missing.json")), "missing.json")


# --- bench-report --------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "names"), [
    (["--perf-only", "--repeats", "0"], ["--repeats", "0"]),
    (["--series", "0", "--no-asv"], ["--series", "0"]),
    (["--commits", "-5"], ["--commits", "-5"]),
    (["--series", "many"], ["--series", "many"]),
    (["--quick", "--perf-only"], ["--quick", "--perf-only"]),
    (["--quick", "--commits", "10"], ["--commits", "--quick"]),
    (["--quick", "--repeats", "2"], ["--repeats", "--quick"]),
    (["--perf-only", "--series", "10"], ["--series", "--perf-only"]),
    (["--perf-only", "--seed", "0"], ["--seed", "--perf-only"]),
    (["--perf-only", "--no-asv"], ["--no-asv", "--perf-only"]),
    (["--perf-only", "--no-latency"], ["--no-latency", "--perf-only"]),
])
def test_bench_report_bad_arguments_exit_2(args: list[str], names: list[str]) -> None:
    one_line(script("bench-report", *args, timeout=60), *names)


def test_bench_report_explicit_series_wins_over_quick() -> None:
    proc = script("bench-report", "--quick", "--series", "2", "--no-asv", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 histories of" in proc.stdout and "50 histories" not in proc.stdout
    assert "### Speed" not in proc.stdout  # --quick: no speed check


def test_bench_report_no_latency_leaves_the_latency_columns_empty() -> None:
    proc = script("bench-report", "--quick", "--series", "3", "--no-asv", "--no-latency",
                  timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines()
            if line.startswith("| lnbench (all) | 10% | 40 |")]  # steps inside the history
    assert rows and all(line.split("|")[8].strip() == "–" for line in rows)


def test_bench_report_perf_only_with_one_repeat() -> None:
    proc = script("bench-report", "--perf-only", "--commits", "6", "--repeats", "1", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "### Speed — 6 commits" in proc.stdout and "best of 1" in proc.stdout
    assert "histories" not in proc.stdout


# --- gpu-prep ------------------------------------------------------------------------------------

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def _pip_env(**extra: str) -> dict[str, str]:
    """No pip configuration of this machine (indexes, find-links, constraints), this Python's
    pip first on PATH, no retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0", PIP_TIMEOUT="2",
               PIP_DISABLE_PIP_VERSION_CHECK="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    env.update(extra)
    return env


@needs_bash
def test_gpu_prep_help_is_the_header_only() -> None:
    proc = script("gpu-prep", "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()
    assert out[0].startswith("Download, on a machine with PyPI")
    assert "set -euo pipefail" not in proc.stdout and "#" not in proc.stdout
    assert out[-1].endswith("(one line on stderr).")
    assert "scripts/gpu-prep [--python-version 3.12]" in proc.stdout


@needs_bash
@pytest.mark.parametrize(("args", "names"), [
    (["--python-version"], ["--python-version", "needs a value"]),
    (["--python-version", "--dest", "x"], ["--python-version", "needs a value"]),
    (["--python-version="], ["--python-version"]),
    (["--python-version", "three"], ["--python-version", "three"]),
    (["--dest"], ["--dest", "needs a value"]),
    (["--bogus"], ["--bogus"]),
])
def test_gpu_prep_bad_arguments_exit_2_with_one_line(args: list[str], names: list[str]) -> None:
    one_line(script("gpu-prep", *args, env=_pip_env()), *names)


@needs_bash
def test_gpu_prep_dest_that_is_a_file_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    one_line(script("gpu-prep", "--dest", str(f), env=_pip_env()), "--dest", "afile")
    one_line(script("gpu-prep", "--dest", str(f / "sub"), env=_pip_env()), "--dest", "afile")
    assert f.read_text() == "x"


@needs_bash
def test_gpu_prep_failed_download_keeps_the_old_wheels_and_adds_extras(tmp_path: Path) -> None:
    dest = tmp_path / "whl"
    old = make_wheel(dest, "old_pkg", "1.0")
    before = old.read_bytes()
    env = _pip_env(PIP_INDEX_URL="http://127.0.0.1:9/simple")  # nothing listens on port 9
    proc = script("gpu-prep", "--dest", str(dest), "Liger_Kernel==0.6.1", "extra-pkg", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu-prep: pip download failed for: ")
    asked = last.removeprefix("gpu-prep: pip download failed for: ").split(";")[0].split()
    # extras are added to the default set; a default is replaced only by the same package
    assert asked == ["array-api-compat>=1.9", "Liger_Kernel==0.6.1", "extra-pkg"]
    assert "left as it was (1 wheel(s))" in last
    assert sorted(p.name for p in dest.iterdir()) == [old.name]  # no temp folder left either
    assert old.read_bytes() == before


@needs_bash
def test_gpu_prep_success_replaces_the_old_set(tmp_path: Path) -> None:
    links = tmp_path / "links"
    for name, version in (("array_api_compat", "1.9"), ("array_api_compat", "1.12"),
                          ("liger_kernel", "0.6.1"), ("liger_kernel", "0.7.0"),
                          ("extra_pkg", "2.0")):
        make_wheel(links, name, version)
    dest = tmp_path / "whl"
    make_wheel(dest, "old_pkg", "1.0")
    env = _pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))
    proc = script("gpu-prep", "--dest", str(dest), "liger-kernel==0.6.1", "extra_pkg", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == [
        "array_api_compat-1.12-py3-none-any.whl", "extra_pkg-2.0-py3-none-any.whl",
        "liger_kernel-0.6.1-py3-none-any.whl"]
    assert "3 wheel(s) in" in proc.stdout
    # no extra: the two defaults only
    proc = script("gpu-prep", "--dest", str(dest), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == [
        "array_api_compat-1.12-py3-none-any.whl", "liger_kernel-0.7.0-py3-none-any.whl"]


@pytest.mark.parametrize("args", [["scripts/speed-table", "results/cpu-bar-vm.json"],
                                  ["scripts/nightly", "--help"],
                                  ["-m", "lnbench", "report", "speed", "results/cpu-bar-vm.json"]])
def test_output_into_a_closed_pipe_is_no_traceback(args: list[str]) -> None:
    """As `lnbench report speed F | head -1`, deterministically: the reader is gone already."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, *args], stdout=w,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
