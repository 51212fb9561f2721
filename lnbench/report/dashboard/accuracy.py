"""The accuracy heatmap: relative error of dx, implementation × distribution, one panel and
one log colour scale per dtype (method in :func:`accuracy_heatmap`)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report.dashboard.plotting import (
    PLOT_MAX,
    NoData,
    _commits_note,
    _dtype_order,
    _figure,
    _latest_per_series,
    _usable,
)

#: cases smaller than this (M·N elements) are left out of the accuracy heatmap's summary
MIN_CASE_ELEMENTS = 1024


def case_elements(shape: str) -> float:
    """M·N of an ``MxN`` shape; NaN when the shape is not of that form."""
    m = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", str(shape))
    return float(int(m.group(1)) * int(m.group(2))) if m else math.nan


def accuracy_cells(frame: pd.DataFrame, machine: str,
                   notes: list[str] | None = None) -> pd.DataFrame:
    """The accuracy heatmap's numbers: one row per (dtype, impl, dist) with ``value`` = the
    worst ``track_rel_err_dx`` over that cell's cases with M·N ≥ ``MIN_CASE_ELEMENTS`` (the
    latest result of each series), ``small_only`` True where the cell has no such case and
    the value is the worst of its smaller ones; ``commit``/``commit_order`` of the worst
    case. The choice is explained in :func:`accuracy_heatmap`. Raises NoData."""
    rows = _usable(frame, machine, "track_rel_err_dx", notes)
    keys = [k for k in ("impl", "shape", "dtype", "dist") if k in rows.columns]
    if not {"impl", "dtype", "dist"} <= set(keys):
        raise NoData("no track_rel_err_dx results with impl/dtype/dist parameters")
    d = _latest_per_series(rows.dropna(subset=keys), keys)
    if d.empty:
        raise NoData("no track_rel_err_dx results with a value")
    for k in keys:
        d[k] = d[k].astype(str)
    elems = d["shape"].map(case_elements) if "shape" in d else pd.Series(math.nan, d.index)
    d = d.assign(_large=elems.to_numpy(float) >= MIN_CASE_ELEMENTS)
    cell = ["dtype", "impl", "dist"]
    has_large = d.groupby(cell)["_large"].transform("any")
    d = d[d["_large"] | ~has_large].assign(small_only=~has_large)
    worst = d.sort_values("value", ascending=False, kind="stable").drop_duplicates(cell)
    return (worst[[*cell, "value", "small_only", "commit", "commit_order"]]
            .sort_values(cell).reset_index(drop=True))


def accuracy_heatmap(frame: pd.DataFrame, machine: str, path: Path,
                     notes: list[str] | None = None) -> tuple[int, int]:
    """rel_err of dx: implementation × distribution, one panel per dtype.

    Each cell is the worst rel_err of that (implementation, distribution, dtype) over the
    shapes with M·N ≥ ``MIN_CASE_ELEMENTS`` (1024). Why not the worst over every shape: at
    2×4 the error is set by the rounding of a handful of terms against a tiny ``max|ref|``,
    the same for every formulation (in this repository's ``results/``, quick grid on a 2-core
    x86_64 VM, float32 ``offset``: 1.0–1.1e-3 for all ten implementations), so a plain
    maximum shows that one case ten times over and hides the spread that tells
    implementations apart (1.1e-5 … 8.7e-5 there, worst over 64×1023, 256×1024, 32×4096). The
    worst over realistic sizes keeps an absolute error a user can read against a tolerance
    and keeps that spread; a per-case normalised view (error / median error of the case)
    would show the spread too but no longer the size of the error. A cell whose
    implementation has only smaller cases (or shapes that are not M×N) shows the worst of
    those, marked ``*``, with a note. One log colour scale per dtype (float64 and bfloat16
    errors lie 13 decades apart: a shared scale paints each dtype one colour); the latest
    result of each series. Returns (implementations, dtypes); raises NoData.
    """
    from matplotlib.colors import LogNorm

    notes = notes if notes is not None else []
    cells = accuracy_cells(frame, machine, notes)
    impls = sorted(cells["impl"].unique())
    dists = sorted(cells["dist"].unique())
    dtypes = _dtype_order(cells["dtype"].unique())
    small_only = {tuple(k) for k in cells.loc[cells["small_only"], ["dtype", "impl", "dist"]]
                  .to_numpy()}
    if small_only:
        notes.append(f"accuracy heatmap: {len(small_only)} cell(s) marked * have no case with "
                     f"M·N ≥ {MIN_CASE_ELEMENTS}: they show the worst of their smaller cases")
    tables = {dt: cells[cells["dtype"] == dt].pivot_table(
        index="impl", columns="dist", values="value", aggfunc="max")
        .reindex(index=impls, columns=dists) for dt in dtypes}
    d = cells

    def norm_of(values: np.ndarray) -> Any:
        pos = values[np.isfinite(values) & (values > 0)]
        floor = float(min(pos.min(), PLOT_MAX / 10)) if len(pos) else 1e-16
        vmax = float(min(pos.max(), PLOT_MAX)) if len(pos) else 1.0  # colours saturate there
        return LogNorm(vmin=floor, vmax=max(vmax, floor * 2))  # at least a factor of 2

    ncols = min(2, len(dtypes))
    nrows = math.ceil(len(dtypes) / ncols)
    label_w = 0.09 * max(len(i) for i in impls) + 0.4
    fig = _figure(ncols * (0.85 * len(dists) + 1.3) + label_w + 0.4,
                  max(3.6, nrows * (0.3 * len(impls) + 1.0) + 0.8))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, (ax, dt) in enumerate(zip(axes.flat, dtypes, strict=False)):
        vals = tables[dt].to_numpy(float)
        norm = norm_of(vals)  # one scale per dtype: the spread within a dtype stays visible
        floor = norm.vmin
        shown = np.where(np.isfinite(vals), np.clip(vals, floor, PLOT_MAX), np.nan)
        im = ax.imshow(np.ma.masked_invalid(shown), cmap="viridis", aspect="auto", norm=norm)
        ax.set_facecolor("#ddd")
        ax.set_xticks(range(len(dists)), dists, fontsize=8)
        ax.set_yticks(range(len(impls)), impls if k % ncols == 0 else [], fontsize=8)
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                v = vals[i, j]
                dark = np.isfinite(v) and norm(max(v, floor)) < 0.6  # viridis: dark low end
                star = "*" if (dt, impls[i], dists[j]) in small_only else ""
                ax.text(j, i, f"{v:.1e}{star}" if np.isfinite(v) else "n/a", ha="center",
                        va="center", fontsize=7, color="white" if dark else "black")
        ax.set_title(dt, fontsize=9)
        if k % ncols == 0:
            ax.set_ylabel("implementation", fontsize=8)
        if k + ncols >= len(dtypes):
            ax.set_xlabel("input distribution", fontsize=8)
        bar = fig.colorbar(im, ax=ax, fraction=0.08, pad=0.02)
        bar.ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(dtypes):]:
        ax.set_visible(False)
    fig.suptitle(f"{machine}: relative error of dx, worst case with M·N ≥ "
                 f"{MIN_CASE_ELEMENTS} (one log colour scale per dtype), {_commits_note(d)}",
                 fontsize=10)
    fig.savefig(path)
    return len(impls), len(dtypes)
