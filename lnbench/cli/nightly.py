"""``lnbench nightly ARGS...``: the nightly job (lnbench.nightly.pipeline parses ARGS itself;
docs/nightly.md). Listed in ``lnbench --help``; ``app.main`` hands it the arguments unparsed."""

from __future__ import annotations

from typing import Any

NAME = "nightly"
RAW = True


def configure(sub: Any) -> None:
    sub.add_parser(NAME, add_help=False,
                   help="the nightly job: asv run, publish, dashboard, regression gate with "
                        "triage (as scripts/nightly; `lnbench nightly --help`)")


def run_argv(argv: list[str]) -> int:
    from lnbench.nightly.pipeline import main

    return main(argv)
