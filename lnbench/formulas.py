"""The seed's six LayerNorm-backward formulations, written once over an array namespace.

The same functions run on NumPy, CuPy and torch (``xp`` from array-api-compat). Each follows the
gist (copied verbatim in tests/seed_gist.py) line for line; the only change is that cs231n's
``np.ones((M, K))`` takes the input's dtype — the gist's version silently promotes float32 to
float64 (tests keep the literal gist to prove the judge catches that promotion).

The cache tuple is what the seed's forward saves: (x, x − μ, sqrt(var + eps), μ, x̂, γ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Array = Any
Cache = tuple[Array, Array, Array, Array, Array, Array]


def seed_forward(xp: Any, x: Array, gamma: Array, beta: Array, eps: float) -> tuple[Array, Cache]:
    """The gist's ``layernorm_forward``: returns (y, cache)."""
    M = x.shape[0]
    x_mean = xp.reshape(xp.mean(x, axis=1), (M, 1))
    x_var = xp.reshape(xp.var(x, axis=1), (M, 1))
    xmu = x - x_mean
    xivar = xp.sqrt(x_var + eps)
    xhat = xmu / xivar
    out = gamma * xhat + beta
    return out, (x, xmu, xivar, x_mean, xhat, gamma)


def caffe2(xp: Any, dy: Array, cache: Cache) -> Array:
    """caffe2's no-affine test formula (layer_norm_op_test.py): dx only, uses raw x and μ."""
    (x, xmu, xivar, x_mean, xhat, _) = cache
    M, K = x.shape
    dstdev_end = (-1.0) / xp.pow(xivar, 2.0) * xp.reshape(xp.sum(xmu * dy, axis=1), (M, 1))
    dmean_end = xp.reshape(xp.sum(-1.0 / xivar * dy, axis=1), (M, 1))
    dx_end = 1.0 / xivar * dy
    # stdev block
    dmean_stdev = -1.0 * x_mean / xivar * dstdev_end
    dx_stdev = x / (K * xivar) * dstdev_end
    # mean block
    dmean = dmean_end + dmean_stdev
    dxmean = (1.0 / K) * dmean
    return dx_end + dx_stdev + dxmean


def rocking(xp: Any, dy: Array, cache: Cache) -> tuple[Array, Array, Array]:
    (x, xmu, xivar, x_mean, xhat, gamma) = cache
    M, K = x.shape
    dgamma = xp.sum(dy * xhat, axis=0, keepdims=True)
    dbeta = xp.sum(dy, axis=0, keepdims=True)
    dlxhat = dy * gamma
    dxhatx = 1 / xivar
    dlvar = -0.5 * xp.sum(dlxhat * xmu * xivar ** (-3), axis=1, keepdims=True)
    dvarx = 2 / K * (xmu - 1 / K * xp.sum(xmu, axis=1, keepdims=True))
    dlmu = -xp.sum(dlxhat / xivar, axis=1, keepdims=True)
    dmux = 1 / K
    dx = dlxhat * dxhatx + dlvar * dvarx + dlmu * dmux
    return dx, dgamma, dbeta


def c9(xp: Any, dy: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """https://zhuanlan.zhihu.com/p/38040024"""
    (x, xmu, xivar, x_mean, xhat, gamma) = cache
    _, K = x.shape
    dgamma = xp.sum(dy * xhat, axis=0, keepdims=True)
    dbeta = xp.sum(dy, axis=0, keepdims=True)
    dlxhat = dy * gamma
    dxhatx = 1 / xivar
    dlvar = -0.5 * xp.sum(gamma * xmu * xivar ** (-3) * dy, axis=1, keepdims=True)
    dvarx = 2 * xmu / K
    dlmu = -1.0 * xp.sum(dlxhat / xivar, axis=1, keepdims=True) - 2.0 * xp.sum(
        dlvar * xmu, axis=1, keepdims=True
    ) / K
    dmux = 1 / K
    dx = dlxhat * dxhatx + dlvar * dvarx + dlmu * dmux
    return dx, dgamma, dbeta


def cs231n(xp: Any, dy: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Batch-norm's staged backward (Kratzert 2016), per row."""
    (x, xmu, xivar, x_mean, xhat, gamma) = cache
    M, K = x.shape
    ones = xp.ones((M, K), dtype=x.dtype, device=_device(xp, x))  # gist: np.ones((M, K)) -> f64
    dbeta = xp.sum(dy, axis=0, keepdims=True)  # step9
    dgammax = dy
    dgamma = xp.sum(dgammax * xhat, axis=0, keepdims=True)  # step8
    dxhat = dgammax * gamma
    divar = xp.sum(dxhat * xmu, axis=1, keepdims=True)  # step7
    dxmu1 = dxhat / xivar
    dsqrtvar = -1.0 / (xivar**2) * divar  # step6
    dvar = 0.5 * 1.0 / xivar * dsqrtvar  # step5
    dsq = 1.0 / K * ones * dvar  # step4
    dxmu2 = 2 * xmu * dsq  # step3
    dx1 = dxmu1 + dxmu2  # step2
    dmu = -1 * xp.sum(dxmu1 + dxmu2, axis=1, keepdims=True)
    dx2 = 1.0 / K * ones * dmu  # step1
    dx = dx1 + dx2  # step0
    return dx, dgamma, dbeta


def kevin(xp: Any, dy: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Batch-norm's compact backward (Zakka 2016), per row."""
    (x, _, xivar, _, xhat, gamma) = cache
    M, K = x.shape
    dxhat = dy * gamma
    inv_var = 1.0 / xivar
    dx = (
        (1.0 / K)
        * inv_var
        * (
            K * dxhat
            - xp.sum(dxhat, axis=1, keepdims=True)
            - xhat * xp.sum(dxhat * xhat, axis=1, keepdims=True)
        )
    )
    dbeta = xp.sum(dy, axis=0, keepdims=True)
    dgamma = xp.sum(xhat * dy, axis=0, keepdims=True)
    return dx, dgamma, dbeta


def _device(xp: Any, x: Array) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


FORMULAS: dict[str, Callable[..., Any]] = {
    "caffe2": caffe2,
    "rocking": rocking,
    "c9": c9,
    "cs231n": cs231n,
    "kevin": kevin,
}
AFFINE = {"caffe2": False, "rocking": True, "c9": True, "cs231n": True, "kevin": True}
