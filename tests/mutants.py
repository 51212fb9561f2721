"""The ports, mutants and cases of the judge's mutation score (tests/test_mutations.py): planted
one-line bugs of real LayerNorm backwards must fail it, and correct implementations of several
styles must pass it, on the quick grid (every dtype and distribution) and on large-M cases for
the column sums (4096x768 float32 normal, offset and correlated, 32768x768 float32 offset,
4096x768 float16 and bfloat16 normal).

Correct implementations (ports of outside code, written against the plugin contract
``fn(dy, x, gamma, mean, rstd, eps) -> (dx, dgamma, dbeta)`` in the input dtype):

- ``two_pass_f64``: its own two-pass float64 statistics and float64 math (a textbook reference);
- ``llmc``: llm.c's ``layernorm_backward`` (train_gpt2.c) — row loops in the accumulation dtype
  with the saved mean/rstd: dnorm_mean and dnorm_norm_mean by sequential sums, dbias/dweight
  accumulated row after row (recursive column sums in natural order);
- ``triton_tutorial``: the Triton tutorial's ``_layer_norm_bwd_dx_fused`` +
  ``_layer_norm_bwd_dwdb`` math: c1 = Σ x̂·wdy / N, c2 = Σ wdy / N, dx = (wdy − (x̂·c1 + c2))·rstd,
  dγ/dβ partial sums in GROUP_SIZE_M = 64 float32 buffers (row i into buffer i mod 64), then
  summed over buffers;
- ``flax``: flax's LayerNorm (own two-pass mean and variance, in float64 for float64 inputs, the
  compute dtype otherwise), differentiated as jax would; and with its mean 6 ulps off, what
  ``jnp.mean`` of 768 equal float64 values gives (test_flax_own_mean_six_ulps_off_passes);
- ``cs231n``: a cs231n assignment-2 solution's layernorm_backward, batch-norm's compact formula on
  the transpose, with np.mean/np.var statistics;
- ``fastmath``: a C-like Numba kernel compiled with ``fastmath=True`` (vectorised, reassociated
  row sums), saved mean/rstd, float32 accumulation (float64 for float64);
- ``torch_eager``: the compact formula on torch tensors with torch.mean/torch.var statistics
  (torch.var: Welford's algorithm);
- ``aten``: ATen's CPU formula dx = a·dy·γ + b·x + c in raw x (as torch.native computes it);
- ``flax_6ulp``: ``flax`` with its mean 6 ulps off the exact one, as jnp.mean gives it for 768
  equal float64 values (the own-mean room the judge must leave).

Each declares what it computes (``DECLARED``, a ``lnbench.registry.Numerics`` read off its
code: saved or own statistics, centered or raw-x formula, float64 arithmetic), and is judged
with the room that style needs; a mutant is judged with its base's declaration.

Mutants are each one line changed in one of them (``MUTANTS``). A mutant must be flagged (some
gradient fails) on every case where it is *detectable*: where its max |got − ref| in some
gradient is at least 10x that of the unmutated implementation on the same case. The mutation
score is flagged / detectable; a false alarm is a correct implementation failing any gradient.

    python tests/test_mutations.py        # prints the score, the false alarms and the margins
    python tests/test_mutations.py --undeclared   # the same, every port judged as undeclared
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lnbench.dtypes import HALF, compute_dtype, np_dtype
from lnbench.grid import DISTS, QUICK_SHAPES, Case, make_data
from lnbench.judge import GRADS, judge_grad
from lnbench.registry import OWN_CENTERED, SAVED_CENTERED, Numerics

Fn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]


def _acc(x: np.ndarray) -> np.dtype:
    """The accumulation dtype a sound kernel uses for x's dtype."""
    return np_dtype(compute_dtype(_name(x.dtype)))


def _name(dt: np.dtype) -> str:
    from lnbench.dtypes import dtype_name

    return dtype_name(dt)


def _out(x: np.ndarray, *arrs: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a).astype(x.dtype) for a in arrs)


# ------------------------------------------------------------------ correct implementations
# Each takes ``bug``: the name of the one line to change (None: the correct code).


def two_pass_f64(dy, x, gamma, mean, rstd, eps, bug=None):
    x64, dy64, g64 = (np.asarray(a, np.float64) for a in (x, dy, gamma))
    N = x64.shape[1]
    mu = x64.mean(axis=1, keepdims=True)
    xc = x64 - mu
    var = (xc * xc).sum(axis=1, keepdims=True) / (N - 1 if bug == "var_n_minus_1" else N)
    if bug == "var_e_x2":  # E[x²] − E[x]² in the input's accumulation dtype: cancels on offset
        xa = np.asarray(x, _acc(x))
        var = ((xa * xa).mean(axis=1, keepdims=True)
               - xa.mean(axis=1, keepdims=True) ** 2).astype(np.float64)
        var = np.maximum(var, 0.0)
    r = 1.0 / np.sqrt(var if bug == "eps_ignored" else var + eps)
    xhat = xc * r
    g = dy64 * g64
    dx = r * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return _out(x, dx, (dy64 * xhat).sum(axis=0), dy64.sum(axis=0))


def llmc(dy, x, gamma, mean, rstd, eps, bug=None):
    """llm.c train_gpt2.c layernorm_backward, vectorised over rows; sequential sums kept."""
    acc = _acc(x)
    xa, da, w = (np.asarray(a, acc) for a in (x, dy, gamma))
    mu, rs = np.asarray(mean, acc).reshape(-1, 1), np.asarray(rstd, acc).reshape(-1, 1)
    if bug == "stats_wrong_row":
        mu, rs = np.roll(mu, 1, axis=0), np.roll(rs, 1, axis=0)
    N = xa.shape[1]
    norm = (xa - mu) * rs
    dnorm = w * da
    dnorm_mean = np.cumsum(dnorm, axis=1)[:, -1:] / acc.type(N)  # for i: sum += dnorm_i
    dnorm_norm_mean = np.cumsum(dnorm * norm, axis=1)[:, -1:] / acc.type(N)
    dval = dnorm - dnorm_mean
    if bug == "sign_error":
        dval = dval + norm * dnorm_norm_mean
    elif bug != "dropped_xhat_term":
        dval = dval - norm * dnorm_norm_mean
    dval = dval * (rs * rs if bug == "rstd_twice" else rs)
    dbias = (da * w if bug == "dbeta_times_gamma" else da).sum(axis=0)  # row after row
    dweight = (norm * da).sum(axis=0)
    if bug and bug.startswith("dgamma_scale"):
        dweight = dweight * acc.type(1 + DELTAS[bug](x))
    if bug == "dgamma_xmu":
        dweight = ((xa - mu) * da).sum(axis=0)
    return _out(x, dval, dweight, dbias)


GROUP_SIZE_M = 64


def triton_tutorial(dy, x, gamma, mean, rstd, eps, bug=None):
    """The Triton tutorial's backward math (05-layer-norm.py), its locks replaced by the buffer
    each row's partial lands in."""
    acc = _acc(x)
    xa, da, w = (np.asarray(a, acc) for a in (x, dy, gamma))
    mu, rs = np.asarray(mean, acc).reshape(-1, 1), np.asarray(rstd, acc).reshape(-1, 1)
    M, N = xa.shape
    xhat = (xa - mu) * rs
    wdy = w * da
    c1 = np.sum(xhat * wdy, axis=1, keepdims=True) / acc.type(N)
    c2 = np.sum(wdy, axis=1, keepdims=True) / acc.type(N)
    if bug == "wrong_axis":
        c2 = np.sum(wdy, axis=0, keepdims=True) / acc.type(M)
    dx = (wdy - (xhat * c1 + c2)) * rs
    part = {"partials_input_dtype": x.dtype, "partials_float16": np.float16}.get(bug, acc)
    G = min(GROUP_SIZE_M, M)
    pdw = np.zeros((G, N), part)
    pdb = np.zeros((G, N), part)
    rows = M - min(64, M // 4) if bug == "dgamma_missing_tail" else M
    tdw, tdb = (da * xhat)[:rows], da[:rows]
    if part == acc:  # row i0 + k accumulates into buffer k (lock k), buffers in order
        full = rows // G * G
        pdw = tdw[:full].reshape(-1, G, N).sum(axis=0)
        pdb = tdb[:full].reshape(-1, G, N).sum(axis=0)
        pdw[:rows - full] += tdw[full:]
        pdb[:rows - full] += tdb[full:]
    for i0 in range(0, rows, G) if part != acc else ():  # a buffer in another dtype
        k = min(G, rows - i0)
        pdw[:k] = (pdw[:k].astype(acc) + tdw[i0:i0 + k]).astype(part)
        pdb[:k] = (pdb[:k].astype(acc) + tdb[i0:i0 + k]).astype(part)
    dw = pdw.astype(acc).sum(axis=0)
    db = pdb.astype(acc).sum(axis=0)
    return _out(x, dx, dw, db)


def _off_by_ulps(a: np.ndarray, k: int) -> np.ndarray:
    """Row means k ulps above the exact ones."""
    import math as _m

    mu = np.array([[_m.fsum(map(float, row)) / len(row)] for row in a], a.dtype)
    return mu + k * np.spacing(mu)


def flax(dy, x, gamma, mean, rstd, eps, bug=None, mean_ulps=None):
    """flax.linen.LayerNorm's forward (own two-pass mean/var in the compute dtype, float64 for
    float64) and the backward jax derives from it (the kevin form). ``mean_ulps``: the mean
    jnp.mean gave, that many ulps off the row's exact mean."""
    acc = _acc(x)
    xa, da, w = (np.asarray(a, acc) for a in (x, dy, gamma))
    N = xa.shape[1]
    mu = xa.mean(axis=1, keepdims=True) if mean_ulps is None else _off_by_ulps(xa, mean_ulps)
    xc = xa - mu
    var = (xc * xc).mean(axis=1, keepdims=True)
    r = (1 / np.sqrt(var + acc.type(eps))).astype(acc)
    xhat = xc * r
    g = da * w
    dx = r / acc.type(N) * (acc.type(N) * g - g.sum(axis=1, keepdims=True)
                            - xhat * (g * xhat).sum(axis=1, keepdims=True))
    return _out(x, dx, (da * xhat).sum(axis=0), da.sum(axis=0))


def cs231n(dy, x, gamma, mean, rstd, eps, bug=None):
    """A cs231n solution: layer norm as batch norm on the transpose (statistics by np.mean/np.var
    over axis 0 of x.T), dx by the compact batch-norm formula."""
    acc = _acc(x)
    xt, dt, w = np.asarray(x, acc).T, np.asarray(dy, acc).T, np.asarray(gamma, acc)
    N = xt.shape[0]
    mu = np.mean(xt, axis=0)
    var = np.var(xt, axis=0)
    ivar = 1 / np.sqrt(var + acc.type(eps))
    xhat = (xt - mu) * ivar
    dxhat = dt * w[:, None]
    dxt = (1.0 / N) * ivar * (N * dxhat - np.sum(dxhat, axis=0)
                              - xhat * np.sum(dxhat * xhat, axis=0))
    return _out(x, dxt.T.astype(acc), np.sum(dt.T * xhat.T, axis=0), np.sum(dt.T, axis=0))


@functools.cache
def _numba_kernel():
    import numba

    @numba.njit(fastmath=True, cache=False)
    def kern(x, dy, w, mu, rs, dx, dw, db):
        M, N = x.shape
        for i in range(M):
            s1 = x.dtype.type(0)
            s2 = x.dtype.type(0)
            for j in range(N):
                xh = (x[i, j] - mu[i]) * rs[i]
                g = w[j] * dy[i, j]
                s1 += g
                s2 += g * xh
            s1 /= N
            s2 /= N
            for j in range(N):
                xh = (x[i, j] - mu[i]) * rs[i]
                dx[i, j] = (w[j] * dy[i, j] - s1 - xh * s2) * rs[i]
                dw[j] += dy[i, j] * xh
                db[j] += dy[i, j]

    return kern


def fastmath(dy, x, gamma, mean, rstd, eps, bug=None):
    acc = _acc(x)
    xa, da, w = (np.ascontiguousarray(a, acc) for a in (x, dy, gamma))
    mu, rs = (np.ascontiguousarray(np.asarray(a, acc).reshape(-1)) for a in (mean, rstd))
    dx = np.empty_like(xa)
    dw, db = np.zeros(xa.shape[1], acc), np.zeros(xa.shape[1], acc)
    _numba_kernel()(xa, da, w, mu, rs, dx, dw, db)
    return _out(x, dx, dw, db)


def torch_eager(dy, x, gamma, mean, rstd, eps, bug=None):
    """The eager torch port: torch.mean and torch.var (Welford's updating algorithm, whose error
    grows like √N) in the accumulation dtype, the compact formula on torch tensors."""
    import torch

    acc = _acc(x)
    xt, dt, w = (torch.from_numpy(np.ascontiguousarray(a, acc)) for a in (x, dy, gamma))
    N = xt.shape[1]
    mu = torch.mean(xt, dim=1, keepdim=True)
    var = torch.var(xt, dim=1, keepdim=True, correction=0)
    r = torch.rsqrt(var + eps)
    xhat = (xt - mu) * r
    g = dt * w
    dx = r * (g - g.mean(1, keepdim=True) - xhat * (g * xhat).sum(1, keepdim=True) / N)
    return _out(x, dx.numpy(), (dt * xhat).sum(0).numpy(), dt.sum(0).numpy())


def aten(dy, x, gamma, mean, rstd, eps, bug=None):
    """ATen's CPU LayerNormBackwardKernelImplInternal: dx = a·dy·γ + b·x + c in raw x, with
    ds = Σ dy·γ·x, db = Σ dy·γ, a = rstd, b = (db·μ − ds)·a³/N, c = −b·μ − db·a/N (opmath:
    float32 for 16-bit inputs), saved mean/rstd."""
    acc = _acc(x)
    xa, da, w = (np.asarray(a, acc) for a in (x, dy, gamma))
    mu, rs = np.asarray(mean, acc).reshape(-1, 1), np.asarray(rstd, acc).reshape(-1, 1)
    scale = acc.type(1.0 / xa.shape[1])
    g = da * w
    ds = (g * xa).sum(axis=1, keepdims=True)
    db = g.sum(axis=1, keepdims=True)
    b = (db * mu - ds) * rs * rs * rs * scale
    c = -b * mu - db * rs * scale
    dx = rs * g + b * xa + c
    return _out(x, dx, (da * (xa - mu) * rs).sum(axis=0), da.sum(axis=0))


def flax_6ulp(dy, x, gamma, mean, rstd, eps, bug=None):
    """flax with the mean jnp.mean gives on 768 equal float64 values: 6 ulps off (float64, where
    it was measured; the float32 flax is the pairwise one). Rows of N < 16 keep flax's own mean:
    no sound mean of so few values is 6 ulps off (a sequential sum of N terms errs by at most
    γ_{N−1}, an ulp being 2u to 4u of |μ|)."""
    big = x.dtype == np.float64 and x.shape[1] >= 16
    return flax(dy, x, gamma, mean, rstd, eps, mean_ulps=6 if big else None)


CORRECT: dict[str, Fn] = {"two_pass_f64": two_pass_f64, "llmc": llmc,
                          "triton_tutorial": triton_tutorial, "flax": flax, "cs231n": cs231n,
                          "fastmath": fastmath, "torch_eager": torch_eager, "aten": aten,
                          "flax_6ulp": flax_6ulp}

# What each declares it computes (lnbench.registry.Numerics; read off its code above): the
# judge leaves room for that style only. A mutant is judged with its base's declaration.
DECLARED: dict[str, Numerics] = {
    "two_pass_f64": Numerics(stats="own", formula="centered", acc="float64"),
    "llmc": SAVED_CENTERED,
    "triton_tutorial": SAVED_CENTERED,
    "flax": OWN_CENTERED,
    "cs231n": OWN_CENTERED,
    "fastmath": SAVED_CENTERED,
    "torch_eager": OWN_CENTERED,
    "aten": Numerics(stats="saved", formula="raw-x"),
    "flax_6ulp": OWN_CENTERED,
}

DELTAS = {
    "dgamma_scale_1e-2": lambda x: 1e-2,  # the 1 %
    "dgamma_scale_1e-3": lambda x: 2.0**-10,
    "dgamma_scale_8u": lambda x: 8 * 2.0 ** -(53 if x.dtype == np.float64 else 24),
}


@dataclass(frozen=True)
class Mutant:
    name: str
    base: str
    what: str
    columns: bool = False  # a column-sum bug: judged on the large-M cases too
    half_only: bool = False


MUTANTS = [
    Mutant("var_n_minus_1", "two_pass_f64", "variance divided by N − 1"),
    Mutant("var_e_x2", "two_pass_f64", "variance as E[x²] − E[x]² in the accumulation dtype"),
    Mutant("eps_ignored", "two_pass_f64", "rstd = 1/sqrt(var), eps left out"),
    Mutant("dropped_xhat_term", "llmc", "dx without the x̂·mean(g·x̂) term"),
    Mutant("sign_error", "llmc", "+ x̂·mean(g·x̂) instead of −"),
    Mutant("rstd_twice", "llmc", "dx multiplied by rstd twice"),
    Mutant("stats_wrong_row", "llmc", "mean/rstd of the previous row"),
    Mutant("dbeta_times_gamma", "llmc", "dβ = Σ dy·γ", columns=True),
    Mutant("dgamma_xmu", "llmc", "dγ = Σ dy·(x − μ), rstd left out", columns=True),
    Mutant("dgamma_scale_1e-2", "llmc", "dγ × (1 + 1e-2)", columns=True),
    Mutant("dgamma_scale_1e-3", "llmc", "dγ × (1 + 2**-10)", columns=True),
    Mutant("dgamma_scale_8u", "llmc", "dγ × (1 + 8 accumulator roundings)", columns=True),
    Mutant("wrong_axis", "triton_tutorial", "mean(g) over the column (axis 0), not the row"),
    Mutant("dgamma_missing_tail", "triton_tutorial", "dγ/dβ without the last 64 rows",
           columns=True),
    Mutant("partials_float16", "triton_tutorial", "dγ/dβ partial sums in float16 buffers",
           columns=True),
    Mutant("partials_input_dtype", "triton_tutorial", "dγ/dβ partial sums in the input dtype",
           columns=True, half_only=True),
]

QUICK_CASES = [Case(M, N, dt, di) for M, N in QUICK_SHAPES
               for dt in ("float64", "float32", "float16", "bfloat16") for di in DISTS]
LARGE_CASES = [*(Case(4096, 768, "float32", di) for di in ("normal", "offset", "correlated")),
               Case(32768, 768, "float32", "offset"),
               *(Case(4096, 768, dt, "normal") for dt in ("float16", "bfloat16"))]


UNDECLARED = False  # ``python tests/test_mutations.py --undeclared``: judge all as undeclared


def _declared(name: str) -> Numerics | None:
    return None if UNDECLARED else DECLARED[name]


def _run(fn: Fn, data, bug=None):
    args = (data.dy, data.x, data.gamma, data.mean, data.rstd, data.eps)
    with np.errstate(all="ignore"):
        return fn(*args, bug=bug) if bug else fn(*args)


def _judged(outs, data, numerics: Numerics | None) -> dict[str, tuple[str, float, float]]:
    """grad -> (status, err_ratio, max |got − ref|), judged with the declared ``numerics``."""
    res = {}
    for got, ref, g in zip(outs, data.reference(), GRADS, strict=True):
        st, _, nums = judge_grad(got, ref, g, data, numerics=numerics)
        d = np.abs(np.asarray(got, np.float64).reshape(ref.shape) - ref)
        res[g] = (st, nums["err_ratio"], float(np.nanmax(d)) if np.isfinite(d).all()
                  else math.inf)
    return res


@functools.cache
def evaluate(case: Case) -> dict[str, dict[str, tuple[str, float, float]]]:
    """Every correct implementation and every mutant that applies, judged on ``case``."""
    data = make_data(case)
    large = case in LARGE_CASES
    out = {}
    for name, fn in CORRECT.items():
        if large and name in ("cs231n", "flax_6ulp"):
            continue
        out[name] = _judged(_run(fn, data), data, _declared(name))
    for m in MUTANTS:
        if (large and not m.columns) or (m.half_only and case.dtype not in HALF):
            continue
        out[m.name] = _judged(_run(CORRECT[m.base], data, m.name), data, _declared(m.base))
    return out


def detectable(mut: dict, base: dict) -> bool:
    """Its error at least 10x the given correct implementation's in some gradient."""
    return any(mut[g][2] >= 10 * base[g][2] and mut[g][2] > 0 for g in GRADS)


def worst_correct(ev: dict) -> dict:
    """Per gradient, the largest error of any correct implementation judged on the case."""
    return {g: ("ok", 0.0, max(ev[n][g][2] for n in CORRECT if n in ev)) for g in GRADS}


def detectable_by_set(ev: dict, name: str) -> bool:
    """Detectable against every correct implementation: a judge that passes all of them cannot
    refuse an error they make themselves."""
    return detectable(ev[name], worst_correct(ev))


def flagged(mut: dict) -> bool:
    return any(mut[g][0] != "ok" for g in GRADS)


def score(cases: list[Case]) -> dict:
    det = flag = det_base = flag_base = 0
    missed, missed_base, false_alarms = [], [], []
    worst: dict[str, float] = {}
    for c in cases:
        ev = evaluate(c)
        for name in CORRECT:
            if name in ev:
                r = max(ev[name][g][1] for g in GRADS)
                worst[name] = max(worst.get(name, 0.0), r)
                if any(ev[name][g][0] != "ok" for g in GRADS):
                    false_alarms.append(f"{name} {c.name}: " + ", ".join(
                        f"{g} {ev[name][g][1]:.3g}" for g in GRADS if ev[name][g][0] != "ok"))
        for m in MUTANTS:
            if m.name not in ev:
                continue
            line = f"{m.name} {c.name}: err_ratio " + ", ".join(
                f"{g} {ev[m.name][g][1]:.3g}" for g in GRADS)
            if detectable_by_set(ev, m.name):
                det += 1
                flag += flagged(ev[m.name])
                if not flagged(ev[m.name]):
                    missed.append(line)
            if detectable(ev[m.name], ev[m.base]):
                det_base += 1
                flag_base += flagged(ev[m.name])
                if not flagged(ev[m.name]):
                    missed_base.append(line)
    return {"detectable": det, "flagged": flag, "missed": missed, "detectable_base": det_base,
            "flagged_base": flag_base, "missed_base": missed_base,
            "false_alarms": false_alarms, "worst_correct": worst}
