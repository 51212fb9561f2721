"""Former home of ``lnbench report ...`` and ``lnbench dashboard``: they live in
lnbench.cli.report and lnbench.cli.dashboard now. This module keeps the old import paths
(``add_parsers``, ``main``) and ``python -m lnbench.report.cli ...`` working; nothing in the
package imports it."""

from __future__ import annotations

import sys
from typing import Any

from lnbench.cli import main as _lnbench_main


def add_parsers(subparsers: Any) -> None:
    """Add ``report`` and ``dashboard`` to a host CLI's ``argparse`` subparsers."""
    from lnbench.cli import dashboard, report

    report.configure(subparsers)
    dashboard.configure(subparsers)


def main(argv: list[str] | None = None) -> int:
    """``lnbench`` itself (report and dashboard are two of its commands)."""
    return _lnbench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
