"""``lnbench gpu-check [OUTDIR] ARGS...``: the GPU check (lnbench.gpu; docs/gpu.md), which parses
its arguments itself (``lnbench gpu-check --help``). Listed in ``lnbench --help``; ``app.main``
hands it the arguments unparsed."""

from __future__ import annotations

from typing import Any

NAME = "gpu-check"
RAW = True


def configure(sub: Any) -> None:
    sub.add_parser(NAME, add_help=False,
                   help="on a GPU machine: the GPU tests, then the GPU table over the anchor grid"
                        " judged against the bar (`lnbench gpu-check --help`)")


def run_argv(argv: list[str]) -> int:
    from lnbench.gpu.check import main

    return main(argv, prog="lnbench gpu-check")
