"""Command line: ``lnbench report regressions|hardware`` and ``lnbench dashboard``.

``add_parsers(subparsers)`` adds the commands to the main ``lnbench`` parser; every leaf
parser sets ``func`` (``args -> exit code``). ``python -m lnbench.report.cli ...`` runs the
same commands standalone. Exit codes (docs/interface.md): 0 success; 1 a regression found with
``--fail-on-regression``; 2 bad usage or unreadable input, with a one-line message on stderr
naming the argument or file.

Heavy imports (pandas, matplotlib) happen inside the command functions, so building the
parser stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMATS = ("md", "html", "json", "csv")


def _fail(message: str) -> int:
    print(f"lnbench: error: {message}", file=sys.stderr)
    return 2


def _emit(text: str, out: str | None) -> int:
    """Write the report to ``--out`` or stdout; 2 when ``--out`` cannot be written."""
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        return _fail(f"--out {out}: cannot write: {exc.strerror or exc}")
    return 0


def _load(results: str) -> tuple[Any, int]:
    from lnbench.report.loader import ResultsDirError, load_results

    try:
        return load_results(results), 0
    except ResultsDirError as exc:
        return None, _fail(str(exc))


def _no_results_message(results: str, loaded: Any) -> str:
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


def cmd_regressions(args: argparse.Namespace) -> int:
    """``lnbench report regressions``."""
    from lnbench.report.regressions import regression_report
    from lnbench.report.render import render_regressions

    loaded, rc = _load(args.results)
    if loaded is None:
        return rc
    rc = _order_commits(args, loaded)
    if rc:
        return rc
    doc = regression_report(loaded, include_resolved=args.include_resolved,
                            latest_only=args.latest_only)
    rc = _emit(render_regressions(doc, args.format), args.out)
    if rc:
        return rc
    message = _no_results_message(args.results, loaded)
    if message:  # one line on stderr: it names the first unreadable file and counts the rest
        return _fail(message)
    if args.format == "csv":  # CSV has no room for errors: they go to stderr
        for e in doc["errors"]:
            print(f"lnbench: warning: unreadable {e['path']}: {e['reason']}", file=sys.stderr)
    if args.fail_on_regression and any(r["open"] for r in doc["regressions"]):
        return 1
    return 0


#: the current repository orders the commits when at least this share of them is on it
REPO_MATCH_SHARE = 0.5


def _order_commits(args: argparse.Namespace, loaded: Any) -> int:
    """Commit order for ``report regressions``: ``--first-parent FILE``, else ``--repo PATH``,
    else the current git repository when at least half of the result commits are on its
    first-parent history, else commit dates. 2 (with one line) for an unreadable FILE or a
    PATH that is not a git repository, or that holds none of the result commits."""
    from lnbench.report.loader import (
        apply_first_parent,
        git_first_parent,
        read_first_parent,
        share_on_history,
    )

    if not loaded.has_results:
        return 0
    if args.first_parent or args.repo:
        what = f"--first-parent {args.first_parent}" if args.first_parent else f"--repo {args.repo}"
        try:
            history = (read_first_parent(args.first_parent) if args.first_parent
                       else git_first_parent(args.repo))
        except ValueError as exc:
            return _fail(f"{what}: {exc}")
        if share_on_history(loaded, history) == 0:
            return _fail(f"{what}: none of the {loaded.frame['commit'].nunique()} result "
                         "commits is on its first-parent history (another project?)")
        apply_first_parent(loaded, history)
        return 0
    try:
        history = git_first_parent(".")
    except ValueError:
        return 0  # not in a git repository: commit dates
    if share_on_history(loaded, history) >= REPO_MATCH_SHARE:
        apply_first_parent(loaded, history)
    return 0


def cmd_hardware(args: argparse.Namespace) -> int:
    """``lnbench report hardware``."""
    from lnbench.report.hardware import HardwareError, hardware_table
    from lnbench.report.render import render_hardware

    loaded, rc = _load(args.results)
    if loaded is None:
        return rc
    message = _no_results_message(args.results, loaded)
    if message:
        return _fail(message)
    try:
        rep = hardware_table(loaded, commit=args.commit, baseline=args.baseline,
                             bench=args.bench)
    except HardwareError as exc:
        return _fail(str(exc))
    return _emit(render_hardware(rep, args.format), args.out)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``lnbench dashboard``."""
    from lnbench.report.dashboard import build_dashboard

    if args.top < 1:
        return _fail(f"--top {args.top}: must be 1 or more")
    loaded, rc = _load(args.results)
    if loaded is None:
        return rc
    message = _no_results_message(args.results, loaded)
    if message:  # like the reports: nothing readable is exit 2, and no site is written
        return _fail(message)
    try:
        index = build_dashboard(args.results, args.out, asv_html=args.asv_html, top=args.top,
                                loaded=loaded)
    except OSError as exc:
        return _fail(f"--out {args.out}: cannot write: {exc.strerror or exc}")
    print(f"wrote {index}")
    return 0


def _results_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, metavar="DIR",
                   help="asv results directory (with benchmarks.json and <machine>/ folders)")


def add_parsers(subparsers: Any) -> None:
    """Add ``report`` (with ``regressions`` and ``hardware``) and ``dashboard`` to an
    ``argparse`` subparsers object; each leaf sets ``func`` returning the exit code."""
    report = subparsers.add_parser(
        "report", help="reports over stored asv results",
        description="Reports over stored asv results (reads only; measures nothing).")
    rsub = report.add_subparsers(dest="report_command", metavar="{regressions,hardware}")
    rsub.required = True

    reg = rsub.add_parser(
        "regressions", help="regressions and improvements across commits",
        description="Find regressions per (machine, benchmark, parameters) across commits: a "
                    "change must persist for 2+ commits (or, at the newest commit, be confirmed "
                    "by its stored samples), exceed 5%% (accuracy: 2x and 1e-6) and stand 4 "
                    "robust standard errors from the level before it. See docs/reports.md.")
    _results_arg(reg)
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
    reg.set_defaults(func=cmd_regressions)

    hw = rsub.add_parser(
        "hardware", help="machines side by side",
        description="Machines side by side at one commit or each machine's latest: every "
                    "benchmark and parameter set of any asv suite (value, and how many times "
                    "better than a baseline machine), plus lnbench's speed table (time, "
                    "speed-up, GB/s and % of each machine's copy bandwidth, all from one "
                    "measurement). See docs/reports.md.")
    _results_arg(hw)
    hw.add_argument("--commit", metavar="C", help="commit hash or prefix (default: latest)")
    hw.add_argument("--baseline", metavar="MACHINE",
                    help="machine the speed-ups are relative to (default: first by name)")
    hw.add_argument("--bench", metavar="REGEX", action="append",
                    help="only benchmarks whose full name matches REGEX (repeatable; default "
                         "every benchmark but the accuracy ones)")
    hw.add_argument("--format", choices=FORMATS, default="md")
    hw.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    hw.set_defaults(func=cmd_hardware)

    dash = subparsers.add_parser(
        "dashboard", help="static HTML dashboard with plots",
        description="Write a static HTML site (index.html + PNGs) from stored asv results.")
    _results_arg(dash)
    dash.add_argument("--out", required=True, metavar="DIR", help="output folder")
    dash.add_argument("--asv-html", default="../html/index.html", metavar="URL",
                      help="link to the asv publish site (default: ../html/index.html)")
    dash.add_argument("--top", type=int, default=12, metavar="N",
                      help="series per history plot, 1 or more (default 12)")
    dash.set_defaults(func=cmd_dashboard)


class _OneLineParser(argparse.ArgumentParser):
    """argparse's usage errors as one line on stderr, exit 2 (standalone use only)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"lnbench: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point with the same commands as ``lnbench``."""
    parser = _OneLineParser(prog="lnbench", description="lnbench reports")
    sub = parser.add_subparsers(dest="command", metavar="{report,dashboard}",
                                parser_class=_OneLineParser)
    sub.required = True
    add_parsers(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
