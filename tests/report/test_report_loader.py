"""Loader: asv's real on-disk format in, tidy frame and error list out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
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


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_values_not_numbers_are_invalid(small: tuple[Path, dict]) -> None:
    """A stored string, boolean or integer beyond float range is not a measurement: invalid,
    one error per benchmark (numpy alone would read the string "1.5" as 1.5)."""
    root, specs = small
    paths = [_write(root, specs, i, {TIME: [1e-3, 2e-3], GBPS: [5.0, 6.0]}) for i in range(3)]
    _edit(paths[0], lambda d: d["results"][TIME].__setitem__(0, ["1.5", 2e-3]))
    _edit(paths[1], lambda d: d["results"][TIME].__setitem__(0, [True, 2e-3]))
    _edit(paths[2], lambda d: d["results"][TIME].__setitem__(0, [10**400, 2e-3]))
    loaded = load_results(root)
    f = loaded.frame
    t = f[f["benchmark"] == TIME].set_index(["commit", "impl"])
    for i in range(3):
        assert t.loc[(syn.commit_hash(i), "numpy.kevin"), "status"] == "invalid"
        assert math.isnan(t.loc[(syn.commit_hash(i), "numpy.kevin"), "value"])
        assert t.loc[(syn.commit_hash(i), "torch.native"), "value"] == 2e-3
    assert set(f.loc[f["benchmark"] == GBPS, "status"]) == {"ok"}
    reasons = {Path(e.path).name: e.reason for e in loaded.errors}
    for p, shown in zip(paths, ("'1.5'", "True", "1000000"), strict=True):
        assert reasons[p.name].startswith(f"{TIME}: 1 stored value(s) not a finite number")
        assert shown in reasons[p.name]


def test_started_at_too_large_discredits_the_file(small: tuple[Path, dict]) -> None:
    root, specs = small
    good = _write(root, specs, 0, {TIME: [1e-3, 2e-3]})
    bad = _write(root, specs, 1, {TIME: [1e-3, 2e-3], GBPS: [5.0, 6.0]})
    _edit(bad, lambda d: d["results"][GBPS].__setitem__(3, 10**400))
    loaded = load_results(root)
    assert [Path(e.path).name for e in loaded.errors] == [bad.name]
    assert "started_at" in loaded.errors[0].reason and "out of range" in loaded.errors[0].reason
    assert set(loaded.frame["file"]) == {str(good)}


def test_same_entries_other_params_and_versions(tmp_path: Path) -> None:
    """Files that repeat a layout share it, but a file whose params (or versions) differ
    for the same entries is laid out on its own: every row keeps its own parameters."""
    two = syn.BenchSpec("b.T.time_x", [syn.quoted(["a", "b"])], ["p"], "seconds", "time",
                        version="v1")
    three = syn.BenchSpec("b.T.time_x", [syn.quoted(["a", "b", "c"])], ["p"], "seconds", "time",
                          version="v2")
    syn.write_benchmarks_json(tmp_path, [three])
    syn.write_machine_json(tmp_path, "box")
    for i, (spec, vals) in enumerate([(two, [1.0, 2.0]), (three, [3.0, 4.0, 5.0]),
                                      (two, [6.0, 7.0]), (three, [8.0, 9.0, 10.0])]):
        syn.write_result_file(tmp_path, "box", syn.commit_hash(i), syn.T0_MS + i * syn.DAY_MS,
                              {spec.name: vals}, {spec.name: spec})
    f = load_results(tmp_path).frame.sort_values(["commit_order", "p"])
    assert f["value"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert f["p"].astype(str).tolist() == ["a", "b", "a", "b", "c", "a", "b", "a", "b", "c"]
    assert f["bench_version"].astype(str).tolist() == ["v1"] * 2 + ["v2"] * 3 + ["v1"] * 2 + [
        "v2"] * 3
    assert f["version_ok"].tolist() == [False] * 2 + [True] * 3 + [False] * 2 + [True] * 3


def test_statistics_and_samples_of_some_files_only(small: tuple[Path, dict]) -> None:
    """Columns a file does not store are NaN/None for its rows only."""
    root, specs = small
    _write(root, specs, 0, {TIME: [1e-3, 2e-3]})
    syn.write_result_file(root, "box", syn.commit_hash(1), syn.T0_MS + syn.DAY_MS,
                          {TIME: [1e-3, 2e-3]}, specs,
                          samples={TIME: [[1e-3, 1.1e-3, 0.9e-3], None]})
    _write(root, specs, 2, {TIME: [1e-3, 2e-3]})
    f = load_results(root).frame.sort_values(["commit_order", "impl"])
    assert np.isnan(f["repeat"].to_numpy()[[0, 1, 3, 4, 5]]).all()
    assert f["repeat"].tolist()[2] == 3
    assert f["samples"].tolist() == [None, None, [1e-3, 1.1e-3, 0.9e-3], None, None, None]
    assert f["samples"].dtype == object


def test_without_orjson_the_same(tree: Path, small: tuple[Path, dict], monkeypatch) -> None:
    """The standard json module reads the same frames and words the same errors (orjson is
    only a faster decoder; files with NaN, which orjson refuses, go to json either way)."""
    from lnbench.report.load import jsonfile

    if jsonfile._orjson is None:
        pytest.skip("orjson not installed: the json module reads everything already")
    root, specs = small
    _write(root, specs, 0, {TIME: [1e-3, float("nan")], GBPS: None})
    (root / "box" / "deadbeef-env.json").write_text('{"version": 2, "results": ')
    with_orjson = [load_results(tree), load_results(root)]
    monkeypatch.setattr(jsonfile, "_orjson", None)
    without = [load_results(tree), load_results(root)]
    for a, b in zip(with_orjson, without, strict=True):
        assert [e.as_dict() for e in a.errors] == [e.as_dict() for e in b.errors]
        assert a.frame.astype(str).equals(b.frame.astype(str))
    assert "JSON" in without[1].errors[0].reason
    f = without[1].frame
    assert set(f.loc[f["benchmark"] == TIME, "status"]) == {"ok", "skipped"}


@pytest.mark.parametrize("gc_on", [True, False])
def test_garbage_collector_state_kept(tree: Path, gc_on: bool) -> None:
    import gc

    was = gc.isenabled()
    try:
        (gc.enable if gc_on else gc.disable)()
        load_results(tree)
        assert gc.isenabled() is gc_on
    finally:
        (gc.enable if was else gc.disable)()


def test_utc_from_ms_matches_pandas() -> None:
    from lnbench.report.load.frame import utc_from_ms

    rng = np.random.default_rng(1)
    whole = np.round(1.7e12 + rng.uniform(0, 1e10, 200_000))
    whole[::97] = np.nan
    frac = whole + 0.25
    for ms in (whole, frac, np.array([np.nan, np.nan]), np.zeros(0)):
        reps = rng.integers(0, 4, len(ms))
        for r in (None, reps):
            want = pd.to_datetime(ms if r is None else np.repeat(ms, r), unit="ms", utc=True)
            got = utc_from_ms(ms, r)
            assert got.dtype == want.dtype
            assert got.equals(want)


def test_unmatched_noisy_point_names_the_sidecar_folder(small: tuple[Path, dict]) -> None:
    root, specs = small
    _write(root, specs, 0, {TIME: [1e-3, 2e-3]})
    side = root / "lnbench-interference" / "box"
    side.mkdir(parents=True)
    (side / "x.json").write_text(json.dumps({
        "version": 1, "machine": "box", "commit": syn.commit_hash(0),
        "env": "virtualenv-py3.11",
        "points": [{"benchmark": TIME, "params": {"impl": "torch.native", "shape": "64x1024",
                                                  "dtype": "float32"},
                    "status": "noisy", "reason": "load 3.2"},
                   {"benchmark": "nope.N.time_n", "params": {}, "status": "noisy"}]}))
    loaded = load_results(root)
    f = loaded.frame.set_index("impl")
    assert f.loc["torch.native", "status"] == "noisy"
    assert f.loc["torch.native", "noise_reason"] == "load 3.2"
    assert f.loc["numpy.kevin", "status"] == "ok"
    assert [e.as_dict() for e in loaded.errors] == [
        {"path": str(root / "lnbench-interference"),
         "reason": "1 noisy point(s) match no stored ok value"}]
