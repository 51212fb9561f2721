"""The ``lnbench`` command line (docs/interface.md). Exit codes: 0 ok, 1 judged failure or found
regression, 2 bad usage or unreadable input (one line on stderr naming the argument or file)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

DESCRIPTION = (
    "Benchmark and judge LayerNorm-backward implementations (dx, dγ, dβ): `check` judges them "
    "element by element against an exact reference (docs/judge.md), `run`/`profile` measure "
    "runtime, memory and bandwidth over a grid of shapes, dtypes and input distributions, "
    "`report` compares results across commits and machines; plugins add implementations "
    "(docs/plugins.md). Exit codes: 0 ok, 1 judged failure or found regression, 2 bad usage "
    "or unreadable input."
)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C


class UsageError(Exception):
    """Bad usage or unreadable input: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        self.exit(EXIT_USAGE, f"lnbench: error: {message}\n")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", action="append", metavar="GLOB", help="implementation id or glob")
    p.add_argument("--dtype", action="append", metavar="D", help="float64|float32|float16|bfloat16")
    p.add_argument("--shape", action="append", metavar="MxN", help="e.g. 4096x1024")
    p.add_argument("--dist", action="append", metavar="NAME",
                   help="normal|offset|constant|outlier|correlated")
    p.add_argument("--plugin", action="append", metavar="FILE.py", help="load a plugin file")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="lnbench", description=DESCRIPTION)
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="implementations and their availability here")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plugin", action="append", metavar="FILE.py")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="judge implementations against the exact reference")
    _filters(p)
    p.add_argument("--grid", choices=["quick", "full", "anchors"], default="quick")
    p.add_argument("--inputs", action="append", metavar="FILE.npz", help="a user case")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    try:
        from lnbench.measure.cli import add_parsers as add_measure
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("lnbench"):
            raise
    else:
        add_measure(sub, _filters)
    try:
        from lnbench.measure.profile_cli import add_parsers as add_profile
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("lnbench"):
            raise
    else:
        add_profile(sub, _filters)
    try:
        from lnbench.report.cli import add_parsers as add_report
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("lnbench"):
            raise
    else:
        add_report(sub)
    # `lnbench nightly ARGS...` hands ARGS to the pipeline's own parser (main() dispatches it
    # before this parser runs); listed here for `lnbench --help`
    sub.add_parser("nightly", add_help=False,
                   help="the nightly job: asv run, publish, dashboard, regression gate with "
                        "triage (as scripts/nightly; `lnbench nightly --help`)")
    return ap


def load_plugins(paths: Sequence[str] | None) -> None:
    from lnbench.plugins import PluginError, load

    for p in paths or []:
        try:
            load(p)
        except PluginError as e:
            raise UsageError(str(e)) from None


def select_impls(patterns: Sequence[str] | None) -> list:
    from lnbench.registry import resolve

    try:
        return resolve(patterns)
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def select_cases(args: argparse.Namespace, grid: str) -> list:
    """Cases from the grid narrowed by --shape/--dtype/--dist, plus --inputs files."""
    from lnbench.grid import cases, load_inputs, parse_shape

    for opt in ("shape", "dtype", "dist"):  # a repeated value is one case, not two
        if getattr(args, opt, None):
            setattr(args, opt, list(dict.fromkeys(getattr(args, opt))))
    try:
        shapes = [parse_shape(s) for s in args.shape] if args.shape else None
        cs = [] if getattr(args, "inputs", None) and not (args.shape or args.dtype or args.dist) \
            else cases(grid, shapes=shapes, dtypes=args.dtype, dists=args.dist)
        datas: list = list(cs)
        for f in getattr(args, "inputs", None) or []:
            try:
                datas.append(load_inputs(f))
            except MemoryError as e:
                from lnbench.judge import error_reason

                raise UsageError(f"--inputs {f}: too large for this machine "
                                 f"({error_reason(e)})") from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    return datas


def cmd_list(args: argparse.Namespace) -> int:
    from lnbench.registry import registry

    load_plugins(args.plugin)
    rows = [impl.describe() for impl in registry().values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.table import Table

    t = Table(title="lnbench implementations")
    for col in ("name", "kind", "array", "device", "dtypes", "affine", "saved", "available"):
        t.add_column(col, no_wrap=col in ("name", "dtypes"))
    for r in rows:
        avail = "[green]yes[/]" if r["available"] else f"[yellow]no[/]: {r['reason']}"
        t.add_row(r["name"], r["kind"], r["array"], r["device"], ",".join(r["dtypes"]),
                  "yes" if r["affine"] else "no", r["saved"], avail)
    console().print(t)
    return EXIT_OK


def run_checks(impls: list, items: list, progress: bool = False) -> list:
    """Judge every implementation on every case (a Case is materialised one at a time)."""
    from lnbench.grid import Case, make_data
    from lnbench.judge import case_error_rows, check_impl, error_reason

    results = []
    it: Any = items
    if progress:
        from tqdm import tqdm

        it = tqdm(items, desc="check", unit="case", leave=False, file=sys.stderr)
    for item in it:
        if isinstance(item, Case) and all(i.unavailable() or i.unsupported(item) for i in impls):
            for impl in impls:  # nothing here would run: no inputs to make (GPU grids on a CPU)
                results.extend(case_error_rows(impl, item, ""))
            continue
        try:
            data = make_data(item) if isinstance(item, Case) else item
        except MemoryError as e:  # inputs too large for this machine: every check says so
            for impl in impls:
                results.extend(case_error_rows(impl, item, f"inputs: {error_reason(e)}"))
            continue
        for impl in impls:
            results.extend(check_impl(impl, data))
        del data
    return results


def cmd_check(args: argparse.Namespace) -> int:
    from lnbench.judge import summarize

    load_plugins(args.plugin)
    impls = select_impls(args.impl)
    items = select_cases(args, args.grid)
    results = run_checks(impls, items, progress=not args.json and sys.stderr.isatty())
    summary = summarize(results)
    if args.json:
        print(json.dumps({"results": [r.to_dict() for r in results], "summary": summary}))
    else:
        print_check(results, summary)
    return EXIT_FAIL if summary["fail"] or summary["error"] else EXIT_OK


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
    for r in bad[:40]:
        con.print(f"[red]{r.status.upper()}[/] {r.impl} {r.case} {r.grad}: {r.reason}",
                  highlight=False)
    if len(bad) > 40:
        con.print(f"... and {len(bad) - 40} more (use --json for all)")
    skipped = {r.impl: r.reason for r in results if r.status == "skipped"}
    for name, why in skipped.items():
        con.print(f"[yellow]skipped[/] {name}: {why}", highlight=False)
    con.print(f"ok {summary['ok']}, fail {summary['fail']}, error {summary['error']}, "
              f"skipped {summary['skipped']}", highlight=False)


def console():
    """A rich console; wide (not 80 columns) when writing to a pipe or file."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _ratio(v: float) -> str:
    return f"[red]{v:.3g}[/]" if v > 1 else f"{v:.3g}"


def _red(n: int) -> str:
    return f"[red]{n}[/]" if n else "0"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["nightly"]:  # the pipeline parses its own arguments
        from lnbench.nightly.pipeline import main as nightly_main

        def run() -> int:
            return nightly_main(argv[1:])
    else:
        args = build_parser().parse_args(argv)
        forced = os.environ.get("LNBENCH_TORCH_DEVICE")
        if forced is not None and forced not in ("cpu", "cuda"):
            print(f"lnbench: error: LNBENCH_TORCH_DEVICE={forced}: must be cpu or cuda",
                  file=sys.stderr)
            return EXIT_USAGE

        def run() -> int:
            return args.func(args)
    try:
        return int(run())
    except UsageError as e:
        print(f"lnbench: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's code for SIGINT, no traceback
        print("lnbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
