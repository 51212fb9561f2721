"""Starting the GPU check's workers and accounting for the ones that die.

Each worker (:mod:`lnbench.gpu.worker`) is a fresh process, so an out-of-memory error costs one
point, a crash or a sticky CUDA error (illegal address, ...) costs that implementation, and a
new worker goes on with the rest (at most :data:`MAX_WORKERS`). After a worker dies, the point
it was in — the last one it started preparing or timing (``start``/``timing`` rows) that has no
``point`` row — is written as an error ("worker died (exit N) during this point") and its
implementation excluded; a sweep it was in likewise. A worker that died outside any point
(making a case's inputs, say) gets one more worker; the same failure again (exit status and
reason) stops the workers, and the report names it with the traceback's last line (exit 1).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lnbench.gpu import rows
from lnbench.gpu.preflight import ROOT, log

MAX_WORKERS = 5


@dataclass
class Outcome:
    workers: int = 0  # workers started
    excluded: list[str] = field(default_factory=list)
    outside: list[dict[str, Any]] = field(default_factory=list)  # crashes outside any point
    unresolved: dict[str, Any] | None = None  # such a crash still standing at the end


def command(args: argparse.Namespace, out: Path, deadline: float, excluded: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "lnbench.gpu", "--worker", str(out), "--deadline",
           str(deadline - 5)]
    for flag, vals in (("--impl", args.impl), ("--dtype", args.dtype), ("--shape", args.shape),
                       ("--exclude", excluded)):
        for v in vals or []:
            cmd += [flag, v]
    return cmd + ["--exact-ref"] * bool(args.exact_ref) + ["--sweep"] * bool(args.sweep)


def lost_points(jl: Path, rc: int | None, in_point: bool = True) -> list[str]:
    """Write the point (``in_point``: the worker did not end itself after a sticky point) and
    the sweep a dead worker was in as errors; their implementations."""
    all_rows = rows.read_rows(jl)
    started = [r for r in all_rows if r.get("type") in ("start", "timing")] if in_point else []
    ended = {(r["impl"], r["case"]) for r in all_rows if r.get("type") == "point"}
    lost = [r for r in started[-1:] if (r["impl"], r["case"]) not in ended]
    for r in lost:
        rows.append(jl, rows.lost_point(all_rows, r["impl"], r["case"],
                                        f"worker died (exit {rc}) during this point"))
    s_ended = {(r["impl"], r["case"]) for r in all_rows if r.get("type") == "sweep_end"}
    s_lost = [r for r in all_rows if r.get("type") == "sweep_start"
              and (r["impl"], r["case"]) not in s_ended]
    for r in s_lost:
        rows.append(jl, {"type": "sweep", "impl": r["impl"], "case": r["case"],
                         "label": "(crashed)", "params": {}, "status": "error",
                         "reason": f"worker died (exit {rc}) in this sweep"},
                    {"type": "sweep_end", "impl": r["impl"], "case": r["case"]})
    return [r["impl"] for r in lost + s_lost]


def run_workers(args: argparse.Namespace, out: Path, deadline: float) -> Outcome:
    """Workers until one ends well, the budget is spent, or the same crash outside any point
    comes twice (module docstring)."""
    jl = out / rows.JSONL
    if jl.exists():
        jl.unlink()
    res = Outcome()
    for attempt in range(MAX_WORKERS):
        remaining = deadline - time.time()
        if remaining < 10:
            break
        log(f"worker {attempt + 1}"
            + (f" (excluding {', '.join(res.excluded)})" if res.excluded else ""))
        before = len(rows.read_rows(jl))
        res.workers += 1
        try:
            rc = subprocess.run(command(args, out, deadline, res.excluded), cwd=ROOT,
                                timeout=remaining + 60).returncode
        except subprocess.TimeoutExpired:
            rc = None
            log("worker overran the budget and was stopped")
        new = rows.read_rows(jl)[before:]
        sticky = [r for r in new if r.get("sticky")]
        lost = (lost_points(jl, rc, not any(r["type"] == "point" for r in sticky))
                + [r["impl"] for r in sticky])
        res.excluded += [n for n in dict.fromkeys(lost) if n not in res.excluded]
        if rc == 0 or rc is None or lost:  # done, out of time, or a new worker without it
            res.unresolved = None
            if rc == 0 or rc is None:
                break
            continue
        if crashed_outside(res, attempt, rc, new):
            break
    return res


def crashed_outside(res: Outcome, attempt: int, rc: int, new: list[dict[str, Any]]) -> bool:
    """Record a crash outside any point; True when it is the same failure again."""
    err = next((r for r in reversed(new) if r.get("type") == "worker_error"), {})
    crash = {"attempt": attempt + 1, "rc": rc,
             "reason": err.get("reason") or f"worker died (exit {rc}) outside any point",
             "traceback": err.get("traceback")}
    again = any((c["rc"], c["reason"]) == (rc, crash["reason"]) for c in res.outside)
    res.outside.append(crash)
    res.unresolved = crash
    log(f"worker {attempt + 1} crashed outside any point (exit {rc}): {crash['reason']}"
        + ("; the same failure again: no more workers" if again else ""))
    return again
