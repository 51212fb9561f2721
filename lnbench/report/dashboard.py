"""``lnbench dashboard``: a static HTML site (index.html + PNGs) from stored results.

Sections: overview (machines, their facts, unreadable files); history of ``time_backward``
and ``track_gbps`` per machine with detected changes marked (small multiples of the ``top``
series, the ones with detected changes first -- never hundreds of lines on one axis; the x
axis is this machine's commits, labelled with short hashes); GB/s against the bytes one
backward moves (log-log, one line per implementation, one panel per dtype) from the latest
result of each series, with the machine's copy bandwidth as a dashed line (points above it
are cache-resident); a heatmap of ``track_rel_err_dx`` (implementation × distribution/dtype,
log colour scale); the regressions table; a link to the asv site.
Each section says what is missing instead of failing when its data is absent or all NaN.
Values beyond ±``PLOT_MAX`` (absurd, e.g. 1e300 GB/s) are drawn off scale, as triangles on the
edge of their panel (the heatmap's colours saturate, its text keeps the value), with a note on
the page, so the axes stay readable and the commits and changes stay visible; the change table
and the reports use them as stored.
Plots use matplotlib's Agg backend through ``Figure`` objects (no pyplot state).
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report.detect import find_changes, series_columns
from lnbench.report.hardware import _device
from lnbench.report.loader import LoadedResults, load_results
from lnbench.report.regressions import regression_report
from lnbench.report.render import fmt_value, html_page, regressions_html_body

HISTORY_METRICS = ("time_backward", "track_gbps")
_UNIT_SCALE = {"seconds": [(1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")]}
#: bytes per element of the dtypes the suite uses (others: numpy's itemsize, if it knows them)
ELT_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1,
             "float8_e5m2": 1}
MAX_TICK_LABELS = 15
#: values of larger magnitude are drawn off scale: triangles on a panel's edge, saturated
#: heatmap colours (matplotlib's axis and tick arithmetic overflows near the float maximum;
#: no real timing, rate, byte count or error comes near it)
PLOT_MAX = 1e100
# 10 colours × 7 marker shapes (coprime): every implementation up to 70 gets its own pair
_COLORS = [f"C{i}" for i in range(10)]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


class NoData(Exception):
    """A plot has nothing to draw; the message says why (it goes into "What is missing")."""


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _scale(values: np.ndarray, unit: str) -> tuple[float, str]:
    """A divisor and unit label that make ``values`` readable (seconds -> ms, µs)."""
    finite = values[np.isfinite(values)]
    if unit in _UNIT_SCALE and len(finite):
        ref = float(np.median(np.abs(finite)))
        for div, label in _UNIT_SCALE[unit]:
            if ref >= div:
                return div, label
        return _UNIT_SCALE[unit][-1]
    return 1.0, unit


def _series_label(row: pd.Series | dict[str, Any], params: list[str]) -> str:
    return " ".join(str(row[p]) for p in params if p in row and pd.notna(row[p]))


def _off_scale(values: Any) -> np.ndarray:
    """True where a value lies beyond ±PLOT_MAX (drawn on the panel's edge, not at its value)."""
    return np.abs(np.asarray(values, dtype=float)) > PLOT_MAX


def _usable(frame: pd.DataFrame, machine: str, metric: str,
            notes: list[str] | None = None) -> pd.DataFrame:
    """Rows of ``metric`` on ``machine`` with a finite value; raises NoData saying why not.

    Values beyond ±PLOT_MAX are kept (the plots draw them off scale) and counted in ``notes``.
    """
    if frame.empty or not {"machine", "metric", "status", "value"} <= set(frame.columns):
        raise NoData(f"no {metric} results")
    rows = frame[(frame["machine"].astype(str) == machine)
                 & (frame["metric"].astype(str) == metric)]
    if rows.empty:
        raise NoData(f"no {metric} results")
    values = pd.to_numeric(rows["value"], errors="coerce").to_numpy(float)
    ok = rows["status"].astype(str).eq("ok").to_numpy() & np.isfinite(values)
    huge = ok & _off_scale(values)
    if huge.any() and notes is not None:
        notes.append(f"{int(huge.sum())} {metric} value(s) beyond ±{PLOT_MAX:.0e} (absurd) shown "
                     "off scale (triangles on a plot's edge); the change table has them as stored")
    good = rows[ok]
    if good.empty:
        counts = rows["status"].astype(str).value_counts()
        parts = [f"{counts[k]} {k}" for k in ("failed", "skipped", "invalid") if counts.get(k)]
        raise NoData(f"no {metric} results with a value (all {len(rows)} stored are NaN or "
                     f"missing: {', '.join(parts) or 'not finite'})")
    return good.assign(value=pd.to_numeric(good["value"], errors="coerce").astype(float))


def _latest_per_series(d: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The newest commit's value of each series (median over environments at that commit)."""
    newest = d.groupby(keys, observed=True)["commit_order"].transform("max")
    d = d[d["commit_order"] == newest]
    return (d.assign(commit=d["commit"].astype(str))
            .groupby(keys, observed=True, as_index=False)
            .agg(value=("value", "median"), commit=("commit", "first"),
                 commit_order=("commit_order", "first")))


def _commits_note(d: pd.DataFrame) -> str:
    commits = d.drop_duplicates("commit").sort_values("commit_order")["commit"].astype(str)
    if len(commits) == 1:
        return f"at commit {commits.iloc[0][:8]}"
    return (f"latest result of each series ({len(commits)} commits, newest "
            f"{commits.iloc[-1][:8]})")


def _commit_ticks(ax: Any, labels: list[str], show_labels: bool) -> None:
    """Integer commit positions 0..n-1, at most MAX_TICK_LABELS of them labelled by hash."""
    n = len(labels)
    step = max(1, math.ceil((n - 1) / (MAX_TICK_LABELS - 1)))
    ticks = list(range(0, n, step))
    if ticks[-1] != n - 1:  # always label the newest commit
        ticks = ticks + [n - 1] if len(ticks) < MAX_TICK_LABELS else [*ticks[:-1], n - 1]
    ax.set_xticks(ticks, [labels[t] for t in ticks] if show_labels else [])
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.set_xlim(-0.5 if n > 1 else -1.0, n - 0.5 if n > 1 else 1.0)
    ax.xaxis.set_minor_locator(_null_locator())


def _draw_off_scale(ax: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Values beyond ±PLOT_MAX as red triangles on the top (bottom) edge of ``ax``."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi)  # freeze: the triangles sit on the edge, not at their value
    for sign, marker, symbol, edge, at in ((1, "^", "▲", hi, 0.03), (-1, "v", "▼", lo, 0.97)):
        pick = np.sign(y) == sign
        if not pick.any():
            continue
        ax.plot(x[pick], np.full(pick.sum(), edge), ls="none", marker=marker, ms=6,
                color="#c00", clip_on=False, zorder=5)
        ax.annotate(f"{symbol} off scale: {y[pick][0]:.3g}", (0.99, at),
                    xycoords="axes fraction", fontsize=6.5, color="#c00", ha="right",
                    va="bottom" if sign > 0 else "top",
                    bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def history_plot(
    frame: pd.DataFrame, changes: pd.DataFrame, machine: str, metric: str, params: list[str],
    path: Path, top: int = 12, notes: list[str] | None = None,
) -> tuple[int, int]:
    """Small multiples of one machine's ``metric`` series over commits, changes marked.

    Shows at most ``top`` series: those with detected changes first (largest first), then
    the rest, longest history first, then in parameter order. The x axis is this machine's
    commits (positions 0, 1, … in date order, labelled with short hashes). Returns (shown,
    total); raises NoData. Values beyond ±PLOT_MAX are drawn as triangles on the panel's
    edge and counted in ``notes``.
    """
    data = _usable(frame, machine, metric, notes)
    keys = [k for k in series_columns(frame, params) if k in data.columns]

    def key_of(df: pd.DataFrame) -> pd.Series:
        return df[keys].astype(object).fillna("").astype(str).agg("|".join, axis=1)

    data = data.assign(_key=key_of(data))
    ch = pd.DataFrame()
    if len(changes) and {"machine", "metric", "ratio", "commit_order"} <= set(changes.columns):
        ch = changes[(changes["machine"].astype(str) == machine)
                     & (changes["metric"].astype(str) == metric)]
    if len(ch):
        ratio = pd.to_numeric(ch["ratio"], errors="coerce").astype(float)
        ch = ch.assign(_key=key_of(ch), _sev=np.abs(np.log(ratio.clip(lower=1e-300))))
    ranked = (list(dict.fromkeys(ch.sort_values("_sev", ascending=False)["_key"]))
              if len(ch) else [])
    ranked = [k for k in ranked if k in set(data["_key"])]
    npts = data["_key"].value_counts()
    rest = sorted(set(data["_key"]) - set(ranked), key=lambda k: (-npts[k], k))
    chosen = (ranked + rest)[:max(1, top)]
    total = data["_key"].nunique()

    commits = (data.assign(commit=data["commit"].astype(str))
               .drop_duplicates("commit_order").sort_values("commit_order"))
    pos = {int(o): i for i, o in enumerate(commits["commit_order"])}
    hashes = [c[:8] for c in commits["commit"]]

    ncols = min(3, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig = _figure(4.2 * ncols, 2.6 * nrows + 1.0)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    unit = str(data["unit"].iloc[0]) if "unit" in data and pd.notna(data["unit"].iloc[0]) \
        else ""
    for i, (ax, key) in enumerate(zip(axes.flat, chosen, strict=False)):
        s = data[data["_key"] == key].sort_values("commit_order")
        x = s["commit_order"].map(lambda o: pos[int(o)]).to_numpy(float)
        y = s["value"].to_numpy(float)
        off = _off_scale(y)
        div, label = _scale(y[~off], unit)
        ax.plot(x, np.where(off, np.nan, y) / div, marker="o", ms=5 if len(s) <= 3 else 3,
                lw=0.8, color="#336")
        if off.any():
            _draw_off_scale(ax, x[off], y[off])
        for _, c in (ch[ch["_key"] == key].iterrows() if len(ch) else []):
            at = pos.get(int(c["commit_order"])) if pd.notna(c["commit_order"]) else None
            if at is None:
                continue
            color = "#c00" if c["kind"] == "regression" else "#080"
            ax.axvline(at - 0.5, color=color, ls="--", lw=1.2)
            ratio = float(c["ratio"])
            if math.isfinite(ratio):  # written at the top of the line, always inside the axes
                ax.annotate(f"{ratio:.3g}×", (at - 0.5, 0.97), xycoords=("data", "axes fraction"),
                            color=color, fontsize=7, ha="left", va="top", xytext=(3, 0),
                            textcoords="offset points",
                            bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})
        ax.set_title(_series_label(s.iloc[0], params), fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        bottom = i + ncols >= len(chosen)  # lowest visible panel of its column
        _commit_ticks(ax, hashes, show_labels=bottom)
        if bottom:
            ax.set_xlabel("commit (date order)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    shown = f"{len(chosen)} of {total} series" + (", changes first" if ranked else "")
    fig.suptitle(f"{machine}: {metric} history ({shown}; {len(hashes)} commit(s); "
                 "red = regression, green = improvement)", fontsize=10)
    fig.savefig(path)
    return len(chosen), total


def elt_bytes(dtype: str) -> int | None:
    """Bytes per element of ``dtype`` (None when unknown)."""
    if dtype in ELT_BYTES:
        return ELT_BYTES[dtype]
    try:
        return int(np.dtype(dtype).itemsize)
    except TypeError:
        return None


def bytes_moved(m: int, n: int, elt: int) -> int:
    """Minimal bytes of one LayerNorm backward over an M×N input.

    Read x and dy, write dx (``3·M·N·elt``); read the saved fp32 mean and rstd (``8·M``);
    read γ, write dγ and dβ (``3·N·elt``).
    """
    return 3 * m * n * elt + 8 * m + 3 * n * elt


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
    from matplotlib.ticker import FuncFormatter

    notes = notes if notes is not None else []
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
        sub = d[(d["dtype"] == dt) & d["impl"].isin(impls)]
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
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_fmt_bytes))
        ax.tick_params(labelsize=8)
        lo, hi = ax.get_ylim()
        if not (0 < lo < hi < math.inf):  # nothing on scale in this panel (all off scale)
            lo, hi = 1.0, 10.0
        # the copy bandwidth of the devices this panel's implementations run on
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
        ax.set_ylim(lo, hi)
        for xs, color in off_points:  # beyond PLOT_MAX: on the top edge
            ax.plot(xs, np.full(len(xs), hi), ls="none", marker="^", ms=7, color=color,
                    mec="#c00", clip_on=False, zorder=5)
        if off_points:
            ax.annotate(f"▲ off scale (> {PLOT_MAX:.0e} GB/s)", (0.01, 0.93),
                        xycoords="axes fraction", fontsize=7, color="#c00", va="top")
        _shape_axis(ax, sub if len(sub) else d[d["dtype"] == dt])
        ax.set_xlabel("bytes moved per backward = 3·M·N·elt + 8·M + 3·N·elt", fontsize=8)
        ax.set_ylabel("GB/s", fontsize=9)
        ax.set_title(f"{dt} (elt = {ELT_BYTES.get(dt, elt_bytes(dt))} B)", fontsize=10)
        ax.grid(alpha=0.3, which="major")
        ax.grid(alpha=0.1, which="minor")
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


def _dtype_order(dtypes: Any) -> list[str]:
    """Widest dtype first (float64, float32, bfloat16, float16), unknown ones last."""
    return sorted(map(str, dtypes), key=lambda t: (-(elt_bytes(t) or 0), t))


def accuracy_heatmap(frame: pd.DataFrame, machine: str, path: Path,
                     notes: list[str] | None = None) -> tuple[int, int]:
    """rel_err of dx: implementation × distribution, one panel per dtype, worst over shapes.

    Log colour scale shared by the panels; uses the latest result of each series. Returns
    (implementations, dtypes); raises NoData.
    """
    from matplotlib.colors import LogNorm

    rows = _usable(frame, machine, "track_rel_err_dx", notes)
    keys = [k for k in ("impl", "shape", "dtype", "dist") if k in rows.columns]
    if not {"impl", "dtype", "dist"} <= set(keys):
        raise NoData("no track_rel_err_dx results with impl/dtype/dist parameters")
    d = _latest_per_series(rows.dropna(subset=keys), keys)
    for k in keys:
        d[k] = d[k].astype(str)
    impls = sorted(d["impl"].unique())
    dists = sorted(d["dist"].unique())
    dtypes = _dtype_order(d["dtype"].unique())
    if not impls:
        raise NoData("no track_rel_err_dx results with a value")
    tables = {dt: d[d["dtype"] == dt].pivot_table(index="impl", columns="dist", values="value",
                                                   aggfunc="max")
              .reindex(index=impls, columns=dists) for dt in dtypes}
    allv = np.concatenate([t.to_numpy(float).ravel() for t in tables.values()])
    pos = allv[np.isfinite(allv) & (allv > 0)]
    floor = float(min(pos.min(), PLOT_MAX / 10)) if len(pos) else 1e-16
    vmax = float(min(pos.max(), PLOT_MAX)) if len(pos) else 1.0  # colours saturate there
    norm = LogNorm(vmin=floor, vmax=max(vmax, floor * 10))

    ncols = min(2, len(dtypes))
    nrows = math.ceil(len(dtypes) / ncols)
    label_w = 0.09 * max(len(i) for i in impls) + 0.4
    fig = _figure(ncols * (0.85 * len(dists) + 0.3) + label_w + 1.4,
                  max(3.6, nrows * (0.3 * len(impls) + 1.0) + 0.8))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for k, (ax, dt) in enumerate(zip(axes.flat, dtypes, strict=False)):
        vals = tables[dt].to_numpy(float)
        shown = np.where(np.isfinite(vals), np.clip(vals, floor, PLOT_MAX), np.nan)
        im = ax.imshow(np.ma.masked_invalid(shown), cmap="viridis", aspect="auto", norm=norm)
        ax.set_facecolor("#ddd")
        ax.set_xticks(range(len(dists)), dists, fontsize=8)
        ax.set_yticks(range(len(impls)), impls if k % ncols == 0 else [], fontsize=8)
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                v = vals[i, j]
                dark = np.isfinite(v) and norm(max(v, floor)) < 0.6  # viridis: dark low end
                ax.text(j, i, f"{v:.1e}" if np.isfinite(v) else "n/a", ha="center",
                        va="center", fontsize=7, color="white" if dark else "black")
        ax.set_title(dt, fontsize=9)
        if k % ncols == 0:
            ax.set_ylabel("implementation", fontsize=8)
        if k + ncols >= len(dtypes):
            ax.set_xlabel("input distribution", fontsize=8)
    for ax in list(axes.flat)[len(dtypes):]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=list(axes.flat[:len(dtypes)]),
                     label="relative error of dx (worst shape)")
    fig.suptitle(f"{machine}: dx relative error, {_commits_note(d)}", fontsize=10)
    fig.savefig(path)
    return len(impls), len(dtypes)


def _drawn(plot: Any, *args: Any, **kw: Any) -> Any:
    """``plot(*args, **kw)``; an overflow inside matplotlib on extreme data becomes NoData
    (the page says which plot is missing) instead of ending the whole dashboard."""
    try:
        return plot(*args, **kw)
    except (OverflowError, FloatingPointError) as exc:
        path = next((a for a in (*args, *kw.values()) if isinstance(a, Path)), None)
        if path is not None:
            path.unlink(missing_ok=True)
        reason = " ".join(str(exc).split())
        raise NoData(f"{plot.__name__} could not be drawn: {reason}") from None


def _machines_html(loaded: LoadedResults) -> str:
    m = loaded.machines
    if m.empty:
        return "<p>No machines found.</p>"
    rows = []
    for r in m.to_dict("records"):
        def show(x: Any, unit: str = "") -> str:
            if x is None or (isinstance(x, float) and math.isnan(x)):
                return "unknown"
            return fmt_value(x, unit) if unit else str(x)

        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in [
                str(r["machine"]), show(r.get("cpu_model") or r.get("asv_cpu")),
                show(r.get("cpu_cores")), show(r.get("memory_bytes"), "bytes"),
                show(r.get("gpu_name")), show(r.get("copy_gbps_cpu"), "GB/s"),
                show(r.get("copy_gbps_cuda"), "GB/s"),
                "yes" if r.get("has_facts") else "no (lnbench-machines file missing)",
            ]) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ["machine", "cpu", "cores", "memory", "gpu",
                                            "copy cpu", "copy cuda", "facts"])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def build_dashboard(
    results_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
    asv_html: str = "../html/index.html", top: int = 12, loaded: LoadedResults | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and its PNGs; returns the index path.

    ``loaded``: ``results_dir`` already read by ``load_results`` (read here when None).
    Raises ``ResultsDirError`` when ``results_dir`` is not a directory and ValueError when
    ``top`` < 1; any other gap in the data is written into the page. (The CLI refuses, with
    exit code 2, a results folder with nothing readable in it before calling this.)
    """
    if top < 1:
        raise ValueError(f"top {top}: must be 1 or more")
    if loaded is None:
        loaded = load_results(results_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = loaded.frame
    params = loaded.param_names
    changes = find_changes(frame, params) if len(frame) else pd.DataFrame()
    doc = regression_report(loaded, include_resolved=True, changes=changes)
    machines = sorted(map(str, frame["machine"].unique())) if len(frame) else []

    body = [f'<p>Results: <code>{html.escape(str(loaded.results_dir))}</code> — '
            f'{len(machines)} machine(s), {doc["summary"]["commits"]} commit(s), '
            f'{doc["summary"]["series"]} series. asv\'s own site: '
            f'<a href="{html.escape(asv_html)}">{html.escape(asv_html)}</a> '
            "(run <code>asv publish</code> to build it).</p>"]
    missing: list[str] = []
    if not len(frame):
        missing.append("no readable benchmark results: every plot below is empty")
    body.append("<h2>Machines</h2>" + _machines_html(loaded))
    if loaded.errors:
        body.append("<h2>Files that could not be read</h2><ul>" + "".join(
            f"<li><code>{html.escape(e.path)}</code>: {html.escape(e.reason)}</li>"
            for e in loaded.errors) + "</ul>")

    sections: dict[str, list[str]] = {"history": [], "gbps": [], "accuracy": []}
    for machine in machines:
        mine = changes[(changes["machine"].astype(str) == machine)
                       & changes["metric"].astype(str).str.contains("rel_err")] if len(
            changes) else changes
        acc_changed = sorted(set(mine["metric"].astype(str))) if len(mine) else []
        for metric in [*HISTORY_METRICS, *acc_changed]:
            name = f"history-{_slug(machine)}-{_slug(metric)}.png"
            notes: list[str] = []
            try:
                got = _drawn(history_plot, frame, changes, machine, metric, params, out / name,
                             top, notes)
                sections["history"].append(
                    f'<figure><img src="{name}" alt="{html.escape(machine)} {metric} history">'
                    f"<figcaption>{got[0]} of {got[1]} {metric} series on "
                    f"{html.escape(machine)}</figcaption></figure>")
            except NoData as exc:
                missing.append(f"{machine}: {exc}")
            missing.extend(f"{machine}: {n}" for n in notes)
        name = f"gbps-{_slug(machine)}.png"
        notes = []
        try:
            n_impls = _drawn(gbps_plot, frame, loaded.machines, machine, out / name,
                             notes=notes)
            sections["gbps"].append(
                f'<figure><img src="{name}" alt="GB/s vs bytes moved on {html.escape(machine)}">'
                f"<figcaption>{n_impls} implementation(s) on {html.escape(machine)}; bytes = "
                "3·M·N·elt + 8·M + 3·N·elt (x, dy, dx; fp32 mean and rstd; γ, dγ, dβ); points "
                "above the copy bandwidth line are cache-resident</figcaption></figure>")
        except NoData as exc:
            missing.append(f"{machine}: {exc}")
        missing.extend(f"{machine}: {n}" for n in notes)
        name = f"accuracy-{_slug(machine)}.png"
        notes = []
        try:
            _drawn(accuracy_heatmap, frame, machine, out / name, notes)
            sections["accuracy"].append(
                f'<img src="{name}" alt="dx error on {html.escape(machine)}">')
        except NoData as exc:
            missing.append(f"{machine}: {exc}")
        missing.extend(f"{machine}: {n}" for n in notes)

    titles = {"history": "History (detected changes marked)",
              "gbps": "Bandwidth vs bytes moved (latest result of each series)",
              "accuracy": "Accuracy: relative error of dx (latest result of each series)"}
    for key, title in titles.items():
        body.append(f"<h2>{title}</h2>")
        body.append("\n".join(sections[key]) or '<p>No data for this section (see <a '
                    'href="#missing">What is missing</a>).</p>')
    body.append("<h2>Regressions and improvements (all detected; 'resolved' = no longer "
                "visible at the latest commit)</h2>")
    body.append(regressions_html_body({**doc, "errors": []}))
    missing = list(dict.fromkeys(missing))  # history and GB/s plot may miss the same metric
    if missing:
        body.append('<h2 id="missing">What is missing</h2><ul>' + "".join(
            f"<li>{html.escape(m)}</li>" for m in missing) + "</ul>")
    index = out / "index.html"
    index.write_text(html_page("lnbench dashboard", "\n".join(body)), encoding="utf-8")
    return index
