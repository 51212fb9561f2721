"""Judging an implementation's gradients against the exact reference.

Per gradient: ``max_abs_err`` = max|got − ref| and ``rel_err`` = max|got − ref| / max|ref|.
Where the reference is exactly zero (dγ of zero-variance rows, dx of N = 1), max|ref| is
replaced by the scale T of the terms it sums (for dγ with x̂ ≡ 0, that of dβ's terms).
Tolerance (README "Tolerances"):

    tol = 4·u_out + u_acc·(4·κ + 4·sqrt(L))·c

- ``u_out``: unit roundoff of the output dtype — one rounding of the result is unavoidable
  (2**-24 float32, 2**-11 float16, 2**-8 bfloat16, 2**-53 float64);
- ``u_acc``: unit roundoff of a sound accumulation dtype (float32 for 16-bit inputs);
- ``κ = max |x|·rstd``: x − μ with μ rounded or summed in u_acc loses a few u_acc·|μ|·rstd
  (the "offset" case: κ ≈ 1e4); applies to dx and dγ, not to dβ = Σ dy;
- ``L``: the reduction length (N for dx, M for dγ and dβ); random-walk growth sqrt(L);
- ``c = max(1, T / max|ref|)``: the condition number of the summation (Higham §4.2) — where
  the result cancels (N = 2, column sums of dy near zero) its relative error grows by c.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lnbench.arrays import to_numpy
from lnbench.dtypes import UNIT_ROUNDOFF, compute_dtype, dtype_name
from lnbench.grid import Case, CaseData
from lnbench.registry import Impl, as_triple

GRADS = ("dx", "dgamma", "dbeta")


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("max_abs_err", "rel_err", "tol"):  # JSON has no inf/NaN
            v = d[k]
            if v is not None and not math.isfinite(v):
                d[k] = None if math.isnan(v) else (1e308 if v > 0 else -1e308)
        return d


def tolerance(data: CaseData, grad: str, affine: bool = True) -> float:
    """The dtype- and conditioning-aware tolerance on ``rel_err`` (module docstring)."""
    S, T = _scales(data, grad, affine)
    return tolerance_from_scales(data.case, data.kappa, grad, S, T)


def tolerance_from_scales(case: Case, kappa: float, grad: str, S: float, T: float) -> float:
    """:func:`tolerance` from the numbers it needs: κ of the case, S = max|reference| of the
    gradient and T = its term scale (``reference.term_scales``). For a caller that has them
    without the extended-precision reference (``scripts/gpu-check`` computes them on the GPU)."""
    u_out = UNIT_ROUNDOFF[case.dtype]
    u_acc = UNIT_ROUNDOFF[compute_dtype(case.dtype)]
    L = case.N if grad == "dx" else case.M
    k = kappa if grad != "dbeta" else 0.0
    c = max(1.0, T / S) if S > 0 else 1.0
    return 4 * u_out + u_acc * (4 * k + 4 * math.sqrt(L)) * c


def _scales(data: CaseData, grad: str, affine: bool) -> tuple[float, float]:
    """(max|ref|, T): the result's scale and the scale of the terms it sums."""
    i = GRADS.index(grad)
    ref = data.reference(affine)[i]
    return (float(np.max(np.abs(ref))) if ref.size else 0.0), data.term_scales(affine)[i]


def grads_for(impl: Impl) -> tuple[str, ...]:
    """Gradients an implementation is judged on (no-affine: dx only, against γ = 1, β = 0)."""
    return GRADS if impl.affine else ("dx",)


def judge_grad(
    got: Any, ref: np.ndarray, grad: str, data: CaseData, affine: bool = True
) -> tuple[str, str, dict]:
    """(status, reason, numbers) for one gradient; ``ref`` is ``data.reference(affine)[i]``."""
    case = data.case
    nums: dict[str, float | None] = {"max_abs_err": None, "rel_err": None,
                                     "tol": tolerance(data, grad, affine)}
    if got is None:
        return "fail", f"{grad} is None (an affine implementation must return it)", nums
    try:
        arr = to_numpy(got)
    except Exception as e:
        return "fail", f"{grad}: cannot read result ({type(e).__name__}: {e})", nums
    want = [(case.M, case.N)] if grad == "dx" else [(case.N,), (1, case.N)]
    if tuple(arr.shape) not in want:
        exp = " or ".join(map(str, want))
        return "fail", f"{grad} shape {tuple(arr.shape)}, expected {exp}", nums
    if dtype_name(arr.dtype) != case.dtype:
        return "fail", f"{grad} dtype {dtype_name(arr.dtype)}, expected {case.dtype}", nums
    a = arr.astype(np.float64).reshape(ref.shape)
    diff = np.abs(a - ref)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    if scale == 0.0:  # exactly-zero reference: judge against the scale of its terms
        T = data.term_scales(affine)
        # dγ of zero-variance rows sums dy·x̂ with x̂ ≡ 0: take |x̂| ~ 1, i.e. dβ's terms
        scale = T[GRADS.index(grad)] or (T[2] if grad == "dgamma" else 0.0)
    max_abs = float(np.max(diff)) if diff.size else 0.0
    rel = max_abs / scale if scale > 0 else max_abs
    nums.update(max_abs_err=max_abs, rel_err=rel)
    n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    if n_nan or n_inf:
        return "fail", f"{grad} has non-finite values ({n_nan} NaN, {n_inf} inf)", nums
    # zeros for a nonzero reference fail even when the reference is tiny (KernelBench #165),
    # unless the reference is itself zero within the tolerance: all its size is cancellation
    # noise (e.g. dx at N = 2, where x̂ = ±1 makes dx vanish but for eps), so tol >= 1
    if float(np.max(np.abs(ref), initial=0.0)) > 0 and not np.any(a) and nums["tol"] < 1.0:
        return "fail", f"{grad} is all zeros (reference scale {scale:.3g})", nums
    if rel > nums["tol"]:
        return "fail", f"{grad} rel_err {rel:.3g} > tol {nums['tol']:.3g}", nums
    return "ok", "", nums


def _rows(impl: Impl, data: CaseData | Case, status: str, reason: str,
          per_grad: dict[str, tuple[str, str, dict]] | None = None) -> list[GradResult]:
    c = data if isinstance(data, Case) else data.case
    out = []
    for g in grads_for(impl):
        st, why, nums = per_grad[g] if per_grad else (status, reason, {})
        out.append(GradResult(impl.name, c.name, c.M, c.N, c.dtype, c.dist, g,
                              nums.get("max_abs_err"), nums.get("rel_err"), nums.get("tol"),
                              st == "ok", st, why))
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
    except MemoryError as e:  # the machine, not the implementation: said so, and the run goes on
        return _rows(impl, data, "error", f"reference: {error_reason(e)}")
    per = {g: judge_grad(outs[i], ref[i], g, data, impl.affine) for i, g in enumerate(GRADS)}
    return _rows(impl, data, "", "", per)


def case_error_rows(impl: Impl, case: Case, reason: str) -> list[GradResult]:
    """Rows for a case whose inputs could not be made (e.g. out of memory): ``error`` with the
    reason, or ``skipped`` where the implementation would not have run anyway."""
    why = impl.unavailable() or impl.unsupported(case)
    return _rows(impl, case, "skipped", why) if why else _rows(impl, case, "error", reason)


def summarize(results: list[GradResult]) -> dict[str, Any]:
    """Counts per status overall and per implementation, and the worst rel_err per impl/grad."""
    counts = {s: 0 for s in ("ok", "fail", "error", "skipped")}
    per_impl: dict[str, dict[str, Any]] = {}
    for r in results:
        counts[r.status] += 1
        d = per_impl.setdefault(r.impl, {s: 0 for s in counts} | {"worst_rel_err": {}})
        d[r.status] += 1
        if r.rel_err is not None:
            w = d["worst_rel_err"]
            e = r.rel_err if math.isfinite(r.rel_err) else 1e308  # NaN/inf: worst, JSON-safe
            w[r.grad] = max(w.get(r.grad, 0.0), e)
    return {"total": len(results), **counts, "impls": per_impl}
