"""CLI: contract JSON, exit codes, formats, hardware side by side, dashboard."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lnbench.cli import dashboard as dashboard_cmd
from lnbench.cli import main
from lnbench.cli import report as report_cmd
from lnbench.report import synthetic as syn

CONTRACT_KEYS = {"benchmark", "params", "machine", "commit", "metric", "before", "after", "ratio"}


def _tree(root: Path, regress: bool, n_commits: int = 16, **kw) -> Path:
    inj = [syn.Injection("cpu-box", "time_backward", {"impl": "numpy.kevin",
                                                      "shape": "4096x1024"}, 10, 1.4)]
    syn.write_suite_history(root, machines=kw.pop("machines", {"cpu-box": 21.7}),
                            n_commits=n_commits, noise=0.01, injections=inj if regress else [],
                            **kw)
    return root


@pytest.fixture(scope="module")
def regressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree(tmp_path_factory.mktemp("reg"), regress=True,
                 machines={"cpu-box": 21.7, "gpu-box": 3019.0})


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree(tmp_path_factory.mktemp("flat"), regress=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_regressions_json_contract(regressed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(regressed),
                     "--format", "json")
    assert rc == 0
    doc = json.loads(out)
    assert {"regressions", "improvements", "errors"} <= set(doc)
    assert len(doc["regressions"]) == 1
    r = doc["regressions"][0]
    assert CONTRACT_KEYS <= set(r)
    assert r["benchmark"] == "bench_backward.Backward.time_backward"
    assert r["params"] == {"impl": "numpy.kevin", "shape": "4096x1024", "dtype": "float32"}
    assert r["machine"] == "cpu-box" and r["commit"] == syn.commit_hash(10)
    assert r["ratio"] == pytest.approx(1.4, rel=0.05)
    assert r["after"] / r["before"] == pytest.approx(r["ratio"])
    assert doc["errors"] == []


def test_fail_on_regression_exit_codes(regressed: Path, flat: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = ["report", "regressions", "--fail-on-regression", "--format", "json", "--results"]
    assert run(capsys, *args, str(regressed))[0] == 1
    rc, out, _ = run(capsys, *args, str(flat))
    assert rc == 0 and json.loads(out)["regressions"] == []
    assert run(capsys, "report", "regressions", "--results", str(regressed))[0] == 0


def test_usage_errors_exit_2(tmp_path: Path, flat: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "report", "regressions", "--results", str(tmp_path / "missing"))
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--results" in err
    for argv in (["report", "regressions"], ["report", "regressions", "--results", str(flat),
                                             "--format", "xml"], ["report"], ["dashboard"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    rc, _, err = run(capsys, "report", "hardware", "--results", str(flat), "--commit", "zzzz")
    assert rc == 2 and "--commit zzzz" in err
    rc, _, err = run(capsys, "report", "hardware", "--results", str(flat), "--baseline", "nope")
    assert rc == 2 and "--baseline nope" in err
    rc, _, err = run(capsys, "report", "regressions", "--results", str(flat), "--out",
                     str(tmp_path / "no" / "such" / "dir" / "x.md"))
    assert rc == 2 and "--out" in err


def test_no_readable_results_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    syn.write_machine_json(tmp_path, "box")
    (tmp_path / "box" / "abcd1234-env.json").write_text('{"version": 2, "commit_')
    rc, out, err = run(capsys, "report", "regressions", "--results", str(tmp_path),
                       "--format", "json")
    assert rc == 2 and "--results" in err
    paths = [Path(e["path"]).name for e in json.loads(out)["errors"]]
    assert "abcd1234-env.json" in paths


def test_unreadable_file_listed_rest_reported(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path, regress=True)
    bad = next(root.glob("cpu-box/*-*.json"))
    bad.write_text(bad.read_text()[:100])  # truncated
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(root), "--format", "json",
                     "--fail-on-regression")
    doc = json.loads(out)
    assert rc == 1 and len(doc["regressions"]) == 1
    assert [Path(e["path"]).name for e in doc["errors"]] == [bad.name]
    assert "JSON" in doc["errors"][0]["reason"]


def test_other_formats(regressed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(regressed), "--format",
                     "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and len(rows) == 1
    assert rows[0]["kind"] == "regression" and rows[0]["impl"] == "numpy.kevin"
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(regressed))
    assert "| cpu-box | Backward.time_backward |" in out and "1.4" in out
    target = tmp_path / "r.html"
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(regressed), "--format",
                     "html", "--out", str(target))
    assert rc == 0 and out == ""
    assert "<table" in target.read_text() and "numpy.kevin" in target.read_text()


def test_hardware_two_machines(regressed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "report", "hardware", "--results", str(regressed), "--format",
                     "json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["baseline"] == "cpu-box"
    assert [m["machine"] for m in doc["machines"]] == ["cpu-box", "gpu-box"]
    rows = {(r["impl"], r["shape"], r["machine"]): r for r in doc["rows"]}
    assert len(rows) == 2 * 2 * 2  # impls x shapes x machines
    cpu = rows[("torch.native", "4096x4096", "cpu-box")]
    gpu = rows[("torch.native", "4096x4096", "gpu-box")]
    assert cpu["speedup"] == pytest.approx(1.0)
    # the builder runs an impl at the same share of copy bandwidth on both machines
    assert gpu["speedup"] == pytest.approx(3019.0 / 21.7, rel=0.05)
    assert gpu["pct_copy"] == pytest.approx(cpu["pct_copy"], rel=0.05)
    assert gpu["seconds"] * gpu["speedup"] == pytest.approx(cpu["seconds"])
    rc, out, _ = run(capsys, "report", "hardware", "--results", str(regressed), "--commit",
                     syn.commit_hash(3)[:10], "--baseline", "gpu-box")
    assert rc == 0 and "gpu-box (baseline)" in out and syn.commit_hash(3)[:8] in out


def test_hardware_pct_copy_from_facts_and_unknown_machine(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    root = _tree(tmp_path, regress=False, n_commits=3, machines={"a": 21.7, "b": 3019.0})
    (root / "lnbench-machines" / "a.json").unlink()  # a: no facts file
    for f in root.glob("*/*-*.json"):  # drop the measured % of copy: derive it from facts
        data = json.loads(f.read_text())
        del data["results"]["bench_backward.Metrics.track_pct_copy"]
        f.write_text(json.dumps(data))
    rc, out, _ = run(capsys, "report", "hardware", "--results", str(root), "--format", "json")
    doc = json.loads(out)
    assert rc == 0
    a = [r for r in doc["rows"] if r["machine"] == "a"]
    b = [r for r in doc["rows"] if r["machine"] == "b"]
    assert all(r["pct_copy"] is None and r["pct_copy_source"] is None for r in a)
    assert all(r["pct_copy_source"] == "facts" for r in b)
    assert any("a: no lnbench-machines" in n for n in doc["notes"])
    rc, out, _ = run(capsys, "report", "hardware", "--results", str(root))
    assert "unknown" in out


def test_add_parsers_in_host_cli(flat: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="lnbench")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")  # the host CLI has its own commands
    report_cmd.configure(sub)  # the report and dashboard commands in a host CLI
    dashboard_cmd.configure(sub)
    args = parser.parse_args(["report", "regressions", "--results", str(flat), "--format",
                              "json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["regressions"] == []


def test_module_entry_point(flat: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lnbench", "report", "regressions",
                           "--results", str(flat), "--format", "json"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2],
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["errors"] == []


def test_dashboard_full_and_empty(regressed: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "site"
    rc, out, _ = run(capsys, "dashboard", "--results", str(regressed), "--out", str(out_dir))
    assert rc == 0
    page = (out_dir / "index.html").read_text()
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    for name in ("history-cpu-box-time_backward.png", "gbps-gpu-box.png",
                 "accuracy-cpu-box.png"):
        assert name in pngs and name in page
    assert all((out_dir / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert "../html/index.html" in page and "numpy.kevin" in page

    empty = tmp_path / "empty"
    empty.mkdir()
    # the CLI refuses a folder with nothing readable, like the reports (exit 2, one line)...
    rc, out, err = run(capsys, "dashboard", "--results", str(empty), "--out",
                       str(tmp_path / "e"), "--asv-html", "http://asv.example/")
    assert rc == 2 and out == "" and not (tmp_path / "e").exists()
    assert len(err.strip().splitlines()) == 1 and f"--results {empty}" in err
    # ... while the Python API still writes a page saying what is missing
    from lnbench.report.dashboard import build_dashboard

    page = build_dashboard(empty, tmp_path / "e", asv_html="http://asv.example/").read_text()
    assert "no readable benchmark results" in page and "benchmarks.json" in page
    assert "http://asv.example/" in page
    rc, _, err = run(capsys, "dashboard", "--results", str(tmp_path / "nope"), "--out",
                     str(tmp_path / "x"))
    assert rc == 2 and "--results" in err


def test_dashboard_partial_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = syn.lnbench_specs(["numpy.kevin"], ["64x1024"], ["float32"])
    by_name = {s.name: s for s in specs}
    syn.write_benchmarks_json(tmp_path, specs)
    syn.write_machine_json(tmp_path, "box")
    for i in range(3):  # only time_backward stored, one value failed
        syn.write_result_file(tmp_path, "box", syn.commit_hash(i), syn.T0_MS + i * syn.DAY_MS,
                              {"bench_backward.Backward.time_backward": [1e-3 if i else None]},
                              by_name)
    rc, _, _ = run(capsys, "dashboard", "--results", str(tmp_path), "--out",
                   str(tmp_path / "site"))
    page = (tmp_path / "site" / "index.html").read_text()
    assert rc == 0
    assert "box: no track_gbps results" in page and "box: no track_rel_err_dx results" in page
    assert (tmp_path / "site" / "history-box-time_backward.png").exists()


def test_hardware_notes_different_heap_policies(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path, regress=False, n_commits=3, machines={"a": 21.7, "b": 30.0})
    facts = root / "lnbench-machines"
    for name, heap in (("a", "steady"), ("b", None)):  # b: facts from before the policy existed
        data = json.loads((facts / f"{name}.json").read_text())
        if heap:
            data["malloc"] = heap
        (facts / f"{name}.json").write_text(json.dumps(data))
    rc, out, _ = run(capsys, "report", "hardware", "--results", str(root), "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and {m["machine"]: m["malloc"] for m in doc["machines"]} == {
        "a": "steady", "b": None}
    assert any("different heap policies (a: steady, b: system)" in n for n in doc["notes"])
    data = json.loads((facts / "b.json").read_text())
    (facts / "b.json").write_text(json.dumps({**data, "malloc": "steady"}))
    rc, out, _ = run(capsys, "report", "hardware", "--results", str(root), "--format", "json")
    assert not any("heap" in n for n in json.loads(out)["notes"])
    (facts / "b.json").unlink()  # no facts at all: unknown, not "system" (no heap note)
    rc, out, _ = run(capsys, "report", "hardware", "--results", str(root), "--format", "json")
    notes = json.loads(out)["notes"]
    assert any("b: no lnbench-machines" in n for n in notes)
    assert not any("heap" in n for n in notes)
    (facts / "b.json").write_text(json.dumps({**data, "malloc": 3}))  # wrong type: unknown
    rc, out, _ = run(capsys, "report", "hardware", "--results", str(root), "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and any("malloc 3 is not a string" in e["reason"] for e in doc["errors"])


def test_latest_only_gates_what_the_newest_run_measured(regressed: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """The nightly gate: a fresh environment measured the newest commit (asv names a
    --python=same environment by its path), so the old environment's open regression is not
    about that run. Without --latest-only it is listed and fails the gate, as before."""
    root = tmp_path / "r"
    shutil.copytree(regressed, root)
    newest = max((f for f in (root / "cpu-box").glob("*-*.json")),
                 key=lambda f: json.loads(f.read_text())["date"])
    data = json.loads(newest.read_text())
    data.update(commit_hash="f" * 40, env_name="existing-py_tmp_venv_bin_python3",
                date=data["date"] + 86_400_000)
    (root / "cpu-box" / "ffffffff-existing-py_tmp_venv_bin_python3.json").write_text(
        json.dumps(data))
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(root),
                     "--fail-on-regression", "--format", "json")
    assert rc == 1 and any(r["machine"] == "cpu-box" for r in json.loads(out)["regressions"])
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(root),
                     "--fail-on-regression", "--latest-only", "--format", "json")
    doc = json.loads(out)
    assert not any(r["machine"] == "cpu-box" for r in doc["regressions"])
    assert doc["summary"]["latest_only"] and doc["summary"]["left_out_not_measured_at_latest"] > 0
    # gpu-box's own latest commit still counts: its series were measured there
    assert rc == (1 if doc["regressions"] else 0)
