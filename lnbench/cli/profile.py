"""``lnbench profile``: the operations an implementation runs, their time and bytes, its
temporaries, and the bytes it moves against the minimal model (docs/profile.md). Measuring is
lnbench.measure.profile's; this module checks the options and shows the profile."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lnbench.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    UsageError,
    add_filters,
    console,
    error_line,
    load_plugins,
    steady_heap,
)
from lnbench.cli.common import nbytes as _b
from lnbench.cli.common import number as _g
from lnbench.cli.common import seconds as _t


def configure(sub: Any) -> None:
    p = sub.add_parser(
        "profile", help="where one implementation's time and bytes go on one case",
        description="Profile one backward: its array operations or kernels with their time and "
                    "bytes, the temporaries it allocates, and the bytes it moves against the "
                    "minimal model (3·M·N·elt + 8·M + 3·N·elt). Needs exactly one --impl and "
                    "one --shape; --dtype defaults to float32, --dist to normal.")
    add_filters(p)
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument("--trace", metavar="FILE.json",
                   help="write a Chrome trace (chrome://tracing, ui.perfetto.dev)")
    p.add_argument("--top", type=int, default=12, metavar="K",
                   help="rows per table (and in --json); 0 for all (default 12)")
    p.set_defaults(func=run)


def _one(values: list[str] | None, flag: str, default: str | None = None) -> str:
    if not values:
        if default is None:
            raise UsageError(f"{flag} is required (exactly one)")
        return default
    if len(values) > 1:
        raise UsageError(f"{flag}: profile takes exactly one, got {', '.join(values)}")
    return values[0]


def _point(args: argparse.Namespace) -> tuple[Any, Any]:
    """The one implementation and case asked for (UsageError naming the option otherwise)."""
    from lnbench.dtypes import np_dtype
    from lnbench.grid import DISTS, Case, parse_shape
    from lnbench.registry import get

    name = _one(args.impl, "--impl")
    shape = _one(args.shape, "--shape")
    dtype = _one(args.dtype, "--dtype", "float32")
    dist = _one(args.dist, "--dist", "normal")
    if args.top < 0:
        raise UsageError(f"--top {args.top}: must be 0 (all) or more")
    try:
        impl = get(name)
    except KeyError as e:
        raise UsageError(f"--impl {e.args[0]}") from None
    try:
        M, N = parse_shape(shape)
        np_dtype(dtype)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if dist not in DISTS:
        raise UsageError(f"--dist {dist!r}: choose from {', '.join(DISTS)}")
    if args.trace and not Path(args.trace).parent.is_dir():
        raise UsageError(f"--trace {args.trace}: folder {Path(args.trace).parent} does not exist")
    return impl, Case(M, N, dtype, dist)


def run(args: argparse.Namespace) -> int:
    from lnbench.caseloop import each_case, skip_reason
    from lnbench.judge import error_reason
    from lnbench.measure.profile import ProfileUnavailable, profile_impl

    steady_heap()
    load_plugins(args.plugin)
    impl, case = _point(args)
    try:
        # the one case of the case loop: inputs too large for the machine are its error
        _, data, why = next(each_case([impl], [case]))
        if data is None and not why:
            raise ProfileUnavailable(f"{impl.name}: {skip_reason(impl, case)}")
        if data is None:
            print(error_line(f"{impl.name}: {why}"), file=sys.stderr)
            return EXIT_FAIL
        prof = profile_impl(impl, data, trace=args.trace)
    except ProfileUnavailable as e:
        raise UsageError(f"--impl {e} (not available here)") from None
    except OSError as e:
        if not args.trace:
            print(error_line(f"{impl.name}: {error_reason(e)}"), file=sys.stderr)
            return EXIT_FAIL
        raise UsageError(f"--trace {args.trace}: cannot write ({e.strerror or e})") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the implementation failed: one line
        print(error_line(f"{impl.name}: {error_reason(e)}"), file=sys.stderr)
        return EXIT_FAIL
    prof = prof.top(args.top)
    if args.json:
        print(json.dumps(prof.to_dict(), indent=1))
    else:
        print_profile(prof)
    return EXIT_OK


# --- terminal output -----------------------------------------------------------------------------


_MIN_WIDTH = {"op": 10, "time": 9, "%": 3, "read": 9, "written": 9, "GB/s": 5, "faults": 6,
              "operands → result": 16, "line: expression": 16}


def print_profile(p: Any) -> None:
    """Summary lines, the op table and the profiler table on a terminal (rich)."""
    con = console(width=170)  # piped to a file: wide lines beat folded tables
    _print_summary(con, p)
    if p.ops:
        _print_ops(con, p)
    if p.profiler_rows:
        _print_profiler(con, p)
    for n in p.notes:
        con.print(f"[yellow]note[/] {n}", highlight=False)
    if p.trace:
        con.print(f"trace written: {p.trace} (open in chrome://tracing or ui.perfetto.dev)",
                  highlight=False)


def _memory_parts(tm: dict[str, Any]) -> list[str]:
    parts = []
    if "count" in tm:
        parts.append(f"{tm['count']:.0f} temporaries, {_b(tm['bytes'])} "
                     f"({tm['allocations']:.0f} arrays allocated, {_b(tm['allocated_bytes'])}, "
                     f"outputs included)")
    if tm.get("peak_workspace_bytes") is not None:
        parts.append(f"peak workspace {_b(tm['peak_workspace_bytes'])} ({tm.get('peak_method')})")
    if tm.get("profiler_allocated_bytes") is not None:
        parts.append(f"torch.profiler saw {_b(tm['profiler_allocated_bytes'])} allocated")
    if tm.get("numba_nrt_allocations") is not None:
        parts.append(f"Numba NRT allocations {tm['numba_nrt_allocations']}")
    return parts


def _print_summary(con: Any, p: Any) -> None:
    m = p.machine
    con.print(f"[bold]lnbench profile[/] {p.impl} · {p.case} · {p.device} · {m.get('cpu_model')}"
              f" ({m.get('threads')} threads) · machine {m.get('name')}", highlight=False)
    con.print(f"  time        {_t(p.seconds)} per call (median of {p.samples}; "
              f"q25–q75 {_t(p.seconds_q25)}–{_t(p.seconds_q75)})", highlight=False)
    cp = f" = {_g(p.pct_copy, '.0f')}% of copy bandwidth ({_g(p.copy_gbps)} GB/s)" \
        if p.copy_gbps else ""
    con.print(f"  minimal     {_b(p.nbytes_min)} (x, dy, dx, mean/rstd, γ, dγ, dβ) → "
              f"{_g(p.gbps, '.2f')} GB/s achieved{cp}", highlight=False)
    if p.bytes_moved:
        model = ("Σ op inputs read + outputs written" if p.bytes_method == "ops"
                 else "boundary: held arrays read once + outputs written once")
        eff = f" = {_g(p.effective_pct_copy, '.0f')}% of copy" if p.effective_pct_copy else ""
        con.print(f"  moved       {_b(p.bytes_moved)} ({model}): moves "
                  f"[bold]{p.moves_x_min:.1f}×[/] the minimal bytes → "
                  f"{_g(p.effective_gbps, '.1f')} GB/s of traffic{eff}", highlight=False)
    parts = _memory_parts(p.temporaries)
    if parts:
        con.print("  memory      " + "; ".join(parts) + " — per call", highlight=False)
    if p.page_faults_per_call is not None:
        cost = ""
        if p.fault_seconds and p.page_faults_per_call >= 1:
            cost = (f" ≈ {_t(p.page_faults_per_call * p.fault_seconds)} of CPU time at "
                    f"{p.fault_seconds * 1e6:.1f} µs each (measured here), over all threads")
        con.print(f"  page faults {p.page_faults_per_call:,.0f} minor faults per call{cost} "
                  f"(first touches of fresh pages for temporaries)", highlight=False)
    if p.traced_seconds is not None:
        con.print(f"  traced      {_t(p.traced_seconds)} per call under the op tracer, "
                  f"{_t(p.ops_seconds)} inside ops ({p.iterations} calls averaged)",
                  highlight=False)


def _print_ops(con: Any, p: Any) -> None:
    from rich.table import Table

    t = Table(title=f"where the time goes: array operations per call (top {len(p.ops)} of "
                    f"{p.ops_total}; traced, % of traced op time)", title_justify="left")
    wide = con.width >= 160  # else the operand shapes go (they are in --json)
    cols = ["op", "time", "%", "read", "written", "GB/s", "faults"]
    cols += ["operands → result", "line: expression"] if wide else ["line: expression"]
    for c in cols:
        left = c in ("op", "operands → result", "line: expression")
        t.add_column(c, justify="left" if left else "right", min_width=_MIN_WIDTH.get(c),
                     no_wrap=c != "operands → result", overflow="ellipsis",
                     max_width=max(16, min(70, con.width - (119 if wide else 85)))
                     if c == "line: expression" else None)
    for o in p.ops:
        calls = f" ×{o.calls:.0f}" if round(o.calls) != 1 else ""
        where = o.where.rsplit("/", 1)[-1]
        row = [o.name + calls, _t(o.seconds), _g(o.pct, ".0f"), _b(o.bytes_read),
               _b(o.bytes_written), _g(o.gbps), _g(o.page_faults, ",.0f")]
        row += [o.signature] if wide else []
        row.append(f"{where}: {o.code}" if where else o.code)
        t.add_row(*row)
    con.print(t)


def _print_profiler(con: Any, p: Any) -> None:
    from rich.table import Table

    dev = any(r.get("device_seconds") is not None for r in p.profiler_rows)
    t = Table(title=f"{p.profiler}: top {len(p.profiler_rows)}", title_justify="left")
    cols = ["name", "calls", "self"] + (["device"] if dev else []) + ["total", "%"]
    for c in cols:
        t.add_column(c, justify="left" if c == "name" else "right", overflow="fold")
    for r in p.profiler_rows:
        row = [r["name"], _g(r["calls"], ".0f"), _t(r["self_seconds"])]
        if dev:
            row.append(_t(r.get("device_seconds")))
        row += [_t(r["total_seconds"]), _g(r["pct"], ".0f")]
        t.add_row(*row)
    con.print(t)

