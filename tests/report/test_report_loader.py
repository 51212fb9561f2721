"""Loader: asv's real on-disk format in, tidy frame and error list out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lnbench.report import synthetic as syn
from lnbench.report.loader import ResultsDirError, load_results, param_value

TIME = "bench_backward.Backward.time_backward"
GBPS = "bench_backward.Metrics.track_gbps"
DX = "bench_backward.Accuracy.track_rel_err_dx"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    syn.write_suite_history(root, machines={"cpu-box": 21.7, "gpu-box": 3019.0}, n_commits=6,
                            impls=("numpy.kevin", "torch.native"), dtypes=("float32",))
    return root


def test_generated_files_are_asv_format(tree: Path) -> None:
    """asv itself loads what the builder writes, and the loader agrees with asv's values."""
    from asv import util
    from asv.results import Results, iter_results

    bench = util.load_json(str(tree / "benchmarks.json"), api_version=2)
    loaded = load_results(tree)
    by_asv = list(iter_results(str(tree)))
    assert len(by_asv) == 12  # 2 machines x 6 commits
    for res in by_asv:
        params = bench[TIME]["params"]
        asv_vals = res.get_result_value(TIME, params)
        stats = res.get_result_stats(TIME, params)
        rows = loaded.frame[(loaded.frame["commit"] == res.commit_hash)
                            & (loaded.frame["machine"] == res.params["machine"])
                            & (loaded.frame["benchmark"] == TIME)]
        assert rows["value"].tolist() == pytest.approx(asv_vals)
        assert rows["q_25"].tolist() == pytest.approx([s["q_25"] for s in stats])
        assert all(isinstance(s, list) and len(s) == 5 for s in rows["samples"])
    one = next(tree.glob("cpu-box/*-*.json"))
    assert Results.load(str(one), machine_name="cpu-box").env_name == "virtualenv-py3.11"


def test_tidy_columns_and_params(tree: Path) -> None:
    loaded = load_results(tree)
    f = loaded.frame
    assert loaded.errors == []
    assert loaded.param_names == ["impl", "shape", "dtype", "dist"]
    for col in ("machine", "commit", "commit_order", "date", "env", "benchmark", "metric",
                "unit", "value", "status", "ci_99_a", "ci_99_b", "q_25", "q_75", "number",
                "repeat", "samples", "started_at"):
        assert col in f.columns
    assert set(f["impl"].dropna()) == {"numpy.kevin", "torch.native"}  # quotes stripped
    assert f.loc[f["benchmark"] == TIME, "dist"].isna().all()
    assert set(f.loc[f["benchmark"] == DX, "dist"]) == {"normal", "offset"}
    assert set(f.loc[f["benchmark"] == GBPS, "unit"]) == {"GB/s"}
    assert f.loc[f["benchmark"] == GBPS, "higher_is_better"].all()
    assert not f.loc[f["benchmark"] == TIME, "higher_is_better"].any()
    # 2 machines x 6 commits x (6 methods x 4 combos + 3 methods x 8 combos)
    assert len(f) == 2 * 6 * (6 * 4 + 3 * 8)
    assert sorted(f["commit_order"].unique()) == list(range(6))
    m = loaded.machines.set_index("machine")
    assert m.loc["gpu-box", "copy_gbps_cuda"] == 3019.0
    assert not isinstance(m.loc["cpu-box", "gpu_name"], str)


def test_param_value_rules() -> None:
    assert param_value("'float32'") == "float32"
    assert param_value("u'x'") == "x"
    assert param_value("<class 'int'>") == "int"
    assert param_value("1024") == "1024"
    assert param_value("''") == "''"


@pytest.fixture()
def small(tmp_path: Path) -> tuple[Path, dict[str, syn.BenchSpec]]:
    specs = syn.lnbench_specs(["numpy.kevin", "torch.native"], ["64x1024"], ["float32"],
                              ["normal"])
    syn.write_benchmarks_json(tmp_path, specs)
    syn.write_machine_json(tmp_path, "box")
    return tmp_path, {s.name: s for s in specs}


def _write(root: Path, specs: dict[str, syn.BenchSpec], i: int, values: dict, machine: str = "box",
           date: int | None = None) -> Path:
    return syn.write_result_file(root, machine, syn.commit_hash(i),
                                 date if date is not None else syn.T0_MS + i * syn.DAY_MS,
                                 values, specs)


def test_failed_and_skipped_values_kept(small: tuple[Path, dict]) -> None:
    root, specs = small
    _write(root, specs, 0, {TIME: [1e-3, None], GBPS: None, DX: [1e-7, float("nan")]})
    f = load_results(root).frame
    t = f[f["benchmark"] == TIME].set_index("impl")
    assert t.loc["numpy.kevin", "status"] == "ok"
    assert t.loc["torch.native", "status"] == "failed"
    assert math.isnan(t.loc["torch.native", "value"])
    assert set(f.loc[f["benchmark"] == GBPS, "status"]) == {"failed"}  # whole benchmark null
    d = f[f["benchmark"] == DX].set_index("impl")
    assert d.loc["torch.native", "status"] == "skipped"


def test_broken_files_listed_rest_loaded(small: tuple[Path, dict]) -> None:
    root, specs = small
    good = _write(root, specs, 0, {TIME: [1e-3, 2e-3]})
    truncated = _write(root, specs, 1, {TIME: [1e-3, 2e-3]})
    truncated.write_text(truncated.read_text()[:80])
    corrupt = root / "box" / "deadbeef-env.json"
    corrupt.write_text("{not json")
    future = _write(root, specs, 2, {TIME: [1e-3, 2e-3]})
    data = json.loads(future.read_text())
    data["version"] = 3
    future.write_text(json.dumps(data))
    wrong_len = _write(root, specs, 3, {TIME: [1e-3, 2e-3], GBPS: [1.0, 2.0]})
    data = json.loads(wrong_len.read_text())
    data["results"][TIME][0] = [1.0]  # one value for two parameter combinations
    wrong_len.write_text(json.dumps(data))
    (root / "stray").mkdir()
    (root / "stray" / "x.json").write_text("{}")

    loaded = load_results(root)
    reasons = {Path(e.path).name: e.reason for e in loaded.errors}
    assert "JSON" in reasons[truncated.name]
    assert "JSON" in reasons[corrupt.name]
    assert "version 3" in reasons[future.name]
    assert "2 parameter combinations" in reasons[wrong_len.name]
    assert "machine.json" in reasons["stray"]
    assert all("\n" not in r for r in reasons.values())
    commits = set(loaded.frame["commit"])
    assert commits == {syn.commit_hash(0), syn.commit_hash(3)}  # good file + the rest of #3
    assert set(loaded.frame.loc[loaded.frame["commit"] == syn.commit_hash(3), "benchmark"]) == {
        GBPS}
    assert good.name not in reasons


def test_missing_benchmarks_json_guesses(small: tuple[Path, dict]) -> None:
    root, specs = small
    _write(root, specs, 0, {TIME: [1e-3, 2e-3], GBPS: [5.0, 6.0], DX: [1e-7, 2e-7]})
    (root / "benchmarks.json").unlink()
    loaded = load_results(root)
    assert [Path(e.path).name for e in loaded.errors] == ["benchmarks.json"]
    f = loaded.frame
    assert set(f["impl"]) == {"numpy.kevin", "torch.native"}  # suite's known names
    assert set(f.loc[f["benchmark"] == TIME, "unit"]) == {"seconds"}
    assert f.loc[f["benchmark"] == GBPS, "higher_is_better"].all()


def test_commit_order_by_date_and_single_machine_commit(small: tuple[Path, dict]) -> None:
    root, specs = small
    syn.write_machine_json(root, "other")
    # hashes sort differently from dates: order must follow the dates
    for i, day in [(0, 5), (1, 1), (2, 3)]:
        _write(root, specs, i, {TIME: [1e-3, 2e-3]}, date=syn.T0_MS + day * syn.DAY_MS)
    _write(root, specs, 9, {TIME: [1e-3, 2e-3]}, machine="other", date=syn.T0_MS)
    loaded = load_results(root)
    order = (loaded.frame.drop_duplicates("commit").set_index("commit")["commit_order"]
             .sort_values())
    assert list(order.index) == [syn.commit_hash(9), syn.commit_hash(1), syn.commit_hash(2),
                                 syn.commit_hash(0)]
    only = loaded.frame[loaded.frame["commit"] == syn.commit_hash(9)]
    assert set(only["machine"]) == {"other"}
    m = loaded.machines.set_index("machine")
    assert not m.loc["other", "has_facts"]  # no lnbench-machines file: unknown, no crash


def test_missing_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(ResultsDirError, match="--results"):
        load_results(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(ResultsDirError, match="not a directory"):
        load_results(tmp_path / "file")


def test_empty_dir_loads_empty(tmp_path: Path) -> None:
    loaded = load_results(tmp_path)
    assert loaded.frame.empty and not loaded.has_results
    assert any("benchmarks.json" in e.path for e in loaded.errors)


def test_values_are_floats(tree: Path) -> None:
    f = load_results(tree).frame
    assert f["value"].dtype == np.float64
    assert np.isfinite(f.loc[f["status"] == "ok", "value"]).all()


def test_worker_processes_read_the_same_frame(tmp_path: Path, monkeypatch) -> None:
    """LNBENCH_REPORT_WORKERS=2 (worker processes) gives the same frame and errors as
    reading in-process, a bad file included."""
    from lnbench.report import loader

    syn.write_ci_history(tmp_path, n_commits=30, n_benchmarks=6, n_param_benchmarks=2,
                         envs={"virtualenv-py3.10": 30, "virtualenv-py3.11": 20})
    bad = next((tmp_path / "ci-runner").glob("*py3.11.json"))
    bad.write_text("{broken")
    one = load_results(tmp_path)
    monkeypatch.setattr(loader, "PARALLEL_MIN_FILES", 10)
    monkeypatch.setenv("LNBENCH_REPORT_WORKERS", "2")
    two = load_results(tmp_path)
    assert [e.as_dict() for e in two.errors] == [e.as_dict() for e in one.errors]
    assert len(one.errors) == 1 and one.errors[0].path == str(bad)
    cols = [c for c in one.frame.columns if c != "samples"]
    assert one.frame[cols].astype(object).equals(two.frame[cols].astype(object))
