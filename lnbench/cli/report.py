"""``lnbench report regressions|hardware|speed|accuracy``: reports over stored results (they
read only; they measure nothing).

* ``regressions``, ``hardware``: over an asv results directory (lnbench.report.regressions,
  lnbench.report.hardware; docs/reports.md).
* ``speed``: the Markdown speed table of a ``lnbench run --out FILE.json`` document, and with
  ``--bar-impl`` the bar's verdict (exit 1 when missed); ``accuracy``: the Markdown accuracy
  table of a ``lnbench check --json`` document (lnbench.report.tables documents both).

Exit codes (docs/interface.md): 0 success; 1 a regression found with ``--fail-on-regression``,
or the speed bar missed; 2 bad usage or unreadable input, with one line on stderr naming the
argument or file. Heavy imports (pandas, matplotlib) happen inside the run functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lnbench.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    UsageError,
    positive_float,
    positive_int,
)

FORMATS = ("md", "html", "json", "csv")
#: the current repository orders the commits when at least this share of them is on it
REPO_MATCH_SHARE = 0.5


def emit(text: str, out: str | None) -> None:
    """Write the report to ``--out`` or stdout (UsageError when ``--out`` cannot be written)."""
    if out is None:
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None


def load(results: str) -> Any:
    """The asv results under ``results`` (UsageError when the directory is unreadable)."""
    from lnbench.report.loader import ResultsDirError, load_results

    try:
        return load_results(results)
    except ResultsDirError as exc:
        raise UsageError(str(exc)) from None


def no_results_message(results: str, loaded: Any) -> str:
    """The one-line exit-2 message when nothing could be read ("" when something could).

    Shared by every command that reads results (``report regressions``, ``report
    hardware``, ``dashboard``), so they agree on what "no readable input" is.
    """
    if loaded.has_results:
        return ""
    root = Path(results)
    if (root / "machine.json").is_file():
        return (f"--results {results}: a machine folder (it has machine.json), not an asv "
                f"results directory: pass the folder above it ({root.resolve().parent})")
    bad = [e for e in loaded.errors if not e.path.endswith("benchmarks.json")]
    if bad:
        return (f"--results {results}: no readable asv results ({len(bad)} unreadable "
                f"file(s), first: {bad[0].path}: {bad[0].reason})")
    return f"--results {results}: no asv result files (<machine>/<commit>-<env>.json) found"


def load_some(results: str) -> Any:
    """:func:`load`, and UsageError when nothing in it is readable."""
    loaded = load(results)
    message = no_results_message(results, loaded)
    if message:
        raise UsageError(message)
    return loaded


def run_regressions(args: argparse.Namespace) -> int:
    """``lnbench report regressions``."""
    from lnbench.report.regressions import regression_report
    from lnbench.report.render import render_regressions

    loaded = load(args.results)
    order_commits(args, loaded)
    doc = regression_report(loaded, include_resolved=args.include_resolved,
                            latest_only=args.latest_only)
    emit(render_regressions(doc, args.format), args.out)
    message = no_results_message(args.results, loaded)
    if message:  # one line on stderr: it names the first unreadable file and counts the rest
        raise UsageError(message)
    if args.format == "csv":  # CSV has no room for errors: they go to stderr
        for e in doc["errors"]:
            print(f"lnbench: warning: unreadable {e['path']}: {e['reason']}", file=sys.stderr)
    if args.fail_on_regression and any(r["open"] for r in doc["regressions"]):
        return EXIT_FAIL
    return EXIT_OK


def order_commits(args: argparse.Namespace, loaded: Any) -> None:
    """Commit order for ``report regressions``: ``--first-parent FILE``, else ``--repo PATH``,
    else the current git repository when at least half of the result commits are on its
    first-parent history, else commit dates. UsageError for an unreadable FILE or a PATH that
    is not a git repository, or that holds none of the result commits."""
    from lnbench.report.loader import (
        apply_first_parent,
        git_first_parent,
        read_first_parent,
        share_on_history,
    )

    if not loaded.has_results:
        return
    if args.first_parent or args.repo:
        what = f"--first-parent {args.first_parent}" if args.first_parent else f"--repo {args.repo}"
        try:
            history = (read_first_parent(args.first_parent) if args.first_parent
                       else git_first_parent(args.repo))
        except ValueError as exc:
            raise UsageError(f"{what}: {exc}") from None
        if share_on_history(loaded, history) == 0:
            raise UsageError(f"{what}: none of the {loaded.frame['commit'].nunique()} result "
                             "commits is on its first-parent history (another project?)")
        apply_first_parent(loaded, history)
        return
    try:
        history = git_first_parent(".")
    except ValueError:
        return  # not in a git repository: commit dates
    if share_on_history(loaded, history) >= REPO_MATCH_SHARE:
        apply_first_parent(loaded, history)


def run_hardware(args: argparse.Namespace) -> int:
    """``lnbench report hardware``."""
    from lnbench.report.hardware import HardwareError, hardware_table
    from lnbench.report.render import render_hardware

    loaded = load_some(args.results)
    try:
        rep = hardware_table(loaded, commit=args.commit, baseline=args.baseline,
                             bench=args.bench)
    except HardwareError as exc:
        raise UsageError(str(exc)) from None
    emit(render_hardware(rep, args.format), args.out)
    return EXIT_OK


def run_speed(args: argparse.Namespace) -> int:
    """``lnbench report speed``: the table, then (``--bar-impl``) the bar's line."""
    from lnbench.report.tables import TableInputError, speed_bar, speed_bar_points, speed_table

    try:
        table = speed_table(args.path, baseline=args.baseline, bar_impl=args.bar_impl)
        print(table.text, end="")
        if args.bar_impl is None:
            return EXIT_OK
        given = {k: v for k, v in (("bar_copy", args.bar_copy),
                                   ("bar_speedup", args.bar_speedup)) if v is not None}
        if args.bar_every_point:  # each bar keeps its own defaults for what is not given
            line, met = speed_bar_points(table, args.bar_impl, args.bar_peer or [args.baseline],
                                         **given)
        else:
            line, met = speed_bar(table, args.bar_impl, **given)
    except TableInputError as e:
        raise UsageError(str(e)) from None
    print(line)
    return EXIT_OK if met else EXIT_FAIL


def run_accuracy(args: argparse.Namespace) -> int:
    """``lnbench report accuracy``."""
    from lnbench.report.tables import TableInputError, accuracy_table

    try:
        print(accuracy_table(args.path, args.grad, args.min_n))
    except TableInputError as e:
        raise UsageError(str(e)) from None
    return EXIT_OK


def results_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, metavar="DIR",
                   help="asv results directory (with benchmarks.json and <machine>/ folders)")


def _regressions_parser(rsub: Any) -> None:
    reg = rsub.add_parser(
        "regressions", help="regressions and improvements across commits",
        description="Find regressions per (machine, benchmark, parameters) across commits: a "
                    "change must persist for 2+ commits (or, at the newest commit, be confirmed "
                    "by its stored samples), exceed 5%% (accuracy: 2x and 1e-6) and stand 4 "
                    "robust standard errors from the level before it. See docs/reports.md.")
    results_arg(reg)
    reg.add_argument("--format", choices=FORMATS, default="md")
    reg.add_argument("--fail-on-regression", action="store_true",
                     help="exit 1 when a regression is still present at the latest commit")
    reg.add_argument("--include-resolved", action="store_true",
                     help="also list changes no longer visible at the latest commit")
    reg.add_argument("--latest-only", action="store_true",
                     help="only series measured at their machine's latest commit (what the "
                          "newest run measured: the nightly gate); older series are left out")
    reg.add_argument("--repo", metavar="PATH",
                     help="git repository of the benchmarked project: commits are ordered by "
                          "its first-parent history and results of commits off it are left "
                          "out (default: the current repository when the result commits are "
                          "on it, else commit dates)")
    reg.add_argument("--first-parent", metavar="FILE",
                     help="the first-parent history as a file, one full hash a line, newest "
                          "first (git rev-list --first-parent main > FILE); wins over --repo")
    reg.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    reg.set_defaults(func=run_regressions)


def _hardware_parser(rsub: Any) -> None:
    hw = rsub.add_parser(
        "hardware", help="machines side by side",
        description="Machines side by side at one commit or each machine's latest: every "
                    "benchmark and parameter set of any asv suite (value, and how many times "
                    "better than a baseline machine), plus lnbench's speed table (time, "
                    "speed-up, GB/s and % of each machine's copy bandwidth, all from one "
                    "measurement). See docs/reports.md.")
    results_arg(hw)
    hw.add_argument("--commit", metavar="C", help="commit hash or prefix (default: latest)")
    hw.add_argument("--baseline", metavar="MACHINE",
                    help="machine the speed-ups are relative to (default: first by name)")
    hw.add_argument("--bench", metavar="REGEX", action="append",
                    help="only benchmarks whose full name matches REGEX (repeatable; default "
                         "every benchmark but the accuracy ones)")
    hw.add_argument("--format", choices=FORMATS, default="md")
    hw.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    hw.set_defaults(func=run_hardware)


def _speed_parser(rsub: Any) -> None:
    sp = rsub.add_parser(
        "speed", help="Markdown speed table of a `lnbench run --out FILE.json`",
        description="Rows: implementations; columns: the measured points (M×N dtype); cells: "
                    "GB/s (%% of the run's measured copy bandwidth), ✗ = failed the judge, ~ = "
                    "noisy. Last columns: geometric means of %% copy and of the speed-up over "
                    "--baseline. --bar-impl judges IMPL against the bar (geometric means over "
                    "points with M·N >= 4Mi; with --bar-every-point, at each such point against "
                    "the fastest --bar-peer there) and exits 1 when it is missed. See "
                    "docs/speed.md.")
    sp.add_argument("path", metavar="FILE.json", help="`lnbench run --out FILE.json` output")
    sp.add_argument("--baseline", default="torch.native", metavar="IMPL",
                    help="speed-ups are over this implementation (default torch.native)")
    sp.add_argument("--bar-impl", metavar="IMPL",
                    help="judge IMPL against the bar; exit 1 when it is missed")
    sp.add_argument("--bar-copy", type=positive_float, default=None, metavar="PCT",
                    help="the bar's %% of copy (default 70 as a geometric mean; 90 at every "
                         "point)")
    sp.add_argument("--bar-speedup", type=positive_float, default=None, metavar="X",
                    help="the bar's speed-up (default 2 over --baseline as a geometric mean; "
                         "1.0 over the fastest --bar-peer at every point)")
    sp.add_argument("--bar-every-point", action="store_true",
                    help="judge the bar at every point with M·N >= 4Mi instead of on geometric "
                         "means (the CPU bar of docs/peers.md)")
    sp.add_argument("--bar-peer", action="append", metavar="IMPL",
                    help="with --bar-every-point: a peer to beat (repeatable; default "
                         "--baseline); at each point the fastest of them counts")
    sp.set_defaults(func=run_speed)


def _accuracy_parser(rsub: Any) -> None:
    from lnbench.judge import GRADS

    ac = rsub.add_parser(
        "accuracy", help="Markdown accuracy table of a `lnbench check --json`",
        description="Rows: implementations; columns: distribution × dtype; cell: worst rel_err "
                    "of GRAD over the shapes with N >= MIN_N; ✗ a judged failure (✗ dtype: a "
                    "gradient in the wrong dtype), error: raised or ran out of memory, –: not "
                    "checked here.")
    ac.add_argument("path", metavar="FILE.json", help="`lnbench check --json` output")
    ac.add_argument("grad", metavar="GRAD", nargs="?", default="dx", choices=GRADS,
                    help="gradient whose rel_err fills the cells: dx (default), dgamma, dbeta")
    ac.add_argument("min_n", metavar="MIN_N", nargs="?", default=1, type=positive_int,
                    help="leave out shapes with N below this (default 1)")
    ac.set_defaults(func=run_accuracy)


def configure(sub: Any) -> None:
    """Add ``report`` (regressions, hardware, speed, accuracy) to the subparsers."""
    report = sub.add_parser(
        "report", help="reports over stored results (asv, lnbench run, lnbench check)",
        description="Reports over stored results (reads only; measures nothing).")
    rsub = report.add_subparsers(dest="report_command",
                                 metavar="{regressions,hardware,speed,accuracy}")
    rsub.required = True
    for add in (_regressions_parser, _hardware_parser, _speed_parser, _accuracy_parser):
        add(rsub)
