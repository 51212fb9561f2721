"""The launch-plan sweep (``--sweep``): every launch variant of the implementations that
declare one (``Impl.sweep``: cupy.fused and triton.fused, ``lnbench.impls.launch``), judged and
timed like a point, after the table, while the budget lasts; and the table of the heuristic's
plan (the first variant) against the fastest correct one.

A variant that raises is that variant's ``error``; a sticky CUDA error ends the worker (the
parent excludes that implementation and a new worker goes on); a sweep that cannot be set up
is one ``(setup)`` error row.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lnbench.gpu import judging, measure, rows
from lnbench.gpu.preflight import log


def sweep_pass(w: Any) -> int:
    """--sweep after the table, in the worker ``w`` (:class:`lnbench.gpu.worker.Worker`)."""
    from lnbench.grid import Case, make_data
    from lnbench.measure import cuda as mc

    done_rows = rows.read_rows(w.jl)
    done = {(r["impl"], r["case"], r["label"]) for r in done_rows if r.get("type") == "sweep"}
    ended = {(r["impl"], r["case"]) for r in done_rows if r.get("type") == "sweep_end"}
    sweepers = [i for i in w.impls if i.sweep is not None and i.name not in w.excluded]
    work = []
    for M, N, dt in w.grid:
        case = Case(M, N, dt, "normal")
        todo = [i for i in sweepers if (i.name, case.name) not in ended
                and not i.unavailable() and not i.unsupported(case)]
        if todo:
            work.append((case, todo))
    pool = ThreadPoolExecutor(max_workers=1)  # next case's inputs made while the GPU works
    pending = {c: pool.submit(make_data, c) for c, _ in work[:1]}
    try:
        for k, (case, todo) in enumerate(work):
            if time.time() > w.deadline:
                w.emit({"type": "sweep_note", "reason": f"time budget spent before {case.name}"})
                break
            data = pending.pop(case).result()
            if k + 1 < len(work):
                pending[work[k + 1][0]] = pool.submit(make_data, work[k + 1][0])
            ref = judging.reference_for(data, True, w.args.exact_ref)
            for impl in todo:
                if sweep_impl(w, impl, data, ref, done):
                    return 3
            del data, ref
            mc.free_device_memory()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return 0


def sweep_impl(w: Any, impl: Any, data: Any, ref: judging.Reference,
               done: set[tuple[str, str, str]]) -> bool:
    """Every variant of ``impl`` on one case; True after a sticky CUDA error."""
    from lnbench.judge import error_reason

    case = data.case
    w.emit({"type": "sweep_start", "impl": impl.name, "case": case.name})
    try:
        for label, params, build in impl.sweep(data):
            if (impl.name, case.name, label) in done:
                continue
            if time.time() > w.deadline:
                w.emit({"type": "sweep_note",
                        "reason": f"time budget spent during {impl.name} {case.name}"})
                break
            if sweep_variant(w, impl, data, ref, label, params, build):
                return True
    except Exception as e:  # noqa: BLE001 - the sweep itself could not be set up
        w.emit({"type": "sweep", "impl": impl.name, "case": case.name, "dtype": case.dtype,
                "label": "(setup)", "params": {}, "status": "error", "reason": error_reason(e)})
    w.emit({"type": "sweep_end", "impl": impl.name, "case": case.name})
    return False


def sweep_variant(w: Any, impl: Any, data: Any, ref: judging.Reference, label: str,
                  params: dict[str, Any], build: Any) -> bool:
    """One variant's row; True after a sticky CUDA error (the row is written first)."""
    from lnbench.judge import error_reason
    from lnbench.measure import cuda as mc

    case = data.case
    rec = {"type": "sweep", "impl": impl.name, "case": case.name, "dtype": case.dtype,
           "label": label, "params": params}
    try:
        rec.update(measure.sweep_variant(build, data, ref, w.copy_gbps, w.deadline,
                                             impl.numerics))
    except Exception as e:  # noqa: BLE001 - a variant's failure is its result
        rec.update(status="error", reason=error_reason(e))
        if rows.is_sticky(rec["reason"]):
            rec["sticky"] = True
            w.emit(rec)
            log(f"sweep {impl.name} {case.name} {label}: sticky CUDA error: {rec['reason']}")
            return True
    w.emit(rec)
    log(f"sweep {impl.name:12s} {case.name:24s} {label:40s} "
        + (f"{rec['gbps']:7.0f} GB/s" if rec.get("status") == "ok"
           else f"{rec['status']}: {rec.get('reason', '')[:60]}"))
    mc.free_device_memory()
    return False


def sweep_table(sweep: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (impl, case): the heuristic's plan (the first variant) against the fastest correct
    one."""
    out = []
    for key in dict.fromkeys((r["impl"], r["case"]) for r in sweep):
        rs = [r for r in sweep if (r["impl"], r["case"]) == key]
        ok = [r for r in rs if r.get("status") == "ok"]
        first = rs[0] if rs and rs[0].get("status") == "ok" else None
        best = max(ok, key=lambda r: r["gbps"]) if ok else None
        out.append({"impl": key[0], "case": key[1], "variants": len(rs),
                    "not_ok": len(rs) - len(ok),
                    "default": first and first["label"], "default_gbps": first and first["gbps"],
                    "best": best and best["label"], "best_gbps": best and best["gbps"],
                    "best_params": best and best["params"],
                    "gain_pct": (100 * (best["gbps"] / first["gbps"] - 1)
                                 if first and best else None)})
    return out
