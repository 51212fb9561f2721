"""Judging a GPU result where it lies: the reference and the judge's per-element bounds on the
device, over an array namespace.

The extended-precision CPU reference of ``lnbench.reference`` costs up to 30 s for one large
anchor case (4096×16384 float32 on a 2-core VM, its inputs 8 s more) — summed over the anchor
grid more than the check's whole budget. So by default the reference is computed on the GPU in
float64 from the case's rounded inputs, with two-pass statistics (:func:`device_reference`,
written over the array namespace ``xp`` of ``array_api_compat``: torch on the GPU, NumPy or
torch on the CPU in the tests), and each element is held to its own forward-error bound from
:func:`lnbench.judge.error_bounds`, evaluated by the same namespace on the same device — the
bounds, ``err_ratio`` verdict, ``rel_err`` and ``tol`` of ``lnbench check``
(docs/judge.md). float64 cases, and every case under ``--exact-ref``, use the CPU reference
and :func:`lnbench.judge.judge_grad` itself: a float64 reference is not exact enough to judge
float64 results (its own error is of the order of the bound).

For float32 and 16-bit cases the float64 reference is far inside the bounds: its error against
the extended-precision one is below 1e-3 of ``tol`` on every case the tests try
(tests/test_gpu_check.py), since ``u_64 = 1.1e-16`` against bounds of order ``u_32·√N``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lnbench.judge import GRADS

# the judge's gradient shapes: dx (M, N); dγ, dβ (N,) or (1, N)


@dataclass
class Reference:
    """The exact gradients, their element bounds and scales (max|ref| or the terms' scale)."""

    arrays: tuple[Any, Any, Any]
    bounds: tuple[Any, Any, Any] | None  # None: judged by lnbench.judge.judge_grad on the CPU
    scales: tuple[float, float, float]
    tols: dict[str, float]
    affine: bool


def uses_exact_reference(exact_ref: bool, case: Any) -> bool:
    """--exact-ref, or a float64 case (module docstring)."""
    return bool(exact_ref) or case.dtype == "float64"


def device_reference(data: Any, affine: bool, device: str = "cuda") -> Reference:
    """dx, dγ, dβ in float64 on ``device`` (torch) from the case's rounded inputs, two-pass
    statistics, with the judge's element bounds computed there (module docstring)."""
    import array_api_compat.torch as xp

    from lnbench.arrays import to_array
    from lnbench.judge import error_bounds

    x, dy, g = (to_array(a, "torch", device).double()
                for a in (data.x, data.dy, data.gamma_for(affine)))
    arrays, terms = backward64(xp, x, dy, g, data.eps)
    bounds = error_bounds(xp, x, dy, g, data.eps, data.case.dtype)
    del x, dy, g
    scales = tuple(_scale(xp, arrays[k], terms, k) for k in range(3))
    tols = {name: _bmax(xp, bounds[k]) / scales[k] if scales[k] > 0 else _bmax(xp, bounds[k])
            for k, name in enumerate(GRADS)}
    return Reference(arrays, bounds, scales, tols, affine)  # type: ignore[arg-type]


def backward64(xp: Any, x: Any, dy: Any, g: Any, eps: float,
               ) -> tuple[tuple[Any, Any, Any], tuple[float, float, float]]:
    """The backward in the inputs' (float64) precision over ``xp``, and each gradient's term
    scale as ``lnbench.reference.term_scales`` defines it (max over outputs of Σ|term|)."""
    mu = xp.mean(x, axis=1, keepdims=True)
    xc = x - mu
    rs = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=1, keepdims=True) + eps)
    xh = xc * rs
    del xc
    gg = dy * g
    m_g = xp.mean(gg, axis=1, keepdims=True)
    m_gx = xp.mean(gg * xh, axis=1, keepdims=True)
    dx = rs * (gg - m_g - xh * m_gx)
    terms = (float(xp.max(rs * (xp.abs(gg) + xp.abs(m_g) + xp.abs(xh * m_gx)))),
             float(xp.max(xp.sum(xp.abs(dy * xh), axis=0))),
             float(xp.max(xp.sum(xp.abs(dy), axis=0))))
    del gg
    return (dx, xp.sum(dy * xh, axis=0), xp.sum(dy, axis=0)), terms


def _bmax(xp: Any, a: Any) -> float:
    return float(xp.max(a)) if a.size else 0.0


def _scale(xp: Any, ref: Any, terms: tuple[float, float, float], k: int) -> float:
    """max|ref|, or where the reference is exactly zero the scale of the terms it sums (as
    ``lnbench.judge``: dγ of zero-variance rows takes dβ's)."""
    s = _bmax(xp, xp.abs(ref))
    return s if s > 0 else (terms[k] or (terms[2] if k == 1 else 0.0))


def exact_reference(data: Any, affine: bool) -> Reference:
    """--exact-ref: lnbench's extended-precision CPU reference; judged by ``judge_grad``."""
    from lnbench.judge import tolerance

    tols = {g: tolerance(data, g, affine) for g in GRADS}
    return Reference(data.reference(affine), None, (0.0, 0.0, 0.0), tols, affine)


def reference_for(data: Any, affine: bool, exact_ref: bool) -> Reference:
    if uses_exact_reference(exact_ref, data.case):
        return exact_reference(data, affine)
    return device_reference(data, affine)


def as_torch(a: Any) -> Any:
    """A result array as a torch tensor on its device (zero-copy for CuPy via DLPack)."""
    import torch

    if a is None:
        return None
    if type(a).__name__ == "DeviceBF16":
        return torch.from_dlpack(a.bits).view(torch.bfloat16)
    if torch.is_tensor(a):
        return a
    if type(a).__module__.startswith("cupy"):
        return torch.from_dlpack(a)
    import numpy as np

    from lnbench.arrays import to_array

    return to_array(np.asarray(a), "torch", "cuda")


def judge(outs: Any, ref: Reference, data: Any, grads: tuple[str, ...]) -> dict[str, dict]:
    """Per gradient in ``grads``: {status, reason, rel_err, max_abs_err, tol, err_ratio}."""
    out = {}
    for k, g in enumerate(GRADS):
        if g not in grads:
            continue
        if ref.bounds is None:
            from lnbench.judge import judge_grad

            status, reason, nums = judge_grad(outs[k], ref.arrays[k], g, data, ref.affine)
        else:
            status, reason, nums = judge_on_device(outs[k], ref, k, data)
        out[g] = dict(nums) | {"status": status, "reason": reason}
    return out


def judge_on_device(got: Any, ref: Reference, k: int, data: Any) -> tuple[str, str, dict]:
    """``lnbench.judge.judge_grad``'s checks, numbers and reasons for gradient ``k``, computed on
    the device against the reference's element bounds (the got array stays where it is)."""
    import array_api_compat.torch as xp

    from lnbench.dtypes import dtype_name

    grad, case = GRADS[k], data.case
    want, bound = ref.arrays[k], ref.bounds[k]  # type: ignore[index]
    nums: dict[str, float | None] = {"max_abs_err": None, "rel_err": None,
                                     "tol": ref.tols[grad], "err_ratio": None}
    if got is None:
        return "fail", f"{grad} is None (an affine implementation must return it)", nums
    t = as_torch(got)
    shapes = [(case.M, case.N)] if grad == "dx" else [(case.N,), (1, case.N)]
    if tuple(t.shape) not in shapes:
        exp = " or ".join(map(str, shapes))
        return "fail", f"{grad} shape {tuple(t.shape)}, expected {exp}", nums
    a = xp.reshape(t, want.shape).double()
    diff = xp.abs(a - want)
    finite = xp.isfinite(a)
    n_bad = int(xp.sum(~finite)) if a.numel() else 0
    max_abs = float(xp.max(xp.where(finite, diff, 0.0))) if a.numel() else 0.0
    if n_bad:
        max_abs = float("inf")
    rel = max_abs / ref.scales[k] if ref.scales[k] > 0 else max_abs
    ratio_all = xp.where(finite, diff / bound, -1.0)
    ratio = float("inf") if n_bad else (float(xp.max(ratio_all)) if a.numel() else 0.0)
    nums.update(max_abs_err=max_abs, rel_err=rel, err_ratio=ratio)
    if dtype_name(t.dtype) != case.dtype:
        return "fail", f"{grad} dtype {dtype_name(t.dtype)}, expected {case.dtype}", nums
    if n_bad:
        n_nan = int(xp.sum(xp.isnan(a)))
        return "fail", f"{grad} has non-finite values ({n_nan} NaN, {n_bad - n_nan} inf)", nums
    if ratio > 1.0:
        if ref.scales[k] > 0 and not bool(xp.any(a != 0)):
            return "fail", f"{grad} is all zeros (reference scale {ref.scales[k]:.3g})", nums
        flat = int(xp.argmax(xp.reshape(ratio_all, (-1,))))
        idx = [int(i) for i in _unravel(flat, tuple(want.shape))]
        where = f"[{', '.join(map(str, idx))}]"
        d, b = float(xp.reshape(diff, (-1,))[flat]), float(xp.reshape(bound, (-1,))[flat])
        return "fail", (f"{grad} error {d:.3g} at {where} is {ratio:.3g}x its bound {b:.3g} "
                        f"(rel_err {rel:.3g})"), nums
    return "ok", "", nums


def _unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    out = []
    for n in reversed(shape):
        out.append(flat % n)
        flat //= n
    return out[::-1]


def bits(a: Any) -> Any:
    """The result's bytes on the GPU (for bit-for-bit comparison)."""
    import torch

    t = as_torch(a)
    return None if t is None else t.detach().contiguous().reshape(-1).view(torch.uint8)


def same_bits(a: Any, b: Any) -> bool:
    import torch

    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
