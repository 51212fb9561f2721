"""The ``lnbench`` command line (docs/interface.md): one module per command, one shared module.

Layout (imports go down only: ``app`` → command modules → ``common`` → the library; nothing
below ``lnbench.cli`` imports it, and ``measure/``, ``report/`` never format for the console
of a command)::

    lnbench/cli/
        __init__.py   main() and this pattern
        app.py        the parser, the command list (COMMANDS), main(): errors, Ctrl-C, pipes
        common.py     exit codes, UsageError and the one-line error, the case filters,
                      selection of implementations and cases, console, times/bytes/reasons
        listing.py    lnbench list
        check.py      lnbench check
        run.py        lnbench run
        profile.py    lnbench profile
        report.py     lnbench report regressions|hardware|speed|accuracy
        dashboard.py  lnbench dashboard
        nightly.py    lnbench nightly (hands its arguments to lnbench.nightly.pipeline)
        gpu_check.py  lnbench gpu-check (when present)

**Adding a command.** Write ``lnbench/cli/<name>.py`` exposing

* ``configure(subparsers) -> None``: add the command's parser(s) with
  ``subparsers.add_parser(...)`` (the parser class is :class:`common.Parser`, so usage errors
  are already the one line and exit 2) and ``p.set_defaults(func=run)``;
* ``run(args: argparse.Namespace) -> int``: do the work and return the exit code (``common``'s
  ``EXIT_OK``/``EXIT_FAIL``); raise ``common.UsageError("--flag value: why")`` for bad usage or
  unreadable input — ``app.main`` prints it as ``lnbench: error: ...`` and exits 2, turns
  Ctrl-C into exit 130 with one line, and a closed stdout pipe into exit 0;
* optionally ``RAW = True`` with ``run_argv(argv: list[str]) -> int`` for a command that
  parses its own arguments (``nightly``): ``app.main`` hands it everything after its name.

and add the module's name to ``COMMANDS`` in ``app.py`` (``gpu_check`` is listed already: a
listed module that does not exist yet is left out of the parser, nothing else changes).
Import heavy libraries (pandas, torch, rich) inside ``run``, so ``lnbench --help`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``lnbench ARGS``: the exit code (the console script ``lnbench = lnbench.cli:main``)."""
    from lnbench.cli.app import main as app_main

    return app_main(argv)


# Names older code imported from the single-module CLI, resolved on first use.
_MOVED = {"run_checks": "check", "print_check": "check", "build_parser": "app",
          "EXIT_OK": "common", "EXIT_FAIL": "common", "EXIT_USAGE": "common",
          "EXIT_INTERRUPTED": "common", "UsageError": "common", "load_plugins": "common",
          "select_impls": "common", "select_cases": "common", "console": "common"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"lnbench.cli.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'lnbench.cli' has no attribute {name!r}")
