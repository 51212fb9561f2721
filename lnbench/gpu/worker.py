"""The GPU check's worker process: every selected implementation on every case of the grid.

The parent (:mod:`lnbench.gpu.workers`) starts it as ``python -m lnbench.gpu --worker OUT``;
it appends rows to ``OUT/gpu-check.jsonl`` (:mod:`lnbench.gpu.rows`) and skips the points a
previous worker already ended, so a new worker resumes where a dead one stopped.

Per case (tier by tier, :mod:`lnbench.gpu.selection`): the inputs are made on the CPU (seconds
for a large case), ``PREFETCH`` cases ahead on as many threads while the GPU measures (NumPy
releases the GIL), and each case once for all the tiers; the reference is made once per
(affine) on the device (:mod:`lnbench.gpu.judging`); the points are prepared one by one and
timed interleaved (:mod:`lnbench.gpu.measure`). An exception in a point (out of memory, a
wrong shape, a compile error) is that point's ``error``; a sticky CUDA error (illegal address,
...) ends the worker (exit 3) after its row, so that a new worker, without that implementation,
goes on with a fresh CUDA context. Inputs too large for the machine (a MemoryError making
them) are an ``error`` of every point of that case, as in the one case loop
(:mod:`lnbench.caseloop`), and the worker goes on. Anything else raised outside a point (a bug)
is a ``worker_error`` row with the traceback's last line, then exit 1.
"""

from __future__ import annotations

import argparse
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lnbench.gpu import judging, measure, rows
from lnbench.gpu.preflight import DEFAULT_DTYPES, log

PREFETCH = 2  # cases whose inputs are made ahead, on as many CPU threads
STICKY_EXIT = 3
BUDGET_SPENT = "time budget of the check spent"


def worker_main(args: argparse.Namespace) -> int:
    """The worker, and when it raises outside any point a "worker_error" row with the
    traceback's last line, which the parent reports; then the traceback, exit 1."""
    try:
        return Worker(args).run()
    except Exception as e:
        try:
            rows.append(Path(args.out) / rows.JSONL, {
                "type": "worker_error",
                "reason": traceback.format_exception_only(type(e), e)[-1].strip()[:300],
                "traceback": traceback.format_exc()[-1500:]})
        except Exception:  # noqa: BLE001 - the parent still says the worker died, with its exit
            pass
        raise


def grid_of(args: argparse.Namespace) -> list[tuple[int, int, str]]:
    from lnbench.grid import ANCHOR_SHAPES, parse_shape

    shapes = [parse_shape(s) for s in args.shape] if args.shape else ANCHOR_SHAPES
    return [(M, N, dt) for M, N in shapes for dt in args.dtype or DEFAULT_DTYPES]


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        from lnbench.gpu.selection import choose_impls
        from lnbench.plugins import load_env

        self.args = args
        self.jl = Path(args.out) / rows.JSONL
        self.deadline = args.deadline
        self.excluded = set(args.exclude or [])
        self.plugin_errors = load_env()  # LNBENCH_PLUGINS (the parent adds --plugin files)
        self.impls = choose_impls(args.impl or [])
        self.grid = grid_of(args)
        self.pool = ThreadPoolExecutor(max_workers=PREFETCH)
        self.pending: dict[Any, Any] = {}
        self.copy_gbps: float | None = None

    def emit(self, rec: dict[str, Any]) -> None:
        rows.append(self.jl, rec)

    def run(self) -> int:
        self.device_rows()
        work = self.plan()
        for k, (case, todo) in enumerate(work):
            if self.run_case(work, k, case, todo) == STICKY_EXIT:
                self.pool.shutdown(wait=False, cancel_futures=True)
                return STICKY_EXIT
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.args.sweep:
            from lnbench.gpu.sweep import sweep_pass

            return sweep_pass(self)
        return 0

    def device_rows(self) -> None:
        """The card and its copy bandwidth, once per check (a new worker reads them back)."""
        from lnbench.measure import cuda as mc

        if not any(r.get("type") == "device" for r in rows.read_rows(self.jl)):
            for err in self.plugin_errors:
                self.emit({"type": "plugin_error", "reason": err})
                log(err)
            self.emit({"type": "device", **mc.device_info()})
            gb = mc.copy_bandwidth_cuda()
            self.emit({"type": "copy", "gbps": gb})
            log(f"copy bandwidth {gb:.0f} GB/s")
        self.copy_gbps = next(r["gbps"] for r in rows.read_rows(self.jl)
                              if r.get("type") == "copy")

    def plan(self) -> list[tuple[Any, list[Any]]]:
        """(case, implementations not yet ended there), tier by tier over the grid."""
        from lnbench.gpu.selection import TIERS, tier
        from lnbench.grid import Case

        done = {(r["impl"], r["case"]) for r in rows.read_rows(self.jl)
                if r.get("type") == "point"}
        groups = [g for g in ([i for i in self.impls if tier(i) == k] for k in range(len(TIERS)))
                  if g]
        work = []
        for group in groups:
            for M, N, dt in self.grid:
                case = Case(M, N, dt, "normal")
                todo = [i for i in group if (i.name, case.name) not in done]
                if todo:
                    work.append((case, todo))
        return work

    def inputs(self, work: list[tuple[Any, list[Any]]], k: int) -> tuple[Any, str]:
        """``(data, why)`` of ``work[k]``'s case (the case loop's
        :func:`lnbench.caseloop.make_inputs`: data None and ``why`` when its inputs do not fit
        in memory), the next cases' started on the threads."""
        from lnbench.caseloop import make_inputs

        for j in range(k, min(len(work), k + PREFETCH + 1)):
            c = work[j][0]
            if c not in self.pending and time.time() < self.deadline:
                self.pending[c] = self.pool.submit(make_inputs, c)
        case = work[k][0]
        got = self.pending[case].result()
        if all(case != c for c, _ in work[k + 1:]):
            del self.pending[case]
        return got

    def failed(self, rec: dict[str, Any], impl: Any, case: Any, wall_s: float) -> bool:
        """Emit an error point; True when it is a sticky CUDA error (a new worker goes on)."""
        from lnbench.measure import cuda as mc

        rec["wall_s"] = wall_s
        if rows.is_sticky(rec["reason"]):
            rec["sticky"] = True
            self.emit(rec)
            log(f"{impl.name} {case.name}: sticky CUDA error, new worker: {rec['reason']}")
            return True
        self.emit(rec)
        log(f"{impl.name:14s} {case.name:28s} {rec['status']:7s} {rec['reason'][:80]}")
        mc.free_device_memory()
        return False

    def run_case(self, work: list[tuple[Any, list[Any]]], k: int, case: Any,
                 todo: list[Any]) -> int:
        from lnbench.measure import cuda as mc

        if time.time() > self.deadline:
            for i in todo:
                self.emit(rows.point(i, case, "skipped", BUDGET_SPENT))
            return 0
        data, why = self.inputs(work, k)
        if data is None:  # inputs too large: every point of the case says so, the run goes on
            for i in todo:
                self.emit(rows.point(i, case, "error", why))
                log(f"{i.name:14s} {case.name:28s} error   {why[:80]}")
            return 0
        ready = self.prepare_all(case, data, todo)
        if ready is None:
            return STICKY_EXIT
        if self.time_all(case, ready) == STICKY_EXIT:
            return STICKY_EXIT
        del ready, data
        mc.free_device_memory()
        return 0

    def skip_reason(self, impl: Any, case: Any) -> str | None:
        why = ("excluded after it crashed a worker" if impl.name in self.excluded else
               impl.unavailable() or impl.unsupported(case))
        return why or (BUDGET_SPENT if time.time() > self.deadline else None)

    def prepare_all(self, case: Any, data: Any, todo: list[Any]) -> list[tuple] | None:
        """The case's points judged and sized one by one: (impl, thunk, row, seconds) each;
        None after a sticky CUDA error."""
        from lnbench.judge import error_reason

        refs: dict[bool, judging.Reference] = {}
        ready = []
        for impl in todo:
            if why := self.skip_reason(impl, case):
                self.emit(rows.point(impl, case, "skipped", why))
                continue
            self.emit(rows.start(impl, case))
            t0 = time.time()
            try:
                if impl.affine not in refs:
                    refs[impl.affine] = judging.reference_for(data, impl.affine,
                                                              self.args.exact_ref)
                rec = rows.point(impl, case, "ok", "")
                thunk, fields = measure.prepare(impl, data, refs[impl.affine])
                ready.append((impl, thunk, rec | fields, time.time() - t0))
                continue
            except Exception as e:  # noqa: BLE001 - any failure is this point's result
                rec = rows.point(impl, case, "error", error_reason(e))
                rec["traceback"] = traceback.format_exc()[-1500:]
            if self.failed(rec, impl, case, time.time() - t0):
                return None
        return ready

    def time_all(self, case: Any, ready: list[tuple]) -> int:
        """The prepared points timed interleaved; each point's row written after the last
        round (an error while timed is that point's error). After a sticky CUDA error every
        later call fails too: only the first point to fail is written (the others are measured
        again by the next worker, in a fresh context)."""
        seq: list[int] = []

        def before_sample(j: int, r: int) -> None:  # outside the timed calls
            seq.append(j)
            self.emit({"type": "timing", "impl": ready[j][0].name, "case": case.name,
                       "round": r})

        t0 = time.time()
        timings = measure.time_case(case, [t for _, t, _, _ in ready], self.deadline,
                                    before_sample)
        share = (time.time() - t0) / max(1, len(ready))
        failed = [j for j, tm in enumerate(timings) if tm.error is not None]
        last = {j: max((i for i, s in enumerate(seq) if s == j), default=-1) for j in failed}
        first = min(failed, key=last.__getitem__) if failed else None
        if first is not None and rows.is_sticky(str(timings[first].error)):
            impl, _, _, prep_s = ready[first]
            self.timing_error(impl, case, timings[first].error, prep_s + share)
            return STICKY_EXIT
        sticky = False
        for (impl, _, rec, prep_s), tm in zip(ready, timings, strict=True):
            if tm.error is not None:
                sticky = self.timing_error(impl, case, tm.error, prep_s + share) or sticky
                continue
            rec.update(measure.timed_fields(case, tm.samples, self.copy_gbps))
            rec["wall_s"] = prep_s + share
            self.emit(rec)
            log(f"{impl.name:14s} {case.name:28s} {rec['status']:7s} "
                f"{rec['gbps']:7.0f} GB/s {rec['pct_copy'] or 0:5.1f}%")
        return STICKY_EXIT if sticky else 0

    def timing_error(self, impl: Any, case: Any, e: BaseException, wall_s: float) -> bool:
        from lnbench.judge import error_reason

        err = rows.point(impl, case, "error", error_reason(e))
        err["traceback"] = "".join(traceback.format_exception(e))[-1500:]
        return self.failed(err, impl, case, wall_s)
