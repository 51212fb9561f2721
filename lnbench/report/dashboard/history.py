"""History plots: small multiples of series over commits with the detected changes marked.

:func:`history_plot` draws one metric's series on one machine; :func:`changed_most_plot` the
series of any benchmark that changed most (:func:`series_that_changed_most`: detected changes
first, then :func:`net_change`). The x axis is the machine's commits in order, labelled with
short hashes; never hundreds of lines on one axis.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report.dashboard.plotting import (
    PLOT_MAX,
    NoData,
    _commit_ticks,
    _draw_off_scale,
    _figure,
    _off_scale,
    _scale,
    _series_label,
    _usable,
)
from lnbench.report.detect import series_columns


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
