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
``ml_dtypes.bfloat16``). The kernels' source is ``lnbench/impls/cuda/layernorm_bwd.cu``, package
data read with ``importlib.resources`` (:data:`CUDA_SOURCE`). No CUDA header is included, so it
compiles with NVRTC (CuPy) and with ``nvcc`` alike (tests/test_gpu.py checks the latter on
machines without a GPU).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import ml_dtypes
import numpy as np

from lnbench.dtypes import DTYPES, np_dtype
from lnbench.impl import SAVED_CENTERED, Impl, Thunk, add
from lnbench.impls.launch import one_knob_variants

# The kernels' CUDA C++ (lnbench/impls/cuda/layernorm_bwd.cu), shipped as package data.
CUDA_SOURCE: str = (
    resources.files("lnbench.impls.cuda").joinpath("layernorm_bwd.cu").read_text(encoding="utf-8")
)

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


def _row_group(nv: int, vec: int, max_iters: int) -> tuple[int, int] | None:
    """(tpr, iters) for a row of ``nv`` vectors of ``vec`` elements: the power-of-two row-group
    width up to MAX_TPR whose lanes are best used (fewest idle lanes) with at most ``max_iters``
    vectors per thread, ties going to about 8 elements per thread; None when no width fits."""
    best: tuple[float, float, int, int] | None = None
    w = 1
    while w <= MAX_TPR:
        its = math.ceil(nv / w)
        if its <= max_iters:
            cand = (nv / (w * its), -abs(math.log2(its * vec / 8)), w, its)
            if best is None or cand[:2] > best[:2]:
                best = cand
        w *= 2
    return None if best is None else (best[2], best[3])


def plan(M: int, N: int, dtype: str, sms: int, *, tpr: int | None = None,
         block: int | None = None, per_sm: int | None = None, regs: int | None = None) -> Plan:
    """Choose the launch for an (M, N) case on a device with ``sms`` multiprocessors.

    ``tpr``, ``block`` and ``per_sm`` override the heuristic's choices (for :func:`variants`, the
    launch-plan sweep of ``lnbench gpu-check --sweep``); a combination the kernel cannot run
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
    best = _row_group(nv, vec, max_iters)
    if best is None:  # wider than 1024 threads x MAX_ELTS elements: the strided kernel
        if (tpr, block, per_sm) != (None, None, None):
            raise ValueError(f"{M}x{N} {dtype}: the wide-row kernel takes no overrides")
        wide, tpr, iters, block, cache = True, MAX_TPR, math.ceil(nv / MAX_TPR), MAX_TPR, False
        per_sm, groups = 1, M
    else:
        if tpr is None:
            tpr, iters = best
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
    """The launch-plan sweep (``lnbench gpu-check --sweep``): for each of :func:`variants`, a
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
        numerics=SAVED_CENTERED,  # the given mean/rstd, x̂ = (x − μ)·rstd
        requires=("cupy",),
        probe=probe,
        sweep=sweep,
        doc="custom CUDA C++ kernel (CuPy RawModule): one read of x and dy, fp32 accumulation, "
        "deterministic two-stage dγ/dβ",
    )
)
