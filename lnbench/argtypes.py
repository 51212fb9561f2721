"""What every argument parser of lnbench shares, written once (standard library only, so that
the nightly job, the report benchmark and the CLI, at any floor of the package, can use it):
the parser whose usage errors are one line and exit 2, and the positive-number argument types.
"""

from __future__ import annotations

import argparse

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, ``<error_name>: error: <message>``
    (whitespace folded), and exit 2. Subclasses set ``error_name``."""

    error_name = "lnbench"

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.error_name}: error: {' '.join(str(message).split())}\n")


def positive_float(value: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: expected a positive number")
    return x


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a positive integer")
    return n
