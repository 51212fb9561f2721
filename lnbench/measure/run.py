"""Measure implementations over cases: the one code path behind ``lnbench run`` and asv.

Per (implementation, case): prepare outside timing, judge the result (rel_err of dx, dγ, dβ),
time the backward (median of per-call samples), measure its workspace, and derive GB/s from the
minimal bytes model of ANCHORS.md and % of this machine's measured copy bandwidth. An
unavailable implementation or unsupported dtype is ``skipped`` with its reason; one that raises
or runs out of memory is ``error`` with a one-line reason, and the run goes on.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

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
    status: str  # ok | fail (judged wrong, still timed) | skipped | error
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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


def _base(impl: Impl, case: Case) -> dict[str, Any]:
    return dict(impl=impl.name, case=case.name, M=case.M, N=case.N, dtype=case.dtype,
                dist=case.dist, device=impl.device)


def measure(
    impl: Impl,
    data: CaseData,
    *,
    repeat: int = 7,
    max_time: float = 2.0,
    memory: bool = True,
    copy_gbps: Callable[[str], float | None] | None = None,
) -> Record:
    """Judge, time and size one backward. Never raises for the implementation's faults."""
    import time

    from lnbench.measure.memory import workspace_bytes
    from lnbench.measure.timing import time_thunk

    case = data.case
    why = impl.unavailable() or impl.unsupported(case)
    if why:
        return Record(**_base(impl, case), status="skipped", reason=why)
    try:
        t0 = time.perf_counter()
        thunk = impl.make(data)
        outs = as_triple(thunk())
        prep = time.perf_counter() - t0
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure of the impl is a result
        return Record(**_base(impl, case), status="error", reason=error_reason(e))
    try:
        ref = data.reference(impl.affine)
    except MemoryError as e:  # the machine, not the implementation: said so, the run goes on
        return Record(**_base(impl, case), status="error", reason=f"reference: {error_reason(e)}")
    errs: dict[str, float | None] = {}
    status, reasons = "ok", []
    for i, g in enumerate(GRADS):
        if not impl.affine and g != "dx":
            errs[g] = None
            continue
        st, why, nums = judge_grad(outs[i], ref[i], g, data, impl.affine)
        errs[g] = nums["rel_err"]
        if st != "ok":
            status = "fail"
            reasons.append(why)
    del outs
    rec = Record(**_base(impl, case), status=status, reason="; ".join(reasons),
                 prepare_seconds=prep, rel_err_dx=errs["dx"], rel_err_dgamma=errs["dgamma"],
                 rel_err_dbeta=errs["dbeta"])
    try:
        t = time_thunk(thunk, impl.device, repeat=repeat, max_time=max_time)
        rec.seconds, rec.seconds_q25, rec.seconds_q75 = t.median, t.q25, t.q75
        rec.samples, rec.timer = len(t.samples), t.method
        rec.gbps = case.nbytes_min / t.median / 1e9
        cb = (copy_gbps or _copy_gbps)(impl.device)
        if cb:
            rec.copy_gbps = cb
            rec.pct_copy = 100 * rec.gbps / cb
        if memory:
            rec.workspace_bytes = workspace_bytes(thunk, impl.array, impl.device)
    except (Exception, SystemExit) as e:  # noqa: BLE001
        rec.status, rec.reason = "error", error_reason(e)
    finally:
        del thunk
        gc.collect()
    return rec


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
    on_record: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Measure every implementation on every case (inputs built once per case)."""
    impls = list(impls)
    out = []
    for item in items:
        try:
            data: CaseData | None = None
            why = ""
            if not isinstance(item, Case):
                data = item
            elif not all(i.unavailable() or i.unsupported(item) for i in impls):
                data = make_data(item)  # else nothing here would run: no inputs to make
        except MemoryError as e:  # inputs too large for this machine: every point says so
            data, why = None, f"inputs: {error_reason(e)}"
        for impl in impls:
            if data is None:
                case = item
                skip = impl.unavailable() or impl.unsupported(case)
                rec = Record(**_base(impl, case), status="skipped" if skip else "error",
                             reason=skip or why)
            else:
                rec = measure(impl, data, repeat=repeat, max_time=max_time, memory=memory)
            out.append(rec)
            if on_record:
                on_record(rec)
        del data
    return out
