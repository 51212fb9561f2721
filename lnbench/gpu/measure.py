"""What the GPU check measures of one point, with lnbench's one measurement.

A case's points are *prepared* one by one (:func:`prepare`): the implementation's thunk is made
and called once, every gradient judged (:mod:`lnbench.gpu.judging`), dγ/dβ (dx for no-affine
implementations) compared bit for bit over two more calls (determinism), and the extra device
memory of one call taken (``lnbench.measure.cuda.cuda_workspace_bytes``). Then all of them are
*timed interleaved* (:func:`time_case`) by ``lnbench.measure.timing.time_interleaved`` —
the one interleaved measurement of ``lnbench run`` and the asv suite — on its CUDA clock
(``lnbench.measure.cuda.time_cuda``: CUDA events, the L2 flushed before each call): ``ROUNDS``
rounds of one timed call per point, in an order shuffled per round from a seed fixed by the case
name, so a slow spell of the GPU or the host lands on every contender alike and the ratios
against peers come from the same rounds (Google Benchmark's random interleaving, asv's
``--interleave-rounds``). Rounds stop early (after at least 3) when the check's budget is short.

Per point: the median of the samples, GB/s and % of the card's copy bandwidth from
``lnbench.metrics`` (bytes = ``metrics.BYTES_FORMULA``, the case's ``nbytes_min``).
"""

from __future__ import annotations

import statistics
import time
import zlib
from collections.abc import Callable
from typing import Any

from lnbench import metrics
from lnbench.gpu import judging

ROUNDS = 20  # interleaved rounds per case, one CUDA-event-timed call of each point per round


def prepare(impl: Any, data: Any, ref: judging.Reference) -> tuple[Callable[[], Any],
                                                                    dict[str, Any]]:
    """Everything but the timing for one implementation on one case: its thunk, and the
    point's judged, determinism and memory fields (raises what the implementation raises)."""
    from lnbench.judge import grads_for
    from lnbench.measure import cuda as mc
    from lnbench.registry import as_triple

    thunk = impl.make(data)
    outs = as_triple(thunk())
    errs = judging.judge(outs, ref, data, grads_for(impl), impl.numerics)
    first = [judging.bits(o) for o in outs]
    det = {"dx": True, "dgamma": True, "dbeta": True}
    for _ in range(2):
        again = [judging.bits(o) for o in as_triple(thunk())]
        for k, g in enumerate(det):
            det[g] = det[g] and judging.same_bits(first[k], again[k])
    del outs, first, again
    status = "ok" if all(e["status"] == "ok" for e in errs.values()) else "fail"
    return thunk, {
        "status": status,
        "reason": "; ".join(e["reason"] for e in errs.values() if e["reason"]),
        "rel_err": {g: e["rel_err"] for g, e in errs.items()},
        "err_ratio": {g: e["err_ratio"] for g, e in errs.items()},
        "tol": {g: e["tol"] for g, e in errs.items()},
        "deterministic": det["dgamma"] and det["dbeta"] if impl.affine else det["dx"],
        "deterministic_dx": det["dx"],
        "workspace_bytes": mc.cuda_workspace_bytes(thunk),
    }


def time_case(case: Any, thunks: list[Callable[[], Any]], deadline: float,
              before_sample: Callable[[int, int], None] | None = None) -> list[Any]:
    """``time_interleaved`` over a case's prepared thunks on the CUDA clock (module docstring):
    one Timing per thunk, with the error it raised (then its samples stop) or None."""
    from lnbench.measure.timing import time_interleaved

    left = max(0.0, deadline - time.time())
    per_thunk = min(2.0, max(0.05, left / (2 * max(1, len(thunks)))))
    return time_interleaved([(t, "cuda") for t in thunks], repeat=ROUNDS, max_time=per_thunk,
                            seed=zlib.crc32(case.name.encode()), before_sample=before_sample)


def timed_fields(case: Any, samples: list[float], copy_gbps: float | None) -> dict[str, Any]:
    """median_s, min_s, reps, GB/s and % of copy of a point's samples (``lnbench.metrics``)."""
    med = statistics.median(samples)
    gb = metrics.gbps(case.nbytes_min, med)
    return {"median_s": med, "min_s": min(samples), "reps": len(samples), "gbps": gb,
            "pct_copy": metrics.pct_copy(gb, copy_gbps)}


def sweep_variant(build: Callable[[], Callable[[], Any]], data: Any, ref: judging.Reference,
                  copy_gbps: float | None, deadline: float, numerics: Any = None,
                  ) -> dict[str, Any]:
    """One launch variant of the sweep: built, judged on every gradient, timed on the CUDA clock
    as :func:`time_case` times a point (raises what the variant raises)."""
    from lnbench.registry import as_triple

    thunk = build()
    outs = as_triple(thunk())
    errs = judging.judge(outs, ref, data, judging.GRADS, numerics)
    del outs
    (timing,) = time_case(data.case, [thunk], deadline)
    if timing.error is not None:
        raise timing.error
    fields = timed_fields(data.case, timing.samples, copy_gbps)
    bad = "; ".join(e["reason"] for e in errs.values() if e["status"] != "ok")
    return {"status": "fail" if bad else "ok", "reason": bad, "median_s": fields["median_s"],
            "gbps": fields["gbps"], "pct_copy": fields["pct_copy"],
            "rel_err": {g: e["rel_err"] for g, e in errs.items()}}
