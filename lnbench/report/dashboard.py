"""``lnbench dashboard``: a static HTML site (index.html + PNGs) from stored results.

Sections: overview (machines, their facts, unreadable files); history of ``time_backward``
and ``track_gbps`` per machine with detected changes marked (small multiples of the ``top``
series, the ones with detected changes first -- never hundreds of lines on one axis); GB/s
against N per implementation and dtype at each machine's latest commit, with the machine's
copy bandwidth as the ceiling; a heatmap of ``track_rel_err_dx`` (implementation ×
distribution/dtype, log colour scale); the regressions table; a link to the asv site.
Each section says what is missing instead of failing when its data is absent.
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
from lnbench.report.loader import LoadedResults, load_results
from lnbench.report.regressions import regression_report
from lnbench.report.render import fmt_value, html_page, regressions_html_body

HISTORY_METRICS = ("time_backward", "track_gbps")
_UNIT_SCALE = {"seconds": [(1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")]}


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


def history_plot(
    frame: pd.DataFrame, changes: pd.DataFrame, machine: str, metric: str, params: list[str],
    path: Path, top: int = 12,
) -> tuple[int, int] | None:
    """Small multiples of one machine's ``metric`` series over commits, changes marked.

    Shows at most ``top`` series: those with detected changes first (largest first), then
    the rest in parameter order. Returns (shown, total) or None when there is no data.
    """
    keys = series_columns(frame, params)
    data = frame[(frame["machine"] == machine) & (frame["metric"] == metric)
                 & frame["status"].eq("ok")]
    if data.empty:
        return None
    data = data.assign(_key=data[keys].astype(object).fillna("").astype(str).agg("|".join,
                                                                                 axis=1))
    ch = changes[(changes["machine"] == machine) & (changes["metric"] == metric)]
    if len(ch):
        ch = ch.assign(_key=ch[keys].astype(object).fillna("").astype(str).agg("|".join, axis=1),
                       _sev=np.abs(np.log(ch["ratio"].astype(float).clip(lower=1e-300))))
    ranked = list(dict.fromkeys(ch.sort_values("_sev", ascending=False)["_key"])) if len(ch) \
        else []
    rest = sorted(set(data["_key"]) - set(ranked))
    chosen = (ranked + rest)[:top]
    total = data["_key"].nunique()
    ncols = min(3, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig = _figure(4.2 * ncols, 2.6 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    unit = str(data["unit"].iloc[0])
    for ax, key in zip(axes.flat, chosen, strict=False):
        s = data[data["_key"] == key].sort_values("commit_order")
        div, label = _scale(s["value"].to_numpy(float), unit)
        ax.plot(s["commit_order"], s["value"] / div, marker=".", ms=3, lw=0.8, color="#336")
        for _, c in (ch[ch["_key"] == key].iterrows() if len(ch) else []):
            color = "#c00" if c["kind"] == "regression" else "#080"
            ax.axvline(c["commit_order"] - 0.5, color=color, ls="--", lw=1.2)
            ax.annotate(f"{c['ratio']:.2f}×", (c["commit_order"], c["after"] / div),
                        color=color, fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(_series_label(s.iloc[0], params), fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("commit (in date order)", fontsize=8)
    shown = f"{len(chosen)} of {total} series" + (", changes first" if ranked else "")
    fig.suptitle(f"{machine}: {metric} history ({shown}; red = regression, green = "
                 "improvement)", fontsize=10)
    fig.savefig(path)
    return len(chosen), total


def _latest(frame: pd.DataFrame, machine: str, metric: str) -> pd.DataFrame:
    d = frame[(frame["machine"] == machine) & (frame["metric"] == metric)
              & frame["status"].eq("ok")]
    if d.empty:
        return d
    return d[d["commit_order"] == d["commit_order"].max()]


def gbps_plot(
    frame: pd.DataFrame, machines: pd.DataFrame, machine: str, path: Path, top_impls: int = 10
) -> bool:
    """GB/s against N, one panel per dtype, one line per implementation (and M)."""
    d = _latest(frame, machine, "track_gbps")
    if d.empty or "shape" not in d or d["shape"].isna().all():
        return False
    mn = d["shape"].astype(str).str.extract(r"^(\d+)x(\d+)$").astype(float)
    d = d.assign(M=mn[0], N=mn[1]).dropna(subset=["M", "N"])
    if d.empty:
        return False
    best = d.groupby("impl", observed=True)["value"].max().sort_values(ascending=False)
    impls = list(best.index[:top_impls])
    dtypes = sorted(d["dtype"].astype(str).unique())
    fig = _figure(5.2 * len(dtypes), 4.6 + 0.2 * math.ceil(len(impls) / 5))
    axes = fig.subplots(1, len(dtypes), squeeze=False)[0]
    facts = machines[machines["machine"] == machine]
    copies = {}
    if len(facts):
        for dev in ("cpu", "cuda"):
            v = facts.iloc[0].get(f"copy_gbps_{dev}")
            if v is not None and pd.notna(v):
                copies[dev] = float(v)
    styles = ["-", "--", ":", "-."]
    ms = sorted(d["M"].unique())
    colors = {impl: f"C{i % 10}" for i, impl in enumerate(impls)}
    for ax, dt in zip(axes, dtypes, strict=True):
        sub = d[(d["dtype"].astype(str) == dt) & d["impl"].isin(impls)]
        for impl in impls:
            for j, m in enumerate(ms):
                line = sub[(sub["impl"] == impl) & (sub["M"] == m)].sort_values("N")
                if line.empty:
                    continue
                ax.plot(line["N"], line["value"], styles[j % len(styles)], marker="o", ms=3,
                        color=colors[impl], label=f"{impl}" if j == 0 or len(ms) == 1 else None)
        cpu_impls = sub["impl"].astype(str).str.split(".").str[0].isin(["numpy", "numba"])
        for dev, v in copies.items():
            if dev == "cuda" or cpu_impls.any() or "cuda" not in copies:
                ax.axhline(v, color="grey", ls="--", lw=1)
                ax.annotate(f"copy ({dev}) {v:.4g} GB/s", (0.01, v),
                            xycoords=("axes fraction", "data"), fontsize=7, color="grey",
                            va="bottom")
        ax.set_xscale("log", base=2)
        ns = sorted(d["N"].unique())
        ax.set_xticks(ns, [f"{int(n)}" for n in ns], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("N (row length)")
        ax.set_ylabel("GB/s")
        ax.set_title(dt)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(ms) > 1:
        from matplotlib.lines import Line2D

        handles += [Line2D([], [], color="k", ls=styles[j % len(styles)]) for j in range(len(ms))]
        labels += [f"M={int(m)}" for m in ms]
    fig.legend(handles, labels, loc="outside lower center", fontsize=7,
               ncols=min(5, max(1, len(labels))))
    commit = str(d["commit"].iloc[0])[:8]
    fig.suptitle(f"{machine}: backward GB/s vs N at commit {commit}", fontsize=10)
    fig.savefig(path)
    return True


def accuracy_heatmap(frame: pd.DataFrame, machine: str, path: Path) -> bool:
    """rel_err of dx: implementation × (dist, dtype), worst over shapes, log colour scale."""
    from matplotlib.colors import LogNorm

    d = _latest(frame, machine, "track_rel_err_dx")
    if d.empty or "dist" not in d:
        return False
    d = d.assign(col=d["dist"].astype(str) + "\n" + d["dtype"].astype(str))
    table = d.pivot_table(index="impl", columns="col", values="value", aggfunc="max",
                          observed=True)
    if table.empty:
        return False
    vals = table.to_numpy(float)
    pos = vals[np.isfinite(vals) & (vals > 0)]
    floor = float(pos.min()) if len(pos) else 1e-16
    shown = np.where(np.isfinite(vals), np.maximum(vals, floor), np.nan)
    fig = _figure(1.3 * table.shape[1] + 3.5, 0.45 * table.shape[0] + 2.2)
    ax = fig.subplots()
    vmax = float(np.nanmax(shown)) if np.isfinite(shown).any() else 1.0
    im = ax.imshow(np.ma.masked_invalid(shown), cmap="viridis", aspect="auto",
                   norm=LogNorm(vmin=floor, vmax=max(vmax, floor * 10)))
    ax.set_facecolor("#ddd")
    ax.set_xticks(range(table.shape[1]), table.columns, fontsize=8)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=8)
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            v = vals[i, j]
            dark = np.isfinite(v) and im.norm(max(v, floor)) < 0.6  # viridis: dark low end
            ax.text(j, i, f"{v:.1e}" if np.isfinite(v) else "n/a", ha="center", va="center",
                    fontsize=7, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label="relative error of dx (max over shapes)")
    ax.set_xlabel("input distribution / dtype")
    ax.set_ylabel("implementation")
    commit = str(d["commit"].iloc[0])[:8]
    ax.set_title(f"{machine}: dx relative error at commit {commit}", fontsize=10)
    fig.savefig(path)
    return True


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
    asv_html: str = "../html/index.html", top: int = 12,
) -> Path:
    """Write ``out_dir/index.html`` and its PNGs; returns the index path.

    Raises ``ResultsDirError`` when ``results_dir`` is not a directory; any other gap in the
    data is written into the page.
    """
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
        mine = changes[(changes["machine"] == machine)
                       & changes["metric"].astype(str).str.contains("rel_err")] if len(
            changes) else changes
        acc_changed = sorted(set(mine["metric"].astype(str))) if len(mine) else []
        for metric in [*HISTORY_METRICS, *acc_changed]:
            name = f"history-{_slug(machine)}-{_slug(metric)}.png"
            got = history_plot(frame, changes, machine, metric, params, out / name, top)
            if got is None:
                missing.append(f"{machine}: no {metric} results")
                continue
            sections["history"].append(
                f'<figure><img src="{name}" alt="{html.escape(machine)} {metric} history">'
                f"<figcaption>{got[0]} of {got[1]} {metric} series on "
                f"{html.escape(machine)}</figcaption></figure>")
        name = f"gbps-{_slug(machine)}.png"
        if gbps_plot(frame, loaded.machines, machine, out / name):
            sections["gbps"].append(f'<img src="{name}" alt="GB/s vs N on {machine}">')
        else:
            missing.append(f"{machine}: no track_gbps results with an MxN shape")
        name = f"accuracy-{_slug(machine)}.png"
        if accuracy_heatmap(frame, machine, out / name):
            sections["accuracy"].append(f'<img src="{name}" alt="dx error on {machine}">')
        else:
            missing.append(f"{machine}: no track_rel_err_dx results")

    titles = {"history": "History (detected changes marked)",
              "gbps": "Bandwidth vs row length (latest commit)",
              "accuracy": "Accuracy: relative error of dx (latest commit)"}
    for key, title in titles.items():
        body.append(f"<h2>{title}</h2>")
        body.append("\n".join(sections[key]) or "<p>No data for this section.</p>")
    body.append("<h2>Regressions and improvements (all detected; 'resolved' = no longer "
                "visible at the latest commit)</h2>")
    body.append(regressions_html_body({**doc, "errors": []}))
    if missing:
        body.append("<h2>What is missing</h2><ul>" + "".join(
            f"<li>{html.escape(m)}</li>" for m in missing) + "</ul>")
    index = out / "index.html"
    index.write_text(html_page("lnbench dashboard", "\n".join(body)), encoding="utf-8")
    return index
