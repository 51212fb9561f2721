"""numba.fused: judged on every dtype x distribution, deterministic, 16-bit conversions exact."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

pytest.importorskip("numba")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from lnbench.dtypes import DTYPES, np_dtype, stats_dtype  # noqa: E402
from lnbench.grid import DISTS, Case, make_data  # noqa: E402
from lnbench.impls import numba_fused as nf  # noqa: E402
from lnbench.judge import check_impl  # noqa: E402
from lnbench.registry import Impl, get  # noqa: E402

# M = 1, odd N, N smaller than a vector, more rows than one block, a tail after the vector loop
SHAPES = [(1, 768), (3, 5), (2, 1), (37, 257), (64, 1023)]


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_judged_ok_on_every_dtype_and_distribution(dtype: str, dist: str) -> None:
    impl = get("numba.fused")
    for M, N in SHAPES:
        rows = check_impl(impl, make_data(Case(M, N, dtype, dist)))
        bad = [(r.case, r.grad, r.status, r.reason) for r in rows if r.status != "ok"]
        assert not bad, bad


def _forced(group: int, blocks: int | None = None) -> Impl:
    """numba.fused with the rows-per-sweep (and block count) forced, so that the four-row sweep
    (normally only for N >= SHORT_N) is judged on short rows too."""

    def make(data):
        nf.warm_up(data.case.dtype)
        args = nf._kernel_args(data.x, data.dy, data.gamma, data.mean, data.rstd, data.case.dtype)
        M = data.case.M
        b = None if blocks is None else min(blocks, M)
        return lambda: nf.fused_backward(*args, data.case.dtype, blocks=b, group=group)

    return Impl(name=f"numba.fused-g{group}", make=make)


@pytest.mark.parametrize("dtype", DTYPES)
def test_four_row_sweep_is_judged_ok(dtype: str) -> None:
    """Blocks of 4k, 4k+1..4k+3 rows (the leftover rows take the one-row sweep)."""
    for dist in DISTS:
        for (M, N), blocks in [((37, 257), None), ((7, 33), 1), ((45, 130), 2), ((4, 2048), None)]:
            rows = check_impl(_forced(4, blocks), make_data(Case(M, N, dtype, dist)))
            assert not [(r.case, r.grad, r.reason) for r in rows if r.status != "ok"]


def test_rows_per_sweep_and_the_real_path_for_large_rows() -> None:
    """Four-row sweeps from SHORT_N on for every dtype; rows longer than the prefetch chunk,
    not a whole number of chunks or cache lines, with leftover rows, judged on the real path."""
    assert nf.rows_per_sweep(nf.SHORT_N - 1) == 1
    assert nf.rows_per_sweep(nf.SHORT_N) == 4
    for dtype in ("bfloat16", "float32"):
        rows = check_impl(get("numba.fused"),
                          make_data(Case(19, 2 * nf.PREFETCH_CHUNK + 3, dtype, "offset")))
        assert all(r.status == "ok" for r in rows), dtype


def test_bad_overrides_are_refused() -> None:
    x = np.ones((4, 8))
    args = nf._kernel_args(x, x, x[0], x[:, :1], x[:, :1], "float32")
    with pytest.raises(ValueError, match="group"):
        nf.fused_backward(*args, "float32", group=2)
    with pytest.raises(ValueError, match="blocks"):
        nf.fused_backward(*args, "float32", blocks=5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_outputs_have_the_input_dtype_and_shapes(dtype: str) -> None:
    dx, dg, db = get("numba.fused").make(make_data(Case(37, 257, dtype, "normal")))()
    assert dx.dtype == dg.dtype == db.dtype == np_dtype(dtype)
    assert dx.shape == (37, 257) and dg.shape == db.shape == (257,)


def test_the_thunk_never_compiles() -> None:
    """The maker's warm-up compiled exactly the signature the thunk calls."""
    kernel, _ = nf._build()
    for dtype in DTYPES:
        thunk = nf.make(make_data(Case(64, 1023, dtype, "outlier")))
        n = len(kernel.signatures)
        thunk()
        assert len(kernel.signatures) == n, dtype
        assert thunk.compile_seconds == nf.compile_seconds()[dtype] > 0
    assert set(nf.compiled_from_cache()) >= set(DTYPES)


@pytest.mark.parametrize("N", [1023, 2050])  # 16-bit: one-row and four-row sweep
@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_across_calls_and_thread_counts(dtype: str, N: int) -> None:
    import numba

    data = make_data(Case(203, N, dtype, "outlier"))  # 12 blocks of 16-17 rows
    thunk = nf.make(data)
    first = thunk()
    saved = numba.get_num_threads()
    try:
        for threads in sorted({1, saved, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            for _ in range(3):
                again = thunk()
                for a, b in zip(first, again, strict=True):
                    assert np.array_equal(_bits(a), _bits(b)), (dtype, threads)
    finally:
        numba.set_num_threads(saved)


@pytest.mark.parametrize("N", [131, 300])  # one-row and four-row sweep
@pytest.mark.parametrize("dtype", DTYPES)
def test_dbeta_is_the_fixed_block_order_sum(dtype: str, N: int) -> None:
    """dβ bit for bit: each block sums its rows in order (the four-row sweep adds
    (dy0 + dy1) + (dy2 + dy3) per four rows, the rows left over one by one), then blocks are
    added in order 0..B−1."""
    M = 102  # blocks of 17 rows: four groups of four and one row left over
    G = nf.rows_per_sweep(N)
    assert G == (4 if N == 300 else 1)
    data = make_data(Case(M, N, dtype, "normal"))
    B = nf.n_blocks(M)
    assert B > 1
    acc = np_dtype(stats_dtype(dtype))
    dy = data.dy.astype(acc)
    parts = []
    for b in range(B):
        p = np.zeros(N, acc)
        i, end = b * M // B, (b + 1) * M // B
        while G == 4 and i + 4 <= end:
            p = p + ((dy[i] + dy[i + 1]) + (dy[i + 2] + dy[i + 3]))
            i += 4
        for k in range(i, end):
            p = p + dy[k]
        parts.append(p)
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    want = total.astype(np_dtype(dtype))
    _, _, db = nf.make(data)()
    assert np.array_equal(_bits(db), _bits(want))


@pytest.mark.parametrize("dtype", DTYPES)
def test_streamed_dx_changes_no_bit(dtype: str) -> None:
    """Non-temporal dx stores (through the staging row) give the same bits as plain stores, on
    both sweeps, with several blocks and rows left over after the groups of four."""
    for M, N in [(37, 256), (203, 64), (1, 32)]:
        data = make_data(Case(M, N, dtype, "outlier"))
        args = nf._kernel_args(data.x, data.dy, data.gamma, data.mean, data.rstd, dtype)
        for group in (1, 4):
            plain = nf.fused_backward(*args, dtype, group=group, stream=False)
            streamed = nf.fused_backward(*args, dtype, group=group, stream=True)
            assert streamed[0].ctypes.data % nf.STREAM_ALIGN == 0
            assert streamed[0].flags.c_contiguous and streamed[0].dtype == np_dtype(dtype)
            for a, b in zip(plain, streamed, strict=True):
                assert np.array_equal(_bits(a), _bits(b)), (dtype, M, N, group)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prefetching_changes_no_bit(dtype: str) -> None:
    """Sweep 2 in prefetch chunks (rows longer than a chunk, not a whole number of chunks or
    cache lines; blocks whose last group prefetches its own rows) gives the bits of one pass,
    with plain and (where rows are whole 32-byte stores) streamed dx."""
    N = 2 * nf.PREFETCH_CHUNK + 64 + 3 * (np_dtype(dtype).itemsize < 4)
    for M in (37, 40):
        data = make_data(Case(M, N, dtype, "outlier"))
        args = nf._kernel_args(data.x, data.dy, data.gamma, data.mean, data.rstd, dtype)
        for stream in (False, True) if (N * np_dtype(dtype).itemsize) % 32 == 0 else (False,):
            one = nf.fused_backward(*args, dtype, stream=stream, prefetch=False)
            chunked = nf.fused_backward(*args, dtype, stream=stream, prefetch=True)
            for a, b in zip(one, chunked, strict=True):
                assert np.array_equal(_bits(a), _bits(b)), (dtype, M, stream)


def test_when_sweep_2_prefetches() -> None:
    rows = nf.PREFETCH_MIN_BYTES // 2 // 2 // 1024  # rows of 1024 bfloat16: x, dy at the limit
    assert nf.prefetches(rows, 1024, "bfloat16") and nf.prefetches(rows // 2, 1024, "float32")
    assert not nf.prefetches(rows - 1, 1024, "bfloat16")  # in cache
    assert not nf.prefetches(rows * 64, nf.SHORT_N - 1, "float32")  # one-row sweeps


def test_which_dx_is_streamed() -> None:
    big = nf.STREAM_MIN_BYTES // 4 // 1024  # rows of 1024 float32 making STREAM_MIN_BYTES
    assert nf.streams_dx(big, 1024, "float32") and nf.streams_dx(big // 2, 1024, "float64")
    assert not nf.streams_dx(big - 1, 1024, "float32")  # small: stays in cache
    assert not nf.streams_dx(big * 2, 1024, "bfloat16")  # 16-bit: never
    assert not nf.streams_dx(big * 2, 1023, "float32")  # rows not whole 32-byte stores
    assert not nf.streams_dx(big * 64, 64, "float32")  # short rows
    x = np.ones((4, 9))
    args = nf._kernel_args(x, x, x[0], x[:, :1], x[:, :1], "float32")
    with pytest.raises(ValueError, match="32-byte"):
        nf.fused_backward(*args, "float32", stream=True)


def test_the_streamed_path_is_judged_ok() -> None:
    M, N = nf.STREAM_MIN_BYTES // 4 // 1024, 1024
    assert nf.streams_dx(M, N, "float32")
    rows = check_impl(get("numba.fused"), make_data(Case(M, N, "float32", "offset")))
    assert [r.status for r in rows] == ["ok"] * 3


def test_block_count_depends_on_rows_only() -> None:
    assert nf.n_blocks(1) == 1
    assert nf.n_blocks(15) == 1
    assert nf.n_blocks(4096) == nf.MAX_BLOCKS
    assert all(1 <= nf.n_blocks(M) <= min(M, nf.MAX_BLOCKS) for M in range(1, 3000, 7))


# --- 16-bit conversions -------------------------------------------------------------------------


def _narrow(values: np.ndarray, dtype: str) -> np.ndarray:
    out = np.empty(values.shape, nf.BITS_VIEW[dtype])
    nf.conversion_kernels()["narrow"](np.ascontiguousarray(values, np.float32), out)
    return out.view(np.uint16)


def _widen(bits: np.ndarray, dtype: str) -> np.ndarray:
    out = np.empty(bits.shape, np.float32)
    nf.conversion_kernels()["widen"](bits.view(nf.BITS_VIEW[dtype]), out)
    return out


def test_bfloat16_widening_is_exact_for_every_bit_pattern() -> None:
    bits = np.arange(2**16, dtype=np.uint16)
    want = bits.view(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(_widen(bits, "bfloat16").view(np.uint32), want.view(np.uint32))


def test_float16_widening_is_exact_for_every_bit_pattern() -> None:
    bits = np.arange(2**16, dtype=np.uint16)
    want = bits.view(np.float16).astype(np.float32)
    got = _widen(bits, "float16")
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)  # signalling NaNs come back quiet: still NaN
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


# float32 bit patterns: anything, plus exact ties / near-ties for bfloat16 rounding, subnormals,
# NaNs with payloads, infinities, and values at the bfloat16/float16 overflow edge.
_low16 = st.sampled_from([0x0000, 0x7FFF, 0x8000, 0x8001, 0xFFFF]) | st.integers(0, 0xFFFF)
_ties = st.builds(lambda hi, lo: (hi << 16) | lo, st.integers(0, 0xFFFF), _low16)
_f32_bits = st.integers(0, 2**32 - 1) | _ties | st.sampled_from(
    [0x00000001, 0x007FFFFF, 0x00008000, 0x00018000, 0x7F800000, 0xFF800000, 0x7F800001,
     0xFFC00001, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x477FE000, 0x477FEFFF, 0x477FF000,
     0x33000000, 0x33000001, 0x387FC000])


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.uint32, st.integers(1, 64), elements=_f32_bits))
def test_bfloat16_rounding_matches_ml_dtypes(bits: np.ndarray) -> None:
    f = bits.view(np.float32)
    with np.errstate(invalid="ignore"):
        want = f.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(_narrow(f, "bfloat16"), want)


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.uint32, st.integers(1, 64), elements=_f32_bits))
def test_float16_rounding_matches_numpy(bits: np.ndarray) -> None:
    f = bits.view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        want = f.astype(np.float16).view(np.uint16)
    got = _narrow(f, "float16")
    nan = np.isnan(f)
    assert np.array_equal(np.isnan(got.view(np.float16)), nan)
    assert np.array_equal(got[~nan], want[~nan])


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 64),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True,
                                     allow_subnormal=True)))
def test_bfloat16_round_trip(values: np.ndarray) -> None:
    """narrow then widen == ml_dtypes' bfloat16 value (NaN stays NaN)."""
    got = _widen(_narrow(values, "bfloat16"), "bfloat16")
    want = values.astype(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(got, want, equal_nan=True)
