"""GB/s against the bytes one backward moves (``lnbench.metrics.bytes_moved``): log-log, one
line per implementation, one panel per dtype, from the latest result of each series, with the
machine's copy bandwidth as a dashed line (points above it are cache-resident)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lnbench.metrics import BYTES_FORMULA, bytes_moved, elt_bytes
from lnbench.report.dashboard.plotting import (
    _COLORS,
    _MARKERS,
    PLOT_MAX,
    NoData,
    _commits_note,
    _dtype_order,
    _figure,
    _latest_per_series,
    _null_locator,
    _off_scale,
    _usable,
)
from lnbench.report.hardware import _device


def _fmt_bytes(v: float, _pos: Any = None) -> str:
    for name, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= scale:
            return f"{v / scale:g} {name}"
    return f"{v:g} B"


def _copy_bandwidths(machines: pd.DataFrame, machine: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if machines.empty or "machine" not in machines:
        return out
    facts = machines[machines["machine"].astype(str) == machine]
    if facts.empty:
        return out
    for dev in ("cpu", "cuda"):
        try:
            v = float(facts.iloc[0].get(f"copy_gbps_{dev}"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v) and v > 0:
            out[dev] = v
    return out


def _shape_axis(ax: Any, shapes: pd.DataFrame) -> None:
    """Shape labels (M×N) on a top axis at each shape's bytes; near-equal ones merged."""
    pts = shapes.drop_duplicates("shape").sort_values("bytes")
    groups: list[list[tuple[float, str]]] = []
    for b, s in zip(pts["bytes"], pts["shape"].astype(str), strict=True):
        if groups and math.log10(b / groups[-1][-1][0]) < 0.08:
            groups[-1].append((b, s))
        else:
            groups.append([(b, s)])
    top = ax.secondary_xaxis("top")
    top.set_xticks([math.exp(np.mean([math.log(b) for b, _ in g])) for g in groups],
                   ["/".join(s for _, s in g) for g in groups], fontsize=7, rotation=90)
    top.xaxis.set_minor_locator(_null_locator())
    top.set_xlabel("shape M×N", fontsize=8)


def _gbps_points(frame: pd.DataFrame, machine: str, notes: list[str]) -> pd.DataFrame:
    """The latest ``track_gbps`` of each (impl, shape, dtype) series of ``machine`` with its
    ``bytes`` moved; what cannot be plotted is said in ``notes``. Raises NoData."""
    rows = _usable(frame, machine, "track_gbps", notes)
    keys = ["impl", "shape", "dtype"]
    if not set(keys) <= set(rows.columns):
        raise NoData("no track_gbps results with impl/shape/dtype parameters")
    all_impls = set(frame.loc[(frame["machine"].astype(str) == machine)
                              & (frame["metric"].astype(str) == "track_gbps"),
                              "impl"].dropna().astype(str))
    d = _latest_per_series(rows.dropna(subset=keys), keys)
    for k in keys:
        d[k] = d[k].astype(str)
    mn = d["shape"].str.extract(r"^(\d+)\s*[x×]\s*(\d+)$").astype(float)
    elt = d["dtype"].map(elt_bytes).astype(float)
    d = d.assign(M=mn[0], N=mn[1], elt=elt)
    bad_shape = sorted(set(d.loc[d["M"].isna(), "shape"]))
    bad_dtype = sorted(set(d.loc[d["elt"].isna(), "dtype"]))
    if bad_shape:
        notes.append(f"track_gbps shapes that are not MxN, not plotted: {', '.join(bad_shape)}")
    if bad_dtype:
        notes.append(f"track_gbps dtypes of unknown size, not plotted: {', '.join(bad_dtype)}")
    d = d.dropna(subset=["M", "N", "elt"])
    nonpos = d["value"] <= 0
    if nonpos.any():
        notes.append(f"{int(nonpos.sum())} track_gbps value(s) ≤ 0 not plotted (log axis)")
        d = d[~nonpos]
    if d.empty:
        raise NoData("no track_gbps results with an MxN shape, a known dtype and a value > 0")
    d = d.assign(bytes=[bytes_moved(int(m), int(n), int(e))
                        for m, n, e in zip(d["M"], d["N"], d["elt"], strict=True)])
    no_value = sorted(all_impls - set(d["impl"]))
    if no_value:
        notes.append(f"no GB/s value (failed, skipped or not MxN) for {len(no_value)} "
                     f"implementation(s): {', '.join(no_value)}")
    return d


def _draw_lines(ax: Any, sub: pd.DataFrame, impls: list[str],
                style: dict[str, tuple[str, str]]) -> list[tuple[np.ndarray, str]]:
    """One line per implementation; returns the (bytes, colour) of values off scale."""
    off_points = []
    for impl in impls:
        line = sub[sub["impl"] == impl].sort_values("bytes")
        if line.empty:
            continue
        color, marker = style[impl]
        off = _off_scale(line["value"])
        ax.plot(line["bytes"], line["value"].where(~off), "-", marker=marker, ms=5, lw=1.1,
                color=color, alpha=0.9)
        if off.any():
            off_points.append((line["bytes"].to_numpy(float)[off], color))
    return off_points


def _draw_ceilings(ax: Any, sub: pd.DataFrame, copies: dict[str, float]) -> tuple[float, float]:
    """The copy bandwidth of the devices this panel's implementations run on, as dashed lines;
    returns the y limits that leave room for them and their labels."""
    lo, hi = ax.get_ylim()
    if not (0 < lo < hi < math.inf):  # nothing on scale in this panel (all off scale)
        lo, hi = 1.0, 10.0
    devs = {_device(str(i), {"copy_gbps_cuda": copies.get("cuda")}) for i in sub["impl"]}
    ceil = sorted((v, dev) for dev, v in copies.items() if dev in devs)
    if ceil:
        lo, hi = min(lo, ceil[0][0] / 3), max(hi, ceil[-1][0]) * 5.0  # room for labels
        ax.axhspan(ceil[-1][0], hi * 10, color="grey", alpha=0.07, lw=0)
    for v, dev in ceil:
        ax.axhline(v, color="dimgrey", ls="--", lw=1.3)
        ax.annotate(f"copy bandwidth ({dev}) {v:.4g} GB/s", (0.01, v),
                    xycoords=("axes fraction", "data"), fontsize=7, color="dimgrey",
                    va="bottom", xytext=(0, 2), textcoords="offset points")
        what = "points" if len(ceil) == 1 else f"{dev} implementations"
        ax.annotate(f"{what} above the copy bandwidth: cache-resident", (0.99, v),
                    xycoords=("axes fraction", "data"), fontsize=7.5, color="#444",
                    ha="right", va="bottom", xytext=(0, 14), textcoords="offset points",
                    style="italic")
    return lo, hi


def _draw_panel(ax: Any, d: pd.DataFrame, dt: str, impls: list[str],
                style: dict[str, tuple[str, str]], copies: dict[str, float]) -> None:
    """The panel of one dtype: lines, copy-bandwidth ceilings, off-scale marks, shape axis."""
    from matplotlib.ticker import FuncFormatter

    sub = d[(d["dtype"] == dt) & d["impl"].isin(impls)]
    off_points = _draw_lines(ax, sub, impls, style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_bytes))
    ax.tick_params(labelsize=8)
    lo, hi = _draw_ceilings(ax, sub, copies)
    ax.set_ylim(lo, hi)
    for xs, color in off_points:  # beyond PLOT_MAX: on the top edge
        ax.plot(xs, np.full(len(xs), hi), ls="none", marker="^", ms=7, color=color,
                mec="#c00", clip_on=False, zorder=5)
    if off_points:
        ax.annotate(f"▲ off scale (> {PLOT_MAX:.0e} GB/s)", (0.01, 0.93),
                    xycoords="axes fraction", fontsize=7, color="#c00", va="top")
    _shape_axis(ax, sub if len(sub) else d[d["dtype"] == dt])
    ax.set_xlabel(f"bytes moved per backward = {BYTES_FORMULA}", fontsize=8)
    ax.set_ylabel("GB/s", fontsize=9)
    ax.set_title(f"{dt} (elt = {elt_bytes(dt)} B)", fontsize=10)
    ax.grid(alpha=0.3, which="major")
    ax.grid(alpha=0.1, which="minor")


def gbps_plot(
    frame: pd.DataFrame, machines: pd.DataFrame, machine: str, path: Path,
    top_impls: int = 30, notes: list[str] | None = None,
) -> int:
    """GB/s against bytes moved per backward, one panel per dtype, one line per implementation.

    Uses the latest result of each (impl, shape, dtype) series; the machine's copy bandwidth
    (facts) is a dashed line, points above it are cache-resident. Gaps in the data (failed
    or skipped implementations, shapes that are not MxN, unknown dtypes) are appended to
    ``notes``. Returns the number of implementations drawn; raises NoData.
    """
    from matplotlib.lines import Line2D

    notes = notes if notes is not None else []
    d = _gbps_points(frame, machine, notes)
    best = d.groupby("impl")["value"].max().sort_values(ascending=False)
    impls = sorted(best.index[:top_impls])
    if len(best) > top_impls:
        notes.append(f"GB/s plot shows the {top_impls} fastest of {len(best)} implementations")
    style = {impl: (_COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)])
             for i, impl in enumerate(impls)}
    dtypes = _dtype_order(d["dtype"].unique())
    copies = _copy_bandwidths(machines, machine)

    ncols = min(2, len(dtypes))
    nrows = math.ceil(len(dtypes) / ncols)
    legend_cols = 1 if len(impls) <= 24 else 2
    height = max(4.4 * nrows + 0.8, 0.2 * math.ceil(len(impls) / legend_cols) + 1.5)
    fig = _figure(5.6 * ncols + 1.9 * legend_cols, height)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, dt in zip(axes.flat, dtypes, strict=False):
        _draw_panel(ax, d, dt, impls, style, copies)
    for ax in list(axes.flat)[len(dtypes):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=style[i][0], marker=style[i][1], ms=5, lw=1.1)
               for i in impls]
    fig.legend(handles, impls, loc="outside right upper", fontsize=8, ncols=legend_cols,
               title="implementation", title_fontsize=8, frameon=False)
    if not copies:
        notes.append("no copy bandwidth in the machine facts: the GB/s plot has no ceiling")
    fig.suptitle(f"{machine}: backward GB/s vs bytes moved, {_commits_note(d)}", fontsize=10)
    fig.savefig(path)
    return len(impls)
