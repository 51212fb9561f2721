"""``lnbench run``: runtime, memory, GB/s, % of copy bandwidth and error over the grid
(lnbench.measure.run measures; this module checks the options, shows and writes the records).

The implementations of a case are timed interleaved, and every point carries the interference
measured over its sampling window (load and steal in cores, copy bandwidth before and after,
spread of the samples: lnbench.measure.interference). A point still disturbed after
``--retries`` re-measurements has status ``noisy`` and its reason; it is shown, written, and never
a judged failure: the exit status is 1 only for ``fail`` or ``error`` points (interface), never
for ``noisy`` ones. The table ends with one summary line explaining the exit code.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

from lnbench.cli import common
from lnbench.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    UsageError,
    add_filters,
    console,
    load_plugins,
    nbytes,
    number,
    seconds,
    select_cases,
    select_impls,
    shorten,
    steady_heap,
    summary_line,
)

STATUSES = ("ok", "noisy", "fail", "error", "skipped")


def configure(sub: Any) -> None:
    p = sub.add_parser("run", help="measure runtime, memory, bandwidth and error")
    p.add_argument("--quick", action="store_true", help="the quick grid (default: full)")
    p.add_argument("--grid", choices=["quick", "full", "anchors"], help="grid by name")
    add_filters(p)
    p.add_argument("--out", metavar="FILE.json|FILE.csv", help="write the records")
    p.add_argument("--repeat", type=int, default=7, help="timing samples per point (default 7)")
    p.add_argument("--max-time", type=float, default=2.0, help="seconds per point at most")
    p.add_argument("--no-memory", action="store_true", help="skip the workspace measurement")
    p.add_argument("--retries", type=int, default=None, metavar="N",
                   help="re-measurements of a case measured under interference before its "
                        "points are stored as noisy (default 2)")
    p.set_defaults(func=run)


def check_out(out: str | None) -> None:
    """``--out`` checked before measuring anything: a run must not be lost to a bad path."""
    if not out:
        return
    if not out.endswith((".json", ".csv")):
        raise UsageError(f"--out {out}: must end in .json or .csv")
    path, parent = Path(out), Path(out).parent
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK) or (
            path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--out {out}: cannot write there "
                         + ("(a directory)" if path.is_dir() else
                            f"(no writable directory {parent})" if not path.exists() else
                            "(not writable)"))


def _check_options(args: argparse.Namespace) -> None:
    check_out(args.out)
    if args.quick and args.grid and args.grid != "quick":
        raise UsageError(f"--quick and --grid {args.grid}: give one of them")
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be at least 1")
    if args.retries is not None and args.retries < 0:
        raise UsageError(f"--retries {args.retries}: must be 0 or more")


def run(args: argparse.Namespace) -> int:
    from lnbench.measure import run as measure_run
    from lnbench.measure.machine import facts

    steady_heap()
    _check_options(args)
    load_plugins(args.plugin)
    impls = select_impls(args.impl)
    grid = args.grid or ("quick" if args.quick else "full")
    if not args.dist:
        args.dist = ["normal"]  # timing: one distribution unless asked; `check` judges all
    items = select_cases(args, grid)
    bar = common.progress(len(items) * len(impls), "run", "pt")
    try:
        records = measure_run.run(impls, items, repeat=args.repeat, max_time=args.max_time,
                                  memory=not args.no_memory, retries=args.retries,
                                  on_record=(lambda r: bar.update(1)) if bar else None)
    finally:
        if bar:
            bar.close()
    rows = [r.to_dict() for r in records]
    print_run(rows)  # first: the table survives a write that fails after all
    if args.out:
        try:
            write_records(args.out, rows, facts())
        except OSError as e:
            raise UsageError(f"--out {args.out}: cannot write ({e.strerror})") from None
    code = EXIT_FAIL if any(r["status"] in ("fail", "error") for r in rows) else EXIT_OK
    print(run_summary(rows, code))
    return code


def run_summary(rows: list[dict[str, Any]], code: int) -> str:
    """``run: ok N, noisy N, fail N, error N, skipped N — exit C: why; skipped: reason ×n``."""
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    if code:
        why = " and ".join(f"{counts[s]} {s} point(s)" for s in ("fail", "error") if counts[s])
    elif counts["ok"] or counts["noisy"]:
        why = "every measured point passed the judge" + (
            " (noisy points are measurements, not failures)" if counts["noisy"] else "")
    else:
        why = "nothing was measured (no point ran here)"
    return summary_line("run", counts, code, why,
                        [r["reason"] for r in rows if r["status"] == "skipped"])


def write_records(path: str, rows: list[dict[str, Any]], machine: dict[str, Any]) -> None:
    p = Path(path)
    if p.suffix == ".csv":
        cols = [k for k in rows[0] if k != "extra"] if rows else []
        with p.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    else:
        p.write_text(json.dumps({"machine": machine, "records": rows}, indent=1) + "\n")


def _status(r: dict[str, Any]) -> str:
    if r["status"] == "ok":
        return "ok"
    color = "yellow" if r["status"] == "noisy" else "red"
    return f"[{color}]{r['status']}[/]: {shorten(r['reason'], 60)}"


def print_run(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    con = console()
    t = Table(title="lnbench run (median per call; GB/s from 3·M·N·elt + 8·M + 3·N·elt bytes)")
    cols = ("impl", "case", "time", "GB/s", "% copy", "workspace", "rel_err dx", "dγ", "dβ",
            "load", "spread", "status")
    for c in cols:
        t.add_column(c, justify="left" if c in ("impl", "case", "status") else "right",
                     no_wrap=c in ("impl", "case"))
    skipped: dict[str, str] = {}
    for r in rows:
        if r["status"] == "skipped":
            skipped.setdefault(r["impl"], r["reason"])
            continue
        t.add_row(r["impl"], r["case"], seconds(r["seconds"]), number(r["gbps"], ".2f"),
                  number(r["pct_copy"], ".0f"), nbytes(r["workspace_bytes"]),
                  number(r["rel_err_dx"], ".1e"), number(r["rel_err_dgamma"], ".1e"),
                  number(r["rel_err_dbeta"], ".1e"), number(r.get("load"), ".2f"),
                  number(r.get("spread"), ".2f"), _status(r))
    con.print(t)
    noisy = [r for r in rows if r["status"] == "noisy"]
    if noisy:
        con.print(f"[yellow]noisy[/] {len(noisy)} point(s): measured under interference "
                  f"{noisy[0]['attempts']} time(s) (load = other processes' CPU in cores; "
                  "spread = IQR/median); first: "
                  f"{noisy[0]['impl']} {noisy[0]['case']}: {noisy[0]['reason']}",
                  highlight=False)
    for name, why in skipped.items():
        con.print(f"[yellow]skipped[/] {name}: {shorten(why, 160)}", highlight=False)
