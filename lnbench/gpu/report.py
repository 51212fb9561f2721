"""The GPU check's report from the workers' rows: ``gpu-check.json`` and ``gpu-check.md``, the
last lines of the log, and the exit status (:mod:`lnbench.gpu.check` lists the codes)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lnbench.gpu import rows
from lnbench.gpu.bar import summarize
from lnbench.gpu.preflight import log
from lnbench.gpu.sweep import sweep_table
from lnbench.gpu.workers import Outcome


def nothing_measured(report: dict[str, Any], res: Outcome) -> str | None:
    if any(p["status"] != "skipped" for p in report["points"]):
        return None
    return ("the time budget was spent before the benchmark started" if not res.workers
            else "the worker crashed before any point" if res.unresolved
            else "every point was skipped (the reasons are under Skipped)" if report["points"]
            else "no point to measure")


def collect(args: argparse.Namespace, out: Path, report: dict[str, Any], res: Outcome) -> None:
    """The rows into the report: device, copy, the last row of every point, the summary."""
    from lnbench.grid import ANCHOR_SHAPES, parse_shape

    all_rows = rows.read_rows(out / rows.JSONL)
    report["plugin_errors"] = [r["reason"] for r in all_rows if r.get("type") == "plugin_error"]
    report["device"] = next((r for r in all_rows if r.get("type") == "device"), None)
    report["copy_gbps"] = next((r["gbps"] for r in all_rows if r.get("type") == "copy"), None)
    report["worker_crashes"] = res.outside
    report["worker_failure"] = res.unresolved
    last = {(r["impl"], r["case"]): r for r in all_rows if r.get("type") == "point"}
    report["points"] = list(last.values())
    report["shapes"] = ([list(parse_shape(s)) for s in args.shape] if args.shape
                        else [list(s) for s in ANCHOR_SHAPES])
    if why := nothing_measured(report, res):
        report["nothing_measured"] = why
        log(f"nothing measured: {why}")
    report["summary"] = summarize(report["points"])
    if res.unresolved:  # the points the worker never reached have no row: the comparison is partial
        for s in report["summary"].values():
            s["meets_bar"] = False
    report["sweep"] = [r for r in all_rows if r.get("type") == "sweep"]
    report["sweep_best"] = sweep_table(report["sweep"])
    report["sweep_notes"] = [r["reason"] for r in all_rows if r.get("type") == "sweep_note"]


def exit_status(report: dict[str, Any], res: Outcome) -> int:
    """1 when a measured implementation failed the judge or raised, or the worker kept crashing
    outside any point (the last line names which); else 0."""
    bad = sorted({p["impl"] for p in report["points"] if p["status"] in ("fail", "error")})
    why = []
    if res.unresolved:
        n = sum(c["reason"] == res.unresolved["reason"] for c in res.outside)
        why.append(f"the worker crashed outside any point ({n}x, exit {res.unresolved['rc']}): "
                   f"{res.unresolved['reason']}")
    if bad:
        why.append(f"failed the judge or raised: {', '.join(bad)}")
    if why:
        log("exit 1: " + "; ".join(why))
        return 1
    return 0


def finish(args: argparse.Namespace, out: Path, report: dict[str, Any], res: Outcome,
           t0: float) -> int:
    from lnbench.gpu.markdown import render

    collect(args, out, report, res)
    report["wall_s"] = time.time() - t0
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu-check.md").write_text(render(report))
    log(f"wrote {out / 'gpu-check.md'} and gpu-check.json ({report['wall_s']:.0f} s)")
    for name, s in report["summary"].items():
        gm = s["geomean_pct_copy"]
        log(f"{name}: geomean {gm:.1f}% of copy, below best peer at {len(s['below_best_peer'])}"
            f" point(s), meets bar: {s['meets_bar']}" if gm is not None
            else f"{name}: no successful point")
    return exit_status(report, res)
