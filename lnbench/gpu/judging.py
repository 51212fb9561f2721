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

from dataclasses import dataclass, field
from typing import Any

from lnbench.judge import GRADS
from lnbench.reference import backward_rows, term_parts


@dataclass
class Reference:
    """A case's exact gradients (one affine setting) and what the judge needs besides the
    element bounds: the inputs on the device (for the bounds of each declared style) and the
    term scales rel_err divides by where a reference is exactly zero."""

    data: Any
    affine: bool
    arrays: tuple[Any, Any, Any]
    inputs: tuple[Any, Any, Any] | None  # x, dy, γ as float64 on the device; None: CPU judge
    terms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _bounds: dict[Any, tuple[Any, Any, Any]] = field(default_factory=dict)

    def bounds(self, numerics: Any = None) -> tuple[Any, Any, Any]:
        """The judge's element bounds for the declared style ``numerics``, computed on the
        device by :func:`lnbench.judge.error_bounds` (the last style's kept: they are as
        large as dx)."""
        from lnbench.judge import error_bounds

        if numerics not in self._bounds:
            import array_api_compat.torch as xp

            self._bounds.clear()
            self._bounds[numerics] = error_bounds(xp, *self.inputs, self.data.eps,  # type: ignore[misc]
                                                  self.data.case.dtype, numerics)
        return self._bounds[numerics]

    def zero_scale(self, k: int) -> float:
        """What rel_err divides by where the reference is exactly zero (as lnbench.judge:
        the terms' scale; dγ of zero-variance rows takes dβ's)."""
        return self.terms[k] or (self.terms[2] if k == 1 else 0.0)

    @property
    def tols(self) -> dict[str, float]:
        """tol of each gradient for an undeclared style, as ``lnbench.judge.tolerance`` gives
        it (a point's row carries its own style's tol, from ``judge_array``)."""
        from lnbench.judge import device_tolerances, tolerance

        if self.inputs is None:
            return {g: tolerance(self.data, g, self.affine) for g in GRADS}
        return device_tolerances(self.data, self.affine, self.arrays, self.terms,
                                 str(self.arrays[0].device))


def uses_exact_reference(exact_ref: bool, case: Any) -> bool:
    """--exact-ref, or a float64 case (module docstring)."""
    return bool(exact_ref) or case.dtype == "float64"


def device_reference(data: Any, affine: bool, device: str = "cuda") -> Reference:
    """dx, dγ, dβ in float64 on ``device`` (torch) from the case's rounded inputs, two-pass
    statistics (module docstring); the bounds follow per declared style."""
    import array_api_compat.torch as xp

    from lnbench.arrays import to_array

    x, dy, g = (to_array(a, "torch", device).double()
                for a in (data.x, data.dy, data.gamma_for(affine)))
    arrays, terms = backward64(xp, x, dy, g, data.eps)
    return Reference(data, affine, arrays, (x, dy, g), terms)


def backward64(xp: Any, x: Any, dy: Any, g: Any, eps: float,
               ) -> tuple[tuple[Any, Any, Any], tuple[float, float, float]]:
    """The backward in the inputs' (float64) precision over ``xp``
    (``lnbench.reference.backward_rows``), and each gradient's term scale as
    ``lnbench.reference.term_scales`` defines it (max over outputs of Σ|term|)."""
    rows = backward_rows(xp, x, dy, g, eps)
    terms = tuple(float(xp.max(t)) for t in term_parts(xp, dy, rows))
    return (rows.dx, xp.sum(dy * rows.xh, axis=0), xp.sum(dy, axis=0)), terms


def exact_reference(data: Any, affine: bool) -> Reference:
    """--exact-ref: lnbench's extended-precision CPU reference; judged by ``judge_grad``."""
    return Reference(data, affine, data.reference(affine), None)


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


def judge(outs: Any, ref: Reference, data: Any, grads: tuple[str, ...],
          numerics: Any = None) -> dict[str, dict]:
    """Per gradient in ``grads``: {status, reason, rel_err, max_abs_err, tol, err_ratio} from
    the one judge: :func:`lnbench.judge.judge_array` on the device with the element bounds of
    the declared style ``numerics``, or :func:`lnbench.judge.judge_grad` for the CPU reference.
    """
    from lnbench.judge import judge_array, judge_grad

    out = {}
    for k, g in enumerate(GRADS):
        if g not in grads:
            continue
        if ref.inputs is None:
            status, reason, nums = judge_grad(outs[k], ref.arrays[k], g, data, ref.affine,
                                              numerics)
        else:
            import array_api_compat.torch as xp

            bound = xp.reshape(ref.bounds(numerics)[k], tuple(ref.arrays[k].shape))
            status, reason, nums = judge_array(xp, as_torch(outs[k]), ref.arrays[k], bound, g,
                                               data.case, zero_scale=ref.zero_scale(k))
        out[g] = dict(nums) | {"status": status, "reason": reason}
    return out


def bits(a: Any) -> Any:
    """The result's bytes on the GPU (for bit-for-bit comparison)."""
    import torch

    t = as_torch(a)
    return None if t is None else t.detach().contiguous().reshape(-1).view(torch.uint8)


def same_bits(a: Any, b: Any) -> bool:
    import torch

    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
