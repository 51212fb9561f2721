"""``profile_impl``: every measurement of one (implementation, case), assembled into a
:class:`~lnbench.measure.profile.result.ProfileResult`.

The thunk is prepared once (``Impl.make``), outside anything timed. In order:

1. **time** — the median of per-call samples, untraced (``lnbench.measure.timing.time_thunk``, as
   ``lnbench run``), with the minor page faults per untraced call on the CPU (:mod:`.faults`);
2. ``k`` = ``budget`` / median calls, clamped to 1..20, go to each tracer and profiler below;
3. **ops** — the backend's tracer (:mod:`.numpy_tracer` for NumPy and, around the kernel, for
   Numba; :mod:`.torch_tracer` for eager torch; none for ``torch.compile`` and CuPy), aggregated
   into the ops table (:mod:`.ops`);
4. **profiler** — the backend's own profiler (:mod:`.profilers`), and the trace file
   (:mod:`.chrome_trace` for NumPy/Numba, torch.profiler's for torch);
5. **temporaries** — from the ops, the peak workspace and Numba's runtime (:mod:`.temporaries`);
6. **bytes moved** — the ops or boundary model against ``Case.nbytes_min`` (:mod:`.bytes_moved`),
   and the rates against this machine's copy bandwidth.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lnbench import metrics
from lnbench.grid import CaseData
from lnbench.measure.profile.bytes_moved import BOUNDARY_NOTE, bytes_moved
from lnbench.measure.profile.chrome_trace import write_numpy_trace
from lnbench.measure.profile.faults import fault_cost_seconds, minflt
from lnbench.measure.profile.numpy_tracer import trace_numpy
from lnbench.measure.profile.ops import Event, aggregate
from lnbench.measure.profile.profilers import cprofile, cupy_profile, torch_profiler
from lnbench.measure.profile.result import ProfileResult, ProfileUnavailable
from lnbench.measure.profile.temporaries import nrt_allocations, peak_workspace, temporaries
from lnbench.measure.profile.torch_tracer import trace_torch
from lnbench.registry import Impl, as_triple

BACKENDS = ("numpy", "numba", "torch", "cupy")


def backend_for(impl: Impl) -> str:
    """Which profiler applies: torch and CuPy by array library; Numba by family or requirement."""
    if impl.array in ("torch", "cupy"):
        return impl.array
    if impl.family == "numba" or "numba" in impl.requires:
        return "numba"
    return "numpy"


def _iterations(seconds: float, budget: float) -> int:
    return int(min(20, max(1, math.ceil(budget / max(seconds, 1e-9)))))


@dataclass
class _Traced:
    """What the backend's tracer and profiler gave (steps 3 and 4)."""

    profiler: str
    outs: Any
    trace: str | None
    events: list[Event] = field(default_factory=list)
    traced_seconds: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    temps: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _trace_and_profile(impl: Impl, backend: str, thunk: Callable[[], Any], k: int,
                       trace: str | None, case_name: str) -> _Traced:
    t = _Traced(profiler="", outs=as_triple(thunk()), trace=trace)
    if backend in ("numpy", "numba"):
        inject = backend == "numpy"
        t.events, t.traced_seconds, t.outs, spans = trace_numpy(thunk, k, inject)
        if not inject:
            t.notes.append("Numba: the compiled kernel is one opaque call; ops list only the "
                           "arrays created around it (np.empty & co.)")
        t.rows = cprofile(thunk, k)
        t.profiler = "cProfile (per Python function / C builtin, own time)"
        if trace:
            write_numpy_trace(trace, t.events, spans, impl.name, case_name)
        nrt = nrt_allocations(thunk)
        if nrt is not None:
            t.temps["numba_nrt_allocations"] = nrt
    elif backend == "torch":
        if impl.kind == "compiled":
            t.notes.append("torch.compile: Dynamo does not run under a dispatch mode, so the "
                           "op list is empty; the profiler table shows the compiled region")
        else:
            t.events, t.traced_seconds, t.outs = trace_torch(thunk, k, impl.device)
        t.rows, mem = torch_profiler(thunk, k, impl.device, trace)
        t.temps.update(mem)
        t.profiler = ("torch.profiler (self CUDA time per op/kernel)" if impl.device == "cuda"
                      else "torch.profiler (self CPU time per op)")
    else:  # cupy
        t.rows, note = cupy_profile(thunk, k)
        t.notes.append(note)
        t.profiler = "cupyx.profiler.benchmark"
        if trace:
            t.notes.append("no trace file: CuPy gives no in-process timeline")
            t.trace = None
    return t


def profile_impl(
    impl: Impl,
    data: CaseData,
    *,
    trace: str | os.PathLike[str] | None = None,
    repeat: int = 7,
    max_time: float = 2.0,
    budget: float = 0.3,
) -> ProfileResult:
    """Profile one implementation on one case (see the module docstring for what is measured).

    ``budget`` seconds of backward calls (1 to 20 calls) go to each tracer and profiler.
    Raises :class:`ProfileUnavailable` when the implementation cannot run here or does not
    take the case.
    """
    from lnbench.measure.machine import copy_bandwidth, cpu_model, machine_name
    from lnbench.measure.timing import time_thunk

    case = data.case
    why = impl.unavailable() or impl.unsupported(case)
    if why:
        raise ProfileUnavailable(f"{impl.name}: {why}")
    backend = backend_for(impl)
    thunk = impl.make(data)
    f0 = minflt()
    timing = time_thunk(thunk, impl.device, repeat=repeat, max_time=max_time)
    # time_cpu makes 2 calls (warm-up, calibration) before its samples
    calls = timing.number * len(timing.samples) + (2 if impl.device == "cpu" else 0)
    faults = (minflt() - f0) / calls if impl.device == "cpu" else None
    sec = timing.median
    k = _iterations(sec, budget)

    t = _trace_and_profile(impl, backend, thunk, k, str(trace) if trace else None, case.name)
    notes, temps, events = t.notes, t.temps, t.events
    ops = aggregate(events, k)
    ops_seconds = sum(e.dt for e in events) / k if events else None
    temps.update(temporaries(events, t.outs, k) if events else {})
    try:
        temps.update(peak_workspace(thunk, impl.array, impl.device))
    except Exception as e:  # noqa: BLE001
        notes.append(f"peak workspace not measured: {type(e).__name__}: {e}")

    moved, method = bytes_moved(ops, events, t.traced_seconds, ops_seconds, case.nbytes_min,
                                thunk, t.outs)
    if method == "boundary":
        notes.append(BOUNDARY_NOTE)
    cb = copy_bandwidth(impl.device)
    gbps = metrics.gbps(case.nbytes_min, sec)
    eff = metrics.gbps(moved, sec) if moved else None
    return ProfileResult(
        impl=impl.name, case=case.name, M=case.M, N=case.N, dtype=case.dtype, dist=case.dist,
        device=impl.device, backend=backend, profiler=t.profiler,
        seconds=sec, seconds_q25=timing.q25, seconds_q75=timing.q75,
        samples=len(timing.samples), iterations=k,
        nbytes_min=case.nbytes_min, bytes_moved=moved or None, bytes_method=method,
        moves_x_min=moved / case.nbytes_min if moved else None,
        gbps=gbps, effective_gbps=eff, copy_gbps=cb,
        pct_copy=metrics.pct_copy(gbps, cb),
        effective_pct_copy=metrics.pct_copy(eff, cb) if eff else None,
        page_faults_per_call=faults,
        fault_seconds=fault_cost_seconds() if faults is not None else None,
        traced_seconds=t.traced_seconds, ops_seconds=ops_seconds,
        ops=ops, ops_total=len(ops), profiler_rows=t.rows, temporaries=temps,
        trace=t.trace,
        machine={"name": machine_name(), "cpu_model": cpu_model(), "threads": _threads()},
        notes=notes,
    )


def _threads() -> int | None:
    if "torch" in sys.modules:
        import torch

        return int(torch.get_num_threads())
    return os.cpu_count()
