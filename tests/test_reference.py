"""The exact reference proven against independent computations.

- torch float64 autograd through ``F.layer_norm`` on random shapes;
- mpmath at 50 digits, differentiating L = Σ dy·y numerically from the forward's definition;
- central finite differences of L in float64;
- ``forward_stats`` against mpmath mean/var on offset data, where E[x²] − E[x]² fails.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from lnbench.dtypes import DTYPES
from lnbench.grid import DISTS, Case, make_data
from lnbench.reference import EXT, forward_stats, reference_backward

U64 = 2.0**-53
EXT_EPS = float(np.finfo(EXT).eps)  # 2**-63 on x86-64 (80-bit long double)


def rel(got, want, floor: float = 0.0) -> float:
    """max|got − want| / max(max|want|, floor); below ``floor`` the error is judged absolutely."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want))), floor)
    return float(np.max(np.abs(got - want))) / (scale if scale > 0 else 1.0)


def _inputs(M, N, seed, offset=0.0, constant_rows=()):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, N)) + offset
    for i in constant_rows:
        x[i] = x[i, 0]
    return x, rng.standard_normal((M, N)), rng.standard_normal(N), rng.standard_normal(N)


# ------------------------------------------------------------------ torch float64 autograd


def torch_backward(dy, x, gamma, beta, eps):
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tg = torch.tensor(gamma, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.layer_norm(tx, (x.shape[1],), tg, tb, eps)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    return tx.grad.numpy(), tg.grad.numpy(), tb.grad.numpy()


@pytest.mark.parametrize("M,N", [(1, 1), (1, 7), (2, 4), (3, 5), (17, 33), (64, 257), (5, 1000)])
def test_reference_matches_torch_float64_autograd(M, N):
    x, dy, gamma, beta = _inputs(M, N, seed=M * 1000 + N)
    ref = reference_backward(dy, x, gamma, 1e-5)
    want = torch_backward(dy, x, gamma, beta, 1e-5)
    for r, w in zip(ref, want, strict=True):
        assert r.shape == w.shape
        # N = 1: x̂ ≡ 0, so dγ is exactly 0 and torch's rounding noise is judged absolutely
        assert rel(r, w, floor=1.0) <= 64 * U64 * np.sqrt(max(M, N))


def test_reference_matches_torch_on_offset_and_constant_rows():
    """κ = max|x|·rstd ≈ 1e4 here: float64 torch is within κ·u of the reference."""
    x, dy, gamma, beta = _inputs(6, 128, seed=7, offset=1e4, constant_rows=(1, 4))
    ref = reference_backward(dy, x, gamma, 1e-5)
    want = torch_backward(dy, x, gamma, beta, 1e-5)
    kappa = float(np.max(np.abs(x))) / np.sqrt(1e-5)  # worst row: a constant one
    for r, w in zip(ref, want, strict=True):
        assert rel(r, w) <= 16 * kappa * U64


def test_reference_returns_float64_shapes():
    x, dy, gamma, _ = _inputs(3, 5, seed=1)
    dx, dg, db = reference_backward(dy.astype(np.float32), x.astype(np.float32),
                                    gamma.astype(np.float32), 1e-5)
    assert (dx.shape, dg.shape, db.shape) == ((3, 5), (5,), (5,))
    assert dx.dtype == dg.dtype == db.dtype == np.float64


# ------------------------------------------------------------------ mpmath, 50 digits


def _mp_loss(x, gamma, beta, dy, eps):
    """L = Σ dy·y with y = γ·(x − μ)/sqrt(var + eps) + β, straight from the definition."""
    M, N = len(x), len(x[0])
    total = mpmath.mpf(0)
    for i in range(M):
        mu = mpmath.fsum(x[i]) / N
        var = mpmath.fsum((v - mu) ** 2 for v in x[i]) / N
        s = mpmath.sqrt(var + eps)
        total += mpmath.fsum(dy[i][j] * (gamma[j] * (x[i][j] - mu) / s + beta[j])
                             for j in range(N))
    return total


def _mp_gradients(x, dy, gamma, beta, eps):
    """dL/dx, dL/dγ, dL/dβ by mpmath.diff of the definition, one variable at a time."""
    M, N = x.shape
    with mpmath.workdps(50):
        X = [[mpmath.mpf(float(v)) for v in row] for row in x]
        DY = [[mpmath.mpf(float(v)) for v in row] for row in dy]
        G = [mpmath.mpf(float(v)) for v in gamma]
        B = [mpmath.mpf(float(v)) for v in beta]
        E = mpmath.mpf(eps)

        def partial(vec_of, i, j=None):
            def f(t):
                Xc, Gc, Bc = [r[:] for r in X], G[:], B[:]
                target = {"x": Xc, "g": Gc, "b": Bc}[vec_of]
                if j is None:
                    target[i] = t
                else:
                    target[i][j] = t
                return _mp_loss(Xc, Gc, Bc, DY, E)

            start = X[i][j] if vec_of == "x" else (G if vec_of == "g" else B)[i]
            return mpmath.diff(f, start)

        dx = [[partial("x", i, j) for j in range(N)] for i in range(M)]
        dg = [partial("g", j) for j in range(N)]
        db = [partial("b", j) for j in range(N)]
    return dx, dg, db


def _as_float(a):
    return np.array([[float(v) for v in r] for r in a] if isinstance(a[0], list)
                    else [float(v) for v in a])


@pytest.mark.parametrize(
    "M,N,constant_rows",
    [(2, 4, ()), (3, 5, ()), (2, 4, (1,)), (1, 3, ())],
    ids=["2x4", "3x5", "2x4-constant-row", "1x3"],
)
def test_reference_matches_mpmath_50_digits(M, N, constant_rows):
    x, dy, gamma, beta = _inputs(M, N, seed=M * 10 + N, constant_rows=constant_rows)
    ref = reference_backward(dy, x, gamma, 1e-5)
    want = [_as_float(g) for g in _mp_gradients(x, dy, gamma, beta, 1e-5)]
    # The reference is extended precision rounded once to float64: within an ulp of the truth.
    for r, w in zip(ref, want, strict=True):
        assert rel(r, w) <= 4 * U64


def test_reference_matches_mpmath_with_offset():
    """x = 1e4 + N(0, 1) on 2x4: still within a few float64 ulps of the 50-digit truth."""
    x, dy, gamma, beta = _inputs(2, 4, seed=3, offset=1e4)
    ref = reference_backward(dy, x, gamma, 1e-5)
    want = [_as_float(g) for g in _mp_gradients(x, dy, gamma, beta, 1e-5)]
    bound = 4 * U64 + 1e5 * EXT_EPS  # κ·u_ext from forming x − μ in long double
    for r, w in zip(ref, want, strict=True):
        assert rel(r, w) <= bound


# ------------------------------------------------------------------ finite differences


def _loss64(x, gamma, beta, dy, eps):
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return float(np.sum(dy * (gamma * (x - mu) / np.sqrt(var + eps) + beta)))


def _central_diff(f, a, h=1e-5):
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + h
        up = f()
        a[idx] = old - h
        down = f()
        a[idx] = old
        g[idx] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("M,N", [(2, 4), (3, 5), (4, 3)])
def test_reference_matches_central_finite_differences(M, N):
    x, dy, gamma, beta = _inputs(M, N, seed=100 + M * N)
    eps = 1e-5
    ref = reference_backward(dy, x, gamma, eps)

    def L():
        return _loss64(x, gamma, beta, dy, eps)

    fd = (_central_diff(L, x), _central_diff(L, gamma), _central_diff(L, beta))
    for r, w in zip(ref, fd, strict=True):
        assert rel(r, w) <= 1e-7


def test_finite_differences_detect_a_wrong_gradient():
    """The FD check above can fail: a reference with dγ and dβ swapped does not pass it."""
    x, dy, gamma, beta = _inputs(2, 4, seed=104)
    dx, dg, db = reference_backward(dy, x, gamma, 1e-5)

    def L():
        return _loss64(x, gamma, beta, dy, 1e-5)

    assert rel(db, _central_diff(L, gamma)) > 1e-3
    assert rel(-dx, _central_diff(L, x)) > 1e-3


# ------------------------------------------------------------------ forward statistics


def _exact(v) -> mpmath.mpf:
    p, q = v.as_integer_ratio()
    return mpmath.mpf(p) / q


def test_forward_stats_match_mpmath_on_offset_data():
    """x = 1e4 + N(0, 1): two-pass long double is exact to ~u_ext; E[x²]−E[x]² is not."""
    rng = np.random.default_rng(5)
    x = 1e4 + rng.standard_normal((4, 1000))
    eps = 1e-5
    mean, rstd = forward_stats(x, eps)
    assert mean.shape == rstd.shape == (4, 1)
    assert mean.dtype == rstd.dtype == EXT
    naive_worst = 0.0
    with mpmath.workdps(50):
        for i in range(x.shape[0]):
            row = [mpmath.mpf(float(v)) for v in x[i]]
            mu = mpmath.fsum(row) / len(row)
            var = mpmath.fsum((v - mu) ** 2 for v in row) / len(row)
            r = 1 / mpmath.sqrt(var + eps)
            assert abs(_exact(mean[i, 0]) - mu) / abs(mu) <= 16 * EXT_EPS
            assert abs(_exact(rstd[i, 0]) - r) / r <= 64 * EXT_EPS * 1e4
            # naive E[x²] − E[x]² in float64 on the same row
            naive_var = float(np.mean(x[i] ** 2) - np.mean(x[i]) ** 2)
            naive_worst = max(naive_worst, float(abs(mpmath.mpf(naive_var) - var) / var))
    assert naive_worst > 1e-11  # catastrophic cancellation: ~1e8·u against var ≈ 1
    assert 64 * EXT_EPS * 1e4 < naive_worst  # the bound above is far tighter than naive


def test_forward_stats_naive_float32_is_useless_but_reference_is_not():
    """In float32 E[x²] − E[x]² at 1e4 + N(0,1) is off by O(1) or worse (even negative)."""
    rng = np.random.default_rng(6)
    x = (1e4 + rng.standard_normal((8, 1024))).astype(np.float32)
    true_var = np.var(x.astype(np.float64), axis=1)
    naive = np.mean(x * x, axis=1) - np.mean(x, axis=1) ** 2
    assert np.max(np.abs(naive - true_var) / true_var) > 0.1
    _, rstd = forward_stats(x, 1e-5)
    ours_var = (1 / rstd[:, 0].astype(np.float64) ** 2) - 1e-5
    assert np.max(np.abs(ours_var - true_var) / true_var) < 1e-12


def test_grid_reference_uses_the_case_inputs():
    """CaseData.reference equals reference_backward on exactly the (rounded) case inputs: in
    float64 working precision for a 16-bit case (within 4 float64 ulps of extended precision,
    far below the judge's bounds for it), extended for a float64 case."""
    d = make_data(Case(3, 16, "float16", "normal"))
    got = d.reference(True)
    want = reference_backward(d.dy, d.x, d.gamma, d.eps, np.float64)
    ext = reference_backward(d.dy, d.x, d.gamma, d.eps)
    for g, w, e in zip(got, want, ext, strict=True):
        np.testing.assert_array_equal(g, w)
        np.testing.assert_allclose(g, e, rtol=4 * 2.0**-53, atol=1e-15)
    dx1 = d.reference(False)[0]
    np.testing.assert_array_equal(dx1, reference_backward(d.dy, d.x, np.ones(16), d.eps,
                                                          np.float64)[0])
    d64 = make_data(Case(3, 16, "float64", "normal"))
    for g, w in zip(d64.reference(True), reference_backward(d64.dy, d64.x, d64.gamma, d64.eps),
                    strict=True):
        np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------ properties

PROP = settings(max_examples=40, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink])


@PROP
@given(M=st.integers(1, 40), N=st.integers(1, 300), dtype=st.sampled_from(DTYPES),
       dist=st.sampled_from(DISTS))
@example(M=35, N=5, dtype="float32", dist="offset")  # the mean's rounding is 1.1x the rest here
@example(M=22, N=3, dtype="float32", dist="offset")
def test_property_dx_rows_sum_to_zero_without_affine(M, N, dtype, dist):
    """γ = 1: Σ_j dx_ij = r·(Σg − N·mean(g) − Σx̂·mean(g·x̂)) = 0 exactly (Σ_j x̂_ij = 0).

    Judged against the size of the terms that cancel, r·Σ_j(|g| + |mean g| + |x̂|·|mean g·x̂|),
    one float64 rounding per entry plus long-double noise inside, and against what the
    reference's own mean leaves: Σ_j x̂_ij = r_i·N·(μ_i − μ̂_i) with |μ − μ̂| ≤ N·u·mean|x|, so
    r_i·|mean g·x̂|·r_i·N·N·u·mean_j|x_ij| more (it matters on float32 `offset` rows of a few
    columns, where μ is 1e4 times the spread).
    """
    data = make_data(Case(M, N, dtype, dist))
    dx, _, _ = reference_backward(data.dy, data.x, np.ones(N), data.eps)
    x, g = data.x.astype(np.float64), data.dy.astype(np.float64)
    mu = x.mean(axis=1, keepdims=True)
    r = 1 / np.sqrt(((x - mu) ** 2).mean(axis=1, keepdims=True) + data.eps)
    xhat = (x - mu) * r
    c = np.abs((g * xhat).mean(axis=1, keepdims=True))
    terms = r * (np.abs(g) + np.abs(g.mean(axis=1, keepdims=True)) + np.abs(xhat) * c)
    mean_err = (r * c * r * N * N * np.abs(x).mean(axis=1, keepdims=True))[:, 0]
    lim = 8 * U64 * (np.array([math.fsum(t) for t in terms]) + mean_err) + 1e-300
    for i in range(M):
        assert abs(math.fsum(dx[i])) <= lim[i]
    # and the check can fail: dropping the mean(g) term leaves Σ_j dx_ij = r·Σ_j g_ij
    wrong = dx + r * g.mean(axis=1, keepdims=True)
    sums = np.array([abs(math.fsum(row)) for row in wrong])
    big = np.abs(g.sum(axis=1)) * r[:, 0] > 1e-6 * terms.sum(axis=1)
    assert np.all(sums[big] > lim[big])
