"""What every dashboard plot shares: figures, unit scaling, off-scale values, usable rows.

Plots use matplotlib's Agg backend through ``Figure`` objects (no pyplot state). Values beyond
±``PLOT_MAX`` (absurd, e.g. 1e300 GB/s) are drawn off scale, as triangles on the edge of their
panel, so the axes stay readable; the change table and the reports use them as stored. A plot
with nothing to draw raises :class:`NoData`, whose message goes into the page's "What is
missing"; :func:`drawn` turns an overflow inside matplotlib into one.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lnbench.metrics import elt_bytes

_UNIT_SCALE = {"seconds": [(1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")]}


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


def _dtype_order(dtypes: Any) -> list[str]:
    """Widest dtype first (float64, float32, bfloat16, float16), unknown ones last."""
    return sorted(map(str, dtypes), key=lambda t: (-(elt_bytes(t) or 0), t))


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
