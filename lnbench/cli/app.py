"""The ``lnbench`` parser and entry point: the command list, and the one place that turns
UsageError, Ctrl-C and a closed pipe into exit codes (pattern: lnbench/cli/__init__.py)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from lnbench.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    UsageError,
    error_line,
)

#: the command modules under lnbench/cli/, in `lnbench --help` order
COMMANDS = ("listing", "check", "run", "profile", "report", "dashboard", "gpu_check", "nightly")

DESCRIPTION = (
    "Benchmark and judge LayerNorm-backward implementations (dx, dγ, dβ): `check` judges them "
    "element by element against an exact reference (docs/judge.md), `run`/`profile` measure "
    "runtime, memory and bandwidth over a grid of shapes, dtypes and input distributions, "
    "`report` compares results across commits and machines; plugins add implementations "
    "(docs/plugins.md). Exit codes: 0 ok, 1 judged failure or found regression, 2 bad usage "
    "or unreadable input."
)


def command_modules() -> list[ModuleType]:
    """The command modules that exist (a listed one not written yet is left out)."""
    mods = []
    for name in COMMANDS:
        try:
            mods.append(importlib.import_module(f"lnbench.cli.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"lnbench.cli.{name}":
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="lnbench", description=DESCRIPTION)
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)
    for mod in command_modules():
        mod.configure(sub)
    return ap


def _raw_command(argv: list[str]) -> Callable[[list[str]], int] | None:
    """``run_argv`` of the command that parses its own arguments, when argv names one."""
    if not argv:
        return None
    for mod in command_modules():
        if getattr(mod, "RAW", False) and getattr(mod, "NAME", None) == argv[0]:
            return mod.run_argv
    return None


def _quiet_closed_stdout() -> None:
    """Output piped into `head` & co.: what was read is all that is wanted; no second
    BrokenPipeError when Python flushes stdout at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _command(argv: list[str]) -> Callable[[], int]:
    """The command argv asks for, ready to run (argparse exits 2 on bad usage)."""
    raw = _raw_command(argv)
    if raw is not None:
        return lambda: raw(argv[1:])
    args = build_parser().parse_args(argv)
    forced = os.environ.get("LNBENCH_TORCH_DEVICE")
    if forced is not None and forced not in ("cpu", "cuda"):
        raise UsageError(f"LNBENCH_TORCH_DEVICE={forced}: must be cpu or cuda")
    return lambda: args.func(args)


def _exit_interrupted() -> None:
    """End the process with 130 after Ctrl-C was handled. Once the KeyboardInterrupt has been
    caught, CPython's own shutdown may still end the process by SIGINT (a status of -2, not
    130) — its "unhandled KeyboardInterrupt" flag can be left set by an evaluation the
    interrupt passed through. So the exit handlers run and the streams are flushed here, and
    the process ends with the status the one line promised."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: its exit code; UsageError → one line, exit 2; Ctrl-C → one line,
    exit 130 (called as the program, ``argv`` None: the process ends there); a closed stdout
    pipe → exit 0."""
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(_command(argv)())
    except UsageError as e:
        print(error_line(str(e)), file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        _quiet_closed_stdout()
        return EXIT_OK
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's code for SIGINT, no traceback
        print("lnbench: interrupted", file=sys.stderr)
        if as_program:
            _exit_interrupted()
        return EXIT_INTERRUPTED

if __name__ == "__main__":
    sys.exit(main())
