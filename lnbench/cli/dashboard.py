"""``lnbench dashboard``: a static HTML site (index.html + PNGs) from stored asv results
(lnbench.report.dashboard builds it)."""

from __future__ import annotations

import argparse
from typing import Any

from lnbench.cli.common import EXIT_OK, UsageError
from lnbench.cli.report import load_some, results_arg


def configure(sub: Any) -> None:
    dash = sub.add_parser(
        "dashboard", help="static HTML dashboard with plots",
        description="Write a static HTML site (index.html + PNGs) from stored asv results.")
    results_arg(dash)
    dash.add_argument("--out", required=True, metavar="DIR", help="output folder")
    dash.add_argument("--asv-html", default="../html/index.html", metavar="URL",
                      help="link to the asv publish site (default: ../html/index.html)")
    dash.add_argument("--top", type=int, default=12, metavar="N",
                      help="series per history plot, 1 or more (default 12)")
    dash.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lnbench.report.dashboard import build_dashboard

    if args.top < 1:
        raise UsageError(f"--top {args.top}: must be 1 or more")
    loaded = load_some(args.results)  # nothing readable is exit 2, and no site is written
    try:
        index = build_dashboard(args.results, args.out, asv_html=args.asv_html, top=args.top,
                                loaded=loaded)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {index}")
    return EXIT_OK
