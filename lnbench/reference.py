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

import numpy as np

EXT = np.longdouble


def forward_stats(x: np.ndarray, eps: float, work: type = EXT) -> tuple[np.ndarray, np.ndarray]:
    """Row mean and rstd = 1/sqrt(var + eps) of ``x`` (M, N) in ``work`` precision, shape (M, 1)."""
    xe = np.asarray(x).astype(np.float64).astype(work)
    mean = xe.mean(axis=1, keepdims=True)
    var = ((xe - mean) ** 2).mean(axis=1, keepdims=True)
    return mean, 1 / np.sqrt(var + work(eps))


def reference_backward(
    dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, eps: float, work: type = EXT
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dx (M, N), dγ (N,), dβ (N,) as float64, computed in ``work`` (extended) precision."""
    mean, rstd = forward_stats(x, eps, work)
    xe = np.asarray(x).astype(np.float64).astype(work)
    dye = np.asarray(dy).astype(np.float64).astype(work)
    ge = np.asarray(gamma).astype(np.float64).astype(work)
    xhat = (xe - mean) * rstd
    g = dye * ge
    dx = rstd * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    dgamma = (dye * xhat).sum(axis=0)
    dbeta = dye.sum(axis=0)
    return dx.astype(np.float64), dgamma.astype(np.float64), dbeta.astype(np.float64)


def term_scales(
    dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, eps: float, work: type = EXT
) -> tuple[float, float, float]:
    """Scale of the terms each gradient is a sum of: max over outputs of Σ|term|.

    dx: r·(|g| + |mean(g)| + |x̂·mean(g·x̂)|); dγ: Σ_rows |dy·x̂|; dβ: Σ_rows |dy|. The ratio of
    this to max|result| is the condition number of the summation (Higham, *Accuracy and
    Stability of Numerical Algorithms*, §4.2): where the result cancels, a correctly rounded
    sum of rounded terms still has a relative error that much larger.
    """
    mean, rstd = forward_stats(x, eps, work)
    xe = np.asarray(x).astype(np.float64).astype(work)
    dye = np.asarray(dy).astype(np.float64).astype(work)
    g = dye * np.asarray(gamma).astype(np.float64).astype(work)
    xhat = (xe - mean) * rstd
    t_dx = rstd * (np.abs(g) + np.abs(g.mean(axis=1, keepdims=True))
                   + np.abs(xhat * (g * xhat).mean(axis=1, keepdims=True)))
    t_dg = np.abs(dye * xhat).sum(axis=0)
    t_db = np.abs(dye).sum(axis=0)
    return tuple(float(np.max(t)) if t.size else 0.0 for t in (t_dx, t_dg, t_db))
