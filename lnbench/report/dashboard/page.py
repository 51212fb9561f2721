"""The dashboard's page: ``build_dashboard`` writes index.html with its sections and PNGs."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from lnbench.metrics import BYTES_FORMULA
from lnbench.report.dashboard.accuracy import MIN_CASE_ELEMENTS, accuracy_heatmap
from lnbench.report.dashboard.bandwidth import gbps_plot
from lnbench.report.dashboard.history import changed_most_plot, history_plot
from lnbench.report.dashboard.plotting import NoData, _drawn, _slug
from lnbench.report.detect import find_changes
from lnbench.report.loader import LoadedResults, load_results
from lnbench.report.metrics import is_accuracy
from lnbench.report.regressions import regression_report
from lnbench.report.render import fmt_value, html_page, regressions_html_body

HISTORY_METRICS = ("time_backward", "track_gbps")


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


def _plot_into(section: list[str], missing: list[str], machine: str, plot: Callable[..., Any],
               args: tuple[Any, ...], path: Path, alt: str,
               caption: Callable[[Any], str], **kw: Any) -> None:
    """Draw ``plot(*args, path, notes=..., **kw)`` as a figure of ``section``; where it has
    nothing to draw (NoData) the reason, and every note it leaves, go to ``missing``."""
    notes: list[str] = []
    try:
        got = _drawn(plot, *args, path, notes=notes, **kw)
        section.append(_figure_html(path.name, alt, caption(got)))
    except NoData as exc:
        missing.append(f"{machine}: {exc}")
    missing.extend(f"{machine}: {n}" for n in notes)


def _machine_plots(sections: dict[str, list[str]], missing: list[str], loaded: LoadedResults,
                   changes: pd.DataFrame, machine: str, out: Path, top: int,
                   suite: set[str]) -> None:
    """The plots of one machine, each into its section (see :func:`build_dashboard`)."""
    frame, params, slug = loaded.frame, loaded.param_names, _slug(machine)
    _plot_into(sections["changed"], missing, machine, changed_most_plot,
               (frame, changes, machine, params), out / f"changed-{slug}.png",
               f"{machine}: series that changed most",
               lambda got: f"{got[0]} of {got[1]} series on {machine}: detected changes first "
               "(largest ratio first), then the largest change between first and last level",
               top=top)
    history = [m for m in HISTORY_METRICS if m in suite]
    mine = changes[(changes["machine"].astype(str) == machine)
                   & changes["metric"].astype(str).map(is_accuracy).astype(bool)] if len(
        changes) and history else pd.DataFrame()
    acc_changed = sorted(set(mine["metric"].astype(str))) if len(mine) else []
    for metric in [*history, *acc_changed]:
        _plot_into(sections["history"], missing, machine, history_plot,
                   (frame, changes, machine, metric, params),
                   out / f"history-{slug}-{_slug(metric)}.png", f"{machine} {metric} history",
                   lambda got, metric=metric: f"{got[0]} of {got[1]} {metric} series on "
                   f"{machine}", top=top)
    if "track_gbps" in suite:
        _plot_into(sections["gbps"], missing, machine, gbps_plot,
                   (frame, loaded.machines, machine), out / f"gbps-{slug}.png",
                   f"GB/s vs bytes moved on {machine}",
                   lambda n: f"{n} implementation(s) on {machine}; bytes = {BYTES_FORMULA} "
                   "(x, dy, dx; fp32 mean and rstd; γ, dγ, dβ); points above the copy "
                   "bandwidth line are cache-resident")
    if "track_rel_err_dx" in suite:
        _plot_into(sections["accuracy"], missing, machine, accuracy_heatmap,
                   (frame, machine), out / f"accuracy-{slug}.png", f"dx error on {machine}",
                   lambda _: "worst relative error of dx over the cases with M·N ≥ "
                   f"{MIN_CASE_ELEMENTS} (tiny cases set the same error for every "
                   "implementation and would hide their differences)")


def _head_html(loaded: LoadedResults, machines: list[str], doc: dict[str, Any],
               asv_html: str) -> list[str]:
    """The page's opening: what was read, the machines table, the files that were not."""
    body = [f'<p>Results: <code>{html.escape(str(loaded.results_dir))}</code> — '
            f'{len(machines)} machine(s), {doc["summary"]["commits"]} commit(s), '
            f'{doc["summary"]["series"]} series. asv\'s own site: '
            f'<a href="{html.escape(asv_html)}">{html.escape(asv_html)}</a> '
            "(run <code>asv publish</code> to build it).</p>"]
    body.append("<h2>Machines</h2>" + _machines_html(loaded))
    if loaded.errors:
        body.append("<h2>Files that could not be read</h2><ul>" + "".join(
            f"<li><code>{html.escape(e.path)}</code>: {html.escape(e.reason)}</li>"
            for e in loaded.errors) + "</ul>")
    return body


def _sections_html(sections: dict[str, list[str]], suite: set[str]) -> list[str]:
    """The plot sections the suite has metrics for, each with its figures or a pointer to
    "What is missing"."""
    titles = {"changed": ("Series that changed most (detected changes marked)", True),
              "history": ("History per metric (detected changes marked)",
                          any(m in suite for m in HISTORY_METRICS)),
              "gbps": ("Bandwidth vs bytes moved (latest result of each series)",
                       "track_gbps" in suite),
              "accuracy": ("Accuracy: relative error of dx (latest result of each series, "
                           f"worst case with M·N ≥ {MIN_CASE_ELEMENTS})",
                           "track_rel_err_dx" in suite)}
    body = []
    for key, (title, shown) in titles.items():
        if not shown:  # the suite has no such metric: nothing to say about it
            continue
        body.append(f"<h2>{title}</h2>")
        body.append("\n".join(sections[key]) or '<p>No data for this section (see <a '
                    'href="#missing">What is missing</a>).</p>')
    return body


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
    changes = find_changes(frame, loaded.param_names) if len(frame) else pd.DataFrame()
    doc = regression_report(loaded, include_resolved=True, changes=changes)
    machines = sorted(map(str, frame["machine"].unique())) if len(frame) else []
    suite = _suite_metrics(loaded)
    body = _head_html(loaded, machines, doc, asv_html)
    missing: list[str] = []
    if not len(frame):
        missing.append("no readable benchmark results: every plot below is empty")
    sections: dict[str, list[str]] = {"changed": [], "history": [], "gbps": [],
                                      "accuracy": []}
    for machine in machines:
        _machine_plots(sections, missing, loaded, changes, machine, out, top, suite)
    body += _sections_html(sections, suite)
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
