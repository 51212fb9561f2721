"""The logic behind the asv suite in benchmarks/ (which stays a thin list of metrics).

Parameters come from lnbench's one grid (``LNBENCH_GRID`` = quick | full | anchors) and registry
(plus ``LNBENCH_PLUGINS``). Unavailable implementations stay in the parameters (so machines share
one benchmark layout) and are skipped in ``setup`` with NotImplementedError(reason), which asv
records as skipped — never as a number.

``Metrics.setup_cache`` measures every point once with ``lnbench.measure.run`` (the code behind
``lnbench run``: a case's implementations interleaved, re-measured under interference) and each
``track_*`` reads its number; asv's own ``time_``/``peakmem_`` time the same thunk with asv's
timer (CUDA calls are synchronised so the host timer is valid). asv stores numbers only, so the
interference of every Metrics point and of every ``time_backward`` point goes to a sidecar file
of the asv run (:func:`write_interference`; format in lnbench.measure.interference, where the
thresholds are derived; docs/measurement.md). Where the running asv stores its results, and the
writing of the sidecar and the machine facts there: :mod:`lnbench.measure.asvrun`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lnbench import metrics
from lnbench.grid import DISTS, GRIDS, Case, grid_name, make_data, parse_shape, shape_str
from lnbench.measure import heap
from lnbench.measure.asvrun import (  # noqa: F401 - asv_results_dir, asv_run: this module's API
    asv_results_dir,
    asv_run,
    write_facts,
    write_interference,
)

# before any case allocates or any worker thread starts: asv's forkserver (asv.conf.json's
# launch_method) imports the suite once and forks every benchmark from it, so each benchmark
# process inherits this; with asv's default, spawn, each process imports the suite and applies it
heap.steady()


def _key(*parts: str) -> str:
    return "|".join(parts)


@cache
def _load_plugins() -> tuple[str, ...]:
    """Load $LNBENCH_PLUGINS; a file that fails to load is said on stderr (asv shows it with
    --show-stderr and in its log) and left out, and the rest of the suite runs."""
    from lnbench.plugins import load_env

    errors = tuple(load_env())
    listed = os.environ.get("LNBENCH_PLUGINS", "").split(":")
    rel = [p for p in listed if p and not os.path.isabs(p)]
    for e in errors:
        hint = (" (asv runs benchmarks in a temporary folder: give plugins as absolute paths, "
                "e.g. LNBENCH_PLUGINS=$PWD/FILE.py; scripts/nightly does this)") if rel else ""
        print(f"lnbench: LNBENCH_PLUGINS: {e}{hint}", file=sys.stderr)
    return errors


def _check_env() -> None:
    """The suite's environment variables, refused with ValueError naming the variable (asv shows
    it when it collects the benchmarks) rather than silently giving another suite."""
    forced = os.environ.get("LNBENCH_TORCH_DEVICE")
    if forced is not None and forced not in ("cpu", "cuda"):
        raise ValueError(f"LNBENCH_TORCH_DEVICE={forced!r}: must be cpu or cuda")


def impl_names() -> list[str]:
    from lnbench.registry import registry

    _load_plugins()
    only = os.environ.get("LNBENCH_IMPLS")  # optional comma-separated globs, e.g. for CI
    _check_env()
    impls = list(registry().values())
    if only:
        import fnmatch

        pats = [p.strip() for p in only.split(",") if p.strip()]
        for p in pats:
            if not any(fnmatch.fnmatchcase(i.name, p) for i in impls):
                raise ValueError(f"LNBENCH_IMPLS: {p!r} matches no implementation "
                                 "(`lnbench list` shows the ids; a plugin that failed to load "
                                 "is named above)")
        impls = [i for i in impls if any(fnmatch.fnmatchcase(i.name, p) for p in pats)]
    return [i.name for i in impls]


def shapes() -> list[str]:
    return [shape_str(M, N) for M, N in GRIDS[grid_name()]]


def dtypes() -> list[str]:
    from lnbench.dtypes import DTYPES

    only = os.environ.get("LNBENCH_DTYPES")
    if not only:
        return list(DTYPES)
    want = [d.strip() for d in only.split(",") if d.strip()]
    bad = [d for d in want if d not in DTYPES]
    if bad or not want:
        raise ValueError(f"LNBENCH_DTYPES={only!r}: {', '.join(bad) or 'empty'}; choose from "
                         f"{', '.join(DTYPES)}")
    return [d for d in DTYPES if d in want]


def backward_params() -> list[list[str]]:
    return [impl_names(), shapes(), dtypes()]


def accuracy_params() -> list[list[str]]:
    return [impl_names(), shapes(), dtypes(), list(DISTS)]


class Point:
    """One (impl, shape, dtype[, dist]) point with its prepared thunk, for asv's own timers.

    For asv's ``time_backward`` the interference (lnbench.measure.interference) is measured over
    the benchmark's whole run in its process: from the first ``setup`` to the ``teardown`` after
    asv has finished timing (asv re-runs setup and teardown around every sample; each gap from a
    setup's end to the next teardown is one timed call plus asv's own bookkeeping, and their
    spread stands in for that of asv's samples, which a benchmark cannot see). The point is then
    added to the run's sidecar (:func:`write_interference`); asv's number is never re-measured.
    """

    def __init__(self, impl: str, shape: str, dtype: str, dist: str = "normal") -> None:
        from lnbench.registry import get

        _load_plugins()
        self.impl = get(impl)
        M, N = parse_shape(shape)
        case = Case(M, N, dtype, dist)
        why = self.impl.unavailable() or self.impl.unsupported(case)
        if why:
            raise NotImplementedError(why)
        if self.impl.kind == "compiled" and grid_name() == "quick":
            # asv runs each point in a fresh process, so each would compile again (~3 s with a
            # warm Inductor cache); the quick grid times it once in Metrics.track_seconds.
            raise NotImplementedError("asv-timed on the full grid only (compiles per process)")
        self._timed: _AsvTimed | None = None
        bench, _ = _asv_frame()
        if bench and bench.endswith(".time_backward"):
            key = (impl, shape, dtype)
            if key not in _TIMED:
                from lnbench.measure.interference import Window

                _TIMED[key] = _AsvTimed(bench, key, Window().start())
            self._timed = _TIMED[key]
        self.thunk = self.impl.make(make_data(case))
        self.call()  # warm-up outside asv's timing (first-touch, lazy init)
        self._ready = time.perf_counter()

    def call(self) -> Any:
        from lnbench.measure.timing import call_synchronized

        return call_synchronized(self.thunk, self.impl.device)

    def teardown(self) -> None:
        """asv's teardown: note the gap; after asv's last sample, write the interference."""
        t = self._timed
        if t is None:
            return
        t.gaps.append(time.perf_counter() - self._ready)
        if _asv_frame()[1]:  # asv is still timing: another setup and sample follow
            return
        _TIMED.pop(t.key, None)
        from lnbench.measure.interference import sidecar_point, spread_of

        reading = t.window.stop()
        spread = spread_of(t.gaps)
        reason = "; ".join(reading.reasons(spread))
        impl, shape, dtype = t.key
        write_interference([sidecar_point(
            t.bench, {"impl": impl, "shape": shape, "dtype": dtype}, reason=reason,
            load=reading.load, steal=reading.steal, copy_before=reading.copy_before,
            copy_after=reading.copy_after, spread=spread)])


@dataclass
class _AsvTimed:
    bench: str
    key: tuple[str, str, str]
    window: Any
    gaps: list[float] = field(default_factory=list)


_TIMED: dict[tuple[str, str, str], _AsvTimed] = {}


def _asv_frame() -> tuple[str | None, bool]:
    """(full name of the asv benchmark whose setup or teardown is running, whether asv is still
    running it: its ``do_run`` is on the stack), from asv_runner's frames; (None, False) outside
    asv."""
    name, running = None, False
    f = sys._getframe(1)
    while f is not None:
        code = f.f_code.co_name
        if name is None and code in ("do_setup", "do_teardown", "redo_setup"):
            name = getattr(f.f_locals.get("self"), "name", None)
        running = running or code == "do_run"
        f = f.f_back
    return (name if isinstance(name, str) else None), running


def teardown(bench: Any) -> None:
    """Backward.teardown: the point of ``bench`` (none when its setup skipped or failed)."""
    p = bench.__dict__.pop("p", None)
    if p is not None:
        p.teardown()


METRICS = metrics.methods_of("Metrics")


def measure_all(bench_file: str | None = None) -> dict[str, dict[str, Any]]:
    """Measure every Backward point once (lnbench.measure.run: the implementations of a case
    interleaved, re-measured under interference), write the machine facts and, in an asv run,
    every measured point's interference to the run's sidecar under each Metrics benchmark."""
    from lnbench.measure.interference import sidecar_point
    from lnbench.measure.run import run
    from lnbench.registry import get

    _load_plugins()
    write_facts(bench_file)
    names, shs, dts = backward_params()
    cases = [Case(*parse_shape(sh), dt) for sh in shs for dt in dts]
    out: dict[str, dict[str, Any]] = {}
    points: list[dict[str, Any]] = []
    for rec in run([get(n) for n in names], cases):
        r = rec.to_dict()
        sh = shape_str(rec.M, rec.N)
        out[_key(rec.impl, sh, rec.dtype)] = r
        if rec.seconds is None:
            continue
        points += [sidecar_point(f"{_bench_module(bench_file)}.Metrics.{m}",
                                 {"impl": rec.impl, "shape": sh, "dtype": rec.dtype},
                                 reason=rec.noise, load=rec.load, steal=rec.steal,
                                 copy_before=rec.copy_gbps_before,
                                 copy_after=rec.copy_gbps_after, spread=rec.spread)
                   for m in METRICS]
    write_interference(points)
    return out


def _bench_module(bench_file: str | None) -> str:
    return Path(bench_file).stem if bench_file else "bench_backward"


def check_all() -> dict[str, dict[str, Any]]:
    """rel_err of dx, dγ, dβ for every Accuracy point (lnbench.judge), walked by the one case
    loop (lnbench.caseloop: inputs made once per case; inputs too large for the machine make
    that case's points errors, which asv records as failed, instead of ending setup_cache)."""
    from lnbench.caseloop import run_cases
    from lnbench.judge import case_error_rows, check_impl
    from lnbench.registry import get

    _load_plugins()
    names, shs, dts, dists = accuracy_params()
    impls = [get(n) for n in names]
    cases = [Case(*parse_shape(sh), dt, di) for sh in shs for dt in dts for di in dists]
    rows = run_cases(
        impls, cases,
        per_case=lambda imps, data: [r for i in imps for r in check_impl(i, data)],
        without_inputs=lambda impl, case, _skip, why: case_error_rows(impl, case, why))
    points: dict[str, list[Any]] = {}
    for r in rows:
        points.setdefault(_key(r.impl, shape_str(r.M, r.N), r.dtype, r.dist), []).append(r)
    return {k: {"status": rs[0].status if rs[0].status == "skipped" else "ok",
                "reason": rs[0].reason,
                **{f"rel_err_{r.grad}": r.rel_err for r in rs},
                "error": next((r.reason for r in rs if r.status == "error"), "")}
            for k, rs in points.items()}


def lookup(cache_: dict[str, dict[str, Any]], *params: str) -> dict[str, Any]:
    """The stored record for a point; NotImplementedError(reason) when it has no number."""
    rec = cache_.get(_key(*params))
    if rec is None:
        raise NotImplementedError(f"no measurement for {params}")
    if rec.get("status") == "skipped":
        raise NotImplementedError(rec.get("reason") or "skipped")
    if rec.get("status") == "error" or rec.get("error"):
        raise RuntimeError(rec.get("reason") or rec.get("error"))
    return rec


def value(rec: dict[str, Any], metric: str) -> float:
    """The number of the declared ``metric`` (``track_gbps``) in a point's record: the record
    field ``lnbench.metrics`` declares for it; NaN where the record has none."""
    v = rec.get(metrics.METRICS[metric].key)
    if v is None:
        return float("nan")  # asv stores NaN as a failed value, never a made-up number
    return float(v)
