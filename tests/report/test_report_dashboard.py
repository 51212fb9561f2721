"""Dashboard: every image written, non-trivial and referenced; gaps reported, not fatal."""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from lnbench.report import synthetic as syn
from lnbench.report.dashboard import _commit_ticks, _figure, build_dashboard, bytes_moved

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
