"""``lnbench run``: runtime, memory, GB/s, % of copy bandwidth and error over the grid.

The implementations of a case are timed interleaved, and every point carries the interference
measured over its sampling window (load and steal in cores, copy bandwidth before and after,
spread of the samples: lnbench.measure.interference). A point still disturbed after
``--retries`` re-measurements has status ``noisy`` and its reason; it is shown, written, and never
a judged failure: the exit status is 1 only for ``fail`` or ``error`` points (interface), never
for ``noisy`` ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_parsers(sub: Any, filters: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("run", help="measure runtime, memory, bandwidth and error")
    p.add_argument("--quick", action="store_true", help="the quick grid (default: full)")
    p.add_argument("--grid", choices=["quick", "full", "anchors"], help="grid by name")
    filters(p)
    p.add_argument("--out", metavar="FILE.json|FILE.csv", help="write the records")
    p.add_argument("--repeat", type=int, default=7, help="timing samples per point (default 7)")
    p.add_argument("--max-time", type=float, default=2.0, help="seconds per point at most")
    p.add_argument("--no-memory", action="store_true", help="skip the workspace measurement")
    p.add_argument("--retries", type=int, default=None, metavar="N",
                   help="re-measurements of a case measured under interference before its "
                        "points are stored as noisy (default 2)")
    p.set_defaults(func=cmd_run)


def steady_heap(usage_error: type[Exception]) -> None:
    """The heap policy (lnbench.measure.heap) before anything allocates or starts threads."""
    from lnbench.measure import heap

    try:
        heap.steady()
    except ValueError as e:
        raise usage_error(str(e)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from lnbench.cli import EXIT_FAIL, EXIT_OK, UsageError, load_plugins, select_cases, select_impls
    from lnbench.measure.machine import facts
    from lnbench.measure.run import run

    steady_heap(UsageError)
    if args.out and not args.out.endswith((".json", ".csv")):
        raise UsageError(f"--out {args.out}: must end in .json or .csv")
    if args.out:  # before measuring anything: a run must not be lost to a bad path at the end
        out, parent = Path(args.out), Path(args.out).parent
        if out.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK) or (
                out.exists() and not os.access(out, os.W_OK)):
            raise UsageError(f"--out {args.out}: cannot write there "
                             + ("(a directory)" if out.is_dir() else
                                f"(no writable directory {parent})" if not out.exists() else
                                "(not writable)"))
    if args.quick and args.grid and args.grid != "quick":
        raise UsageError(f"--quick and --grid {args.grid}: give one of them")
    if args.repeat < 1:
        raise UsageError(f"--repeat {args.repeat}: must be at least 1")
    if args.retries is not None and args.retries < 0:
        raise UsageError(f"--retries {args.retries}: must be 0 or more")
    load_plugins(args.plugin)
    impls = select_impls(args.impl)
    grid = args.grid or ("quick" if args.quick else "full")
    if not args.dist:
        args.dist = ["normal"]  # timing: one distribution unless asked; `check` judges all
    items = select_cases(args, grid)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(items) * len(impls), desc="run", unit="pt", file=sys.stderr)
    records = run(impls, items, repeat=args.repeat, max_time=args.max_time,
                  memory=not args.no_memory, retries=args.retries,
                  on_record=(lambda r: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    rows = [r.to_dict() for r in records]
    print_run(rows)  # first: the table survives a write that fails after all
    if args.out:
        try:
            write_records(args.out, rows, facts())
        except OSError as e:
            raise UsageError(f"--out {args.out}: cannot write ({e.strerror})") from None
    return EXIT_FAIL if any(r["status"] in ("fail", "error") for r in rows) else EXIT_OK


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


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def print_run(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from lnbench.cli import console

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
        s = r["seconds"]
        t.add_row(
            r["impl"], r["case"],
            "–" if s is None else (f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"),
            _fmt(r["gbps"], ".2f"), _fmt(r["pct_copy"], ".0f"),
            "–" if r["workspace_bytes"] is None else _bytes(r["workspace_bytes"]),
            _fmt(r["rel_err_dx"], ".1e"), _fmt(r["rel_err_dgamma"], ".1e"),
            _fmt(r["rel_err_dbeta"], ".1e"), _fmt(r.get("load"), ".2f"),
            _fmt(r.get("spread"), ".2f"),
            r["status"] if r["status"] == "ok" else
            f"[yellow]noisy[/]: {r['reason'][:60]}" if r["status"] == "noisy" else
            f"[red]{r['status']}[/]: {r['reason'][:60]}",
        )
    con.print(t)
    noisy = [r for r in rows if r["status"] == "noisy"]
    if noisy:
        con.print(f"[yellow]noisy[/] {len(noisy)} point(s): measured under interference "
                  f"{noisy[0]['attempts']} time(s) (load = other processes' CPU in cores; "
                  "spread = IQR/median); first: "
                  f"{noisy[0]['impl']} {noisy[0]['case']}: {noisy[0]['reason']}",
                  highlight=False)
    for name, why in skipped.items():
        con.print(f"[yellow]skipped[/] {name}: {why}", highlight=False)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
