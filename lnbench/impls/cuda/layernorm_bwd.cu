// cupy.fused: the two LayerNorm-backward kernels that lnbench/impls/cupy_fused.py compiles
// with cupy.RawModule (NVRTC, --std=c++17); its module docstring describes the algorithm.
// No CUDA header is included, so NVRTC and nvcc both compile this file as it is.
//
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
