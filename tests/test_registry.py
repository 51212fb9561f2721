"""The registry: stable ids, what implementations declare, the plugin API and glob selection."""

from __future__ import annotations

import numpy as np
import pytest

import lnbench
from lnbench.dtypes import DTYPES
from lnbench.grid import Case, make_data
from lnbench.registry import Impl, as_triple, get, register, registry, resolve

CONTRACT_IDS = {
    "torch.autograd", "torch.native",
    "numpy.caffe2", "numpy.rocking", "numpy.c9", "numpy.cs231n", "numpy.kevin",
    "cupy.caffe2", "cupy.rocking", "cupy.c9", "cupy.cs231n", "cupy.kevin",
}
LIST_KEYS = {"name", "family", "array", "device", "dtypes", "affine", "available", "reason"}


def _ok(dy, x, gamma, mean, rstd, eps):
    """A docstring's first line becomes the doc."""
    return np.zeros_like(dy), np.zeros_like(gamma), np.zeros_like(gamma)


def test_contract_ids_are_registered_with_what_contract_says():
    reg = registry()
    assert CONTRACT_IDS <= set(reg)
    for name in CONTRACT_IDS:
        impl = reg[name]
        assert impl.name == name == name.lower()
        assert impl.family == name.split(".")[0]
        assert impl.array in ("numpy", "torch", "cupy") and impl.device in ("cpu", "cuda")
        assert set(impl.dtypes) <= set(DTYPES) and impl.dtypes
    assert reg["numpy.caffe2"].affine is False and reg["cupy.caffe2"].affine is False
    assert all(reg[n].affine for n in CONTRACT_IDS - {"numpy.caffe2", "cupy.caffe2"})
    assert {reg[f"numpy.{v}"].array for v in ("caffe2", "rocking", "c9", "cs231n", "kevin")} == \
        {"numpy"}
    assert "bfloat16" not in reg["cupy.kevin"].dtypes  # CuPy has no bfloat16
    assert reg["numpy.kevin"].dtypes == DTYPES


def test_every_registered_id_is_family_dot_variant_lower_case():
    for name, impl in registry().items():
        assert name == impl.name
        if impl.kind != "peer":
            assert name == name.lower() and "." in name, name


def test_describe_has_the_list_json_keys():
    for impl in registry().values():
        d = impl.describe()
        assert LIST_KEYS <= set(d)
        assert isinstance(d["available"], bool) and isinstance(d["reason"], str)
        assert d["available"] == (d["reason"] == "")
        assert isinstance(d["dtypes"], list)


def test_numpy_impls_are_available_and_cupy_says_why_not():
    assert get("numpy.kevin").unavailable() is None
    why = get("cupy.kevin").unavailable()
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if has_gpu:
        assert why is None
    else:
        assert why and ("cupy" in why.lower() or "cuda" in why.lower())


def test_get_and_resolve():
    assert get("numpy.kevin").name == "numpy.kevin"
    with pytest.raises(KeyError, match="nope.impl"):
        get("nope.impl")
    assert {i.name for i in resolve(["numpy.*"])} == \
        {f"numpy.{v}" for v in ("caffe2", "rocking", "c9", "cs231n", "kevin")}
    both = resolve(["numpy.kevin", "numpy.k*", "torch.native"])
    assert [i.name for i in both] == ["numpy.kevin", "torch.native"]  # no duplicates
    assert len(resolve(None)) == len(resolve([])) == len(registry())
    with pytest.raises(KeyError, match="zzz"):
        resolve(["numpy.kevin", "zzz*"])


def test_register_is_the_public_plugin_api(clean_registry):
    impl = lnbench.register("acme.fast", _ok, dtypes=("float32",))
    assert lnbench.get("acme.fast") is impl and registry()["acme.fast"] is impl
    assert (impl.family, impl.kind, impl.array, impl.device, impl.affine) == \
        ("acme", "plugin", "numpy", "cpu", True)
    assert impl.dtypes == ("float32",)
    assert impl.doc == "A docstring's first line becomes the doc."
    assert register("nodots", _ok).family == "plugin"
    assert register("acme.noaffine", _ok, affine=False).affine is False


def test_register_restores_after_test():
    """clean_registry undid the previous test's registrations."""
    assert "acme.fast" not in registry() and "nodots" not in registry()


@pytest.mark.parametrize(
    "args,kw,exc,match",
    [
        (("", _ok), {}, ValueError, "non-empty"),
        ((None, _ok), {}, ValueError, "non-empty"),
        (("p.x", 42), {}, TypeError, "not callable"),
        (("p.x", _ok), {"array": "jax"}, ValueError, "jax"),
        (("p.x", _ok), {"device": "tpu"}, ValueError, "tpu"),
        (("p.x", _ok), {"dtypes": ("float32", "float8")}, ValueError, "float8"),
    ],
)
def test_register_validates(clean_registry, args, kw, exc, match):
    with pytest.raises(exc, match=match):
        register(*args, **kw)
    assert "p.x" not in registry()


def test_contract_maker_passes_the_contract_signature(clean_registry):
    seen = {}

    def spy(dy, x, gamma, mean, rstd, eps):
        seen.update(dy=dy, x=x, gamma=gamma, mean=mean, rstd=rstd, eps=eps)
        return dy, gamma, gamma

    data = make_data(Case(3, 8, "bfloat16", "normal"))
    impl = register("spy.np", spy)
    out = impl.make(data)()
    assert len(out) == 3
    assert seen["x"].shape == seen["dy"].shape == (3, 8) and seen["gamma"].shape == (8,)
    assert seen["mean"].shape == seen["rstd"].shape == (3, 1)
    assert seen["x"].dtype == data.x.dtype and seen["mean"].dtype == np.float32
    assert seen["eps"] == data.eps
    assert seen["x"] is not data.x  # a copy: an implementation cannot corrupt the case
    np.testing.assert_array_equal(seen["x"], data.x)

    import torch

    impl = register("spy.torch", spy, array="torch", affine=False)
    impl.make(data)()
    assert isinstance(seen["x"], torch.Tensor) and seen["x"].dtype == torch.bfloat16
    assert seen["mean"].dtype == torch.float32
    assert torch.all(seen["gamma"] == 1)  # no-affine: γ = 1
    assert np.array_equal(seen["x"].float().numpy(), data.x.astype(np.float32))


def test_as_triple():
    a = np.zeros(3)
    assert as_triple((a, a, a))[0] is a
    assert as_triple([a, None, None]) == (a, None, None)
    assert as_triple(a) == (a, None, None)
    assert as_triple((a,)) == (a, None, None)
    with pytest.raises(TypeError, match="2 values"):
        as_triple((a, a))


def test_unavailable_requires_and_probe(clean_registry):
    def probe_raises():
        raise RuntimeError("driver exploded")

    cases = {
        "r.missing": (dict(requires=("surely_not_a_module_xyz",)), "surely_not_a_module_xyz"),
        "r.probe": (dict(probe=lambda: "needs an H100"), "needs an H100"),
        "r.probe_raises": (dict(probe=probe_raises), "RuntimeError: driver exploded"),
        "r.fine": (dict(probe=lambda: None), None),
    }
    for name, (kw, want) in cases.items():
        impl = Impl(name=name, make=lambda d: None, **kw)
        why = impl.unavailable()
        if want is None:
            assert why is None
        else:
            assert why and want in why
        assert impl.describe()["available"] is (want is None)


def test_unsupported_names_the_dtype():
    impl = Impl(name="x.y", make=lambda d: None, dtypes=("float32",))
    assert impl.unsupported(Case(2, 4, "float32")) is None
    assert "bfloat16" in impl.unsupported(Case(2, 4, "bfloat16"))
