"""``lnbench check``: judge implementations element by element against the exact reference
(docs/judge.md) over a grid of cases and user ``--inputs`` files; exit 1 on any ``fail`` or
``error``. The table (or ``--json``) is followed by one summary line explaining the exit code
(on stderr with ``--json``, so stdout stays one JSON document)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from lnbench.cli import common
from lnbench.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    add_filters,
    console,
    load_plugins,
    select_cases,
    select_impls,
    shorten,
    summary_line,
)

#: failing checks listed one per line under the table (the rest: --json)
SHOW_BAD = 40


def configure(sub: Any) -> None:
    p = sub.add_parser("check", help="judge implementations against the exact reference")
    add_filters(p)
    p.add_argument("--grid", choices=["quick", "full", "anchors"], default="quick")
    p.add_argument("--inputs", action="append", metavar="FILE.npz", help="a user case")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run_checks(impls: Sequence[Any], items: Sequence[Any], progress: bool = False) -> list:
    """Judge every implementation on every case (lnbench.caseloop: inputs made once per case,
    a fault costs only its point): the GradResults, per case and implementation in order."""
    from lnbench.caseloop import run_cases
    from lnbench.judge import case_error_rows, check_impl

    bar = common.progress(len(items), "check", "case") if progress else None
    try:
        return run_cases(
            impls, items,
            per_case=lambda imps, data: [r for i in imps for r in check_impl(i, data)],
            without_inputs=lambda impl, case, _skip, why: case_error_rows(impl, case, why),
            on_case=(lambda _rows: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def run(args: argparse.Namespace) -> int:
    from lnbench.judge import summarize

    load_plugins(args.plugin)
    impls = select_impls(args.impl)
    items = select_cases(args, args.grid)
    results = run_checks(impls, items, progress=not args.json)
    summary = summarize(results)
    code = EXIT_FAIL if summary["fail"] or summary["error"] else EXIT_OK
    line = check_summary(results, summary, code)
    if args.json:
        print(json.dumps({"results": [r.to_dict() for r in results], "summary": summary}))
        print(line, file=sys.stderr)
    else:
        print_check(results, summary)
        print(line)
    return code


def check_summary(results: list, summary: dict[str, Any], code: int) -> str:
    """``check: ok N, fail N, error N, skipped N — exit C: why; skipped: reason ×n``."""
    fail, err = summary["fail"], summary["error"]
    if code:
        why = " and ".join(p for p in (f"{fail} judged failure(s)" if fail else "",
                                       f"{err} error(s)" if err else "") if p)
    elif summary["ok"]:
        why = "every judged check passed"
    else:
        why = "nothing was judged (no check ran here)"
    counts = {s: summary[s] for s in ("ok", "fail", "error", "skipped")}
    return summary_line("check", counts, code, why,
                        [r.reason for r in results if r.status == "skipped"])


def print_check(results: list, summary: dict[str, Any]) -> None:
    from rich.table import Table

    con = console()
    t = Table(title=f"lnbench check: {summary['total']} gradient checks",
              caption="err/bound: worst error over its element's bound (pass <= 1); "
                      "rel_err: worst max|got−ref|/max|ref| over cases with N >= 64")
    for col in ("impl", "ok", "fail", "error", "skipped", "err/bound dx", "dγ", "dβ",
                "rel_err dx", "dγ ", "dβ "):
        t.add_column(col, justify="right" if col != "impl" else "left", no_wrap=True)
    for name, d in summary["impls"].items():
        w, q = d.get("worst_err_ratio", {}), d.get("worst_rel_err_n64", {})
        t.add_row(name, str(d["ok"]), _red(d["fail"]), _red(d["error"]), str(d["skipped"]),
                  *(_ratio(w[g]) if g in w else "–" for g in ("dx", "dgamma", "dbeta")),
                  *(f"{q[g]:.2e}" if g in q else "–" for g in ("dx", "dgamma", "dbeta")))
    con.print(t)
    bad = [r for r in results if r.status in ("fail", "error")]
    for r in bad[:SHOW_BAD]:
        con.print(f"[red]{r.status.upper()}[/] {r.impl} {r.case} {r.grad}: {r.reason}",
                  highlight=False)
    if len(bad) > SHOW_BAD:
        con.print(f"... and {len(bad) - SHOW_BAD} more (use --json for all)")
    skipped = {r.impl: r.reason for r in results if r.status == "skipped"}
    for name, why in skipped.items():
        con.print(f"[yellow]skipped[/] {name}: {shorten(why, 160)}", highlight=False)


def _ratio(v: float) -> str:
    return f"[red]{v:.3g}[/]" if v > 1 else f"{v:.3g}"


def _red(n: int) -> str:
    return f"[red]{n}[/]" if n else "0"
