"""Judging an implementation's gradients against the exact reference, element by element.

Each element of each gradient is held to its own forward-error bound ``B`` (:mod:`lnbench.bounds`
derives them, with the constants and the numbers they give on the grid): the verdict is
``err_ratio = max |got − ref| / B ≤ 1``. :func:`judge_array` computes it with any array
namespace (NumPy here, CuPy or torch on a GPU); :func:`judge_grad` on the CPU; :func:`check_impl`
runs one implementation on one case and judges its gradients; :func:`summarize` is `check`'s
summary.

Reported per gradient: ``max_abs_err`` = max|got − ref|; ``rel_err`` = max_abs_err / max|ref|
(max|ref| replaced, where the reference is exactly zero, by the scale of the terms it sums);
``err_ratio`` = max |got − ref| / B, the verdict (pass iff ≤ 1); ``tol`` = max B / max|ref|,
the loosest element's bound in rel_err's units (a pass implies rel_err ≤ tol, not conversely).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lnbench.arrays import to_numpy
from lnbench.bounds import (  # noqa: F401  (the bounds' public names, as judge has them)
    GRADS,
    Room,
    _ref_scale,
    case_bounds,
    device_bounds,
    device_tolerances,
    error_bounds,
    grid_numbers,
    room,
    saved_stat_errors,
    tolerance,
    tolerance_from_scales,
)
from lnbench.dtypes import dtype_name
from lnbench.grid import Case, CaseData
from lnbench.registry import Impl, Numerics, as_triple


@dataclass
class GradResult:
    impl: str
    case: str
    M: int
    N: int
    dtype: str
    dist: str
    grad: str
    max_abs_err: float | None
    rel_err: float | None
    tol: float | None
    passed: bool
    status: str  # ok | fail | skipped | error
    reason: str
    err_ratio: float | None = None  # max |got − ref| / its element's bound; passes iff <= 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("max_abs_err", "rel_err", "tol", "err_ratio"):  # JSON has no inf/NaN
            v = d[k]
            if v is not None and not math.isfinite(v):
                d[k] = None if math.isnan(v) else (1e308 if v > 0 else -1e308)
        return d


def _size(a: Any) -> int:
    return math.prod(a.shape)


def _max_abs(xp: Any, a: Any) -> float:
    return float(xp.max(xp.abs(a))) if _size(a) else 0.0


def grads_for(impl: Impl) -> tuple[str, ...]:
    """Gradients an implementation is judged on (no-affine: dx only, against γ = 1, β = 0)."""
    return GRADS if impl.affine else ("dx",)


def judge_grad(got: Any, ref: np.ndarray, grad: str, data: CaseData, affine: bool = True,
               numerics: Numerics | None = None) -> tuple[str, str, dict]:
    """(status, reason, numbers) for one gradient; ``ref`` is ``data.reference(affine)[i]``,
    ``numerics`` the implementation's declared style (None: undeclared, room for every style).

    ``numbers``: max_abs_err, rel_err, tol, err_ratio (module docstring)."""
    import array_api_compat.numpy as xp

    i = GRADS.index(grad)
    bound = case_bounds(data, affine, numerics)[i].reshape(ref.shape)
    T = data.term_scales(affine)
    zero_scale = T[i] or (T[2] if grad == "dgamma" else 0.0)
    if got is not None:
        try:
            got = to_numpy(got)
        except Exception as e:
            nums = {"max_abs_err": None, "rel_err": None, "err_ratio": None,
                    "tol": _tol(xp, ref, bound, zero_scale)}
            return "fail", f"{grad}: cannot read result ({type(e).__name__}: {e})", nums
    return judge_array(xp, got, ref, bound, grad, data.case, zero_scale=zero_scale)


def _tol(xp: Any, ref: Any, bound: Any, zero_scale: float) -> float:
    scale = _max_abs(xp, ref) or zero_scale
    bmax = float(xp.max(bound)) if _size(bound) else 0.0
    return bmax / scale if scale > 0 else bmax


def judge_array(xp: Any, got: Any, ref: Any, bound: Any, grad: str, case: Case, *,
                zero_scale: float = 0.0) -> tuple[str, str, dict]:
    """The verdict on one gradient from arrays of any array namespace ``xp`` (array-api-compat's
    numpy, torch or cupy): ``got`` the result (in its own dtype, or None), ``ref`` the float64
    reference and ``bound`` its per-element bounds (:func:`case_bounds` or
    :func:`device_bounds`, reshaped to ref's shape), both of xp; ``zero_scale`` the scale
    rel_err divides by where the reference is exactly zero (``reference.term_scales``).

    Returns (status, reason, numbers) exactly as :func:`judge_grad` (which calls it with NumPy):
    status ``ok`` or ``fail``; numbers max_abs_err, rel_err, tol, err_ratio."""
    nums: dict[str, float | None] = {"max_abs_err": None, "rel_err": None,
                                     "tol": _tol(xp, ref, bound, zero_scale), "err_ratio": None}
    if got is None:
        return "fail", f"{grad} is None (an affine implementation must return it)", nums
    want = [(case.M, case.N)] if grad == "dx" else [(case.N,), (1, case.N)]
    if tuple(got.shape) not in want:
        exp = " or ".join(map(str, want))
        return "fail", f"{grad} shape {tuple(got.shape)}, expected {exp}", nums
    a = xp.astype(xp.reshape(got, tuple(ref.shape)), xp.float64)
    diff = xp.abs(a - ref)
    scale = _max_abs(xp, ref) or zero_scale
    max_abs = float(xp.max(diff)) if _size(diff) else 0.0
    rel = max_abs / scale if scale > 0 else max_abs
    finite = xp.isfinite(a)
    masked = xp.where(finite, diff / bound, -1.0)
    ratio = max(0.0, float(xp.max(masked))) if _size(masked) else 0.0
    n_nan, n_inf = int(xp.sum(xp.isnan(a))), int(xp.sum(xp.isinf(a)))
    if n_nan or n_inf:
        ratio = math.inf
    nums.update(max_abs_err=max_abs, rel_err=rel, err_ratio=ratio)
    got_dtype = dtype_name(got.dtype)
    if got_dtype != case.dtype:
        # the values are judged all the same: the row says what error they would have had
        return "fail", (f"{grad} dtype {got_dtype}, expected {case.dtype}"
                        f" (values: {_verdict_text(ratio)})"), nums
    if n_nan or n_inf:
        return "fail", f"{grad} has non-finite values ({n_nan} NaN, {n_inf} inf)", nums
    if ratio > 1.0:
        flat = int(xp.argmax(xp.reshape(masked, (-1,))))
        k = tuple(int(v) for v in np.unravel_index(flat, tuple(ref.shape)))
        where = f"[{', '.join(map(str, k))}]"
        if _max_abs(xp, ref) > 0 and not bool(xp.any(a != 0)):
            return "fail", f"{grad} is all zeros (reference scale {scale:.3g})", nums
        return "fail", (f"{grad} error {float(diff[k]):.3g} at {where} is {ratio:.3g}x its bound "
                        f"{float(bound[k]):.3g} (rel_err {rel:.3g})"), nums
    return "ok", "", nums


def _verdict_text(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "non-finite"
    return f"err_ratio {ratio:.3g}, {'within' if ratio <= 1 else 'out of'} bounds"


def _rows(impl: Impl, data: CaseData | Case, status: str, reason: str,
          per_grad: dict[str, tuple[str, str, dict]] | None = None) -> list[GradResult]:
    c = data if isinstance(data, Case) else data.case
    out = []
    for g in grads_for(impl):
        st, why, nums = per_grad[g] if per_grad else (status, reason, {})
        out.append(GradResult(impl.name, c.name, c.M, c.N, c.dtype, c.dist, g,
                              nums.get("max_abs_err"), nums.get("rel_err"), nums.get("tol"),
                              st == "ok", st, why, nums.get("err_ratio")))
    return out


def error_reason(e: BaseException) -> str:
    """One line for an exception; out-of-memory errors say so first."""
    if isinstance(e, SystemExit):
        return f"SystemExit: the implementation called sys.exit({e.code!r})"
    msg = (str(e).strip().splitlines() or [""])[0][:300]
    name = type(e).__name__
    if isinstance(e, MemoryError) or "out of memory" in msg.lower() or "OutOfMemory" in name:
        return f"out of memory: {name}: {msg}"
    return f"{name}: {msg}"


def check_impl(impl: Impl, data: CaseData) -> list[GradResult]:
    """Judge ``impl`` on one case; unavailability is ``skipped``, an exception ``error``."""
    why = impl.unavailable() or impl.unsupported(data.case)
    if why:
        return _rows(impl, data, "skipped", why)
    try:
        thunk = impl.make(data)
        outs = as_triple(thunk())
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure of the impl is a result
        return _rows(impl, data, "error", error_reason(e))
    try:
        ref = data.reference(impl.affine)
        case_bounds(data, impl.affine, impl.numerics)
    except MemoryError as e:  # the machine, not the implementation: said so, and the run goes on
        return _rows(impl, data, "error", f"reference: {error_reason(e)}")
    per = {g: judge_grad(outs[i], ref[i], g, data, impl.affine, impl.numerics)
           for i, g in enumerate(GRADS)}
    return _rows(impl, data, "", "", per)


def case_error_rows(impl: Impl, case: Case, reason: str) -> list[GradResult]:
    """Rows for a case whose inputs could not be made (e.g. out of memory): ``error`` with the
    reason, or ``skipped`` where the implementation would not have run anyway."""
    why = impl.unavailable() or impl.unsupported(case)
    return _rows(impl, case, "skipped", why) if why else _rows(impl, case, "error", reason)


SUMMARY_MIN_N = 64  # worst_rel_err_n64: leaves out the tiny, cancelling cases (2x4's N = 4)


def summarize(results: list[GradResult]) -> dict[str, Any]:
    """Counts per status overall and per implementation, and per impl/grad: ``worst_err_ratio``
    (the verdict's measure, comparable across cases: pass iff <= 1), ``worst_rel_err`` over all
    cases and ``worst_rel_err_n64`` over cases with N >= 64 (not set by the 2x4 case)."""
    counts = {s: 0 for s in ("ok", "fail", "error", "skipped")}
    per_impl: dict[str, dict[str, Any]] = {}
    for r in results:
        counts[r.status] += 1
        d = per_impl.setdefault(r.impl, {s: 0 for s in counts} | {
            "worst_rel_err": {}, "worst_rel_err_n64": {}, "worst_err_ratio": {}})
        d[r.status] += 1
        for key, v, use in (("worst_rel_err", r.rel_err, True),
                            ("worst_rel_err_n64", r.rel_err, r.N >= SUMMARY_MIN_N),
                            ("worst_err_ratio", r.err_ratio, True)):
            if v is not None and use:
                w = d[key]
                e = v if math.isfinite(v) else 1e308  # NaN/inf: worst, JSON-safe
                w[r.grad] = max(w.get(r.grad, 0.0), e)
    return {"total": len(results), **counts, "impls": per_impl}


if __name__ == "__main__":  # python -m lnbench.judge [grid]: the tolerance table of docs/judge.md
    import runpy

    runpy.run_module("lnbench.bounds", run_name="__main__")
