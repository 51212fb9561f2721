"""The case grid: shapes, parsing, inputs, saved stats and user .npz cases."""

from __future__ import annotations

import gc
import weakref

import ml_dtypes
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from lnbench.dtypes import DTYPES, np_dtype
from lnbench.grid import (
    DISTS,
    EPS,
    FULL_SHAPES,
    GRIDS,
    QUICK_SHAPES,
    Case,
    CaseData,
    cases,
    grid_name,
    load_inputs,
    make_data,
    parse_shape,
)


def test_quick_grid_has_the_seed_case_single_rows_and_model_widths():
    assert (2, 4) in QUICK_SHAPES  # the gist's __main__ case
    assert any(M == 1 for M, _ in QUICK_SHAPES)
    assert {768, 1023, 1024, 4096} <= {N for _, N in QUICK_SHAPES}
    assert max(M * N for M, N in QUICK_SHAPES) <= 2**20  # quick stays quick


def test_full_grid_covers_model_widths_and_odd_ones():
    Ns = {N for _, N in FULL_SHAPES}
    assert {768, 1024, 4096, 8192, 16384} <= Ns
    assert {1000, 1023} <= Ns
    assert set(QUICK_SHAPES) <= set(FULL_SHAPES)
    assert GRIDS["quick"] == QUICK_SHAPES and GRIDS["full"] == FULL_SHAPES


def test_cases_is_the_full_product_and_filters():
    cs = cases("quick")
    assert len(cs) == len(QUICK_SHAPES) * len(DTYPES) * len(DISTS)
    assert len(set(cs)) == len(cs)
    cs = cases("full", shapes=[(3, 5)], dtypes=["float32"], dists=["offset", "normal"])
    assert cs == [Case(3, 5, "float32", "offset"), Case(3, 5, "float32", "normal")]
    assert all(c.eps == EPS for c in cs)


@pytest.mark.parametrize(
    "kw,match",
    [({"dtypes": ["float8"]}, "float8"), ({"dists": ["uniform"]}, "uniform")],
)
def test_cases_rejects_unknown_names(kw, match):
    with pytest.raises(ValueError, match=match):
        cases("quick", **kw)
    with pytest.raises(ValueError, match="huge"):
        cases("huge")


def test_grid_name_from_environment(monkeypatch):
    monkeypatch.delenv("LNBENCH_GRID", raising=False)
    assert grid_name() == "quick"
    monkeypatch.setenv("LNBENCH_GRID", "full")
    assert grid_name() == "full"
    monkeypatch.setenv("LNBENCH_GRID", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        grid_name()


@pytest.mark.parametrize(
    "s,want",
    [("4096x1024", (4096, 1024)), ("2X4", (2, 4)), (" 1 x 768 ", (1, 768)), ("3×5", (3, 5))],
)
def test_parse_shape_accepts(s, want):
    assert parse_shape(s) == want


@pytest.mark.parametrize(
    "s", ["", "4096", "4096x", "x1024", "0x5", "5x0", "-1x5", "2.5x4", "axb", "2x3x4",
          "100000x100000"],
)
def test_parse_shape_rejects_with_the_shape_named(s):
    with pytest.raises(ValueError, match="bad shape"):
        parse_shape(s)


def test_case_names_and_bytes():
    c = Case(64, 1023, "bfloat16", "offset")
    assert c.shape == "64x1023" and c.name == "64x1023-bfloat16-offset"
    assert c.nbytes_min == 3 * 64 * 1023 * 2 + 8 * 64 + 3 * 1023 * 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_case_data_dtypes_and_saved_stats(dtype):
    d = make_data(Case(5, 33, dtype, "normal"))
    for a in (d.x, d.dy):
        assert a.shape == (5, 33) and a.dtype == np_dtype(dtype)
    for a in (d.gamma, d.beta):
        assert a.shape == (33,) and a.dtype == np_dtype(dtype)
    want = np.float32 if dtype in ("float16", "bfloat16") else np_dtype(dtype)
    assert d.mean.dtype == want and d.rstd.dtype == want
    assert d.mean.shape == d.rstd.shape == (5, 1)
    x = d.x.astype(np.float64)
    np.testing.assert_allclose(d.mean[:, 0], x.mean(axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d.rstd[:, 0], 1 / np.sqrt(x.var(axis=1) + EPS), rtol=1e-6)


def test_distributions_do_what_they_say():
    off = make_data(Case(4, 256, "float64", "offset")).x
    assert np.all(np.abs(off.mean(axis=1)) > 1e3 * off.std(axis=1))
    off16 = make_data(Case(4, 256, "float16", "offset")).x.astype(np.float64)
    assert np.all(off16.std(axis=1) > 0.1)  # the noise survives rounding to float16
    const = make_data(Case(6, 64, "float32", "constant")).x
    assert np.all(np.ptp(const[::2], axis=1) == 0) and np.all(const[1::2].std(axis=1) > 0)
    out = make_data(Case(4, 512, "float64", "outlier")).x
    assert np.all(np.max(np.abs(out), axis=1) >= 1e3)
    assert np.median(np.abs(out)) < 2


def test_inputs_are_deterministic_and_differ_between_cases():
    a = make_data.__wrapped__(Case(7, 40, "float32", "outlier"))
    b = make_data.__wrapped__(Case(7, 40, "float32", "outlier"))
    assert a is not b
    for k in ("x", "dy", "gamma", "beta", "mean", "rstd"):
        assert getattr(a, k).tobytes() == getattr(b, k).tobytes()
    c = make_data.__wrapped__(Case(7, 40, "float32", "normal"))
    assert a.x.tobytes() != c.x.tobytes()


def test_kappa_reflects_conditioning():
    assert make_data(Case(4, 256, "float64", "normal")).kappa < 10
    assert make_data(Case(4, 256, "float64", "offset")).kappa > 1e3


def test_case_data_reference_is_released_with_the_case_data():
    """CaseData.reference is cached for the CaseData's lifetime, not the process's."""
    d = make_data.__wrapped__(Case(4, 8, "float64", "normal"))
    d.reference(True)
    r = weakref.ref(d)
    del d
    gc.collect()
    assert r() is None


def test_case_data_without_reference_is_released():
    """Control for the test above: the leak is the reference cache, nothing else."""
    d = make_data.__wrapped__(Case(4, 8, "float64", "normal"))
    r = weakref.ref(d)
    del d
    gc.collect()
    assert r() is None


# ------------------------------------------------------------------ user .npz cases


def _save(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _arrays(M=3, N=8, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x=rng.standard_normal((M, N)).astype(dtype),
                dy=rng.standard_normal((M, N)).astype(dtype),
                gamma=rng.standard_normal(N).astype(dtype))


def test_load_inputs_happy_path(tmp_path):
    a = _arrays()
    p = _save(tmp_path / "act.npz", **a, beta=np.ones(8, np.float32), eps=np.float64(1e-6))
    d = load_inputs(p)
    assert isinstance(d, CaseData)
    assert d.case == Case(3, 8, "float32", "inputs:act", 1e-6)
    np.testing.assert_array_equal(d.x, a["x"])
    np.testing.assert_array_equal(d.dy, a["dy"])
    np.testing.assert_array_equal(d.beta, np.ones(8, np.float32))
    assert d.mean.dtype == np.float32 and d.eps == 1e-6


def test_load_inputs_defaults_beta_and_eps(tmp_path):
    d = load_inputs(_save(tmp_path / "u.npz", **_arrays(dtype=np.float64)))
    assert d.case.dtype == "float64" and d.case.eps == EPS
    np.testing.assert_array_equal(d.beta, np.zeros(8))


def test_load_inputs_bfloat16_from_ml_dtypes(tmp_path):
    a = {k: v.astype(ml_dtypes.bfloat16) for k, v in _arrays().items()}
    p = _save(tmp_path / "bf.npz", **a)
    assert np.load(p)["x"].dtype.kind == "V"  # what np.load gives back for ml_dtypes arrays
    d = load_inputs(p)
    assert d.case.dtype == "bfloat16"
    assert d.x.dtype == np_dtype("bfloat16") and d.mean.dtype == np.float32
    assert d.x.tobytes() == a["x"].tobytes()


@pytest.mark.parametrize("drop", ["x", "dy", "gamma"])
def test_load_inputs_missing_key(tmp_path, drop):
    a = _arrays()
    del a[drop]
    p = _save(tmp_path / "m.npz", **a)
    with pytest.raises(ValueError, match=rf"m\.npz.*missing key\(s\) {drop}"):
        load_inputs(p)


@pytest.mark.parametrize(
    "change",
    [
        {"x": np.zeros(8, np.float32)},
        {"dy": np.zeros((3, 7), np.float32)},
        {"gamma": np.zeros(7, np.float32)},
        {"beta": np.zeros((1, 8), np.float32)},
    ],
    ids=["x-1d", "dy-shape", "gamma-len", "beta-2d"],
)
def test_load_inputs_bad_shapes(tmp_path, change):
    p = _save(tmp_path / "s.npz", **(_arrays() | change))
    with pytest.raises(ValueError, match=r"s\.npz"):
        load_inputs(p)


def test_load_inputs_unsupported_dtype(tmp_path):
    p = _save(tmp_path / "i.npz", **{k: v.astype(np.int32) for k, v in _arrays().items()})
    with pytest.raises(ValueError, match=r"i\.npz.*int32"):
        load_inputs(p)


def test_load_inputs_unreadable(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not an npz file at all")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    for p in (garbage, empty, tmp_path / "missing.npz"):
        with pytest.raises(ValueError, match=rf"{p.name}.*cannot read"):
            load_inputs(str(p))


@pytest.mark.parametrize("kind", ["corrupt-zip", "npy", "object-array"])
def test_load_inputs_unreadable_zip_npy_or_pickle(tmp_path, kind):
    if kind == "corrupt-zip":
        p = tmp_path / "bad.npz"
        p.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    elif kind == "npy":
        p = tmp_path / "bad.npy"
        np.save(p, np.zeros((3, 8)))
    else:  # object arrays need pickle, which load_inputs (rightly) refuses
        p = tmp_path / "objects.npz"
        np.savez(p, **(_arrays() | {"x": np.zeros((3, 8), dtype=object)}))
    with pytest.raises(ValueError, match=p.name):
        load_inputs(str(p))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("M,N", [(0, 8), (3, 0)])
def test_load_inputs_empty_arrays_named(tmp_path, M, N):
    p = _save(tmp_path / "empty_rows.npz", **_arrays(M=M, N=N))
    with pytest.raises(ValueError, match="empty_rows.npz"):
        load_inputs(p)


# ------------------------------------------------------------------ properties


@settings(max_examples=40, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink])
@given(M=st.integers(1, 40), N=st.integers(1, 300), dtype=st.sampled_from(DTYPES),
       dist=st.sampled_from(DISTS))
def test_property_case_inputs_are_deterministic(M, N, dtype, dist):
    """Same case -> same bytes, built twice from scratch and through the cache."""
    case = Case(M, N, dtype, dist)
    a, b, cached = make_data.__wrapped__(case), make_data.__wrapped__(case), make_data(case)
    for k in ("x", "dy", "gamma", "beta", "mean", "rstd"):
        va, vb, vc = getattr(a, k), getattr(b, k), getattr(cached, k)
        assert va.dtype == vb.dtype == vc.dtype
        assert va.tobytes() == vb.tobytes() == vc.tobytes(), k
    assert a.x.dtype == np_dtype(dtype) and a.x.shape == (M, N)
    assert a.mean.dtype == np_dtype("float32" if dtype in ("float16", "bfloat16") else dtype)
    assert a.kappa == b.kappa and np.isfinite(a.x.astype(np.float64)).all()


def test_grids_have_large_m_cases_for_the_column_sums():
    assert max(M for M, _ in QUICK_SHAPES) >= 4096
    assert max(M for M, _ in FULL_SHAPES) >= 131072
    assert (32768, 768) in FULL_SHAPES


@pytest.mark.parametrize("dtype", DTYPES)
def test_correlated_inputs_make_dx_cancel(dtype):
    """`correlated`: dy ≈ s·x̂ with γ ≈ 1, so mean(g·x̂) ≈ s is of order 1 (random inputs: ~1/√N)
    and dx is what is left after the x̂·mean(g·x̂) term cancels g: far smaller than its terms."""
    from lnbench.reference import term_scales

    d = make_data(Case(64, 512, dtype, "correlated"))
    x, dy, g = (a.astype(np.float64) for a in (d.x, d.dy, d.gamma))
    assert np.all(np.abs(g - 1) < 0.1)
    xc = x - x.mean(axis=1, keepdims=True)
    xhat = xc / np.sqrt((xc**2).mean(axis=1, keepdims=True) + EPS)
    m_gx = (dy * g * xhat).mean(axis=1)
    assert np.all((m_gx > 0.4) & (m_gx < 1.6))
    dx = d.reference()[0]
    assert np.max(np.abs(dx)) < 0.2 * term_scales(d.dy, d.x, d.gamma, EPS)[0]
    nrm = make_data(Case(64, 512, dtype, "normal"))
    assert np.max(np.abs(nrm.reference()[0])) > 0.3 * term_scales(nrm.dy, nrm.x, nrm.gamma,
                                                                 EPS)[0]
