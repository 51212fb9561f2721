"""``cupy.fused``: a custom CUDA C++ LayerNorm backward, compiled by CuPy (``cupy.RawModule``).

Two kernels, no atomics, so dγ/dβ are bit-identical run to run for a given launch plan:

1. ``ln_bwd_rows`` — a *row group* of ``TPR`` threads owns one row at a time; a block holds
   ``BLOCK / TPR`` row groups (several short rows per block, or one long row per block). Each
   thread owns the same columns in every row it visits, loads them as 16-byte vectors where N
   allows (4×fp32, 8×fp16/bf16, 2×fp64), accumulates in fp32 (fp64 for float64 inputs), writes
   dx, and keeps its columns' dγ/dβ in registers across rows. At the end the row groups of a block
   are summed in a fixed order (group 0, 1, 2, ...) and the block writes one fp32 partial row to a
   (blocks × N) workspace.
2. ``ln_bwd_reduce`` — sums the workspace over blocks in a fixed order (per column: 8 strided
   slices, each sequential, then the slices in order) and casts dγ/dβ to the input dtype.

CuPy has no bfloat16 dtype: bfloat16 travels as uint16 bits and is converted in the kernel; the
results come back as :class:`DeviceBF16` (a uint16 CuPy array that NumPy reads as
``ml_dtypes.bfloat16``). No CUDA header is included, so the source compiles with NVRTC (CuPy) and
with ``nvcc`` alike (tests/test_gpu.py checks the latter on machines without a GPU).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import ml_dtypes
import numpy as np

from lnbench.dtypes import DTYPES, np_dtype
from lnbench.impls.launch import one_knob_variants
from lnbench.registry import Impl, Thunk, add

CUDA_SOURCE = r"""
// LayerNorm backward from saved mean/rstd (per row, N columns):
//   xhat = (x - mu)*rstd,   g = dy*gamma
//   dx = rstd*(g - mean(g) - xhat*mean(g*xhat))
//   dgamma = sum_rows dy*xhat,   dbeta = sum_rows dy
// Accumulation in A = float (fp32, fp16, bf16 inputs) or double (fp64 inputs).

typedef unsigned long long u64;
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

struct bf16_t { unsigned short bits; };
struct f16_t { unsigned short bits; };

template <typename T> struct Num;
template <> struct Num<double> {
    typedef double acc;
    static __device__ __forceinline__ double to(double v) { return v; }
    static __device__ __forceinline__ double from(double a) { return a; }
};
template <> struct Num<float> {
    typedef float acc;
    static __device__ __forceinline__ float to(float v) { return v; }
    static __device__ __forceinline__ float from(float a) { return a; }
};
#ifndef LNBENCH_HOST_EMULATION  // tests/test_gpu.py runs this source on the CPU with a shim
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short f32_to_f16(float a) {  // round to nearest even
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(a));
    return h;
}
#endif
template <> struct Num<f16_t> {
    typedef float acc;
    static __device__ __forceinline__ float to(f16_t v) { return f16_to_f32(v.bits); }
    static __device__ __forceinline__ f16_t from(float a) {
        f16_t r;
        r.bits = f32_to_f16(a);
        return r;
    }
};
template <> struct Num<bf16_t> {
    typedef float acc;
    static __device__ __forceinline__ float to(bf16_t v) {
        return __uint_as_float(((unsigned int)v.bits) << 16);
    }
    static __device__ __forceinline__ bf16_t from(float a) {  // round to nearest even
        unsigned int u = __float_as_uint(a);
        bf16_t r;
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            r.bits = (unsigned short)((u >> 16) | 0x0040u);  // quiet NaN
        } else {
            u += 0x7fffu + ((u >> 16) & 1u);
            r.bits = (unsigned short)(u >> 16);
        }
        return r;
    }
};

// VEC elements moved as one aligned load/store (16 bytes when VEC = 16 / sizeof(T)).
template <typename T, int VEC> struct alignas(sizeof(T) * VEC) Vec { T v[VEC]; };

// Sum of (a, b) over the TPR lanes of a row group. Lanes: xor butterfly (every lane ends with the
// same bits); across the warps of a group: shared memory, summed in warp order. `red` is double
// buffered by iteration parity so one barrier per row suffices. All threads of the block must call
// it together (the row loops below are uniform across the block).
template <typename A, int TPR, int RG>
__device__ __forceinline__ void group_sum2(A& a, A& b, A (*red)[2][RG][(TPR > 32 ? TPR / 32 : 1)],
                                           int parity, int g, int t) {
    constexpr int W = TPR < 32 ? TPR : 32;
#pragma unroll
    for (int off = W / 2; off > 0; off /= 2) {
        a += __shfl_xor_sync(0xffffffffu, a, off);
        b += __shfl_xor_sync(0xffffffffu, b, off);
    }
    if (TPR > 32) {
        constexpr int WPR = TPR > 32 ? TPR / 32 : 1;
        if ((t & 31) == 0) {
            red[parity][0][g][t >> 5] = a;
            red[parity][1][g][t >> 5] = b;
        }
        __syncthreads();
        a = 0;
        b = 0;
#pragma unroll
        for (int w = 0; w < WPR; ++w) {
            a += red[parity][0][g][w];
            b += red[parity][1][g][w];
        }
    }
}

// Stage 1. Block b owns rows [b*rows_per_block, (b+1)*rows_per_block); row group g takes rows
// base+g for base = first, first+RG, ...; lane t owns vectors v = k*TPR + t (k < ITERS) of a row.
// CACHE: keep the row's x and dy in registers between the two passes over it; otherwise the second
// pass re-reads them (just loaded: L1/L2 hits, not HBM) - used when a 1024-thread block would
// run out of its 64 registers per thread.
template <typename T, int VEC, int ITERS, int TPR, int BLOCK, bool CACHE>
__global__ void __launch_bounds__(BLOCK) ln_bwd_rows(
    const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ gamma,
    const typename Num<T>::acc* __restrict__ mean, const typename Num<T>::acc* __restrict__ rstd,
    T* __restrict__ dx, typename Num<T>::acc* __restrict__ part_dg,
    typename Num<T>::acc* __restrict__ part_db, int M, int N, int rows_per_block) {
    typedef typename Num<T>::acc A;
    typedef Vec<T, VEC> V;
    constexpr int RG = BLOCK / TPR;
    constexpr int WPR = TPR > 32 ? TPR / 32 : 1;
    __shared__ A red[2][2][RG][WPR];
    const int t = threadIdx.x % TPR;
    const int g = threadIdx.x / TPR;
    const int nv = N / VEC;
    const A inv_n = A(1) / A(N);
    const V* xv = reinterpret_cast<const V*>(x);
    const V* dyv = reinterpret_cast<const V*>(dy);
    const V* gv = reinterpret_cast<const V*>(gamma);
    V* dxv = reinterpret_cast<V*>(dx);

    A acc_dg[ITERS][VEC], acc_db[ITERS][VEC];
#pragma unroll
    for (int k = 0; k < ITERS; ++k)
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc_dg[k][j] = acc_db[k][j] = A(0);

    const int first = blockIdx.x * rows_per_block;
    const int last = imin(M, first + rows_per_block);
    int parity = 0;
    for (int base = first; base < last; base += RG, parity ^= 1) {
        const int row = base + g;
        const bool active = row < last;
        const u64 roff = (u64)(active ? row : 0) * (u64)nv;
        const A mu = active ? mean[row] : A(0);
        const A rs = active ? rstd[row] : A(0);
        V xr[CACHE ? ITERS : 1], dr[CACHE ? ITERS : 1];
        A s_g = 0, s_gx = 0;
        // pass 1: row sums of g and g*xhat; this thread's dgamma, dbeta (need only mu, rstd)
#pragma unroll
        for (int k = 0; k < ITERS; ++k) {
            const int v = k * TPR + t;
            if (active && v < nv) {
                const V xa = xv[roff + v];
                const V da = dyv[roff + v];
                const V ga = gv[v];
                if (CACHE) {
                    xr[CACHE ? k : 0] = xa;
                    dr[CACHE ? k : 0] = da;
                }
#pragma unroll
                for (int j = 0; j < VEC; ++j) {
                    const A xh = (Num<T>::to(xa.v[j]) - mu) * rs;
                    const A d = Num<T>::to(da.v[j]);
                    const A gg = d * Num<T>::to(ga.v[j]);
                    s_g += gg;
                    s_gx += gg * xh;
                    acc_dg[k][j] += d * xh;
                    acc_db[k][j] += d;
                }
            }
        }
        group_sum2<A, TPR, RG>(s_g, s_gx, red, parity, g, t);
        const A mg = s_g * inv_n, mgx = s_gx * inv_n;
        // pass 2: dx = rstd*(g - mean(g) - xhat*mean(g*xhat))
#pragma unroll
        for (int k = 0; k < ITERS; ++k) {
            const int v = k * TPR + t;
            if (active && v < nv) {
                const V xa = CACHE ? xr[CACHE ? k : 0] : xv[roff + v];
                const V da = CACHE ? dr[CACHE ? k : 0] : dyv[roff + v];
                const V ga = gv[v];
                V o;
#pragma unroll
                for (int j = 0; j < VEC; ++j) {
                    const A xh = (Num<T>::to(xa.v[j]) - mu) * rs;
                    const A gg = Num<T>::to(da.v[j]) * Num<T>::to(ga.v[j]);
                    o.v[j] = Num<T>::from(rs * (gg - mg - xh * mgx));
                }
                dxv[roff + v] = o;
            }
        }
    }

    // Sum the block's row groups in a fixed order (0, 1, ..., RG-1) and write one partial row.
    __shared__ A comb[2][RG > 1 ? (RG - 1) * TPR * VEC : 1];
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
        if (RG > 1) {
            if (g > 0) {
#pragma unroll
                for (int j = 0; j < VEC; ++j) {
                    comb[0][((g - 1) * TPR + t) * VEC + j] = acc_dg[k][j];
                    comb[1][((g - 1) * TPR + t) * VEC + j] = acc_db[k][j];
                }
            }
            __syncthreads();
            if (g == 0) {
                for (int h = 1; h < RG; ++h) {
#pragma unroll
                    for (int j = 0; j < VEC; ++j) {
                        acc_dg[k][j] += comb[0][((h - 1) * TPR + t) * VEC + j];
                        acc_db[k][j] += comb[1][((h - 1) * TPR + t) * VEC + j];
                    }
                }
            }
            __syncthreads();
        }
        const int v = k * TPR + t;
        if (g == 0 && v < nv) {
            const u64 o = (u64)blockIdx.x * (u64)N + (u64)v * VEC;
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                part_dg[o + j] = acc_dg[k][j];
                part_db[o + j] = acc_db[k][j];
            }
        }
    }
}

// Stage 1 for rows wider than MAX_ELTS elements x 1024 threads: one row at a time per block,
// columns strided by BLOCK. The block's partial dgamma/dbeta row accumulates in place in the
// workspace (each column belongs to one thread: no race, a fixed order); the dx pass re-reads
// x and dy.
template <typename T, int VEC, int BLOCK>
__global__ void __launch_bounds__(BLOCK) ln_bwd_rows_wide(
    const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ gamma,
    const typename Num<T>::acc* __restrict__ mean, const typename Num<T>::acc* __restrict__ rstd,
    T* __restrict__ dx, typename Num<T>::acc* __restrict__ part_dg,
    typename Num<T>::acc* __restrict__ part_db, int M, int N, int rows_per_block) {
    typedef typename Num<T>::acc A;
    typedef Vec<T, VEC> V;
    __shared__ A red[2][2][1][BLOCK > 32 ? BLOCK / 32 : 1];
    const int t = threadIdx.x;
    const int nv = N / VEC;
    const A inv_n = A(1) / A(N);
    const V* xv = reinterpret_cast<const V*>(x);
    const V* dyv = reinterpret_cast<const V*>(dy);
    const V* gv = reinterpret_cast<const V*>(gamma);
    V* dxv = reinterpret_cast<V*>(dx);
    A* pdg = part_dg + (u64)blockIdx.x * (u64)N;
    A* pdb = part_db + (u64)blockIdx.x * (u64)N;
    for (int v = t; v < nv; v += BLOCK)  // zeroed by the thread that owns the columns
#pragma unroll
        for (int j = 0; j < VEC; ++j) pdg[v * VEC + j] = pdb[v * VEC + j] = A(0);

    const int first = blockIdx.x * rows_per_block;
    const int last = imin(M, first + rows_per_block);
    int parity = 0;
    for (int row = first; row < last; ++row, parity ^= 1) {
        const u64 roff = (u64)row * (u64)nv;
        const A mu = mean[row], rs = rstd[row];
        A s_g = 0, s_gx = 0;
        for (int v = t; v < nv; v += BLOCK) {
            const V xa = xv[roff + v], da = dyv[roff + v], ga = gv[v];
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                const A xh = (Num<T>::to(xa.v[j]) - mu) * rs;
                const A d = Num<T>::to(da.v[j]);
                const A gg = d * Num<T>::to(ga.v[j]);
                s_g += gg;
                s_gx += gg * xh;
                pdg[v * VEC + j] += d * xh;
                pdb[v * VEC + j] += d;
            }
        }
        group_sum2<A, BLOCK, 1>(s_g, s_gx, red, parity, 0, t);
        const A mg = s_g * inv_n, mgx = s_gx * inv_n;
        for (int v = t; v < nv; v += BLOCK) {
            const V xa = xv[roff + v], da = dyv[roff + v], ga = gv[v];
            V o;
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                const A xh = (Num<T>::to(xa.v[j]) - mu) * rs;
                const A gg = Num<T>::to(da.v[j]) * Num<T>::to(ga.v[j]);
                o.v[j] = Num<T>::from(rs * (gg - mg - xh * mgx));
            }
            dxv[roff + v] = o;
        }
    }
}

// Stage 2: dgamma[c] = sum_b part_dg[b][c] in a fixed order. Block (32 columns x 8 slices):
// slice s sums b = s, s+8, s+16, ... sequentially; then slice 0 adds slices 1..7 in order.
template <typename T>
__global__ void __launch_bounds__(256) ln_bwd_reduce(
    const typename Num<T>::acc* __restrict__ part_dg,
    const typename Num<T>::acc* __restrict__ part_db, T* __restrict__ dgamma,
    T* __restrict__ dbeta, int blocks, int N) {
    typedef typename Num<T>::acc A;
    __shared__ A sg[8][32], sb[8][32];
    const int c = blockIdx.x * 32 + threadIdx.x;
    const int s = threadIdx.y;
    A a = 0, b = 0;
    if (c < N) {
        for (int r = s; r < blocks; r += 8) {
            a += part_dg[(u64)r * (u64)N + c];
            b += part_db[(u64)r * (u64)N + c];
        }
    }
    sg[s][threadIdx.x] = a;
    sb[s][threadIdx.x] = b;
    __syncthreads();
    if (s == 0 && c < N) {
#pragma unroll
        for (int i = 1; i < 8; ++i) {
            a += sg[i][threadIdx.x];
            b += sb[i][threadIdx.x];
        }
        dgamma[c] = Num<T>::from(a);
        dbeta[c] = Num<T>::from(b);
    }
}
"""

# dtype name -> (C++ storage type, element bytes)
CTYPES: dict[str, str] = {"float64": "double", "float32": "float", "float16": "f16_t",
                          "bfloat16": "bf16_t"}
MAX_ELTS = {8: 8, 4: 16, 2: 24}  # elements per thread a row group may hold, by element size
MAX_TPR = 1024
MIN_BLOCK = 256
REDUCE_BLOCK = (32, 8)


@dataclass(frozen=True)
class Plan:
    """A launch plan; a pure function of (M, N, dtype, SM count), so results are reproducible."""

    dtype: str
    M: int
    N: int
    vec: int  # elements per vector load (16 bytes, or 1 when N is not a multiple)
    tpr: int  # threads per row group
    iters: int  # vectors per thread per row
    block: int  # threads per block
    cache: bool  # keep the row in registers between the two passes
    wide: bool  # rows wider than MAX_ELTS × 1024: the strided kernel
    blocks: int  # stage-1 grid (= rows of the fp32 workspace)
    rows_per_block: int

    @property
    def rows_kernel(self) -> str:
        """The C++ name expression of the stage-1 kernel."""
        c = CTYPES[self.dtype]
        if self.wide:
            return f"ln_bwd_rows_wide<{c}, {self.vec}, {self.block}>"
        cache = "true" if self.cache else "false"
        return f"ln_bwd_rows<{c}, {self.vec}, {self.iters}, {self.tpr}, {self.block}, {cache}>"

    @property
    def reduce_kernel(self) -> str:
        return f"ln_bwd_reduce<{CTYPES[self.dtype]}>"

    @property
    def acc_dtype(self) -> str:
        return "float64" if self.dtype == "float64" else "float32"

    @property
    def workspace_bytes(self) -> int:
        return 2 * self.blocks * self.N * np_dtype(self.acc_dtype).itemsize


def resident_blocks(regs: int, block: int) -> int:
    """Blocks of ``block`` threads using ``regs`` registers each that one sm_90 SM holds at once:
    a 64K-register file allocated per warp in units of 256, at most 64 warps and 32 blocks."""
    per_warp = -(-regs * 32 // 256) * 256
    return max(1, min(65536 // per_warp // max(1, block // 32), 2048 // block, 32))


def plan(M: int, N: int, dtype: str, sms: int, *, tpr: int | None = None,
         block: int | None = None, per_sm: int | None = None, regs: int | None = None) -> Plan:
    """Choose the launch for an (M, N) case on a device with ``sms`` multiprocessors.

    ``tpr``, ``block`` and ``per_sm`` override the heuristic's choices (for :func:`variants`, the
    launch-plan sweep of ``scripts/gpu-check --sweep``); a combination the kernel cannot run
    (too many elements per thread, a block that is not a multiple of tpr, more static shared
    memory than 48 KB) raises ValueError naming it.

    - vec: 16-byte vectors when N is a multiple of 16 / element size, else scalars;
    - tpr, iters: the power-of-two row-group width whose lanes are best used (fewest idle lanes),
      with at most MAX_ELTS elements per thread; ties go to about 8 elements per thread;
    - block: at least max(tpr, 256) threads, so short rows share a block (block / tpr rows at a
      time), doubled up to 512 while fewer than 32 warps per SM would be resident;
    - cache: a 1024-thread block has 64 registers per thread, so it keeps the row in registers only
      when the row's share and the dγ/dβ accumulators fit in about 32 of them;
    - blocks: one wave — as many per SM as the register file holds (``regs``: the compiled
      stage-1 kernel's registers per thread, which :func:`device_plan` reads; without it, 64 are
      assumed at 512+ threads and 128 at 256: 1 block at 1024 threads, 2 at 512 or 256), fewer
      while the fp32 workspace (written once, read once) would exceed 1/16 of the bytes the
      backward must move; at least one per SM, never more than the row groups.
    """
    if M < 1 or N < 1:
        raise ValueError(f"empty case {M}x{N}")
    elt = np_dtype(dtype).itemsize
    acc = 8 if dtype == "float64" else 4
    full = 16 // elt
    vec = full if N % full == 0 else 1
    nv = N // vec
    max_iters = max(1, MAX_ELTS[elt] // vec)
    best: tuple[float, float, int, int] | None = None
    w = 1
    while w <= MAX_TPR:
        its = math.ceil(nv / w)
        if its <= max_iters:
            cand = (nv / (w * its), -abs(math.log2(its * vec / 8)), w, its)
            if best is None or cand[:2] > best[:2]:
                best = cand
        w *= 2
    if best is None:  # wider than 1024 threads x MAX_ELTS elements: the strided kernel
        if (tpr, block, per_sm) != (None, None, None):
            raise ValueError(f"{M}x{N} {dtype}: the wide-row kernel takes no overrides")
        wide, tpr, iters, block, cache = True, MAX_TPR, math.ceil(nv / MAX_TPR), MAX_TPR, False
        per_sm, groups = 1, M
    else:
        if tpr is None:
            _, _, tpr, iters = best
        else:
            iters = math.ceil(nv / tpr) if tpr >= 1 else max_iters + 1
            if tpr < 1 or tpr > MAX_TPR or tpr & (tpr - 1) or iters > max_iters:
                raise ValueError(f"{M}x{N} {dtype}: tpr={tpr} is not a power of two up to "
                                 f"{MAX_TPR} giving at most {max_iters} vectors per thread")
        wide = False
        ws_per_sm = max(1, min(4, (3 * M * N * elt) // (16 * sms * 2 * N * acc)))
        if block is None:
            block = max(tpr, MIN_BLOCK)
            while block < 512 and block * ws_per_sm < 1024:  # aim at 32 resident warps per SM
                block *= 2
        elif (block < max(tpr, 32) or block > 1024 or block % tpr
              or block & (block - 1)):  # whole warps: the row sums shuffle with a full mask
            raise ValueError(f"{M}x{N} {dtype}: block={block} is not a power of two from "
                             f"max(tpr={tpr}, 32) to 1024")
        # one wave: blocks resident at once (nvcc for sm_90, fp32/fp16/bf16 anchor grid: 52-64
        # registers per thread at 512+ threads, 80-115 at 256; float64 up to 128 at 512)
        resident = resident_blocks(regs if regs else (64 if block >= 512 else 128), block)
        if per_sm is None:
            per_sm = min(ws_per_sm, resident)
        elif per_sm < 1:
            raise ValueError(f"{M}x{N} {dtype}: per_sm={per_sm} must be at least 1")
        elts = iters * vec
        cache = block < 1024 or (2 * elts * elt + 2 * elts * acc) // 4 <= 32
        groups = math.ceil(M / (block // tpr))
    blocks = max(1, min(groups, sms * per_sm))
    rows_per_block = math.ceil(M / blocks)
    if not wide:  # whole row-group steps per block
        rg = block // tpr
        rows_per_block = math.ceil(rows_per_block / rg) * rg
    blocks = math.ceil(M / rows_per_block)
    p = Plan(dtype, M, N, vec, tpr, iters, block, cache, wide, blocks, rows_per_block)
    if shared_bytes(p) > MAX_STATIC_SHARED:
        raise ValueError(f"{M}x{N} {dtype}: tpr={tpr} block={block} needs {shared_bytes(p)} "
                         f"bytes of static shared memory (at most {MAX_STATIC_SHARED})")
    return p


MAX_STATIC_SHARED = 48 * 1024


def shared_bytes(p: Plan) -> int:
    """Static shared memory of the plan's stage-1 kernel (``red`` and ``comb`` in the source)."""
    acc = 8 if p.dtype == "float64" else 4
    if p.wide:
        return 2 * 2 * max(1, p.block // 32) * acc
    rg, wpr = p.block // p.tpr, max(1, p.tpr // 32)
    return (2 * 2 * rg * wpr + 2 * ((rg - 1) * p.tpr * p.vec if rg > 1 else 1)) * acc


def variants(M: int, N: int, dtype: str, sms: int, regs: int | None = None) -> list[Plan]:
    """The heuristic plan first (``regs`` as in :func:`plan`), then each knob moved alone: tpr
    halved or doubled, the other block sizes, 1/2/4 blocks per SM. Invalid combinations are left
    out; no duplicates."""
    base = plan(M, N, dtype, sms, regs=regs)
    if base.wide:
        return [base]
    tries: list[dict[str, int]] = [{"tpr": base.tpr // 2}, {"tpr": base.tpr * 2}]
    tries += [{"block": b} for b in (256, 512, 1024)]
    tries += [{"per_sm": k} for k in (1, 2, 4)]
    return one_knob_variants(base, tries, functools.partial(plan, M, N, dtype, sms))


def describe_plan(p: Plan) -> str:
    """A short label: threads per row, threads per block, blocks, registers or re-read."""
    return (f"tpr {p.tpr} block {p.block} blocks {p.blocks}"
            + ("" if p.wide else (" cache" if p.cache else " reread")))


class DeviceBF16:
    """A CuPy uint16 array holding bfloat16 bits (CuPy has no bfloat16 dtype).

    ``numpy.asarray`` (and so ``lnbench.arrays.to_numpy``) reads it back as ``ml_dtypes.bfloat16``;
    ``.bits`` is the device array; ``.nbytes`` counts its bytes. Wrapping costs no device work.
    """

    __slots__ = ("bits",)
    dtype = np.dtype(ml_dtypes.bfloat16)

    def __init__(self, bits: Any) -> None:
        self.bits = bits

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.bits.shape)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)

    def get(self) -> np.ndarray:
        return self.bits.get().view(ml_dtypes.bfloat16)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.get()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"DeviceBF16(shape={self.shape})"


@functools.cache
def _module(rows_kernel: str, reduce_kernel: str) -> Any:
    import cupy

    return cupy.RawModule(code=CUDA_SOURCE, options=("--std=c++17",),
                          name_expressions=[rows_kernel, reduce_kernel])


def kernels(p: Plan) -> tuple[Any, Any]:
    """The compiled (stage-1, stage-2) ``cupy.RawKernel`` pair for a plan (cached)."""
    mod = _module(p.rows_kernel, p.reduce_kernel)
    return mod.get_function(p.rows_kernel), mod.get_function(p.reduce_kernel)


def sm_count() -> int:
    import cupy

    return int(cupy.cuda.Device().attributes["MultiProcessorCount"])


def to_device(a: np.ndarray) -> Any:
    """A NumPy array on the current CUDA device; bfloat16 becomes its uint16 bits."""
    import cupy

    a = np.ascontiguousarray(a)
    if a.dtype == ml_dtypes.bfloat16:
        a = a.view(np.uint16)
    return cupy.asarray(a)


def fused_backward(dy: Any, x: Any, gamma: Any, mean: Any, rstd: Any, p: Plan,
                   fns: tuple[Any, Any] | None = None) -> tuple[Any, Any, Any]:
    """Run the two kernels on CuPy arrays (bfloat16 as uint16 bits); returns (dx, dγ, dβ).

    ``mean``/``rstd``: M values (any shape), float64 for float64 inputs, else float32. The
    workspace and the outputs are allocated on every call, as a framework's backward would.
    """
    import cupy

    check_inputs(p, dy, x, gamma, mean, rstd)
    rows, red = fns or kernels(p)
    M, N = p.M, p.N
    adt = cupy.float64 if p.dtype == "float64" else cupy.float32
    dx = cupy.empty((M, N), dtype=x.dtype)
    part = cupy.empty((2, p.blocks, N), dtype=adt)
    dg = cupy.empty((N,), dtype=x.dtype)
    db = cupy.empty((N,), dtype=x.dtype)
    rows((p.blocks,), (p.block,), (x, dy, gamma, mean, rstd, dx, part[0], part[1],
                                   np.int32(M), np.int32(N), np.int32(p.rows_per_block)))
    red(((N + REDUCE_BLOCK[0] - 1) // REDUCE_BLOCK[0],), REDUCE_BLOCK,
        (part[0], part[1], dg, db, np.int32(p.blocks), np.int32(N)))
    return dx, dg, db


STORAGE = {"float64": "float64", "float32": "float32", "float16": "float16", "bfloat16": "uint16"}


def check_inputs(p: Plan, dy: Any, x: Any, gamma: Any, mean: Any, rstd: Any,
                 ptr: Callable[[Any], int] = lambda a: int(a.data.ptr)) -> None:
    """Raise ValueError naming the array the kernels cannot take as it is: the kernels index
    dense rows and, with ``p.vec > 1``, load 16 bytes at a time, so a strided view would be read
    wrongly and a misaligned one would raise a sticky misaligned-address error that ends the
    process's CUDA context. A few host-side checks per call; the caller's L2 flush hides them."""
    want = {"dy": ((p.M, p.N), STORAGE[p.dtype]), "x": ((p.M, p.N), STORAGE[p.dtype]),
            "gamma": ((p.N,), STORAGE[p.dtype]), "mean": ((p.M,), p.acc_dtype),
            "rstd": ((p.M,), p.acc_dtype)}
    for name, a in zip(want, (dy, x, gamma, mean, rstd), strict=True):
        shape, dt = want[name]
        if int(np.prod(a.shape)) != int(np.prod(shape)) or (name in ("x", "dy")
                                                             and tuple(a.shape) != shape):
            raise ValueError(f"cupy.fused: {name} has shape {tuple(a.shape)}, the plan wants "
                             f"{shape}")
        if str(a.dtype) != dt:
            raise ValueError(f"cupy.fused: {name} is {a.dtype}, the plan wants {dt}")
        if not a.flags.c_contiguous:
            raise ValueError(f"cupy.fused: {name} is not C-contiguous")
        if p.vec > 1 and name in ("dy", "x", "gamma") and ptr(a) % 16:
            raise ValueError(f"cupy.fused: {name} starts at an address that is not 16-byte "
                             f"aligned (the plan loads {p.vec}-element vectors)")


def probe() -> str | None:
    """CuPy compiles the kernel with NVRTC at run time: it must be loadable."""
    import cupy

    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001 - a missing libnvrtc shows up as any of several errors
        return f"CuPy cannot load NVRTC to compile the kernel: {type(e).__name__}: {e}"
    return None


def _device_inputs(data: Any) -> tuple[Any, ...]:
    """dy, x, γ, mean, rstd of a case on the device (bfloat16 as uint16 bits)."""
    return (to_device(data.dy), to_device(data.x), to_device(data.gamma),
            to_device(data.mean.reshape(-1)), to_device(data.rstd.reshape(-1)))


def _thunk(inputs: tuple[Any, ...], p: Plan) -> Thunk:
    """Compile ``p``'s kernels, run once (warm-up, outside timing) and return the timed call."""
    import cupy

    fns = kernels(p)
    fused_backward(*inputs, p, fns)
    cupy.cuda.get_current_stream().synchronize()
    if p.dtype == "bfloat16":
        def call_bf16() -> tuple[Any, Any, Any]:
            dx, dg, db = fused_backward(*inputs, p, fns)
            return DeviceBF16(dx), DeviceBF16(dg), DeviceBF16(db)

        return call_bf16
    return lambda: fused_backward(*inputs, p, fns)


def device_plan(M: int, N: int, dtype: str) -> Plan:
    """The plan for this device: :func:`plan` with its SM count, then again with the registers
    the compiled stage-1 kernel really uses (the kernel's template does not depend on them), so
    the grid is one wave of blocks that are resident together."""
    p = plan(M, N, dtype, sm_count())
    if p.wide:
        return p
    q = plan(M, N, dtype, sm_count(), regs=int(kernels(p)[0].num_regs))
    assert q.rows_kernel == p.rows_kernel, (p, q)
    return q


def make_fused(data: Any) -> Thunk:
    """Maker: inputs to the device, plan, compile and one warm-up call, all outside timing."""
    c = data.case
    return _thunk(_device_inputs(data), device_plan(c.M, c.N, c.dtype))


def sweep(data: Any) -> Iterator[tuple[str, dict[str, Any], Callable[[], Thunk]]]:
    """The launch-plan sweep (``scripts/gpu-check --sweep``): for each of :func:`variants`, a
    label, the plan's fields and a builder of its thunk (inputs moved to the device once)."""
    c = data.case
    inputs = _device_inputs(data)
    base = device_plan(c.M, c.N, c.dtype)
    regs = None if base.wide else int(kernels(base)[0].num_regs)
    for p in variants(c.M, c.N, c.dtype, sm_count(), regs):
        yield describe_plan(p), asdict(p), functools.partial(_thunk, inputs, p)


add(
    Impl(
        name="cupy.fused",
        make=make_fused,
        kind="custom",
        array="cupy",
        device="cuda",
        dtypes=DTYPES,
        affine=True,
        saved="mean-rstd",
        requires=("cupy",),
        probe=probe,
        sweep=sweep,
        doc="custom CUDA C++ kernel (CuPy RawModule): one read of x and dy, fp32 accumulation, "
        "deterministic two-stage dγ/dβ",
    )
)
