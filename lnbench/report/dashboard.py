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


def _plot_keys(frame: pd.DataFrame, changes: pd.DataFrame, params: list[str]) -> list[str]:
    """Columns naming one plotted series: the detector's (machine, environment, benchmark,
    parameters), the environment as its family (``env_family``) where the loader and the
    detector both have one, so a history that moved to a fresh environment of the same kind
    stays one line, as it is one series for the detector."""
    keys = series_columns(frame, params)
    if "env_family" in frame.columns and (not len(changes) or "env_family" in changes.columns):
        keys = ["env_family" if k == "env" else k for k in keys]
    return keys


def _key_of(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One string per row naming its series (the values of ``keys`` joined by ``|``, a
    missing value as ""); column-wise, so a million rows take a fraction of a second."""
    out: pd.Series | None = None
    for k in keys:
        col = df[k].astype(object)
        text = col.where(col.notna(), "").astype(str)
        out = text if out is None else out + "|" + text
    return out if out is not None else pd.Series("", index=df.index, dtype=object)


def _machine_changes(changes: pd.DataFrame, machine: str, keys: list[str],
                     metric: str | None = None) -> pd.DataFrame:
    """The detected changes of ``machine`` (of one ``metric``, or all), with ``_key`` and
    ``_sev`` = |log ratio|."""
    need = {"machine", "metric", "ratio", "commit_order"}
    if not len(changes) or not need <= set(changes.columns):
        return pd.DataFrame()
    ch = changes[changes["machine"].astype(str) == machine]
    if "old_version" in ch.columns:  # a step of a version the plots leave out (version_ok)
        ch = ch[~ch["old_version"].fillna(False).astype(bool)]
    if metric is not None:
        ch = ch[ch["metric"].astype(str) == metric]
    if not len(ch):
        return pd.DataFrame()
    ratio = pd.to_numeric(ch["ratio"], errors="coerce").astype(float)
    return ch.assign(_key=_key_of(ch, [k for k in keys if k in ch.columns]),
                     _sev=np.abs(np.log(ratio.clip(lower=1e-300))).fillna(0.0))


def _draw_history(data: pd.DataFrame, ch: pd.DataFrame, chosen: list[str],
                  title_of: Any, path: Path, suptitle: str) -> None:
    """Small multiples, one panel per series key in ``chosen`` (rows of ``data`` with that
    ``_key``), each in its own unit, detected changes (``ch``) as dashed lines with their
    ratio. The x axis is the commits of the drawn series, positions 0, 1, … in order."""
    drawn = data[data["_key"].isin(chosen)]
    commits = (drawn.assign(commit=drawn["commit"].astype(str))
               .drop_duplicates("commit_order").sort_values("commit_order"))
    pos = {int(o): i for i, o in enumerate(commits["commit_order"])}
    hashes = [c[:8] for c in commits["commit"]]
    ncols = min(3, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig = _figure(4.2 * ncols, 2.7 * nrows + 1.0)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, (ax, key) in enumerate(zip(axes.flat, chosen, strict=False)):
        s = drawn[drawn["_key"] == key].sort_values("commit_order")
        unit = str(s["unit"].iloc[0]) if "unit" in s and pd.notna(s["unit"].iloc[0]) else ""
        x = s["commit_order"].map(lambda o: pos[int(o)]).to_numpy(float)
        y = s["value"].to_numpy(float)
        off = _off_scale(y)
        div, label = _scale(y[~off], unit)
        ax.plot(x, np.where(off, np.nan, y) / div, marker="o", ms=5 if len(s) <= 3 else 3,
                lw=0.8, color="#336")
        if off.any():
            _draw_off_scale(ax, x[off], y[off])
        mine = ch[ch["_key"] == key].sort_values("commit_order") if len(ch) else ch
        for n_mark, (_, c) in enumerate(mine.iterrows()):
            at = pos.get(int(c["commit_order"])) if pd.notna(c["commit_order"]) else None
            if at is None:
                continue
            color = "#c00" if c["kind"] == "regression" else "#080"
            ax.axvline(at - 0.5, color=color, ls="--", lw=1.2)
            ratio = float(c["ratio"])
            if math.isfinite(ratio):  # at the top of the line, always inside the axes; the
                y_at = 0.97 - 0.09 * (n_mark % 3)  # labels of close changes are staggered
                ax.annotate(f"{ratio:.3g}×", (at - 0.5, y_at), xycoords=("data", "axes fraction"),
                            color=color, fontsize=7, ha="left", va="top", xytext=(3, 0),
                            textcoords="offset points",
                            bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})
        ax.set_title(title_of(s.iloc[-1]), fontsize=7.5)  # the newest environment's name
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        bottom = i + ncols >= len(chosen)  # lowest visible panel of its column
        _commit_ticks(ax, hashes, show_labels=bottom)
        if bottom:
            ax.set_xlabel("commit (in order)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    fig.suptitle(f"{suptitle}; {len(hashes)} commit(s); red = regression, green = "
                 "improvement", fontsize=10)
    fig.savefig(path)


def history_plot(
    frame: pd.DataFrame, changes: pd.DataFrame, machine: str, metric: str, params: list[str],
    path: Path, top: int = 12, notes: list[str] | None = None,
) -> tuple[int, int]:
    """Small multiples of one machine's ``metric`` series over commits, changes marked.

    Shows at most ``top`` series: those with detected changes first (largest first), then
    the rest, longest history first, then in parameter order. The x axis is this machine's
    commits (positions 0, 1, … in order, labelled with short hashes). Returns (shown,
    total); raises NoData. Values beyond ±PLOT_MAX are drawn as triangles on the panel's
    edge and counted in ``notes``.
    """
    data = _usable(frame, machine, metric, notes)
    keys = [k for k in _plot_keys(frame, changes, params) if k in data.columns]
    data = data.assign(_key=_key_of(data, keys))
    ch = _machine_changes(changes, machine, keys, metric)
    ranked = (list(dict.fromkeys(ch.sort_values("_sev", ascending=False)["_key"]))
              if len(ch) else [])
    ranked = [k for k in ranked if k in set(data["_key"])]
    npts = data["_key"].value_counts()
    rest = sorted(set(data["_key"]) - set(ranked), key=lambda k: (-npts[k], k))
    chosen = (ranked + rest)[:max(1, top)]
    total = data["_key"].nunique()
    shown = f"{len(chosen)} of {total} series" + (", changes first" if ranked else "")
    _draw_history(data, ch, chosen, lambda r: _series_label(r, params), path,
                  f"{machine}: {metric} history ({shown})")
    return len(chosen), total


def net_change(values: np.ndarray) -> float:
    """|log(last level / first level)| of a series in commit order; 0 when it cannot tell.

    A level is the median of the ``k`` points at that end, ``k`` the largest odd number
    ≤ min(5, n // 2) (1 for n < 6): from 6 points on, one outlying point at either end does
    not make a series look changed. Values ≤ 0 (a byte count of 0) have no ratio: 0.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return 0.0
    k = max(1, min(5, len(v) // 2))
    k -= 1 - k % 2  # odd: a median of real points
    first, last = float(np.median(v[:k])), float(np.median(v[-k:]))
    if first <= 0 or last <= 0:
        return 0.0
    return abs(math.log(last / first))


def _machine_values(frame: pd.DataFrame, machine: str) -> pd.DataFrame:
    """Every usable value of ``machine``: status ``ok`` (any other status, including ones
    added later, is not a value), finite, of the benchmark's current version."""
    if frame.empty or not {"machine", "metric", "status", "value"} <= set(frame.columns):
        raise NoData("no results")
    rows = frame[frame["machine"].astype(str) == machine]
    values = pd.to_numeric(rows["value"], errors="coerce").to_numpy(float)
    keep = rows["status"].astype(str).eq("ok").to_numpy() & np.isfinite(values)
    if "version_ok" in rows.columns:
        keep &= rows["version_ok"].fillna(True).astype(bool).to_numpy()
    data = rows[keep].assign(value=values[keep])
    if data.empty:
        raise NoData("no results with a value")
    return data


def _current(data: pd.DataFrame) -> pd.DataFrame:
    """Rows of benchmarks still in ``benchmarks.json`` (the loader's ``retired`` column, where
    it has one); NoData when none is left."""
    if "retired" not in data.columns:
        return data
    current = data[~data["retired"].fillna(False).astype(bool)]
    if current.empty:
        raise NoData("only benchmarks no longer in benchmarks.json (retired)")
    return current


def series_that_changed_most(
    frame: pd.DataFrame, changes: pd.DataFrame, machine: str, params: list[str],
    top: int | None = None,
) -> pd.DataFrame:
    """The series of ``machine`` ranked by how much they changed, any benchmark of any suite.

    Only benchmarks still in ``benchmarks.json`` (retired ones are history, not news).
    Series with a detected change come first, by their largest |log ratio| (the detector's
    verdict, which already weighs a step against the series' noise); then the rest by
    :func:`net_change` between their first and last levels (ties by name). One row per
    series (the first ``top`` when given): ``_key``, the series columns (:func:`_plot_keys`),
    ``env`` (its newest environment), ``severity`` (|log ratio|) and ``detected``. Raises
    NoData.
    """
    data = _current(_machine_values(frame, machine))
    keys = [k for k in _plot_keys(frame, changes, params) if k in data.columns]
    data = data.assign(_key=_key_of(data, keys))
    ch = _machine_changes(changes, machine, keys)
    sev = ch.groupby("_key")["_sev"].max() if len(ch) else pd.Series(dtype=float)
    sev = sev[sev.index.isin(set(data["_key"]))]
    detected = sev.sort_values(ascending=False, kind="stable")
    net = {k: net_change(g.sort_values("commit_order")["value"].to_numpy(float))
           for k, g in data[~data["_key"].isin(detected.index)].groupby("_key", sort=True)}
    rest = sorted(net, key=lambda k: (-net[k], k))
    order = [*detected.index, *rest][:top]
    newest = (data.sort_values("commit_order", kind="stable")
              .drop_duplicates("_key", keep="last").set_index("_key"))
    cols = [*keys, *(["env"] if "env" not in keys and "env" in newest else [])]
    out = newest.loc[order, cols].reset_index()  # env: the series' newest environment
    out["severity"] = [float(detected[k]) if k in detected.index else net[k] for k in order]
    out["detected"] = [k in detected.index for k in order]
    return out


def changed_most_plot(
    frame: pd.DataFrame, changes: pd.DataFrame, machine: str, params: list[str],
    path: Path, top: int = 12, notes: list[str] | None = None,
) -> tuple[int, int]:
    """Small multiples of the ``top`` series of ``machine`` that changed most
    (:func:`series_that_changed_most`), detected changes marked.

    Each panel has its own unit; its title is the benchmark (class.method) and its
    parameters, with the asv environment where the same benchmark and parameters were
    measured in several. Returns (shown, total); raises NoData.
    """
    data = _machine_values(frame, machine)
    current = _current(data)
    if len(current) < len(data) and notes is not None:
        gone = data.loc[~data.index.isin(current.index), "benchmark"].nunique()
        notes.append(f"{gone} retired benchmark(s) (no longer in benchmarks.json) left out of "
                     "the series that changed most")
    data = current
    huge = _off_scale(data["value"])
    if huge.any() and notes is not None:
        notes.append(f"{int(huge.sum())} value(s) beyond ±{PLOT_MAX:.0e} (absurd) shown off "
                     "scale (triangles on a plot's edge); the change table has them as stored")
    keys = [k for k in _plot_keys(frame, changes, params) if k in data.columns]
    data = data.assign(_key=_key_of(data, keys))
    ch = _machine_changes(changes, machine, keys)
    ranked = series_that_changed_most(frame, changes, machine, params, max(1, top))
    chosen = list(ranked["_key"])
    present = set(data["_key"])
    names = [p for p in params if p in data.columns]
    # the environment goes into a title only where the same benchmark and parameters were
    # measured in several (otherwise two panels would look alike)
    env_key = next((k for k in ("env", "env_family") if k in keys), None)
    bare = _key_of(data, [k for k in keys if k != env_key]) if env_key else data["_key"]
    envs_of = (data.assign(_bare=bare).groupby("_bare")[env_key].nunique() if env_key
               else pd.Series(dtype=int))
    bare_of = dict(zip(data["_key"], bare, strict=True))

    def title(r: pd.Series) -> str:
        bench = ".".join(str(r["benchmark"]).split(".")[-2:])
        label = ", ".join(f"{p}={r[p]}" for p in names if pd.notna(r[p]))  # any suite's names
        if envs_of.get(bare_of.get(r["_key"]), 1) > 1:
            label = f"{label} [{r['env']}]".strip()
        return f"{bench}" + (f"\n{label}" if label else "")

    n_changed = int(ranked["detected"].sum())
    what = (f"{n_changed} with a detected change, largest first" if n_changed
            else "no detected change: largest net change first")
    _draw_history(data, ch, chosen, title, path,
                  f"{machine}: the {len(chosen)} of {len(present)} series that changed most "
                  f"({what})")
    return len(chosen), len(present)


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


def _known(x: Any) -> bool:
    if x is None:
        return False
    try:
        return not bool(pd.isna(x))
    except (TypeError, ValueError):
        return True


def _machines_html(loaded: LoadedResults) -> str:
    """One row per machine, for any suite: what lnbench's facts file says, else what asv's
    ``machine.json`` says (cpu, cores, memory, os, arch), and what was measured there
    (commits, environments, newest commit). The copy-bandwidth columns appear only when some
    machine has a facts file."""
    m = loaded.machines
    if m.empty:
        return "<p>No machines found.</p>"
    frame = loaded.frame
    facts_any = bool(m["has_facts"].fillna(False).astype(bool).any()) if "has_facts" in m \
        else False
    rows = []
    for r in m.to_dict("records"):
        def first(*names: str, r: dict[str, Any] = r) -> Any:
            return next((r.get(n) for n in names if _known(r.get(n))), None)

        def show(x: Any, unit: str = "") -> str:
            if not _known(x):
                return "unknown"
            return fmt_value(x, unit) if unit else str(x)

        ram: Any = first("memory_bytes")
        if ram is None and _known(r.get("asv_ram")):  # asv's machine.json: bytes (asv's
            try:  # util.get_memsize), or whatever the user typed at `asv machine`
                ram = float(r["asv_ram"])
            except (TypeError, ValueError):
                ram = str(r["asv_ram"])
        mine = frame[frame["machine"].astype(str) == str(r["machine"])] if len(frame) else frame
        if len(mine):
            newest = mine.loc[mine["commit_order"].idxmax()]
            day = pd.Timestamp(newest["date"]).date() if _known(newest["date"]) else "?"
            measured = [str(mine["commit"].nunique()),
                        ", ".join(sorted(map(str, mine["env"].unique()))),
                        f"{str(newest['commit'])[:8]} ({day})"]
        else:
            measured = ["0", "–", "–"]
        cells = [str(r["machine"]), show(first("cpu_model", "asv_cpu")),
                 show(first("cpu_cores", "asv_num_cpu")),
                 show(ram, "bytes" if isinstance(ram, int | float) else ""),
                 show(first("asv_os")), show(first("asv_arch")),
                 show(first("gpu_name"))]
        if facts_any:
            cells += [show(r.get("copy_gbps_cpu"), "GB/s"), show(r.get("copy_gbps_cuda"), "GB/s"),
                      "yes" if r.get("has_facts") else "no (lnbench-machines file missing)"]
        cells += measured
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    names = ["machine", "cpu", "cores", "memory", "os", "arch", "gpu"]
    if facts_any:
        names += ["copy cpu", "copy cuda", "facts"]
    names += ["commits", "environments", "newest commit"]
    head = "".join(f"<th>{h}</th>" for h in names)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _suite_metrics(loaded: LoadedResults) -> set[str]:
    """Method names the suite has: stored in results or declared in ``benchmarks.json``."""
    names = set(loaded.frame["metric"].astype(str).unique()) if len(loaded.frame) else set()
    return names | {b.rsplit(".", 1)[-1] for b in loaded.benchmarks}


def _figure_html(name: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{name}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def build_dashboard(
    results_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
    asv_html: str = "../html/index.html", top: int = 12, loaded: LoadedResults | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and its PNGs; returns the index path.

    For any asv suite: the machines table, per machine the history of the ``top`` series
    that changed most (:func:`changed_most_plot`), and the table of detected changes. Where
    the suite has lnbench's metrics (``time_backward``, ``track_gbps``,
    ``track_rel_err_dx``: stored, or declared in ``benchmarks.json``), also their per-metric
    histories, the GB/s-vs-bytes plot and the accuracy heatmap; a suite without them gets no
    such section and no "missing" line about them.

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
    suite = _suite_metrics(loaded)
    lnbench_history = [m for m in HISTORY_METRICS if m in suite]
    has_gbps = "track_gbps" in suite
    has_accuracy = "track_rel_err_dx" in suite

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

    sections: dict[str, list[str]] = {"changed": [], "history": [], "gbps": [],
                                      "accuracy": []}
    for machine in machines:
        name = f"changed-{_slug(machine)}.png"
        notes: list[str] = []
        try:
            got = _drawn(changed_most_plot, frame, changes, machine, params, out / name, top,
                         notes)
            sections["changed"].append(_figure_html(
                name, f"{machine}: series that changed most",
                f"{got[0]} of {got[1]} series on {machine}: detected changes first (largest "
                "ratio first), then the largest change between first and last level"))
        except NoData as exc:
            missing.append(f"{machine}: {exc}")
        missing.extend(f"{machine}: {n}" for n in notes)

        mine = changes[(changes["machine"].astype(str) == machine)
                       & changes["metric"].astype(str).str.contains("rel_err")] if len(
            changes) and lnbench_history else pd.DataFrame()
        acc_changed = sorted(set(mine["metric"].astype(str))) if len(mine) else []
        for metric in [*lnbench_history, *acc_changed]:
            name = f"history-{_slug(machine)}-{_slug(metric)}.png"
            notes = []
            try:
                got = _drawn(history_plot, frame, changes, machine, metric, params, out / name,
                             top, notes)
                sections["history"].append(_figure_html(
                    name, f"{machine} {metric} history",
                    f"{got[0]} of {got[1]} {metric} series on {machine}"))
            except NoData as exc:
                missing.append(f"{machine}: {exc}")
            missing.extend(f"{machine}: {n}" for n in notes)
        if has_gbps:
            name = f"gbps-{_slug(machine)}.png"
            notes = []
            try:
                n_impls = _drawn(gbps_plot, frame, loaded.machines, machine, out / name,
                                 notes=notes)
                sections["gbps"].append(_figure_html(
                    name, f"GB/s vs bytes moved on {machine}",
                    f"{n_impls} implementation(s) on {machine}; bytes = 3·M·N·elt + 8·M + "
                    "3·N·elt (x, dy, dx; fp32 mean and rstd; γ, dγ, dβ); points above the "
                    "copy bandwidth line are cache-resident"))
            except NoData as exc:
                missing.append(f"{machine}: {exc}")
            missing.extend(f"{machine}: {n}" for n in notes)
        if has_accuracy:
            name = f"accuracy-{_slug(machine)}.png"
            notes = []
            try:
                _drawn(accuracy_heatmap, frame, machine, out / name, notes)
                sections["accuracy"].append(_figure_html(
                    name, f"dx error on {machine}",
                    f"worst relative error of dx over the cases with M·N ≥ "
                    f"{MIN_CASE_ELEMENTS} (tiny cases set the same error for every "
                    "implementation and would hide their differences)"))
            except NoData as exc:
                missing.append(f"{machine}: {exc}")
            missing.extend(f"{machine}: {n}" for n in notes)

    titles = {"changed": ("Series that changed most (detected changes marked)", True),
              "history": ("History per metric (detected changes marked)",
                          bool(lnbench_history)),
              "gbps": ("Bandwidth vs bytes moved (latest result of each series)", has_gbps),
              "accuracy": ("Accuracy: relative error of dx (latest result of each series, "
                           f"worst case with M·N ≥ {MIN_CASE_ELEMENTS})", has_accuracy)}
    for key, (title, shown) in titles.items():
        if not shown:  # the suite has no such metric: nothing to say about it
            continue
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
