"""Measure implementations over cases: the one code path behind ``lnbench run`` and asv.

Per case, inputs are made once (lnbench.caseloop, the loop ``lnbench check`` walks too); per
implementation: prepare outside timing, judge the result
(rel_err of dx, dγ, dβ). Then the prepared backwards of the case are timed *interleaved*, round
by round in a per-round shuffled order (lnbench.measure.timing.time_interleaved), so a slow spell
of the machine lands on every contender alike and the ratios between them come from the same
rounds. Around that sampling window the machine's load, CPU steal and copy bandwidth are measured
(lnbench.measure.interference); a case measured under interference beyond the thresholds
documented there is re-timed (``retries`` times at most), and a point still disturbed is stored
with status ``noisy`` and its reason: a real measurement, never a judged failure. Then each
point's workspace is measured, and GB/s derived from the minimal bytes model of docs/peers.md and %
of this machine's measured copy bandwidth. An unavailable implementation or unsupported dtype is
``skipped`` with its reason; one that raises or runs out of memory is ``error`` with a one-line
reason, and the run goes on.
"""

from __future__ import annotations

import gc
import math
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lnbench import metrics
from lnbench.caseloop import Key, attempt, run_cases, skip_reason
from lnbench.grid import Case, CaseData, make_data
from lnbench.judge import GRADS, error_reason, judge_grad
from lnbench.registry import Impl, as_triple


@dataclass
class Record:
    impl: str
    case: str
    M: int
    N: int
    dtype: str
    dist: str
    device: str
    status: str  # ok | noisy (timed under interference) | fail (judged wrong) | skipped | error
    reason: str = ""
    seconds: float | None = None  # median per call
    seconds_q25: float | None = None
    seconds_q75: float | None = None
    samples: int = 0
    timer: str = ""
    gbps: float | None = None
    pct_copy: float | None = None
    copy_gbps: float | None = None
    workspace_bytes: int | None = None
    prepare_seconds: float | None = None  # maker: transfers, forward state, JIT/compile
    rel_err_dx: float | None = None
    rel_err_dgamma: float | None = None
    rel_err_dbeta: float | None = None
    # interference over the case's sampling window (lnbench.measure.interference)
    load: float | None = None  # cores' worth of other processes' CPU time
    steal: float | None = None  # cores stolen by the hypervisor
    copy_gbps_before: float | None = None  # this process's copy bandwidth before the window
    copy_gbps_after: float | None = None
    spread: float | None = None  # IQR / median of the samples
    attempts: int = 0  # sampling windows measured (1 + re-measurements)
    noise: str = ""  # why the measurement is disturbed (status noisy, or appended to a fail)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        """The point's result key (lnbench.caseloop.Key), as check and profile carry it."""
        return Key.of_result(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


def measure(
    impl: Impl,
    data: CaseData,
    *,
    repeat: int = 7,
    max_time: float = 2.0,
    memory: bool = True,
    retries: int | None = None,
    copy_gbps: Callable[[str], float | None] | None = None,
) -> Record:
    """Judge, time and size one backward (:func:`measure_case` with one implementation)."""
    return measure_case([impl], data, repeat=repeat, max_time=max_time, memory=memory,
                        retries=retries, copy_gbps=copy_gbps)[0]


def _prepare(impl: Impl, data: CaseData) -> tuple[Record, Callable[[], Any] | None]:
    """The point's record, judged, and its prepared thunk (None when it is not to be timed)."""
    case = data.case
    base = Key.of(impl, case).as_dict()
    why = skip_reason(impl, case)
    if why:
        return Record(**base, status="skipped", reason=why), None

    def prepared() -> tuple[Callable[[], Any], tuple[Any, Any, Any], float]:
        t0 = time.perf_counter()
        thunk = impl.make(data)
        outs = as_triple(thunk())
        return thunk, outs, time.perf_counter() - t0

    got, err = attempt(prepared)  # any failure of the impl is its point's result
    if got is None:
        return Record(**base, status="error", reason=err), None
    thunk, outs, prep = got
    try:
        ref = data.reference(impl.affine)
    except MemoryError as e:  # the machine, not the implementation: said so, the run goes on
        return Record(**base, status="error",
                      reason=f"reference: {error_reason(e)}"), None
    errs: dict[str, float | None] = {}
    status, reasons = "ok", []
    for i, g in enumerate(GRADS):
        if not impl.affine and g != "dx":
            errs[g] = None
            continue
        st, why, nums = judge_grad(outs[i], ref[i], g, data, impl.affine, impl.numerics)
        errs[g] = nums["rel_err"]
        if st != "ok":
            status = "fail"
            reasons.append(why)
    del outs
    return Record(**base, status=status, reason="; ".join(reasons),
                  prepare_seconds=prep, rel_err_dx=errs["dx"], rel_err_dgamma=errs["dgamma"],
                  rel_err_dbeta=errs["dbeta"]), thunk


RETRY_PAUSE = 0.5  # seconds before the k-th re-measurement: k times this (a slow spell may pass)


def _time_case(ready: list[tuple[Record, Callable[[], Any], Impl]], case: Case, *, repeat: int,
               max_time: float, retries: int) -> None:
    """Time the prepared points of one case interleaved, re-measured while disturbed; fills
    their timing and interference fields and marks disturbed ones ``noisy``."""
    from lnbench.measure.interference import Window
    from lnbench.measure.timing import time_interleaved

    best: tuple[tuple[int, float], list[Any], Any, list[list[str]]] | None = None
    live = list(range(len(ready)))
    errors: dict[int, BaseException] = {}
    attempts = 0
    for try_no in range(1 + max(0, retries)):
        if try_no:
            time.sleep(RETRY_PAUSE * try_no)
        attempts += 1
        win = Window().start()
        timings = time_interleaved([(ready[k][1], ready[k][2].device) for k in live],
                                   repeat=repeat, max_time=max_time,
                                   seed=zlib.crc32(case.name.encode()) + try_no)
        reading = win.stop()
        by = dict(zip(live, timings, strict=True))
        for k, t in by.items():
            if t.error is not None:
                errors[k] = t.error
        live = [k for k in live if k not in errors]
        why = [reading.reasons(by[k].spread) if k in by and by[k].samples else []
               for k in range(len(ready))]
        score = (sum(1 for k in live if why[k]), reading.load + reading.steal)
        if best is None or score < best[0]:
            best = (score, [by.get(k) for k in range(len(ready))], reading, why)
        if score[0] == 0:
            break
    assert best is not None
    _, timings, reading, why = best
    for k, (rec, _, _) in enumerate(ready):
        rec.attempts = attempts
        rec.load, rec.steal = reading.load, reading.steal
        rec.copy_gbps_before, rec.copy_gbps_after = reading.copy_before, reading.copy_after
        if k in errors:
            rec.status, rec.reason = "error", error_reason(errors[k])
            continue
        t = timings[k]
        rec.seconds, rec.seconds_q25, rec.seconds_q75 = t.median, t.q25, t.q75
        rec.samples, rec.timer, rec.spread = len(t.samples), t.method, t.spread
        if why[k]:
            note = rec.noise = f"{'; '.join(why[k])} (in each of {attempts} measurement(s))"
            if rec.status == "ok":
                rec.status, rec.reason = "noisy", note
            else:
                rec.reason = f"{rec.reason}; noisy: {note}"


def measure_case(
    impls: Iterable[Impl],
    data: CaseData,
    *,
    repeat: int = 7,
    max_time: float = 2.0,
    memory: bool = True,
    retries: int | None = None,
    copy_gbps: Callable[[str], float | None] | None = None,
) -> list[Record]:
    """Judge every implementation on one case, time them interleaved (re-measured while the
    machine disturbs them) and size their workspace. Never raises for an implementation's
    faults; one record per implementation, in their order."""
    from lnbench.measure.interference import RETRIES
    from lnbench.measure.memory import workspace_bytes

    case = data.case
    recs: list[Record] = []
    ready: list[tuple[Record, Callable[[], Any], Impl]] = []
    for impl in impls:
        rec, thunk = _prepare(impl, data)
        recs.append(rec)
        if thunk is not None:
            ready.append((rec, thunk, impl))
    try:
        if not ready:
            return recs
        copies = {i.device: (copy_gbps or _copy_gbps)(i.device) for _, _, i in ready}
        try:
            _time_case(ready, case, repeat=repeat, max_time=max_time,
                       retries=RETRIES if retries is None else retries)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - outside any one implementation
            for rec, _, _ in ready:
                rec.status, rec.reason = "error", f"timing: {error_reason(e)}"
        for rec, thunk, impl in ready:
            if rec.seconds is None or rec.status == "error":
                continue
            rec.gbps = metrics.gbps(case.nbytes_min, rec.seconds)
            cb = copies[impl.device]
            if cb:
                rec.copy_gbps = cb
                rec.pct_copy = metrics.pct_copy(rec.gbps, cb)
            if memory:
                try:
                    rec.workspace_bytes = workspace_bytes(thunk, impl.array, impl.device)
                except (Exception, SystemExit) as e:  # noqa: BLE001
                    rec.status, rec.reason = "error", error_reason(e)
        return recs
    finally:
        del ready
        gc.collect()


def _copy_gbps(device: str) -> float | None:
    from lnbench.measure.machine import copy_bandwidth

    return copy_bandwidth(device)


def run(
    impls: Iterable[Impl],
    items: Iterable[Case | CaseData],
    *,
    repeat: int = 7,
    max_time: float = 2.0,
    memory: bool = True,
    retries: int | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Measure every implementation on every case (lnbench.caseloop: inputs built once per
    case, a fault costs only its point; the implementations of a case timed interleaved:
    :func:`measure_case`)."""

    def without_inputs(impl: Impl, case: Case, skip: str | None, why: str) -> list[Record]:
        return [Record(**Key.of(impl, case).as_dict(), status="skipped" if skip else "error",
                       reason=skip or why)]

    def per_case(imps: Sequence[Impl], data: CaseData) -> list[Record]:
        return measure_case(imps, data, repeat=repeat, max_time=max_time, memory=memory,
                            retries=retries)

    def each(recs: list[Record]) -> None:
        for rec in recs:
            on_record(rec)  # type: ignore[misc]

    return run_cases(list(impls), items, per_case=per_case, without_inputs=without_inputs,
                     make=make_data, on_case=each if on_record else None)
