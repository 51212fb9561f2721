"""What every ``lnbench`` command shares, written once: the exit codes, the one-line error,
the parser that reports argparse's errors the same way, the case filters and the selection of
implementations and cases they narrow, the rich console, and how times, bytes and reasons are
shown on it.

Exit codes (docs/interface.md): 0 ok; 1 a judged failure or a found regression; 2 bad usage or
unreadable input, with one line on stderr (``lnbench: error: ...``) naming the argument or
file; 130 interrupted (Ctrl-C: 128 + SIGINT, as a shell reports it).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from lnbench.argtypes import OneLineParser, positive_float, positive_int  # noqa: F401

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C
PROG = "lnbench"


class UsageError(Exception):
    """Bad usage or unreadable input: printed as one line, exit 2."""


def error_line(message: str) -> str:
    """The one-line error every command prints on stderr (newlines in ``message`` folded)."""
    return f"{PROG}: error: {' '.join(str(message).split())}"


class Parser(OneLineParser):
    """argparse with its usage errors as the one line (:func:`error_line`) and exit 2."""

    error_name = PROG


# --- selection -----------------------------------------------------------------------------------


def add_filters(p: argparse.ArgumentParser) -> None:
    """The options that narrow implementations and cases (check, run, profile)."""
    p.add_argument("--impl", action="append", metavar="GLOB", help="implementation id or glob")
    p.add_argument("--dtype", action="append", metavar="D", help="float64|float32|float16|bfloat16")
    p.add_argument("--shape", action="append", metavar="MxN", help="e.g. 4096x1024")
    p.add_argument("--dist", action="append", metavar="NAME",
                   help="normal|offset|constant|outlier|correlated")
    p.add_argument("--plugin", action="append", metavar="FILE.py", help="load a plugin file")


def load_plugins(paths: Sequence[str] | None) -> None:
    from lnbench.plugins import PluginError, load

    for p in paths or []:
        try:
            load(p)
        except PluginError as e:
            raise UsageError(str(e)) from None


def select_impls(patterns: Sequence[str] | None) -> list:
    """The registered implementations matching the ``--impl`` globs (all when none)."""
    from lnbench.registry import resolve

    try:
        return resolve(patterns)
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def select_cases(args: argparse.Namespace, grid: str) -> list:
    """Cases from the grid narrowed by --shape/--dtype/--dist, plus --inputs files."""
    from lnbench.grid import cases, load_inputs, parse_shape

    for opt in ("shape", "dtype", "dist"):  # a repeated value is one case, not two
        if getattr(args, opt, None):
            setattr(args, opt, list(dict.fromkeys(getattr(args, opt))))
    inputs = getattr(args, "inputs", None) or []
    try:
        shapes = [parse_shape(s) for s in args.shape] if args.shape else None
        only_files = inputs and not (args.shape or args.dtype or args.dist)
        datas: list = [] if only_files else list(
            cases(grid, shapes=shapes, dtypes=args.dtype, dists=args.dist))
        for f in inputs:
            try:
                datas.append(load_inputs(f))
            except MemoryError as e:
                from lnbench.judge import error_reason

                raise UsageError(f"--inputs {f}: too large for this machine "
                                 f"({error_reason(e)})") from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    return datas


def steady_heap() -> None:
    """The heap policy (lnbench.measure.heap) before anything allocates or starts threads."""
    from lnbench.measure import heap

    try:
        heap.steady()
    except ValueError as e:
        raise UsageError(str(e)) from None


# --- console -------------------------------------------------------------------------------------


def console(width: int = 200) -> Any:
    """A rich console; wide (``width``, not 80 columns) when writing to a pipe or file unless
    COLUMNS says otherwise."""
    from rich.console import Console

    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return Console()
    return Console(width=width)


def progress(total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)


def seconds(s: float | None) -> str:
    """A duration: µs below 1 ms, ms below 1 s, else s; ``–`` for none."""
    if s is None:
        return "–"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def nbytes(n: float | None) -> str:
    """A size in B, KiB, MiB or GiB (powers of 1024); ``–`` for none."""
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover - the loop returns at GiB


def number(v: float | None, spec: str = ".1f") -> str:
    """``format(v, spec)``, ``–`` for none."""
    return "–" if v is None else format(v, spec)


def shorten(reason: str, width: int = 60) -> str:
    """A reason on one line of at most ``width`` characters, cut between words (``…``)."""
    text = " ".join(str(reason).split())
    if len(text) <= width:
        return text
    return textwrap.shorten(text, width=width, placeholder=" …") if " " in text[:width] \
        else text[: width - 1] + "…"


def counted(reasons: Iterable[str], width: int = 80, limit: int = 4) -> str:
    """Reasons counted, most frequent first: ``cupy is not installed ×120; ...``; past
    ``limit`` reasons, the rest as one count."""
    counts = Counter(" ".join(str(r).split()) or "no reason given" for r in reasons)
    top = counts.most_common()
    parts = [f"{shorten(r, width)} ×{n}" for r, n in top[:limit]]
    if len(top) > limit:
        parts.append(f"{len(top) - limit} other reason(s) ×{sum(n for _, n in top[limit:])}")
    return "; ".join(parts)


def summary_line(command: str, counts: dict[str, int], code: int, why: str,
                 skipped_reasons: Sequence[str] = ()) -> str:
    """The one line a command ends with: its counts, the exit code and what decided it, and
    the skipped points counted per reason."""
    parts = ", ".join(f"{k} {v}" for k, v in counts.items())
    line = f"{command}: {parts} — exit {code}: {why}"
    if skipped_reasons:
        line += f"; skipped: {counted(skipped_reasons)}"
    return line
