"""``python -m lnbench.nightly run ARGS...`` (the pipeline, as ``scripts/nightly``) and
``python -m lnbench.nightly triage ARGS...`` (the gate's triage step). Exit 2 with one line for
an unknown command."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "triage"):
        print("nightly: error: expected a command: run | triage", file=sys.stderr)
        return 2
    if argv[0] == "run":
        from lnbench.nightly.pipeline import main as run_main

        return run_main(argv[1:])
    from lnbench.nightly.triage import main as triage_main

    return triage_main(argv[1:])


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
