"""``torch.compile``: the backward formula compiled by TorchInductor (C++/OpenMP on the CPU, Triton
on CUDA), from the saved mean/rstd of the case.

Math (row means over N; float32 for 16-bit inputs, else the input dtype):

    x̂ = (x − μ)·rstd,   g = dy·γ
    dx = rstd·(g − mean(g) − x̂·mean(g·x̂)),   dγ = Σ_rows dy·x̂,   dβ = Σ_rows dy

Inductor fuses this into a few loops; how it splits the column reductions (dγ, dβ) is its own
choice, so dγ/dβ are not promised to be bit-identical across thread counts.

Compilation is kept out of timings: the maker calls the compiled function once on the case's own
inputs, so any compile or recompile it needs happens there; the seconds taken by calls that
compiled are recorded per dtype in :func:`compile_seconds` and on the thunk
(``thunk.compile_seconds``, 0.0 when nothing was compiled for that case).

Recompiles: one compiled function per dtype (each with its own code object, so Dynamo's
per-code-object recompile limit of 8 is never shared across dtypes), ``dynamic=True`` so one graph
serves every M and N. Dynamo still specialises a dimension of size 0 or 1: the first case with
M = 1 (or N = 1) compiles one more graph for that dtype, once.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import threading
import time
import types
from typing import Any

from lnbench.arrays import to_array, torch_device
from lnbench.dtypes import DTYPES
from lnbench.impl import SAVED_CENTERED, Impl, Thunk, add

_COMPILE_SECONDS: dict[str, float] = {}
_LOCK = threading.Lock()


def backward_formula(dy: Any, x: Any, gamma: Any, mean: Any, rstd: Any) -> tuple[Any, Any, Any]:
    """LayerNorm backward from saved (M, 1) mean/rstd; computes in ``mean``'s dtype, returns the
    input dtype. Plain torch: eager-correct, and what torch.compile traces."""
    acc = mean.dtype
    xf, dyf, gf = x.to(acc), dy.to(acc), gamma.to(acc)
    xhat = (xf - mean) * rstd
    g = dyf * gf
    mg = g.mean(dim=1, keepdim=True)
    mgx = (g * xhat).mean(dim=1, keepdim=True)
    dx = rstd * (g - mg - xhat * mgx)
    dgamma = (dyf * xhat).sum(dim=0)
    dbeta = dyf.sum(dim=0)
    return dx.to(x.dtype), dgamma.to(x.dtype), dbeta.to(x.dtype)


def _own_code(fn: Any, name: str) -> Any:
    """A copy of ``fn`` with a code object of its own (Dynamo caches compiled graphs per code
    object; separate copies keep each dtype's graphs and recompile budget apart)."""
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


@functools.cache
def compiled(dtype: str) -> Any:
    """The torch.compile'd backward for one dtype (compiled lazily on its first call)."""
    import torch

    fn = _own_code(backward_formula, f"layernorm_backward_{dtype}")
    return torch.compile(fn, dynamic=True, fullgraph=True)


def compile_seconds() -> dict[str, float]:
    """Seconds spent in calls that compiled, per dtype, in this process (excluded from timings).
    Inductor's on-disk caches make a second process faster."""
    return dict(_COMPILE_SECONDS)


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def make(data: Any) -> Thunk:
    """Maker: inputs to the torch device and a warm-up call (compiles if this dtype/shape class is
    new); the thunk runs only the compiled backward."""
    from lnbench.arrays import synchronize

    dev = torch_device()
    dtype = data.case.dtype
    fn = compiled(dtype)
    x, dy, gamma = (to_array(a, "torch", dev) for a in (data.x, data.dy, data.gamma))
    mean, rstd = (to_array(a, "torch", dev) for a in (data.mean, data.rstd))
    with _LOCK:
        before = _graphs_compiled()
        t0 = time.perf_counter()
        fn(dy, x, gamma, mean, rstd)
        synchronize(dev)
        seconds = time.perf_counter() - t0
        if _graphs_compiled() == before:
            seconds = 0.0
        else:
            _COMPILE_SECONDS[dtype] = _COMPILE_SECONDS.get(dtype, 0.0) + seconds

    def thunk() -> tuple[Any, Any, Any]:
        return fn(dy, x, gamma, mean, rstd)

    thunk.compile_seconds = seconds  # type: ignore[attr-defined]
    return thunk


@functools.cache
def _probe() -> str | None:
    """Why Inductor cannot compile here (cheap checks only; no compile is attempted)."""
    if torch_device() == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA needs triton, which is not installed"
        return None
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        return f"TorchInductor on the CPU needs a C++ compiler; {cxx!r} is not on PATH (set CXX)"
    return None


add(
    Impl(
        name="torch.compile",
        make=make,
        kind="compiled",
        array="torch",
        device=torch_device(),
        dtypes=DTYPES,
        affine=True,
        saved="mean-rstd",
        numerics=SAVED_CENTERED,  # the given mean/rstd, x̂ = (x − μ)·rstd
        requires=("torch",),
        probe=_probe,
        doc="torch.compile(dynamic=True) of the backward formula from saved mean/rstd "
        "(Inductor: C++ on CPU, Triton on CUDA); fp32 compute for 16-bit inputs",
    )
)
