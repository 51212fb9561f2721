"""torch.compile: the formula itself (eager, every dtype) and the compiled function (two dtypes,
every distribution; compiled once per dtype and reused, so the file stays fast)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lnbench.arrays import to_array  # noqa: E402
from lnbench.dtypes import DTYPES  # noqa: E402
from lnbench.grid import DISTS, Case, make_data  # noqa: E402
from lnbench.impls import torch_compile as tc  # noqa: E402
from lnbench.judge import check_impl  # noqa: E402
from lnbench.registry import Impl, get  # noqa: E402


def _bad(rows: list) -> list:
    return [(r.case, r.grad, r.status, r.reason) for r in rows if r.status != "ok"]


def _eager_impl() -> Impl:
    """The same formula, not compiled: judges the math without paying for Inductor."""

    def make(data):
        x, dy, gamma, mean, rstd = (
            to_array(a, "torch", "cpu") for a in (data.x, data.dy, data.gamma, data.mean,
                                                    data.rstd)
        )
        return lambda: tc.backward_formula(dy, x, gamma, mean, rstd)

    return Impl(name="torch.compile-eager", make=make, array="torch", device="cpu")


@pytest.mark.parametrize("dtype", DTYPES)
def test_formula_eager_is_judged_ok(dtype: str) -> None:
    impl = _eager_impl()
    for dist in DISTS:
        for M, N in [(1, 768), (37, 257), (64, 1023)]:
            assert not _bad(check_impl(impl, make_data(Case(M, N, dtype, dist))))


def test_probe_finds_a_compiler_here_and_names_a_missing_one(monkeypatch) -> None:
    if tc.torch_device() != "cpu":
        pytest.skip("the C++ compiler probe is for the CPU backend")
    tc._probe.cache_clear()
    try:
        assert tc._probe() is None
        monkeypatch.setenv("CXX", "no-such-compiler-xyz")
        tc._probe.cache_clear()
        why = tc._probe()
        assert why is not None and "no-such-compiler-xyz" in why
    finally:
        monkeypatch.undo()
        tc._probe.cache_clear()


@pytest.fixture(scope="module")
def impl() -> Impl:
    impl = get("torch.compile")
    why = impl.unavailable()
    if why:
        pytest.skip(why)
    return impl


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compiled_is_judged_ok_on_every_distribution(impl: Impl, dtype: str) -> None:
    for dist in DISTS:
        for M, N in [(37, 257), (64, 1023)]:
            assert not _bad(check_impl(impl, make_data(Case(M, N, dtype, dist))))


def test_one_graph_serves_new_shapes_and_compiling_is_not_timed(impl: Impl) -> None:
    """After the first case of a dtype, a new (M, N) does not compile again (dynamic=True), and a
    thunk call never compiles: the maker's warm-up did."""
    first = impl.make(make_data(Case(37, 257, "float32", "normal")))
    n = tc._graphs_compiled()
    later = impl.make(make_data(Case(96, 1000, "float32", "offset")))
    assert later.compile_seconds == 0.0
    assert tc._graphs_compiled() == n
    first()
    later()
    assert tc._graphs_compiled() == n
    assert tc.compile_seconds()["float32"] > 0
    dx, dg, db = later()
    assert dx.dtype == dg.dtype == db.dtype == torch.float32
    assert dx.shape == (96, 1000) and dg.shape == db.shape == (1000,)
