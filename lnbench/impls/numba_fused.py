"""``numba.fused``: a custom one-pass LayerNorm backward for the CPU, written in Numba.

Math (row i of length N; μ, r = rstd saved by the forward; all in the accumulation type):

    x̂ = (x − μ)·r,   g = dy·γ
    dx = r·(g − mean(g) − x̂·mean(g·x̂))          (row means over N)
    dγ = Σ_rows dy·x̂,   dβ = Σ_rows dy

Strategy: rows are split into ``B = n_blocks(M)`` contiguous blocks of fixed extent (computed
here from M alone, never from the thread count); ``prange`` hands blocks to threads. Within a
block, sweep 1 reads a row's x and dy once from memory, forming Σg and Σg·x̂ and adding dy·x̂ and
dy into the block's own float32 (float64) partial rows of dγ/dβ; sweep 2 goes over the same row,
now in L1/L2, recomputes x̂ and g and writes dx. Rows of N ≥ SHORT_N go through sweep 1 four at a
time (:func:`rows_per_sweep`), so the partial rows are read and written once per four rows and
eight row streams are in flight instead of two. While sweep 2 computes the four rows from cache,
memory would idle; so, when x and dy come from memory (:func:`prefetches`), sweep 2 asks for the
next four rows' cache lines as it goes, PREFETCH_CHUNK columns at a time. When dx is large
(:func:`streams_dx`), a second compiled kernel (the same source with ``STREAM`` set) has sweep 2
write each row into a small staging row that stays in L1 and copy it to dx with non-temporal
32-byte stores, so dx's cache lines are written to memory without first being read from it.
Finally the B partial rows are summed per column in block order 0, 1, …, B−1. Every number
therefore depends only on (M, N) and the inputs: bit-identical run to run and for any thread
count or scheduling (prefetching and streaming change no bit).

Sweep 2's formula, per row with b = −r²·mean(g·x̂) and c = −r·mean(g):
dx = r·g + (b·(x − μ) + c), two multiply-adds (``llvm.fmuladd``) and a multiply after g = dy·γ.
γ is widened to the accumulation type once per call.

Precision: float32 accumulation (float64 for float64 inputs). bfloat16 and float16 arrive as their
16-bit patterns and are widened in registers (bfloat16: ``bits << 16``; float16: LLVM's ``half``
conversion, F16C on x86); outputs are rounded back once, to nearest-even.

Fast math: the kernel and the four-row sweep 1 (``_sweep1x4_impl``, a function of its own) are
compiled with ``fastmath={"reassoc"}``, which lets LLVM vectorise the row sums (Σg, Σg·x̂) with
several accumulators; no other flag is set, so NaN/inf propagate. The summation order that
results is fixed when the kernel is compiled — it does not depend on the data, the thread count
or the run — but a CPU with another vector width, or without FMA (``fmuladd`` is then a
multiply and an add), may differ in the last bits. The per-row sweeps (``_sweep1_impl``,
``_sweep2_impl``, ``_sweep2pf_impl``, ``_nt_row_impl``) are inlined into the kernel at Numba's
level (``inline="always"``), so they take the kernel's flag.

Why inlined, and why no row views: Numba compiles the ``prange`` body into a function of its
own, and LLVM did not inline the sweeps into it. Each row then paid two calls, its array
arguments passed field by field, and an atomic reference-count increment and decrement
(``NRT_incref``, a ``lock incq``) for every row view; the kernel's assembly
(``kernel.inspect_asm()``) shows them. The one-row sweeps are inlined, and they index the 2-D
arrays at (row, column) with unsigned indices instead of taking row views; an unsigned index
also spares Numba's negative-index wrap-around, which otherwise kept LLVM from vectorising a
loop over a column range (it gathered element by element). The four-row sweep is called once
per four rows of N ≥ 256, where its call and views cost little (docs/cpu-kernels.md has the
measurements).

Compilation never lands in a timing: the maker compiles (or loads from Numba's on-disk cache) the
kernel for its dtype with a call on a tiny array, and records the seconds it took in
:func:`compile_seconds` and on the thunk (``thunk.compile_seconds``).
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import numpy as np

from lnbench.dtypes import DTYPES, np_dtype, stats_dtype
from lnbench.impl import SAVED_CENTERED, Impl, Thunk, add

# 16-bit inputs reach the kernel as their bit patterns. Numba has no 16-bit float type, so the
# integer type of the view tells the kernel which format the bits are in.
BITS_VIEW: dict[str, np.dtype] = {
    "bfloat16": np.dtype(np.uint16),
    "float16": np.dtype(np.int16),
}

MAX_BLOCKS = 16  # most row blocks (rows of the dγ/dβ partial buffers); caps the threads used
MIN_ROWS_PER_BLOCK = 16  # below this, fewer blocks: the partial rows cost more than they share
SHORT_N = 256  # rows from this length on: four-row sweep, prefetch; 4- and 8-byte: streamed dx
PREFETCH_CHUNK = 512  # columns of sweep 2 between prefetches of the next rows' lines
LINE = 64  # bytes of a cache line (the prefetch step)
STREAM_MIN_BYTES = 8 * 2**20  # dx of at least this size is written with non-temporal stores
STREAM_ALIGN = 64  # dx's start when it is streamed (a cache line; the stores need 32)
PREFETCH_MIN_BYTES = 8 * 2**20  # x and dy of at least this size together: sweep 2 prefetches

_COMPILE_SECONDS: dict[str, float] = {}
_CACHE_HIT: dict[str, bool] = {}
_LOCK = threading.Lock()

# Rebound to ``numba.prange`` by _build() before the kernel is compiled; a plain ``range`` until
# then so that importing this module (``lnbench list``) does not import Numba.
prange = range
STREAM = False  # which dx path a compiled kernel holds (a compile-time constant: _streamed_kernel)


def n_blocks(M: int) -> int:
    """Row blocks for M rows: a function of M only, so results never depend on the thread count."""
    return max(1, min(MAX_BLOCKS, M // MIN_ROWS_PER_BLOCK, M))


def rows_per_sweep(N: int) -> int:
    """Rows sweep 1 takes at once: 4 for rows of N ≥ SHORT_N (eight row streams in flight
    instead of two, the partial rows read and written once per four rows, and sweep 2
    prefetching the next four rows), 1 below, where the one-row sweep is faster
    (docs/cpu-kernels.md). The same for every dtype."""
    return 4 if N >= SHORT_N else 1


def streams_dx(M: int, N: int, dtype: str) -> bool:
    """Whether dx is written with non-temporal stores (the streamed kernel): for 4- and 8-byte
    rows of N ≥ SHORT_N when dx has at least STREAM_MIN_BYTES and a row is a whole number of
    32-byte stores (every row then starts 32-byte aligned). A small dx stays in cache for
    whatever reads it next; short rows and 16-bit rows pay more for the staging copy than the
    stores save (docs/cpu-kernels.md)."""
    elt = np_dtype(dtype).itemsize
    return (elt >= 4 and N >= SHORT_N and M * N * elt >= STREAM_MIN_BYTES
            and (N * elt) % 32 == 0)


def prefetches(M: int, N: int, dtype: str) -> bool:
    """Whether sweep 2 prefetches the next rows (four-row sweeps only): when x and dy together
    have at least PREFETCH_MIN_BYTES, so that they come from memory. In cache the prefetches
    and the chunked loop only cost (docs/cpu-kernels.md)."""
    xdy = 2 * M * N * np_dtype(dtype).itemsize
    return rows_per_sweep(N) == 4 and xdy >= PREFETCH_MIN_BYTES


# --- the kernel -----------------------------------------------------------------------------------
# Plain Python here; _build() compiles it with Numba. ``_load`` widens one element to the
# accumulation type, ``_store`` rounds an accumulation-type value for the output array ``like``,
# ``_fmuladd(a, b, c)`` is a·b + c (fused where the CPU has FMA), ``_prefetch(a, i, j)`` asks for
# the cache line of ``a[i, j]``. ``_sweep1``/``_sweep1x4``/``_sweep2``/``_sweep2pf``/
# ``_dx_cols``/``_nt_row`` are stubs whose Numba overloads are the ``*_impl`` functions below:
# ``_sweep1x4`` compiled as a function of its own, the others inlined into the kernel (see "Why
# inlined" above). The inlined sweeps index the 2-D arrays at (row, column) with unsigned
# indices: no row views (whose reference counts cost an atomic increment and decrement each),
# and no negative-index wrap-around, which kept LLVM from vectorising loops over a column range.


def _load(v):  # pragma: no cover - replaced by a Numba overload
    raise NotImplementedError


def _store(f, like):  # pragma: no cover - replaced by a Numba overload
    raise NotImplementedError


def _fmuladd(a, b, c):  # pragma: no cover - replaced by a Numba intrinsic
    raise NotImplementedError


def _prefetch(a, i, j):  # pragma: no cover - replaced by a Numba intrinsic
    raise NotImplementedError


def _sweep1(x, dy, i, gw, mu, r, pg, pb, zero):  # pragma: no cover - overloaded
    raise NotImplementedError


def _sweep1x4(x0, dy0, x1, dy1, x2, dy2, x3, dy3, gw, mu0, r0, mu1, r1, mu2, r2, mu3, r3,
              pg, pb, zero):  # pragma: no cover - overloaded
    raise NotImplementedError


def _sweep2(x, dy, i, gw, mu, r, mg, mgx, out, k):  # pragma: no cover - overloaded
    raise NotImplementedError


def _sweep2pf(x, dy, i, gw, mu, r, mg, mgx, out, k, n, P, L):  # pragma: no cover - overloaded
    raise NotImplementedError


def _dx_cols(x, dy, ii, gw, mu, r, b, c, out, kk, j0, j1):  # pragma: no cover - overloaded
    raise NotImplementedError


def _nt_row(dxr, stage, E):  # pragma: no cover - overloaded
    raise NotImplementedError


def _nt_store32(dst, j, src, k):  # pragma: no cover - replaced by a Numba intrinsic
    raise NotImplementedError


def _store_fence():  # pragma: no cover - replaced by a Numba intrinsic
    raise NotImplementedError


def _sweep1_impl(x, dy, i, gw, mu, r, pg, pb, zero):
    """Sweep 1 of row i: returns Σg, Σg·x̂; adds dy·x̂ and dy into the block's partial rows."""
    sg = zero
    sgx = zero
    ii = np.uint64(i)
    for jj in range(x.shape[1]):
        j = np.uint64(jj)
        xh = (_load(x[ii, j]) - mu) * r
        d = _load(dy[ii, j])
        g = d * gw[j]
        sg += g
        sgx = _fmuladd(g, xh, sgx)
        pg[j] = _fmuladd(d, xh, pg[j])
        pb[j] += d
    return sg, sgx


def _sweep1x4_impl(x0, dy0, x1, dy1, x2, dy2, x3, dy3, gw, mu0, r0, mu1, r1, mu2, r2, mu3, r3,
                   pg, pb, zero):
    """Sweep 1 of four rows at once: the partial rows pg/pb are read and written once per four
    rows instead of once per row, and eight row streams are read at the same time."""
    s0 = zero
    s0x = zero
    s1 = zero
    s1x = zero
    s2 = zero
    s2x = zero
    s3 = zero
    s3x = zero
    for j in range(x0.shape[0]):
        gm = gw[j]
        xh0 = (_load(x0[j]) - mu0) * r0
        d0 = _load(dy0[j])
        g0 = d0 * gm
        xh1 = (_load(x1[j]) - mu1) * r1
        d1 = _load(dy1[j])
        g1 = d1 * gm
        xh2 = (_load(x2[j]) - mu2) * r2
        d2 = _load(dy2[j])
        g2 = d2 * gm
        xh3 = (_load(x3[j]) - mu3) * r3
        d3 = _load(dy3[j])
        g3 = d3 * gm
        s0 += g0
        s0x = _fmuladd(g0, xh0, s0x)
        s1 += g1
        s1x = _fmuladd(g1, xh1, s1x)
        s2 += g2
        s2x = _fmuladd(g2, xh2, s2x)
        s3 += g3
        s3x = _fmuladd(g3, xh3, s3x)
        pg[j] += _fmuladd(d0, xh0, d1 * xh1) + _fmuladd(d2, xh2, d3 * xh3)
        pb[j] += (d0 + d1) + (d2 + d3)
    return s0, s0x, s1, s1x, s2, s2x, s3, s3x


def _sweep2_impl(x, dy, i, gw, mu, r, mg, mgx, out, k):
    """Sweep 2 of row i (x, dy now in cache) into row k of ``out`` (dx, or the staging rows):

        dx = r·(g − mean(g) − x̂·mean(g·x̂)) = r·g + (b·(x − μ) + c),
        b = −r²·mean(g·x̂),  c = −r·mean(g)

    two multiply-adds and a multiply per element after g = dy·γ, where the first form takes
    four operations and (under reassoc, which moved the 1/N of mean(g·x̂) into the loop) a
    division. x − μ is formed first, as in x̂, so an offset row loses nothing to cancellation."""
    _dx_cols(x, dy, np.uint64(i), gw, mu, r, -(r * r) * mgx, -(r * mg), out, np.uint64(k), 0,
             x.shape[1])


def _dx_cols_impl(x, dy, ii, gw, mu, r, b, c, out, kk, j0, j1):
    """Columns j0..j1 of sweep 2 for row ii into row kk of ``out``, with the row's b and c:
    dx = r·g + (b·(x − μ) + c). The one copy of the formula, for both sweep-2 loops."""
    for jj in range(j0, j1):
        j = np.uint64(jj)
        g = _load(dy[ii, j]) * gw[j]
        out[kk, j] = _store(_fmuladd(r, g, _fmuladd(b, _load(x[ii, j]) - mu, c)), out)


def _sweep2pf_impl(x, dy, i, gw, mu, r, mg, mgx, out, k, n, P, L):
    """:func:`_sweep2_impl` in chunks of P columns; before each chunk it asks for the same
    columns of row n's x and dy (the rows sweep 1 reads next), a cache line (L elements) at a
    time. Sweep 2 computes from cache while memory would otherwise idle. P = 0: one chunk and
    no prefetch (data that stays in cache, :func:`prefetches`)."""
    b = -(r * r) * mgx
    c = -(r * mg)
    ii = np.uint64(i)
    kk = np.uint64(k)
    nn = np.uint64(n)
    N = x.shape[1]
    # (no conditional expressions: inlined, their SSA phis raised Numba's pedantic
    # NumbaIRAssumptionWarning "variable ... is not in scope")
    step = max(P, N * (P == 0))
    for jb in range(0, N, step):
        je = min(jb + step, N)
        for p in range(jb, min(je, jb + P), L):
            _prefetch(x, nn, np.uint64(p))
            _prefetch(dy, nn, np.uint64(p))
        _dx_cols(x, dy, ii, gw, mu, r, b, c, out, kk, jb, je)


def _nt_row_impl(dxr, stage, E):
    """The staging row to a dx row, E elements (32 bytes) at a time, with non-temporal stores."""
    for j in range(0, dxr.shape[0], E):
        _nt_store32(dxr, j, stage, j)


def _backward_kernel(x, dy, gamma, mean, rstd, inv, B, G, C, E, P, dx, stage, gw, pdg, pdb,
                     dgamma, dbeta):
    M, N = x.shape
    zero = inv - inv  # in the accumulation type, as inv = 1/N is
    L = LINE // x.itemsize  # elements per cache line
    for j in range(N):  # γ widened once per call
        gw[j] = _load(gamma[j])
    for b in prange(B):  # one block of rows at a time; block extents depend on M and B only
        r0 = b * M // B
        r1 = (b + 1) * M // B
        pg = pdg[b]
        pb = pdb[b]
        for j in range(N):
            pg[j] = zero
            pb[j] = zero
        # dx rows go to dx directly, or (STREAM) to the block's staging row b and from there to
        # dx with non-temporal stores
        i = r0
        if G == 4:  # rows in fours (the last < 4 rows of the block one by one)
            while i + 4 <= r1:
                s0, s0x, s1, s1x, s2, s2x, s3, s3x = _sweep1x4(
                    x[i], dy[i], x[i + 1], dy[i + 1], x[i + 2], dy[i + 2], x[i + 3], dy[i + 3],
                    gw, mean[i], rstd[i], mean[i + 1], rstd[i + 1], mean[i + 2], rstd[i + 2],
                    mean[i + 3], rstd[i + 3], pg, pb, zero)
                last = r1 - 1  # the rows read next: the next four, within the block
                if STREAM:
                    _sweep2pf(x, dy, i, gw, mean[i], rstd[i], s0 * inv, s0x * inv, stage, b,
                              min(i + 4, last), P, L)
                    _nt_row(dx[i], stage[b], E)
                    _sweep2pf(x, dy, i + 1, gw, mean[i + 1], rstd[i + 1], s1 * inv, s1x * inv,
                              stage, b, min(i + 5, last), P, L)
                    _nt_row(dx[i + 1], stage[b], E)
                    _sweep2pf(x, dy, i + 2, gw, mean[i + 2], rstd[i + 2], s2 * inv, s2x * inv,
                              stage, b, min(i + 6, last), P, L)
                    _nt_row(dx[i + 2], stage[b], E)
                    _sweep2pf(x, dy, i + 3, gw, mean[i + 3], rstd[i + 3], s3 * inv, s3x * inv,
                              stage, b, min(i + 7, last), P, L)
                    _nt_row(dx[i + 3], stage[b], E)
                else:
                    _sweep2pf(x, dy, i, gw, mean[i], rstd[i], s0 * inv, s0x * inv, dx, i,
                              min(i + 4, last), P, L)
                    _sweep2pf(x, dy, i + 1, gw, mean[i + 1], rstd[i + 1], s1 * inv, s1x * inv,
                              dx, i + 1, min(i + 5, last), P, L)
                    _sweep2pf(x, dy, i + 2, gw, mean[i + 2], rstd[i + 2], s2 * inv, s2x * inv,
                              dx, i + 2, min(i + 6, last), P, L)
                    _sweep2pf(x, dy, i + 3, gw, mean[i + 3], rstd[i + 3], s3 * inv, s3x * inv,
                              dx, i + 3, min(i + 7, last), P, L)
                i += 4
        while i < r1:
            sg, sgx = _sweep1(x, dy, i, gw, mean[i], rstd[i], pg, pb, zero)
            if STREAM:
                _sweep2(x, dy, i, gw, mean[i], rstd[i], sg * inv, sgx * inv, stage, b)
                _nt_row(dx[i], stage[b], E)
            else:
                _sweep2(x, dy, i, gw, mean[i], rstd[i], sg * inv, sgx * inv, dx, i)
            i += 1
        if STREAM:
            _store_fence()  # the streamed rows are in memory before the block counts as done
    # dγ, dβ: sum the B partial rows column by column in block order; the C column chunks may
    # be split any way (one per thread) without changing a bit
    for c in prange(C):
        j0 = c * N // C
        j1 = (c + 1) * N // C
        tg = pdg[0, j0:j1]
        tb = pdb[0, j0:j1]
        for b in range(1, B):
            pg = pdg[b, j0:j1]
            pb = pdb[b, j0:j1]
            for j in range(j1 - j0):
                tg[j] += pg[j]
                tb[j] += pb[j]
        og = dgamma[j0:j1]
        ob = dbeta[j0:j1]
        for j in range(j1 - j0):
            og[j] = _store(tg[j], og)
            ob[j] = _store(tb[j], ob)


def _conversions() -> tuple[Any, Any, Any, Any]:
    """The 16-bit conversions as Numba intrinsics: bf16_to_f32, f32_to_bf16, f16_to_f32,
    f32_to_f16 (16-bit values travel as their bits: uint16 for bfloat16, int16 for float16)."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    i16, i32 = ir.IntType(16), ir.IntType(32)

    @intrinsic
    def bf16_to_f32(typingctx, u):
        """bfloat16 bits (uint16) -> float32: the bits are the high half of a float32."""
        if u != types.uint16:
            return None

        def codegen(context, builder, sig, args):
            wide = builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16))
            return builder.bitcast(wide, ir.FloatType())

        return types.float32(types.uint16), codegen

    @intrinsic
    def f32_to_bf16(typingctx, f):
        """float32 -> bfloat16 bits, round to nearest even; NaN -> quiet NaN 0x7FC0 with its sign
        (what ml_dtypes produces); overflow rounds to ±inf."""
        if f != types.float32:
            return None

        def codegen(context, builder, sig, args):
            bits = builder.bitcast(args[0], i32)
            hi = builder.lshr(bits, ir.Constant(i32, 16))
            lsb = builder.and_(hi, ir.Constant(i32, 1))
            biased = builder.add(builder.add(bits, ir.Constant(i32, 0x7FFF)), lsb)
            rounded = builder.lshr(biased, ir.Constant(i32, 16))
            qnan = builder.or_(builder.and_(hi, ir.Constant(i32, 0x8000)), ir.Constant(i32, 0x7FC0))
            isnan = builder.fcmp_unordered("uno", args[0], args[0])
            return builder.trunc(builder.select(isnan, qnan, rounded), i16)

        return types.uint16(types.float32), codegen

    @intrinsic
    def f16_to_f32(typingctx, u):
        """float16 bits (int16) -> float32 (exact; LLVM ``fpext half``)."""
        if u != types.int16:
            return None

        def codegen(context, builder, sig, args):
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

        return types.float32(types.int16), codegen

    @intrinsic
    def f32_to_f16(typingctx, f):
        """float32 -> float16 bits (int16), IEEE round to nearest even (LLVM ``fptrunc``)."""
        if f != types.float32:
            return None

        def codegen(context, builder, sig, args):
            return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), i16)

        return types.int16(types.float32), codegen

    return bf16_to_f32, f32_to_bf16, f16_to_f32, f32_to_f16


def _streaming() -> tuple[Any, Any]:
    """``nt_store32(dst, j, src, k)``: the 32 bytes at ``src[k]`` to ``dst[j]`` with one
    non-temporal store (``dst[j]`` must be 32-byte aligned; x86: ``vmovntps``), and
    ``store_fence()``: orders those stores before what follows (x86 ``sfence``; elsewhere a
    sequentially consistent fence)."""
    import platform

    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    i32 = ir.IntType(32)
    v8 = ir.VectorType(i32, 8)
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

    @intrinsic
    def nt_store32(typingctx, dst, j, src, k):
        if not (isinstance(dst, types.Array) and isinstance(src, types.Array)):
            return None

        def codegen(context, builder, sig, args):
            d = context.make_array(sig.args[0])(context, builder, args[0])
            s = context.make_array(sig.args[2])(context, builder, args[2])
            pd = cgutils.get_item_pointer(context, builder, sig.args[0], d, [args[1]])
            ps = cgutils.get_item_pointer(context, builder, sig.args[2], s, [args[3]])
            val = builder.load(builder.bitcast(ps, v8.as_pointer()), align=1)
            st = builder.store(val, builder.bitcast(pd, v8.as_pointer()), align=32)
            st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(i32, 1)]))
            return context.get_dummy_value()

        return types.void(dst, j, src, k), codegen

    @intrinsic
    def store_fence(typingctx):
        def codegen(context, builder, sig, args):
            if x86:
                fnty = ir.FunctionType(ir.VoidType(), [])
                fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.sfence")
                builder.call(fn, [])
            else:
                builder.fence("seq_cst")
            return context.get_dummy_value()

        return types.void(), codegen

    return nt_store32, store_fence


def _cpu_ops() -> tuple[Any, Any]:
    """``fmuladd(a, b, c)``: a·b + c as LLVM's ``llvm.fmuladd`` (one fused multiply-add where
    the CPU has FMA, a multiply and an add where not; vectorised like any arithmetic), and
    ``prefetch(a, i, j)``: a read prefetch of the cache line holding ``a[i, j]`` into all cache
    levels (``llvm.prefetch``, locality 3; x86 ``prefetcht0``), which never faults."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    i32 = ir.IntType(32)

    @intrinsic
    def fmuladd(typingctx, a, b, c):
        if not (isinstance(a, types.Float) and a == b == c):
            return None

        def codegen(context, builder, sig, args):
            ty = args[0].type
            name = "llvm.fmuladd.f32" if ty == ir.FloatType() else "llvm.fmuladd.f64"
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3),
                                                name)
            return builder.call(fn, list(args))

        return a(a, a, a), codegen

    @intrinsic
    def prefetch(typingctx, a, i, j):
        if not (isinstance(a, types.Array) and a.ndim == 2):
            return None

        def codegen(context, builder, sig, args):
            arr = context.make_array(sig.args[0])(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, sig.args[0], arr, [args[1], args[2]])
            i8p = ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            # (address, read, locality 3, data cache)
            builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0),
                              ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(a, i, j), codegen

    return fmuladd, prefetch


def _register_overloads() -> None:
    """``_load``/``_store`` over the conversions, and the sweeps' compile options."""
    from numba import types
    from numba.extending import overload

    bf16_to_f32, f32_to_bf16, f16_to_f32, f32_to_f16 = _conversions()
    nt_store32, store_fence = _streaming()
    fmuladd, prefetch = _cpu_ops()

    @overload(_fmuladd, inline="always")
    def _ol_fmuladd(a, b, c):
        return lambda a, b, c: fmuladd(a, b, c)

    @overload(_prefetch, inline="always")
    def _ol_prefetch(a, i, j):
        return lambda a, i, j: prefetch(a, i, j)

    @overload(_nt_store32, inline="always")
    def _ol_nt_store32(dst, j, src, k):
        return lambda dst, j, src, k: nt_store32(dst, j, src, k)

    @overload(_store_fence, inline="always")
    def _ol_store_fence():
        return lambda: store_fence()

    @overload(_load, inline="always")
    def _ol_load(v):
        if v == types.uint16:
            return lambda v: bf16_to_f32(v)
        if v == types.int16:
            return lambda v: f16_to_f32(v)
        if isinstance(v, types.Float):
            return lambda v: v
        return None

    @overload(_store, inline="always")
    def _ol_store(f, like):
        dt = like.dtype
        if dt == types.uint16:
            return lambda f, like: f32_to_bf16(f)
        if dt == types.int16:
            return lambda f, like: f32_to_f16(f)
        if isinstance(dt, types.Float):
            return lambda f, like: f
        return None
    _register_sweeps()


def _register_sweeps() -> None:
    """The sweeps' overloads, each with its compile options."""
    from numba.extending import overload

    # the four-row sweep is a function of its own (compiled with the kernel's flag); the
    # one-row sweeps are inlined into the kernel (module docstring, "Why inlined")
    reassoc = {"fastmath": KERNEL_OPTIONS["fastmath"]}

    @overload(_sweep1, inline="always")
    def _ol_sweep1(x, dy, i, gw, mu, r, pg, pb, zero):
        return _sweep1_impl

    @overload(_sweep1x4, jit_options=reassoc)
    def _ol_sweep1x4(x0, dy0, x1, dy1, x2, dy2, x3, dy3, gw, mu0, r0, mu1, r1, mu2, r2, mu3,
                     r3, pg, pb, zero):
        return _sweep1x4_impl

    @overload(_sweep2, inline="always")
    def _ol_sweep2(x, dy, i, gw, mu, r, mg, mgx, out, k):
        return _sweep2_impl

    @overload(_sweep2pf, inline="always")
    def _ol_sweep2pf(x, dy, i, gw, mu, r, mg, mgx, out, k, n, P, L):
        return _sweep2pf_impl

    @overload(_dx_cols, inline="always")
    def _ol_dx_cols(x, dy, ii, gw, mu, r, b, c, out, kk, j0, j1):
        return _dx_cols_impl

    @overload(_nt_row, inline="always")
    def _ol_nt_row(dxr, stage, E):
        return _nt_row_impl


#: how both kernels are compiled (reassoc: module docstring, "Fast math")
KERNEL_OPTIONS = {"parallel": True, "cache": True, "nogil": True, "fastmath": {"reassoc"}}


@functools.cache
def _build() -> Any:
    """Import Numba, define the 16-bit conversions; return the (lazily compiled) kernel and
    ``numba.get_num_threads``."""
    global prange

    import numba

    _register_overloads()
    prange = numba.prange
    kernel = numba.njit(_backward_kernel, **KERNEL_OPTIONS)
    return kernel, numba.get_num_threads


@functools.cache
def _streamed_kernel() -> Any:
    """:func:`_backward_kernel` compiled with ``STREAM = True``: the kernel that streams dx.

    Two kernels from one source, the path a constant of each: one kernel holding both paths
    ran 131072x64 at 9-14 GB/s against 21-23 GB/s for the kernel without the streamed path,
    interleaved in one process (docs/cpu-kernels.md)."""
    import types

    import numba

    _build()
    scope = dict(globals(), STREAM=True)
    fn = types.FunctionType(_backward_kernel.__code__, scope, "_backward_kernel_streamed")
    fn.__qualname__ = fn.__name__
    fn.__module__ = __name__
    return numba.njit(fn, **KERNEL_OPTIONS)


@functools.cache
def conversion_kernels() -> dict[str, Any]:
    """The kernel's 16-bit conversions as array functions ``f(src, dst)`` (for tests)."""
    import numba

    _build()

    @numba.njit
    def widen(a, o):
        for k in range(a.size):
            o[k] = _load(a[k])

    @numba.njit
    def narrow(a, o):
        for k in range(a.size):
            o[k] = _store(a[k], o)

    return {"widen": widen, "narrow": narrow}


def _kernel_args(x: np.ndarray, dy: np.ndarray, gamma: np.ndarray, mean: np.ndarray,
                 rstd: np.ndarray, dtype: str) -> tuple[Any, ...]:
    """x, dy, γ, mean, rstd as the kernel takes them: C-contiguous, writable copies (16-bit inputs
    as their bit views, mean/rstd flat in the accumulation type) — the same array types for every
    case of a dtype, so the thunk's call finds the specialisation the warm-up compiled."""
    view = BITS_VIEW.get(dtype, np_dtype(dtype))
    acc = np_dtype(stats_dtype(dtype))

    def bits(a: np.ndarray) -> np.ndarray:
        return np.array(a, dtype=np_dtype(dtype), order="C", copy=True).view(view)

    M = x.shape[0]
    return (
        bits(x), bits(dy), bits(gamma),
        np.array(mean, dtype=acc, copy=True).reshape(M),
        np.array(rstd, dtype=acc, copy=True).reshape(M),
    )


def fused_backward(x: np.ndarray, dy: np.ndarray, gamma: np.ndarray, mean: np.ndarray,
                   rstd: np.ndarray, dtype: str, *, blocks: int | None = None,
                   group: int | None = None, stream: bool | None = None,
                   prefetch: bool | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One backward on inputs prepared by :func:`_kernel_args`; outputs (fresh arrays) in ``dtype``.

    ``blocks`` and ``group`` (1 or 4) override :func:`n_blocks` and :func:`rows_per_sweep` (tests
    and experiments; dγ/dβ then depend on them instead); ``stream`` overrides
    :func:`streams_dx` and ``prefetch`` :func:`prefetches` (neither changes a bit of the
    results).
    """
    kernel, num_threads = _build()
    M, N = x.shape
    B = n_blocks(M) if blocks is None else blocks
    G = rows_per_sweep(N) if group is None else group
    if G not in (1, 4) or not 1 <= B <= M:
        raise ValueError(f"group must be 1 or 4 and 1 <= blocks <= M; got {group=}, {blocks=}")
    view = x.dtype
    if stream is None:
        stream = streams_dx(M, N, dtype)
    elif stream and (N * view.itemsize) % 32:
        raise ValueError(f"stream needs rows of whole 32-byte stores; got N={N} of {view}")
    C = max(1, min(num_threads(), N // 64))
    acc = mean.dtype
    dx = _aligned_empty(M * N, view).reshape(M, N) if stream else np.empty((M, N), view)
    stage = np.empty((B, N), view) if stream else dx[:B]  # dx stands in: never written then
    gw = np.empty(N, acc)
    pdg = np.empty((B, N), acc)
    pdb = np.empty((B, N), acc)
    dg = np.empty(N, view)
    db = np.empty(N, view)
    E = 32 // view.itemsize if stream else 0
    if prefetch is None:
        prefetch = prefetches(M, N, dtype)
    P = PREFETCH_CHUNK if prefetch else 0
    (_streamed_kernel() if stream else kernel)(x, dy, gamma, mean, rstd, acc.type(1) / acc.type(N),
                                               B, G, C, E, P, dx, stage, gw, pdg, pdb, dg, db)
    out = np_dtype(dtype)
    return dx.view(out), dg.view(out), db.view(out)


def _aligned_empty(n: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised 1-D array of n elements starting at a STREAM_ALIGN-byte boundary."""
    buf = np.empty(n * dtype.itemsize + STREAM_ALIGN, np.uint8)
    off = -buf.ctypes.data % STREAM_ALIGN
    return buf[off:off + n * dtype.itemsize].view(dtype)


def warm_up(dtype: str) -> float:
    """Compile (or load from cache) the kernel for ``dtype``; seconds taken, recorded once."""
    with _LOCK:
        if dtype in _COMPILE_SECONDS:
            return _COMPILE_SECONDS[dtype]
        t0 = time.perf_counter()
        kernel, _ = _build()
        # each kernel of the dtype, compiled (or loaded) by a call on its own path
        calls = [(kernel, 3, False)]
        if np_dtype(dtype).itemsize >= 4:
            calls.append((_streamed_kernel(), 64, True))
        hits = sum(sum(k.stats.cache_hits.values()) for k, _, _ in calls)
        rng = np.random.default_rng(0)
        for _, n, stream in calls:
            x = rng.standard_normal((2, n))
            args = _kernel_args(x, x, x[0], x.mean(1, keepdims=True), np.ones((2, 1)), dtype)
            fused_backward(*args, dtype, stream=stream)
        _COMPILE_SECONDS[dtype] = time.perf_counter() - t0
        _CACHE_HIT[dtype] = sum(sum(k.stats.cache_hits.values()) for k, _, _ in calls) > hits
        return _COMPILE_SECONDS[dtype]


def compile_seconds() -> dict[str, float]:
    """Seconds each dtype's warm-up took in this process (compile, or a load from Numba's cache
    when :func:`compiled_from_cache` says so). Never part of a timed backward."""
    return dict(_COMPILE_SECONDS)


def compiled_from_cache() -> dict[str, bool]:
    """Whether Numba's on-disk cache had a kernel for this process (per warmed-up dtype)."""
    return dict(_CACHE_HIT)


def make(data: Any) -> Thunk:
    """Maker: prepare inputs and compile outside timing; the thunk runs the fused kernel."""
    dtype = data.case.dtype
    seconds = warm_up(dtype)
    xb, dyb, gb, mean, rstd = _kernel_args(data.x, data.dy, data.gamma, data.mean, data.rstd,
                                           dtype)

    def thunk() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return fused_backward(xb, dyb, gb, mean, rstd, dtype)

    thunk.compile_seconds = seconds  # type: ignore[attr-defined]
    return thunk


def _probe() -> str | None:
    import importlib.util

    if importlib.util.find_spec("llvmlite") is None:
        return "llvmlite is not installed"
    return None


add(
    Impl(
        name="numba.fused",
        make=make,
        kind="custom",
        array="numpy",
        device="cpu",
        dtypes=DTYPES,
        affine=True,
        saved="mean-rstd",
        numerics=SAVED_CENTERED,  # the given mean/rstd, x̂ = (x − μ)·rstd
        requires=("numba",),
        probe=_probe,
        doc="custom one-pass CPU kernel in Numba: prange over fixed row blocks, fp32 accumulation, "
        "deterministic dγ/dβ",
    )
)
