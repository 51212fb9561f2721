"""Dashboard: every image written, non-trivial and referenced; gaps reported, not fatal."""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from asv_histories import REPO, unpack

from lnbench.metrics import bytes_moved
from lnbench.report import synthetic as syn
from lnbench.report.dashboard import (
    MIN_CASE_ELEMENTS,
    _commit_ticks,
    _figure,
    accuracy_cells,
    accuracy_heatmap,
    build_dashboard,
    case_elements,
    net_change,
    series_that_changed_most,
)
from lnbench.report.detect import find_changes
from lnbench.report.loader import LoadedResults, load_results
from lnbench.report.render import render_regressions

IMPLS = ("numpy.kevin", "torch.native", "cupy.fused")
SHAPES = ("2x4", "1x768", "64x1023", "256x1024")


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    inj = [syn.Injection("gpu-box", "time_backward", {"impl": "cupy.fused", "shape": "256x1024"},
                         8, 1.5)]
    syn.write_suite_history(root, machines={"cpu-box": 21.7, "gpu-box": 3019.0}, n_commits=12,
                            impls=IMPLS, shapes=SHAPES, dtypes=("float32", "bfloat16"),
                            injections=inj, noise=0.01, record_samples=False)
    out = tmp_path_factory.mktemp("site")
    build_dashboard(root, out)
    return out


def test_images_exist_are_real_pngs_and_referenced(site: Path) -> None:
    from matplotlib.image import imread

    page = (site / "index.html").read_text(encoding="utf-8")
    pngs = sorted(p.name for p in site.glob("*.png"))
    expected = {f"{kind}-{m}.png" for kind in ("gbps", "accuracy") for m in ("cpu-box", "gpu-box")}
    expected |= {f"history-{m}-{metric}.png" for m in ("cpu-box", "gpu-box")
                 for metric in ("time_backward", "track_gbps")}
    assert expected <= set(pngs)
    referenced = set(re.findall(r'<img src="([^"]+)"', page))
    assert set(pngs) == referenced  # every image is on the page, and every <img> exists
    for name in pngs:
        path = site / name
        width, height = _png_size(path)
        assert width >= 400 and height >= 300, name
        assert path.stat().st_size > 20_000, name
        pixels = imread(path)[..., :3]
        assert float(np.std(pixels)) > 0.02, f"{name} looks blank"
    assert "no track_" not in page  # nothing is missing from this tree


def test_bytes_model() -> None:
    assert bytes_moved(2, 4, 4) == 3 * 2 * 4 * 4 + 8 * 2 + 3 * 4 * 4
    assert bytes_moved(256, 1024, 2) == 3 * 256 * 1024 * 2 + 8 * 256 + 3 * 1024 * 2


@pytest.mark.parametrize("n", [1, 2, 14, 15, 16, 29, 30, 40, 211, 500])
def test_history_axis_integer_commits_at_most_15_labels(n: int) -> None:
    ax = _figure(4, 3).subplots()
    hashes = [f"{i:08x}" for i in range(n)]
    _commit_ticks(ax, hashes, show_labels=True)
    ticks = list(ax.get_xticks())
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert 1 <= len(ticks) <= 15 and all(float(t).is_integer() for t in ticks)
    assert ticks[0] == 0 and ticks[-1] == n - 1
    assert labels == [hashes[int(t)] for t in ticks]
    lo, hi = ax.get_xlim()
    assert lo < 0 and hi > n - 1


def test_missing_and_all_nan_metrics_are_reported(tmp_path: Path) -> None:
    specs = syn.lnbench_specs(["numpy.kevin"], ["64x1024"], ["float32"])
    by_name = {s.name: s for s in specs}
    syn.write_benchmarks_json(tmp_path, specs)
    syn.write_machine_json(tmp_path, "box")
    syn.write_machine_facts(tmp_path, "box", copy_gbps={"cpu": None, "cuda": None})
    syn.write_result_file(  # one commit: a time, an all-NaN GB/s, no accuracy at all
        tmp_path, "box", syn.commit_hash(0), syn.T0_MS,
        {"bench_backward.Backward.time_backward": [1e-3],
         "bench_backward.Metrics.track_gbps": [math.nan]}, by_name)
    out = tmp_path / "site"
    build_dashboard(tmp_path, out)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "box: no track_gbps results with a value" in page and "1 skipped" in page
    assert "box: no track_rel_err_dx results" in page
    assert (out / "history-box-time_backward.png").exists()
    assert not (out / "gbps-box.png").exists()
    assert set(re.findall(r'<img src="([^"]+)"', page)) == {p.name for p in out.glob("*.png")}


# --- any asv suite: kedro's and photutils' real histories, the repository's own results/ -----

@pytest.fixture(scope="module")
def kedro_loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedResults:
    return load_results(unpack("kedro.tar.gz", tmp_path_factory.mktemp("kedro")))


def test_kedro_dashboard_history_and_machines_no_lnbench_sections(
        kedro_loaded: LoadedResults, tmp_path: Path) -> None:
    """kedro's suite has none of lnbench's metrics: the page has the series that changed most
    and the machines table, and says nothing about GB/s or accuracy."""
    from matplotlib.image import imread

    out = tmp_path / "site"
    build_dashboard(kedro_loaded.results_dir, out, loaded=kedro_loaded)
    page = (out / "index.html").read_text(encoding="utf-8")
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {"changed-github-actions.png"}
    assert set(re.findall(r'<img src="([^"]+)"', page)) == pngs
    pixels = imread(out / "changed-github-actions.png")[..., :3]
    assert float(np.std(pixels)) > 0.02
    assert "Series that changed most" in page
    for absent in ("track_gbps", "track_rel_err", "time_backward", "Bandwidth vs bytes",
                   "Accuracy", "no copy bandwidth"):
        assert absent not in page, absent
    missing = page.split('id="missing"')[1]  # only the benchmarks kedro deleted are noted
    assert missing.count("<li>") == 1 and "retired benchmark(s)" in missing
    # machines table: what asv knows (no lnbench facts, so no copy-bandwidth columns), and
    # what was measured there: 424 commits in three environments
    machines = page.split("<h2>Machines</h2>")[1].split("</table>")[0]
    assert "<td>github-actions</td>" in machines and "<td>424</td>" in machines
    assert "copy cpu" not in machines
    assert machines.count("virtualenv-py3.11") == 3


def test_kedro_series_ranked_by_detected_change(kedro_loaded: LoadedResults) -> None:
    frame, params = kedro_loaded.frame, kedro_loaded.param_names
    changes = find_changes(frame, params)
    ranked = series_that_changed_most(frame, changes, "github-actions", params)
    current = frame["benchmark"].astype(str).isin(kedro_loaded.benchmarks)
    usable = frame[frame["status"].astype(str).eq("ok") & frame["version_ok"].astype(bool)
                   & current]
    assert ranked["_key"].is_unique and len(ranked) == usable.groupby(
        ["benchmark", "env", *params], observed=True, dropna=False).ngroups
    # kedro deleted benchmarks and changed versions: their series are history, not news
    assert (~current).sum() > 0 and set(ranked["benchmark"]) <= set(kedro_loaded.benchmarks)
    changes = changes[changes["benchmark"].astype(str).isin(kedro_loaded.benchmarks)]
    if "old_version" in changes:
        changes = changes[~changes["old_version"].astype(bool)]
    detected = ranked[ranked["detected"]]
    assert len(detected) > 10 and ranked["detected"].iloc[:len(detected)].all()
    assert detected["severity"].is_monotonic_decreasing
    # the first one is the series with the largest detected |log ratio|, found here directly
    biggest = changes.loc[np.abs(np.log(changes["ratio"].astype(float))).idxmax()]
    top = ranked.iloc[0]
    assert top["benchmark"] == biggest["benchmark"] and top["env"] == biggest["env"]
    assert top["severity"] == pytest.approx(abs(math.log(float(biggest["ratio"]))))
    assert len(series_that_changed_most(frame, changes, "github-actions", params, 5)) == 5


def test_net_change_levels() -> None:
    assert net_change(np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])) == pytest.approx(math.log(2))
    assert net_change(np.array([1.0, 9.0, 1.0, 1.0, 1.0, 1.0])) == 0.0  # one outlier: median
    assert net_change(np.array([3.0])) == 0.0
    assert net_change(np.array([0.0, 0.0, 5.0])) == 0.0  # a zero has no ratio


def test_photutils_v1_dashboard(tmp_path: Path) -> None:
    root = unpack("photutils-v1.tar.gz", tmp_path)
    loaded = load_results(root)
    if not loaded.has_results:
        pytest.skip("the loader does not read asv v1 result files: "
                    f"{loaded.errors[0].reason if loaded.errors else 'nothing loaded'}")
    out = tmp_path / "site"
    build_dashboard(root, out, loaded=loaded, top=6)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert (out / "changed-tom-mac-mini.png").is_file()
    assert "Intel(R) Core(TM) i5-2415M" in page and "8 GiB" in page  # asv's machine.json
    assert "Bandwidth vs bytes" not in page


def test_accuracy_summary_not_dominated_by_the_tiny_case() -> None:
    """Real history in results/: at 2×4 every implementation's float32 `offset` dx error is
    about 1e-3, so the worst over all shapes is the same number for all of them; the worst
    over M·N ≥ 1024 keeps their spread (several-fold), and equals the stored maximum over
    those shapes."""
    loaded = load_results(REPO / "results")
    frame = loaded.frame
    cells = accuracy_cells(frame, "vm")
    f32 = cells[(cells["dtype"] == "float32") & (cells["dist"] == "offset")].set_index("impl")
    assert len(f32) >= 5 and not f32["small_only"].any()
    assert f32["value"].max() / f32["value"].min() > 4
    raw = frame[(frame["metric"].astype(str) == "track_rel_err_dx")
                & frame["status"].astype(str).eq("ok") & (frame["dtype"] == "float32")
                & (frame["dist"] == "offset")]
    raw = raw[raw["commit_order"] == raw["commit_order"].max()]
    elems = raw["shape"].astype(str).map(case_elements)
    large = raw[elems >= MIN_CASE_ELEMENTS].groupby("impl", observed=True)["value"].max()
    assert f32["value"].to_dict() == pytest.approx(large.to_dict())
    everything = raw.groupby("impl", observed=True)["value"].max()
    assert everything.max() / everything.min() < 1.5  # what the plain maximum showed


def test_accuracy_cell_with_only_small_cases_is_marked(tmp_path: Path) -> None:
    syn.write_suite_history(tmp_path, machines={"box": 21.7}, n_commits=2, noise=0.0,
                            shapes=("2x4", "4096x1024"))
    loaded = load_results(tmp_path)
    frame = loaded.frame
    big = frame["shape"].astype(str).eq("4096x1024") & frame["impl"].astype(str).eq(
        "torch.native") & frame["metric"].astype(str).str.contains("rel_err")
    frame = frame.assign(status=frame["status"].astype(str).where(~big, "failed"))
    cells = accuracy_cells(frame, "box")
    torch = cells[cells["impl"] == "torch.native"]
    assert len(torch) and torch["small_only"].all()
    assert not cells[cells["impl"] == "numpy.kevin"]["small_only"].any()
    notes: list[str] = []
    accuracy_heatmap(frame, "box", tmp_path / "acc.png", notes)
    assert any("marked *" in n for n in notes)


def test_change_tables_show_env_only_when_several() -> None:
    entry = {"machine": "m", "benchmark": "a.B.time_x", "params": {"n": "1"}, "commit": "c" * 40,
             "prev_commit": "b" * 40, "before": 1.0, "after": 2.0, "ratio": 2.0, "unit":
             "seconds", "open": True, "env": "virtualenv-py3.11"}
    doc = {"regressions": [entry, {**entry, "env": "conda-py3.12"}], "improvements": [],
           "errors": [], "summary": {}}
    md = render_regressions(doc, "md")
    assert "| machine | benchmark | params | env | commit |" in md
    assert "| conda-py3.12 |" in md and "| virtualenv-py3.11 |" in md
    assert "<th>env</th>" in render_regressions(doc, "html")
    one = {**doc, "regressions": [entry]}
    assert "| env |" not in render_regressions(one, "md")
    assert "<th>env</th>" not in render_regressions(one, "html")
