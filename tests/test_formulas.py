"""The namespace formulas (lnbench.formulas) are the seed gist's, line for line.

tests/seed_gist.py is a verbatim copy of the seed gist.
"""

from __future__ import annotations

import array_api_compat.numpy as xnp
import array_api_compat.torch as xtorch
import numpy as np
import pytest
import seed_gist
import torch

from lnbench.formulas import AFFINE, FORMULAS, seed_forward

GIST = {
    "caffe2": seed_gist.layernorm_nogamma_beta_backward,
    "rocking": seed_gist.rocking_layernorm_backward,
    "c9": seed_gist.c9_layernorm_backward,
    "cs231n": seed_gist.cs231n_layernorm_backward,
    "kevin": seed_gist.kevin_layernorm_backward,
}
SHAPES = [(2, 4), (3, 5), (1, 768), (16, 1023)]


def _case(M, N, dtype=np.float64, seed=0, offset=0.0):
    rng = np.random.default_rng(seed + M * 7919 + N)
    x = (rng.standard_normal((M, N)) + offset).astype(dtype)
    gamma, beta = rng.standard_normal(N).astype(dtype), rng.standard_normal(N).astype(dtype)
    return x, rng.standard_normal((M, N)).astype(dtype), gamma, beta


def _triple(out):
    return out if isinstance(out, tuple) else (out,)


def test_every_seed_formula_is_covered():
    assert set(FORMULAS) == set(GIST) == set(AFFINE)
    assert AFFINE == {"caffe2": False, "rocking": True, "c9": True, "cs231n": True, "kevin": True}


def test_gist_copy_is_verbatim():
    from pathlib import Path

    shared = Path(__file__).resolve().parents[1].parent / "shared/seed/layernorm_backward_gist.py"
    if not shared.exists():
        pytest.skip(f"{shared} not present in this checkout")
    assert Path(seed_gist.__file__).read_text() == shared.read_text()


@pytest.mark.parametrize("M,N", SHAPES)
def test_seed_forward_equals_gist_forward(M, N):
    x, _, gamma, beta = _case(M, N)
    y_gist, cache_gist = seed_gist.layernorm_forward(x, gamma, beta, 1e-5)
    y, cache = seed_forward(xnp, x, gamma, beta, 1e-5)
    np.testing.assert_array_equal(y, y_gist)
    assert len(cache) == len(cache_gist) == 6
    for a, b in zip(cache, cache_gist, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(FORMULAS))
@pytest.mark.parametrize("M,N", SHAPES)
def test_formula_equals_literal_gist_float64_numpy(name, M, N):
    """Same float64 inputs, the gist's own forward cache: the outputs are bit-identical."""
    x, dy, gamma, beta = _case(M, N)
    _, cache = seed_gist.layernorm_forward(x, gamma, beta, 1e-5)
    want = _triple(GIST[name](dy, cache))
    got = _triple(FORMULAS[name](xnp, dy, cache))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype == np.float64
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("name", list(FORMULAS))
def test_formula_equals_gist_on_offset_data(name):
    """Also on 1e4 + N(0, 1), where the formulations differ from each other the most."""
    x, dy, gamma, beta = _case(8, 64, offset=1e4)
    _, cache = seed_gist.layernorm_forward(x, gamma, beta, 1e-5)
    for g, w in zip(_triple(FORMULAS[name](xnp, dy, cache)), _triple(GIST[name](dy, cache)),
                    strict=True):
        np.testing.assert_array_equal(g, w)


def test_gist_formulations_agree_with_torch_autograd():
    """Sanity of the seed itself: its own __main__ comparison, in float64."""
    x, dy, gamma, beta = _case(2, 4)
    _, cache = seed_gist.layernorm_forward(x, gamma, beta, 1e-5)
    want = seed_gist.pytorch_layernorm_backward(x, gamma, beta, 1e-5, dy)
    for name in ("rocking", "c9", "cs231n", "kevin"):
        got = GIST[name](dy, cache)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(np.ravel(g), np.ravel(w), rtol=1e-12, atol=1e-12)


def _to_torch(cache):
    return tuple(torch.from_numpy(np.array(a, copy=True)) for a in cache)


@pytest.mark.parametrize("name", list(FORMULAS))
@pytest.mark.parametrize("M,N", SHAPES)
def test_same_formula_code_on_torch_equals_numpy(name, M, N):
    """array_api_compat.torch runs the very same function; float64 results agree to rounding."""
    x, dy, gamma, beta = _case(M, N)
    _, cache = seed_forward(xnp, x, gamma, beta, 1e-5)
    want = _triple(FORMULAS[name](xnp, dy, cache))
    got = _triple(FORMULAS[name](xtorch, torch.from_numpy(dy.copy()), _to_torch(cache)))
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, torch.Tensor)
        assert g.dtype == torch.float64
        assert tuple(g.shape) == w.shape
        scale = max(float(np.max(np.abs(w))), 1e-300)
        assert float(np.max(np.abs(g.numpy() - w))) / scale <= 1e-13


@pytest.mark.parametrize("M,N", [(2, 4), (16, 1023)])
def test_seed_forward_on_torch_equals_numpy(M, N):
    x, _, gamma, beta = _case(M, N)
    y, cache = seed_forward(xnp, x, gamma, beta, 1e-5)
    ty, tcache = seed_forward(xtorch, *(torch.from_numpy(a.copy()) for a in (x, gamma, beta)), 1e-5)
    np.testing.assert_allclose(ty.numpy(), y, rtol=1e-13, atol=1e-13)
    for a, b in zip(tcache, cache, strict=True):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-13, atol=1e-13)


def test_cs231n_keeps_float32_while_the_gist_promotes_to_float64():
    """docs/peers.md: the seed's cs231n returns float64 for float32 input (np.ones promotes)."""
    x, dy, gamma, beta = _case(2, 4, dtype=np.float32)
    _, cache = seed_gist.layernorm_forward(x, gamma, beta, 1e-5)
    gist_dx, gist_dg, gist_db = seed_gist.cs231n_layernorm_backward(dy, cache)
    assert gist_dx.dtype == np.float64  # the seed's silent promotion
    dx, dg, db = FORMULAS["cs231n"](xnp, dy, cache)
    assert dx.dtype == dg.dtype == db.dtype == np.float32
    np.testing.assert_allclose(dx, gist_dx, rtol=1e-5, atol=1e-5)
    # and on torch tensors too (ones on the input's device, in the input's dtype)
    tdx, tdg, tdb = FORMULAS["cs231n"](xtorch, torch.from_numpy(dy.copy()), _to_torch(cache))
    assert tdx.dtype == tdg.dtype == tdb.dtype == torch.float32


@pytest.mark.parametrize("name", [n for n in FORMULAS if n != "cs231n"])
def test_other_formulas_keep_float32_like_the_gist(name):
    x, dy, gamma, beta = _case(4, 33, dtype=np.float32)
    _, cache = seed_gist.layernorm_forward(x, gamma, beta, 1e-5)
    for g, w in zip(_triple(FORMULAS[name](xnp, dy, cache)), _triple(GIST[name](dy, cache)),
                    strict=True):
        assert g.dtype == w.dtype == np.float32
        np.testing.assert_array_equal(g, w)
