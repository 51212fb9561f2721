"""Bad stored input: one broken file or value is listed under errors, never ends a report.

Out-of-range dates, facts of the wrong type, nothing readable at all, bad --top, and
non-finite or absurd values (QA findings on lnbench/report).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lnbench.cli import main
from lnbench.report import synthetic as syn
from lnbench.report.loader import load_results

TIME = "bench_backward.Backward.time_backward"
GBPS = "bench_backward.Metrics.track_gbps"
N_COMMITS = 8


def _tree(root: Path) -> Path:
    """A tiny good history: one machine, one series per benchmark, N_COMMITS commits."""
    syn.write_suite_history(root, machines={"box": 21.7}, n_commits=N_COMMITS,
                            impls=("numpy.kevin",), shapes=("64x1024",), dtypes=("float32",),
                            dists=("normal",), noise=0.01, record_samples=False)
    return root


def _file(root: Path, i: int) -> Path:
    return root / "box" / f"{syn.commit_hash(i)[:8]}-virtualenv-py3.11.json"


def _patch(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))  # json writes inf/nan as Infinity/NaN, as a broken tool would


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _set_started(value: float):
    def edit(data: dict) -> None:
        i = data["result_columns"].index("started_at")
        data["results"][TIME][i] = value
    return edit


@pytest.mark.parametrize("what,edit", [
    ("date", lambda d: d.update(date=1e20)),
    ("date", lambda d: d.update(date=-1e18)),
    ("date", lambda d: d.update(date=math.inf)),
    ("date", lambda d: d.update(date=math.nan)),
    ("date", lambda d: d.update(date="yesterday")),
    ("date", lambda d: d.update(date=d["date"] * 1000)),  # microseconds instead of ms
    ("started_at", _set_started(1e20)),
    ("started_at", _set_started(-math.inf)),
], ids=["date-1e20", "date-neg", "date-inf", "date-nan", "date-str", "date-us", "started-1e20",
        "started-neginf"])
def test_bad_date_or_started_at_goes_to_errors(tmp_path: Path, what: str, edit,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "r")
    bad = _file(root, 3)
    _patch(bad, edit)
    loaded = load_results(root)
    assert [e.path for e in loaded.errors] == [str(bad)]
    reason = loaded.errors[0].reason
    assert what in reason and "\n" not in reason
    assert set(loaded.frame["commit"]) == {syn.commit_hash(i) for i in range(N_COMMITS)} - {
        syn.commit_hash(3)}
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(root), "--format", "json")
    assert rc == 0 and [e["path"] for e in json.loads(out)["errors"]] == [str(bad)]
    rc, out, _ = run(capsys, "report", "hardware", "--results", str(root), "--format", "json")
    assert rc == 0 and json.loads(out)["rows"]


def test_bad_date_dashboard_still_builds(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "r")
    bad = _file(root, 5)
    _patch(bad, lambda d: d.update(date=1e20))
    rc, _, err = run(capsys, "dashboard", "--results", str(root), "--out", str(tmp_path / "s"))
    assert rc == 0, err
    page = (tmp_path / "s" / "index.html").read_text(encoding="utf-8")
    assert bad.name in page and "out of range" in page


@pytest.mark.parametrize("facts,named", [
    ({"copy_gbps": {"cpu": "fast"}}, "copy_gbps.cpu 'fast'"),
    ({"copy_gbps": [1, 2]}, "copy_gbps [1, 2]"),
    ({"copy_gbps": {"cpu": -1}}, "copy_gbps.cpu -1"),
    ({"memory_bytes": "lots", "cpu_cores": "two"}, "memory_bytes 'lots'"),
], ids=["copy-str", "copy-list", "copy-neg", "memory-str"])
def test_bad_machine_facts_listed_and_unknown(tmp_path: Path, facts: dict, named: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "r")
    facts_file = root / "lnbench-machines" / "box.json"
    for f in root.glob("box/*-*.json"):  # % of copy must come from the facts
        _patch(f, lambda d: d["results"].pop("bench_backward.Metrics.track_pct_copy"))
    syn.write_machine_facts(root, "box", **facts)
    rc, out, err = run(capsys, "report", "hardware", "--results", str(root), "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    errors = [e for e in doc["errors"] if e["path"] == str(facts_file)]
    assert len(errors) == 1 and named in errors[0]["reason"]
    if "copy_gbps" in facts:  # the bad bandwidth is unknown: no % of copy derived from it
        assert all(r["pct_copy"] is None for r in doc["rows"])
        assert doc["machines"][0]["copy_gbps_cpu"] is None
    rc, _, err = run(capsys, "dashboard", "--results", str(root), "--out", str(tmp_path / "s"))
    assert rc == 0, err
    assert "box.json" in (tmp_path / "s" / "index.html").read_text(encoding="utf-8")


def _all_bad(root: Path) -> Path:
    syn.write_machine_json(root, "box")
    (root / "box" / "aaaa1111-env.json").write_text('{"version": 2, "commit_')
    (root / "box" / "bbbb2222-env.json").write_bytes(b"\x00\x98\xff")
    return root


@pytest.mark.parametrize("kind", ["all-bad", "empty", "machine-folder"])
def test_dashboard_exit_2_when_nothing_readable(tmp_path: Path, kind: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    if kind == "all-bad":
        results = _all_bad(tmp_path / "r")
    elif kind == "empty":
        results = tmp_path / "r"
        results.mkdir()
    else:
        results = _tree(tmp_path / "r") / "box"  # a machine folder passed by mistake
    site = tmp_path / "site"
    rc, out, err = run(capsys, "dashboard", "--results", str(results), "--out", str(site))
    line = _one_line(err)
    assert rc == 2 and out == "" and not site.exists()
    assert f"--results {results}" in line
    if kind == "machine-folder":
        assert "machine folder" in line and str(results.parent) in line
    # the same verdict and message as the reports on the same input
    for report in ("regressions", "hardware"):
        rc2, _, err2 = run(capsys, "report", report, "--results", str(results))
        assert rc2 == 2 and _one_line(err2) == line


@pytest.mark.parametrize("top", ["0", "-3"])
def test_dashboard_top_must_be_positive(tmp_path: Path, top: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    results = _tree(tmp_path / "r")
    rc, out, err = run(capsys, "dashboard", "--results", str(results), "--out",
                       str(tmp_path / "s"), "--top", top)
    assert rc == 2 and out == "" and f"--top {top}" in _one_line(err)
    assert not (tmp_path / "s").exists()


def test_csv_all_bad_one_stderr_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = _all_bad(tmp_path / "r")
    rc, _, err = run(capsys, "report", "regressions", "--results", str(results), "--format",
                     "csv")
    line = _one_line(err)
    assert rc == 2 and "2 unreadable file(s)" in line and "aaaa1111-env.json" in line


def test_csv_some_bad_warns_per_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "r")
    _file(root, 2).write_text("{")
    rc, _, err = run(capsys, "report", "regressions", "--results", str(root), "--format", "csv")
    assert rc == 0 and _one_line(err).startswith("lnbench: warning: unreadable ")


def test_non_finite_values_listed_and_not_used(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "r")
    for i in range(4, N_COMMITS):  # a broken timer: Infinity from commit 4 on
        _patch(_file(root, i), lambda d: d["results"][TIME].__setitem__(0, [math.inf]))
    _patch(_file(root, 1), lambda d: d["results"][GBPS].__setitem__(0, ["fast"]))
    loaded = load_results(root)
    errors = {(Path(e.path).name, e.reason.split(":")[0]) for e in loaded.errors}
    assert errors == {(_file(root, i).name, TIME) for i in range(4, N_COMMITS)} | {
        (_file(root, 1).name, GBPS)}
    assert all("not a finite number" in e.reason for e in loaded.errors)
    f = loaded.frame
    t = f[f["benchmark"] == TIME].sort_values("commit_order")
    assert list(t["status"]) == ["ok"] * 4 + ["invalid"] * (N_COMMITS - 4)
    assert t["value"].iloc[4:].isna().all() and t["value"].iloc[:4].notna().all()
    g = f[(f["benchmark"] == GBPS) & (f["commit"] == syn.commit_hash(1))]
    assert list(g["status"]) == ["invalid"]
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(root), "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["regressions"] == [] and len(doc["errors"]) == N_COMMITS - 4 + 1


REL_DX = "bench_backward.Accuracy.track_rel_err_dx"
WORK = "bench_backward.Metrics.track_workspace_bytes"


def test_impossible_values_listed_and_not_used(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A time of 0 or below, a negative rate, negative bytes or rel_err cannot be measured:
    invalid, listed, never compared. A rel_err or workspace of exactly 0 is a real result."""
    root = _tree(tmp_path / "r")
    for i in range(4, N_COMMITS):  # a timer that went to 0 s: would read as an infinite speed-up
        _patch(_file(root, i), lambda d: d["results"][TIME].__setitem__(0, [0.0]))
    _patch(_file(root, 1), lambda d: d["results"][GBPS].__setitem__(0, [-3.0]))
    _patch(_file(root, 2), lambda d: d["results"][REL_DX].__setitem__(0, [-1e-7]))
    _patch(_file(root, 3), lambda d: (d["results"][REL_DX].__setitem__(0, [0.0]),
                                      d["results"][WORK].__setitem__(0, [0])))
    loaded = load_results(root)
    errors = {(Path(e.path).name, e.reason.split(":")[0]) for e in loaded.errors}
    assert errors == {(_file(root, i).name, TIME) for i in range(4, N_COMMITS)} | {
        (_file(root, 1).name, GBPS), (_file(root, 2).name, REL_DX)}
    reasons = {e.reason.split(":")[0]: e.reason for e in loaded.errors}
    assert "impossible for seconds (must be > 0) (0.0)" in reasons[TIME]
    assert "(must be >= 0) (-1e-07)" in reasons[REL_DX]
    f = loaded.frame
    t = f[f["benchmark"] == TIME].sort_values("commit_order")
    assert list(t["status"]) == ["ok"] * 4 + ["invalid"] * (N_COMMITS - 4)
    real_zero = f[(f["commit"] == syn.commit_hash(3)) & f["benchmark"].isin([REL_DX, WORK])]
    assert list(real_zero["status"]) == ["ok", "ok"] and (real_zero["value"] == 0).all()
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(root), "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["improvements"] == [] and len(doc["errors"]) == N_COMMITS - 4 + 2


def test_absurd_values_dashboard_does_not_crash(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "r")
    for i in range(4, N_COMMITS):  # 1e300 GB/s and 1e297 s from commit 4 on
        _patch(_file(root, i), lambda d: (d["results"][GBPS].__setitem__(0, [1e300]),
                                          d["results"][TIME].__setitem__(0, [1e297])))
    site = tmp_path / "s"
    rc, _, err = run(capsys, "dashboard", "--results", str(root), "--out", str(site))
    assert rc == 0, err
    page = (site / "index.html").read_text(encoding="utf-8")
    for name in ("gbps-box.png", "history-box-time_backward.png",
                 "history-box-track_gbps.png"):
        assert (site / name).read_bytes()[:4] == b"\x89PNG" and name in page
    assert "track_gbps value(s) beyond" in page and "off scale" in page
    # the data stays as stored: the reports see the jump at its true size
    rc, out, _ = run(capsys, "report", "regressions", "--results", str(root), "--format", "json")
    regs = {r["metric"]: r for r in json.loads(out)["regressions"]}
    assert rc == 0 and regs["time_backward"]["ratio"] > 1e290
    assert regs["time_backward"]["commit"] == syn.commit_hash(4)


def test_impossible_values_found_without_benchmarks_json(tmp_path: Path) -> None:
    """Units are guessed from names then (track_seconds -> 'unit'): the names still say time."""
    root = _tree(tmp_path / "r")
    (root / "benchmarks.json").unlink()
    secs, work = "bench_backward.Metrics.track_seconds", WORK
    _patch(_file(root, 5), lambda d: (d["results"][secs].__setitem__(0, [0.0]),
                                      d["results"][work].__setitem__(0, [-8])))
    loaded = load_results(root)
    assert {e.reason.split(":")[0] for e in loaded.errors
            if "impossible" in e.reason} == {secs, work}
