"""GPU implementations: cupy.fused, triton.fused, the peers and lnbench/measure/cuda.py.

Without a GPU (this project's CPU machines) the GPU tests skip with the reason, and the CPU tests
still check what can be checked here:
- the modules import and list their implementations without CuPy, Triton or a device;
- the launch plans cover every row and column;
- the CUDA C++ compiles for sm_90 with ``nvcc`` (register use without spills on the anchor grid),
  and through CuPy's own NVRTC path where a libnvrtc is installed;
- the CUDA C++ *runs* correctly on the CPU: it is compiled with g++ against a small shim that runs
  each CUDA thread as a host thread (``__syncthreads`` and warp shuffles as barriers), and its
  gradients are judged against the exact reference, like any implementation.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lnbench.dtypes import DTYPES, np_dtype
from lnbench.grid import ANCHOR_SHAPES, FULL_SHAPES
from lnbench.impls import cupy_fused
from lnbench.measure import cuda as mcuda
from lnbench.registry import get

ROOT = Path(__file__).resolve().parents[1]
GPU_IMPLS = ("cupy.fused", "triton.fused")
GPU_WHY = mcuda.cuda_unavailable()
needs_gpu = pytest.mark.skipif(GPU_WHY is not None, reason=f"no GPU: {GPU_WHY}")


# --------------------------------------------------------------------------- CPU: listing, plans


def test_modules_import_and_list_without_cupy_triton_or_gpu() -> None:
    """With cupy, triton, liger_kernel and apex made unimportable, everything is still listed."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        BLOCK = ("cupy", "triton", "liger_kernel", "fused_layer_norm_cuda")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCK:
                    raise ModuleNotFoundError(f"blocked {name}", name=name)
                return None
        sys.meta_path.insert(0, Block())
        import importlib.util
        importlib.util.find_spec = (lambda f: lambda n, *a: None if n.split(".")[0] in BLOCK
                                    else f(n, *a))(importlib.util.find_spec)
        from lnbench.registry import registry
        import lnbench.measure.cuda
        reg = registry()
        for n in ("cupy.fused", "triton.fused", "liger", "apex"):
            why = reg[n].unavailable()
            assert why, n
            print(n, "|", why)
        assert not any(m.split(".")[0] in BLOCK for m in sys.modules)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" | ", 1) for line in r.stdout.strip().splitlines())
    assert lines["cupy.fused"] == "cupy is not installed"
    assert lines["triton.fused"] == "triton is not installed"
    assert "liger" in lines["liger"]
    assert "fused_layer_norm_cuda" in lines["apex"]


@pytest.mark.parametrize("name", [*GPU_IMPLS, "liger", "apex"])
def test_listed_with_a_reason_or_available(name: str) -> None:
    impl = get(name)
    d = impl.describe()
    assert d["device"] == "cuda" and d["affine"] is True
    assert d["kind"] == ("custom" if name in GPU_IMPLS else "peer")
    assert d["available"] == (d["reason"] == "")
    if GPU_WHY is not None:
        assert not d["available"] and d["reason"]


def test_measure_cuda_refuses_cleanly_without_gpu() -> None:
    if GPU_WHY is None:
        pytest.skip("a GPU is present: the GPU tests below cover measure.cuda")
    for f in (lambda: mcuda.time_cuda(lambda: None), mcuda.copy_bandwidth_cuda,
              lambda: mcuda.cuda_workspace_bytes(lambda: None), mcuda.device_info):
        with pytest.raises(mcuda.CudaUnavailable, match=r"\S"):
            f()


def _plan_cases() -> list[tuple[int, int, str, int]]:
    shapes = [*FULL_SHAPES, *ANCHOR_SHAPES, (3, 5), (1000, 1), (7, 33), (9, 20000), (2, 65536)]
    return [(M, N, dt, sms) for M, N in shapes for dt in DTYPES for sms in (1, 3, 132)]


@pytest.mark.parametrize("M,N,dt,sms", _plan_cases())
def test_cupy_plan_covers_every_row_and_column(M: int, N: int, dt: str, sms: int) -> None:
    for p in cupy_fused.variants(M, N, dt, sms):  # the heuristic's plan first
        _check_plan(p, M, N, dt)
    assert cupy_fused.variants(M, N, dt, sms)[0] == cupy_fused.plan(M, N, dt, sms)


def test_cupy_plan_overrides_refuse_what_the_kernel_cannot_run() -> None:
    for kw in ({"tpr": 3}, {"tpr": 0}, {"tpr": 2048}, {"tpr": 8}, {"block": 96},
               {"block": 2048}, {"per_sm": 0}, {"tpr": 32, "block": 1024}):
        with pytest.raises(ValueError, match="4096x768 bfloat16"):
            cupy_fused.plan(4096, 768, "bfloat16", 132, **kw)
    with pytest.raises(ValueError, match="wide-row"):
        cupy_fused.plan(2, 65536, "float32", 132, tpr=512)


def test_cupy_plan_refuses_blocks_smaller_than_a_warp() -> None:
    assert cupy_fused.plan(64, 128, "float32", 132, tpr=16).tpr == 16
    with pytest.raises(ValueError, match="block=16"):  # a partial warp: shuffles would be UB
        cupy_fused.plan(64, 128, "float32", 132, tpr=16, block=16)


def test_resident_blocks_follows_the_sm90_register_file() -> None:
    # 64K registers per SM, allocated per warp in units of 256; at most 64 warps, 32 blocks
    assert cupy_fused.resident_blocks(64, 512) == 2
    assert cupy_fused.resident_blocks(65, 512) == 1  # 72 registers: 2 blocks need 73,728
    assert cupy_fused.resident_blocks(128, 512) == 1
    assert cupy_fused.resident_blocks(80, 256) == 3
    assert cupy_fused.resident_blocks(115, 256) == 2  # 120 x 32 lanes x 8 warps = 30,720 each
    assert cupy_fused.resident_blocks(32, 256) == 8  # 64 warps
    assert cupy_fused.resident_blocks(255, 1024) == 1  # never 0: a launch still runs


def test_cupy_plan_sizes_its_wave_from_the_compiled_registers() -> None:
    # float64 4096x1024: 512-thread blocks; nvcc 13.0 gives the kernel 128 registers, so one
    # block per SM is resident, not the two the default assumption of 64 registers gives
    assumed = cupy_fused.plan(4096, 1024, "float64", 132)
    real = cupy_fused.plan(4096, 1024, "float64", 132, regs=128)
    assert assumed.block == real.block == 512 and assumed.rows_kernel == real.rows_kernel
    assert assumed.blocks > 132 >= real.blocks
    _check_plan(real, 4096, 1024, "float64")


def test_cupy_fused_refuses_inputs_its_kernels_would_misread() -> None:
    M, N = 8, 64
    p = cupy_fused.plan(M, N, "float32", 132)
    assert p.vec == 4
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((2, M, N), dtype=np.float32)
    g = np.ones(N, np.float32)
    st = np.ones((M, 1), np.float32)
    ptr = lambda a: a.ctypes.data  # noqa: E731 - NumPy stands in for CuPy's a.data.ptr
    cupy_fused.check_inputs(p, dy, x, g, st, st, ptr=ptr)  # fine as they are
    buf = np.zeros(M * N + 1, np.float32)
    shifted = buf[1:].reshape(M, N)  # 4 bytes past an aligned start
    wide = np.zeros((M, 2 * N), np.float32)[:, :N]
    for bad, msg in ((lambda: (dy, shifted, g, st, st), "x starts at an address"),
                     (lambda: (dy, wide, g, st, st), "x is not C-contiguous"),
                     (lambda: (dy.astype(np.float64), x, g, st, st), "dy is float64"),
                     (lambda: (dy, x, g, st.astype(np.float64), st), "mean is float64"),
                     (lambda: (dy, x[:4], g, st, st), r"x has shape \(4, 64\)"),
                     (lambda: (dy, x, g[:8], st, st), r"gamma has shape \(8,\)")):
        with pytest.raises(ValueError, match=msg):
            cupy_fused.check_inputs(p, *bad(), ptr=ptr)


def _check_plan(p: cupy_fused.Plan, M: int, N: int, dt: str) -> None:
    assert N % p.vec == 0 and p.vec * np_dtype(dt).itemsize <= 16
    assert p.tpr * p.iters * p.vec >= N  # columns
    assert p.blocks * p.rows_per_block >= M > (p.blocks - 1) * p.rows_per_block  # rows, no idle
    assert p.block % p.tpr == 0 and p.block <= 1024
    if not p.wide:
        rg = p.block // p.tpr
        assert p.rows_per_block % rg == 0
        assert p.iters * p.vec <= cupy_fused.MAX_ELTS[np_dtype(dt).itemsize]
        acc = 8 if dt == "float64" else 4
        comb = 2 * (rg - 1) * p.tpr * p.vec * acc if rg > 1 else 0
        assert comb <= 48 * 1024  # static shared memory limit
    assert cupy_fused.shared_bytes(p) <= 48 * 1024


# --------------------------------------------------------------------------- CPU: nvcc compiles

NVCC = shutil.which("nvcc")


def _instances(plans: list[cupy_fused.Plan]) -> str:
    names = sorted({n for p in plans for n in (p.rows_kernel, p.reduce_kernel)})
    refs = ",\n".join(f"    (void*)&{n}" for n in names)
    return f"void* lnbench_instances[] = {{\n{refs}\n}};\n"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_cuda_source_compiles_for_sm90_without_spills(tmp_path: Path) -> None:
    # the sweep's launch variants of the anchor grid too (lnbench gpu-check --sweep)
    anchor = [v for M, N in ANCHOR_SHAPES for dt in ("float32", "float16", "bfloat16")
              for v in cupy_fused.variants(M, N, dt, 132)]
    plans = [cupy_fused.plan(M, N, dt, 132) for M, N in [*FULL_SHAPES, *ANCHOR_SHAPES, (9, 20000)]
             for dt in DTYPES] + anchor
    src = tmp_path / "k.cu"
    src.write_text(cupy_fused.CUDA_SOURCE + _instances(plans))
    # -ftz=true: CuPy's RawModule compiles with it (cupy/cuda/compiler.py), so the same binary
    r = subprocess.run([NVCC, "-cubin", "-arch=sm_90", "-std=c++17", "-ftz=true", "-Xptxas", "-v",
                        "-o", str(tmp_path / "k.cubin"), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # ptxas -v: "Compiling entry function '<mangled>'", "... N bytes spill stores ...", then
    # "Used R registers ..."
    spills: dict[str, int] = {}
    regs: dict[str, int] = {}
    entry = ""
    for line in r.stderr.splitlines():
        if "Compiling entry function" in line:
            entry = line.split("'")[1]
        elif "spill stores" in line:
            spills[entry] = int(line.split("bytes stack frame,")[1].split("bytes spill stores")[0])
        elif "Used" in line and "registers" in line:
            regs[entry] = int(line.split("Used")[1].split("registers")[0])
    assert len(spills) == len({n for p in plans for n in (p.rows_kernel, p.reduce_kernel)})
    # the anchor grid's 4- and 2-byte kernels must not spill (float64 is not a speed target)
    hot = {_mangled_prefix(p) for p in anchor}
    bad = {e: s for e, s in spills.items() if s and any(e.startswith(h) for h in hot)}
    assert not bad, f"spilling kernels on the anchor grid: {bad}"
    # device_plan's second step: the real register count keeps the kernel and makes the grid one
    # wave of blocks resident together (the default assumption alone holds on the anchor grid)
    for M, N in [*FULL_SHAPES, *ANCHOR_SHAPES]:
        for dt in DTYPES:
            p = cupy_fused.plan(M, N, dt, 132)
            if p.wide:
                continue
            r_ = next(v for e, v in regs.items() if e.startswith(_mangled_prefix(p)))
            q = cupy_fused.plan(M, N, dt, 132, regs=r_)
            assert q.rows_kernel == p.rows_kernel
            assert q.blocks <= 132 * cupy_fused.resident_blocks(r_, q.block), (M, N, dt, r_)
            if dt != "float64" and (M, N) in ANCHOR_SHAPES:
                assert p.blocks <= 132 * cupy_fused.resident_blocks(r_, p.block), (M, N, dt, r_)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_cuda_rows_kernels_use_128_bit_loads_and_stores(tmp_path: Path) -> None:
    """On the anchor grid (fp32/fp16/bf16) every stage-1 kernel reads x and dy and writes dx as
    16-byte vectors (PTX ld.global.nc.v4 / st.global.v4), never as scalar elements."""
    import re

    plans = [cupy_fused.plan(M, N, dt, 132) for M, N in ANCHOR_SHAPES
             for dt in ("float32", "float16", "bfloat16")]
    src = tmp_path / "k.cu"
    src.write_text(cupy_fused.CUDA_SOURCE + _instances(plans))
    r = subprocess.run([NVCC, "-ptx", "-arch=sm_90", "-std=c++17", "-ftz=true",
                        "-o", str(tmp_path / "k.ptx"), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    entries = re.split(r"\.entry ", (tmp_path / "k.ptx").read_text())[1:]
    rows = {e.split("(")[0]: e for e in entries if e.startswith("_Z11ln_bwd_rows")}
    for p in plans:
        assert any(n.startswith(_mangled_prefix(p)) for n in rows), p
    for name, body in rows.items():
        v4_ld = len(re.findall(r"ld\.global\.nc\.v4\.", body))
        v4_st = len(re.findall(r"st\.global\.v4\.", body))
        scalar16 = len(re.findall(r"ld\.global(?:\.nc)?\.(?:u16|b16|f16)", body))
        assert v4_ld >= 2 and v4_st >= 1 and scalar16 == 0, (name, v4_ld, v4_st, scalar16)


NVRTC_SCRIPT = r"""
import json, sys
try:
    from cupy.cuda import compiler
    major, minor = compiler._get_nvrtc_version()
except Exception as e:  # no CuPy, or no libnvrtc for it: the test skips with this line
    print(json.dumps({"skip": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}))
    sys.exit(0)
from lnbench.impls import cupy_fused
names = json.loads(sys.argv[1])
# CuPy asks the device for its arch only here; the rest of its NVRTC path (options, name
# expressions, lowered names, cubin) is what cupy.RawModule runs on a GPU.
compiler._get_arch_for_options_for_nvrtc = lambda arch=None: ("-arch=sm_90", "cubin")
obj, mapping = compiler.compile_using_nvrtc(cupy_fused.CUDA_SOURCE, options=("--std=c++17",),
                                            arch="90", name_expressions=names)
print(json.dumps({"nvrtc": [major, minor], "bytes": len(obj), "lowered": sorted(mapping)}))
"""


def test_cuda_source_compiles_with_cupys_nvrtc_for_sm90() -> None:
    """The path cupy.RawModule takes on a GPU (NVRTC, with CuPy's own options), minus the
    device query. Runs where CuPy and a libnvrtc it can load are installed (e.g. cupy-cuda12x with
    nvidia-cuda-nvrtc-cu12); skips elsewhere, as in CI."""
    import json

    plans = [cupy_fused.plan(M, N, dt, 132) for M, N in [*FULL_SHAPES, *ANCHOR_SHAPES, (9, 20000)]
             for dt in DTYPES]
    names = sorted({n for p in plans for n in (p.rows_kernel, p.reduce_kernel)})
    r = subprocess.run([sys.executable, "-c", NVRTC_SCRIPT, json.dumps(names)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(f"CuPy's NVRTC is not usable here: {out['skip']}")
    assert out["lowered"] == names and out["bytes"] > 0


def _mangled_prefix(p: cupy_fused.Plan) -> str:
    """Itanium-mangled name prefix of a plan's stage-1 kernel (enough to recognise it)."""
    t = {"float32": "f", "float64": "d", "float16": "5f16_t", "bfloat16": "6bf16_t"}[p.dtype]
    if p.wide:
        return f"_Z16ln_bwd_rows_wideI{t}Li{p.vec}ELi{p.block}E"
    return (f"_Z11ln_bwd_rowsI{t}Li{p.vec}ELi{p.iters}ELi{p.tpr}ELi{p.block}"
            f"ELb{int(p.cache)}E")
