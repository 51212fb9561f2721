"""Text for the reports: markdown, HTML, JSON and CSV. Formatting only, no analysis."""

from __future__ import annotations

import csv
import html
import io
import json
import math
from typing import Any

import pandas as pd

from lnbench.report.hardware import HardwareReport

FORMATS = ("md", "html", "json", "csv")
_BINARY = [("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)]
_TIME = [("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)]


def fmt_value(value: Any, unit: str | None) -> str:
    """A value with its unit, scaled for reading (``3.84 ms``, ``1.2 GiB``, ``1.0e-05``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):  # not a number: shown as stored
        return str(value)
    if not math.isfinite(v):
        return "–"
    unit = unit or ""
    if unit == "seconds":
        for name, scale in _TIME:
            if abs(v) >= scale or scale == 1e-9:
                return f"{v / scale:.3g} {name}"
    if unit == "bytes":
        for name, scale in _BINARY:
            if abs(v) >= scale:
                return f"{v / scale:.3g} {name}"
        return f"{v:.0f} B"
    if "err" in unit or (v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6)):
        return f"{v:.2e}" + (f" {unit}" if unit and "err" not in unit else "")
    if unit == "%":
        return f"{v:.1f} %"
    return f"{v:.4g}" + (f" {unit}" if unit and unit != "unit" else "")


def _params_text(params: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _short_bench(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else name


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;
text-align:left;font-size:.9em}th{background:#f0f0f0}tr.reg td{background:#fde8e8}
.bad{color:#b00}.good{color:#070}code{background:#f4f4f4;padding:0 .2em}"""


def html_page(title: str, body: str) -> str:
    """A standalone HTML page."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n"
            "</body></html>\n")


# ------------------------------------------------------------------------- regressions

CHANGE_HEADER = ["machine", "benchmark", "params", "commit", "before", "after", "change", "open"]


def shows_env(doc: dict[str, Any]) -> bool:
    """True when the change tables need an ``env`` column: the listed changes come from
    more than one asv environment, so a (machine, benchmark, params) may appear once per
    environment and the rows would otherwise look like duplicates."""
    envs = {e.get("env") for key in ("regressions", "improvements") for e in doc.get(key, [])}
    return len(envs) > 1


def change_header(show_env: bool = False) -> list[str]:
    """Column names of the change tables (``env`` after ``params`` when shown)."""
    return [*CHANGE_HEADER[:3], "env", *CHANGE_HEADER[3:]] if show_env else list(CHANGE_HEADER)


def change_rows(entries: list[dict[str, Any]], show_env: bool = False) -> list[list[str]]:
    """Table rows (strings) for regression/improvement entries of the report document."""
    rows = []
    for e in entries:
        ratio = e.get("ratio")
        change = f"{ratio:.3g}×" if ratio is not None else "–"
        commit = (e["prev_commit"][:8] + ".." if e.get("prev_commit") else "") + e["commit"][:8]
        rows.append([
            e["machine"], _short_bench(e["benchmark"]), _params_text(e["params"]), commit,
            fmt_value(e["before"], e.get("unit")), fmt_value(e["after"], e.get("unit")), change,
            "yes" if e.get("open") else "resolved",
        ])
        if show_env:
            rows[-1].insert(3, str(e.get("env") or "–"))
    return rows


def render_regressions(doc: dict[str, Any], fmt: str) -> str:
    """The regression report document as ``md``, ``html``, ``json`` or ``csv`` text.

    CSV has one row per change (``kind`` = regression/improvement); errors are not part of
    the CSV (the CLI prints them on stderr).
    """
    if fmt == "json":
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return _changes_csv(doc)
    n_reg, n_imp, n_err = len(doc["regressions"]), len(doc["improvements"]), len(doc["errors"])
    summ = doc.get("summary", {})
    scope = "" if summ.get("include_resolved") else " still present at the latest commit"
    intro = (f"{n_reg} regression(s) and {n_imp} improvement(s){scope}, over "
             f"{summ.get('commits', 0)} commit(s), {summ.get('series', 0)} series, machines: "
             f"{', '.join(summ.get('machines', [])) or 'none'}. Unreadable files: {n_err}.")
    if summ.get("pct_copy_moved_with_copy_bandwidth"):
        intro += (f" Not listed: {summ['pct_copy_moved_with_copy_bandwidth']} change(s) of % of "
                  "copy whose GB/s did not change (the run's measured copy bandwidth moved, not "
                  "the code).")
    if summ.get("left_out_not_measured_at_latest"):
        intro += (f" Not listed: {summ['left_out_not_measured_at_latest']} change(s) in series "
                  "the latest run did not measure (--latest-only).")
    for note in doc.get("notes", []):  # off-history commits, retired, noisy, no baseline yet
        intro += f" {note}"
    env = shows_env(doc)
    if fmt == "md":
        parts = ["# Benchmark regressions", "", intro, ""]
        for title, key in (("Regressions", "regressions"), ("Improvements", "improvements")):
            parts += [f"## {title}", ""]
            parts += [_md_table(change_header(env), change_rows(doc[key], env))
                      if doc[key] else "None.", ""]
        if doc["errors"]:
            parts += ["## Files that could not be read", ""]
            parts += [f"- `{e['path']}`: {e['reason']}" for e in doc["errors"]] + [""]
        return "\n".join(parts)
    if fmt == "html":
        return html_page("Benchmark regressions", regressions_html_body(doc, intro))
    raise ValueError(f"unknown format {fmt!r}")


def regressions_html_body(doc: dict[str, Any], intro: str = "") -> str:
    """HTML fragment: intro, regressions, improvements and errors tables."""
    parts = [f"<p>{html.escape(intro)}</p>"] if intro else []
    env = shows_env(doc)
    for title, key in (("Regressions", "regressions"), ("Improvements", "improvements")):
        parts.append(f"<h2>{title}</h2>")
        parts.append(_html_table(change_header(env), change_rows(doc[key], env), key)
                     if doc[key] else "<p>None.</p>")
    if doc["errors"]:
        parts.append("<h2>Files that could not be read</h2><ul>")
        parts += [f"<li><code>{html.escape(e['path'])}</code>: {html.escape(e['reason'])}</li>"
                  for e in doc["errors"]]
        parts.append("</ul>")
    return "\n".join(parts)


def _changes_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    names = sorted({k for key in ("regressions", "improvements") for e in doc[key]
                    for k in e["params"]})
    cols = ["kind", "machine", "benchmark", *names, "commit", "prev_commit", "metric", "unit",
            "before", "after", "ratio", "z", "open", "env", "date"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for kind, key in (("regression", "regressions"), ("improvement", "improvements")):
        for e in doc[key]:
            row = {**e, **e["params"], "kind": kind}
            w.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
    return buf.getvalue()


# ---------------------------------------------------------------------------- hardware


def _x(value: Any) -> str:
    return f"{value:.2f}×" if value is not None and pd.notna(value) else "–"


def _machine_header(rep: HardwareReport, m: str) -> str:
    return f"{m} (baseline)" if m == rep.baseline else m


def _row_key(rep: HardwareReport, keys: list[str]) -> list[str]:
    return [*keys, "env"] if rep.multi_env else keys


def _hardware_wide(rep: HardwareReport) -> tuple[list[str], list[list[str]]]:
    """The speed table: per parameter set, time / × / GB/s / % copy of each machine."""
    machines = list(rep.machines["machine"]) if len(rep.machines) else []
    keys = _row_key(rep, rep.keys)
    header = list(keys)
    for m in machines:
        header += [f"{_machine_header(rep, m)} time"]
        header += [] if m == rep.baseline else [f"{m} ×"]
        header += [f"{m} GB/s", f"{m} % copy"]
    rows: list[list[str]] = []
    if rep.rows.empty:
        return header, rows
    table = rep.rows.astype({k: str for k in keys})
    for key, grp in table.groupby(["measurement", *keys], sort=True):
        by_m = grp.set_index("machine")
        row = [str(k) for k in key[1:]]
        for m in machines:
            if m in by_m.index:
                r = by_m.loc[m]
                row += [fmt_value(r["seconds"], "seconds")]
                row += [] if m == rep.baseline else [_x(r["speedup"])]
                row += [fmt_value(r["gbps"], ""),
                        f"{r['pct_copy']:.1f}" if pd.notna(r["pct_copy"]) else "unknown"]
            else:
                row += ["–"] * (3 if m == rep.baseline else 4)
        rows.append(row)
    return header, rows


def speed_table_benchmarks(rep: HardwareReport) -> set[str]:
    """Benchmarks whose values the speed table shows (left out of the other table)."""
    if rep.rows.empty:
        return set()
    from lnbench.report.hardware import SPEED_METHODS

    return {f"{c}.{m}" for c in set(rep.rows["measurement"]) for m in SPEED_METHODS}


def _benchmarks_wide(rep: HardwareReport) -> tuple[list[str], list[list[str]]]:
    """Every other benchmark: per (benchmark, parameters), each machine's value and ×."""
    machines = list(rep.machines["machine"]) if len(rep.machines) else []
    header = ["benchmark", "params", *(["env"] if rep.multi_env else [])]
    for m in machines:
        header += [_machine_header(rep, m)] + ([] if m == rep.baseline else [f"{m} ×"])
    rows: list[list[str]] = []
    shown = rep.benchmarks[~rep.benchmarks["benchmark"].isin(speed_table_benchmarks(rep))]
    if shown.empty:
        return header, rows
    group = ["benchmark", "_p", *(["env"] if rep.multi_env else [])]
    shown = shown.assign(_p=[_params_text(p) for p in shown["params"]])
    full = sorted(set(shown["benchmark"]))
    short = {b: _short_bench(b) for b in full}
    if len(set(short.values())) < len(full):  # same class.method in two modules: full names
        short = {b: b for b in full}
    for key, grp in shown.groupby(group, sort=False):
        by_m = grp.set_index("machine")
        row = [short[key[0]], key[1] or "–", *key[2:]]
        for m in machines:
            if m in by_m.index:
                r = by_m.loc[m]
                row += [fmt_value(r["value"], r["unit"])]
                row += [] if m == rep.baseline else [_x(r["vs_baseline"])]
            else:
                row += ["–"] * (1 if m == rep.baseline else 2)
        rows.append(row)
    return header, rows


def _machines_rows(rep: HardwareReport) -> tuple[list[str], list[list[str]]]:
    header = ["machine", "commit", "date", "env", "cpu", "cores", "gpu", "copy GB/s (cpu)",
              "copy GB/s (cuda)"]
    rows = []
    for r in rep.machines.to_dict("records"):
        def num(x: Any) -> str:
            return f"{float(x):.4g}" if x is not None and pd.notna(x) else "unknown"

        cores = r.get("cpu_cores")
        rows.append([r["machine"], str(r["commit"])[:8], str(r.get("date") or "")[:10],
                     ", ".join(r.get("envs") or []) or "unknown",
                     r.get("cpu_model") or "unknown",
                     str(cores) if cores is not None and pd.notna(cores) else "unknown",
                     r["gpu_name"] if isinstance(r.get("gpu_name"), str) else "none/unknown",
                     num(r.get("copy_gbps_cpu")), num(r.get("copy_gbps_cuda"))])
    return header, rows


def _benchmarks_csv(rep: HardwareReport) -> str:
    """Every benchmark row, parameters as columns (one uniform table for any suite)."""
    flat = rep.benchmarks.drop(columns=["params"])
    cols = ["benchmark", *rep.param_names, "machine", "env", "commit", "value", "unit",
            "higher_is_better", "vs_baseline"]
    return flat.reindex(columns=cols).to_csv(index=False)


def render_hardware(rep: HardwareReport, fmt: str) -> str:
    """The hardware report as ``md``, ``html``, ``json`` or ``csv`` text.

    md/html: the machines, lnbench's speed table where its metrics exist, and every other
    selected benchmark; ``env`` is a column when some series had several environments.
    CSV: every selected benchmark, one row per (benchmark, parameters, machine[, env]).
    """
    if fmt == "json":
        return json.dumps(rep.as_dict(), indent=2, allow_nan=False, default=str) + "\n"
    if fmt == "csv":
        return _benchmarks_csv(rep)
    what = f"commit {rep.commit[:8]}" if rep.commit else "each machine's latest commit"
    intro = (f"Machines side by side at {what}; baseline machine: {rep.baseline or 'none'}. "
             "× = how many times better than the baseline (its time or bytes over this "
             "machine's; this machine's rate over its).")
    speed_intro = ("Time, GB/s and % copy of a row come from one measurement "
                   "(track_seconds, track_gbps, track_pct_copy of "
                   + ", ".join(sorted(set(rep.rows["measurement"])) if len(rep.rows) else [])
                   + "); % copy = share of that machine's copy bandwidth. asv's own timer "
                   "(time_*) is a separate measurement, listed with every other benchmark.")
    mh, mr = _machines_rows(rep)
    th, tr = _hardware_wide(rep)
    bh, br = _benchmarks_wide(rep)
    other = "Every other benchmark" if tr else "Every benchmark"
    notes = rep.notes + [f"unreadable: {e['path']}: {e['reason']}" for e in rep.errors]
    if fmt == "md":
        parts = ["# Hardware comparison", "", intro, "", _md_table(mh, mr), ""]
        if tr:
            parts += ["## Speed", "", speed_intro, "", _md_table(th, tr), ""]
        parts += [f"## {other}", ""]
        parts += [_md_table(bh, br) if br else "No results to compare.", ""]
        parts += [f"- {n}" for n in rep.notes]
        parts += [f"- unreadable: `{e['path']}`: {e['reason']}" for e in rep.errors]
        return "\n".join(parts) + "\n"
    if fmt == "html":
        body = [f"<p>{html.escape(intro)}</p>", _html_table(mh, mr)]
        if tr:
            body += ["<h2>Speed</h2>", f"<p>{html.escape(speed_intro)}</p>",
                     _html_table(th, tr)]
        body += [f"<h2>{other}</h2>",
                 _html_table(bh, br) if br else "<p>No results to compare.</p>"]
        if notes:
            body.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
        return html_page("Hardware comparison", "\n".join(body))
    raise ValueError(f"unknown format {fmt!r}")
