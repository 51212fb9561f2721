"""The exact reference: LayerNorm forward statistics and backward in extended precision.

Two-pass statistics (mean, then the mean of squared deviations) in ``np.longdouble`` — 64-bit
significand on x86-64, so about 2**-64 relative error per operation — never E[x²] − E[x]²,
which cancels catastrophically (PyTorch issue #51102). With y = γ·x̂ + β, x̂ = (x − μ)·r,
r = 1/sqrt(var + eps) and g = dy·γ, the gradients are

    dx = r · (g − mean(g) − x̂ · mean(g · x̂))      (row means over N)
    dγ = Σ_rows dy · x̂,      dβ = Σ_rows dy.

tests/test_reference.py proves this against torch float64 autograd, mpmath at 50 digits and
finite differences.

``work`` chooses the working precision: extended (the default) for float64 cases, float64 for
float32 and 16-bit cases (``CaseData``), where its error — about 2**-53·(κ + log2 N) of the terms,
1e-12 at κ = 1e4 — is below 1e-5 of the smallest bound the judge allows a float32 result
(K_E·2**-24 of the terms, ``lnbench.judge``), and it costs a fifth of the time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

EXT = np.longdouble


class Rows(NamedTuple):
    """The backward's per-row quantities (the module docstring's formulas), arrays of one
    namespace and precision: μ, r (M, 1); x̂, g (M, N); mean(g), mean(g·x̂) (M, 1); dx (M, N)."""

    mu: Any
    r: Any
    xh: Any
    g: Any
    m_g: Any
    m_gx: Any
    dx: Any


def _stats(xp: Any, x: Any, eps: float) -> tuple[Any, Any, Any]:
    """Two-pass row statistics of x over ``xp``: μ, x − μ, r = 1/sqrt(mean((x − μ)²) + eps)."""
    mu = xp.mean(x, axis=1, keepdims=True)
    xc = x - mu
    return mu, xc, 1.0 / xp.sqrt(xp.mean(xc * xc, axis=1, keepdims=True) + eps)


def backward_rows(xp: Any, x: Any, dy: Any, gamma: Any, eps: float) -> Rows:
    """The backward of x, dy (M, N) and γ (N,) over the array namespace ``xp``, in the arrays'
    own precision: two-pass statistics, then dx. The one place the formulas are written; the
    CPU reference (extended precision), the GPU reference (float64 on the device) and the
    error bounds (float64, row chunks) all call it. dγ = Σ dy·x̂ and dβ = Σ dy are left to the
    caller (a sum over rows, which a chunked caller carries across chunks)."""
    mu, xc, r = _stats(xp, x, eps)
    xh = xc * r
    del xc
    g = dy * gamma
    m_g = xp.mean(g, axis=1, keepdims=True)
    m_gx = xp.mean(g * xh, axis=1, keepdims=True)
    return Rows(mu, r, xh, g, m_g, m_gx, r * (g - m_g - xh * m_gx))


def term_parts(xp: Any, dy: Any, rows: Rows) -> tuple[Any, Any, Any]:
    """The term scales' arrays (:func:`term_scales`): r·(|g| + |mean(g)| + |x̂·mean(g·x̂)|) (M, N),
    Σ_rows |dy·x̂| (N,), Σ_rows |dy| (N,)."""
    t_dx = rows.r * (xp.abs(rows.g) + xp.abs(rows.m_g) + xp.abs(rows.xh * rows.m_gx))
    return t_dx, xp.sum(xp.abs(dy * rows.xh), axis=0), xp.sum(xp.abs(dy), axis=0)


def _in(work: type, *arrays: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(a).astype(np.float64).astype(work) for a in arrays]


def forward_stats(x: np.ndarray, eps: float, work: type = EXT) -> tuple[np.ndarray, np.ndarray]:
    """Row mean and rstd = 1/sqrt(var + eps) of ``x`` (M, N) in ``work`` precision, shape (M, 1)."""
    import array_api_compat.numpy as xp

    mu, _, r = _stats(xp, *_in(work, x), eps)
    return mu, r


def reference_backward(
    dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, eps: float, work: type = EXT
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dx (M, N), dγ (N,), dβ (N,) as float64, computed in ``work`` (extended) precision."""
    import array_api_compat.numpy as xp

    xe, dye, ge = _in(work, x, dy, gamma)
    rows = backward_rows(xp, xe, dye, ge, eps)
    dgamma = (dye * rows.xh).sum(axis=0)
    dbeta = dye.sum(axis=0)
    return rows.dx.astype(np.float64), dgamma.astype(np.float64), dbeta.astype(np.float64)


def term_scales(
    dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, eps: float, work: type = EXT
) -> tuple[float, float, float]:
    """Scale of the terms each gradient is a sum of: max over outputs of Σ|term|.

    dx: r·(|g| + |mean(g)| + |x̂·mean(g·x̂)|); dγ: Σ_rows |dy·x̂|; dβ: Σ_rows |dy|. The ratio of
    this to max|result| is the condition number of the summation (Higham, *Accuracy and
    Stability of Numerical Algorithms*, §4.2): where the result cancels, a correctly rounded
    sum of rounded terms still has a relative error that much larger.
    """
    import array_api_compat.numpy as xp

    xe, dye, ge = _in(work, x, dy, gamma)
    parts = term_parts(xp, dye, backward_rows(xp, xe, dye, ge, eps))
    return tuple(float(np.max(t)) if t.size else 0.0 for t in parts)

