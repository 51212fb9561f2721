"""Peer GPU implementations the custom kernels are measured against (docs/peers.md).

Always listed; available only where their package and a CUDA device are present. Each maker runs
the peer's *own* forward to get the saved statistics in the layout and dtype the peer expects
(as ``torch.native`` does), so only the peer's backward is timed.

- ``liger``: ``liger_kernel.ops.layer_norm.layer_norm_backward(dY, X, W, B, Mean, RSTD)`` with
  Mean/RSTD from ``layer_norm_forward(X, W, B, eps)`` (shape (M,), X's dtype in liger <= 0.6).
  A Triton kernel: one program per SM, partial dγ/dβ rows summed by ``torch.sum``.
- ``apex``: NVIDIA apex's ``fused_layer_norm_cuda.backward_affine`` (the CUDA extension behind
  ``apex.normalization.FusedLayerNorm``), mean/invvar from ``forward_affine``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from lnbench.impl import Impl, Thunk, add


def _torch_inputs(data: Any) -> tuple[Any, Any, Any, Any]:
    from lnbench.arrays import to_array

    return (to_array(data.x, "torch", "cuda"), to_array(data.dy, "torch", "cuda"),
            to_array(data.gamma, "torch", "cuda"), to_array(data.beta, "torch", "cuda"))


def liger_probe() -> str | None:
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed (pip install liger-kernel)"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (liger-kernel needs it)"
    try:
        from liger_kernel.ops.layer_norm import layer_norm_backward, layer_norm_forward  # noqa: F401
    except Exception as e:  # noqa: BLE001 - an API change or a broken install is the reason
        return (f"liger_kernel.ops.layer_norm has no usable forward/backward:"
                f" {type(e).__name__}: {e}")
    return None


def make_liger(data: Any) -> Thunk:
    """Liger's forward saves Mean/RSTD; the thunk runs ``layer_norm_backward`` only."""
    import torch
    from liger_kernel.ops.layer_norm import layer_norm_backward, layer_norm_forward

    x, dy, w, b = _torch_inputs(data)
    fwd = layer_norm_forward(x, w, b, data.eps)
    mean, rstd = fwd[2], fwd[3]
    M = x.shape[0]
    for name, t in (("Mean", mean), ("RSTD", rstd)):
        if not torch.is_tensor(t) or t.numel() != M:
            raise TypeError(f"liger layer_norm_forward()[{2 if name == 'Mean' else 3}] is not"
                            f" the per-row {name} this harness expects; the API changed")
    layer_norm_backward(dy, x, w, b, mean, rstd)
    torch.cuda.synchronize()
    return lambda: layer_norm_backward(dy, x, w, b, mean, rstd)


def apex_probe() -> str | None:
    if importlib.util.find_spec("fused_layer_norm_cuda") is None:
        return ("apex is not installed with its CUDA extensions (module fused_layer_norm_cuda;"
                " build NVIDIA/apex with --cuda_ext)")
    return None


def make_apex(data: Any) -> Thunk:
    """apex's ``forward_affine`` saves mean/invvar; the thunk runs ``backward_affine`` only.

    Newer apex takes a trailing ``memory_efficient`` flag (False: recompute from x, not y).
    """
    import fused_layer_norm_cuda as fln
    import torch

    x, dy, w, b = _torch_inputs(data)
    shape = torch.Size([x.shape[1]])
    _, mean, invvar = fln.forward_affine(x, shape, w, b, data.eps)
    try:
        fln.backward_affine(dy, mean, invvar, x, shape, w, b, data.eps, False)

        def call() -> Any:
            return fln.backward_affine(dy, mean, invvar, x, shape, w, b, data.eps, False)
    except TypeError:  # apex before the memory_efficient argument
        fln.backward_affine(dy, mean, invvar, x, shape, w, b, data.eps)

        def call() -> Any:
            return fln.backward_affine(dy, mean, invvar, x, shape, w, b, data.eps)
    torch.cuda.synchronize()
    return call


add(
    Impl(
        name="liger",
        make=make_liger,
        family="liger",
        kind="peer",
        array="torch",
        device="cuda",
        dtypes=("float32", "float16", "bfloat16"),
        affine=True,
        saved="mean-rstd",
        requires=("liger_kernel", "triton"),
        probe=liger_probe,
        doc="liger-kernel's Triton LayerNorm backward (liger_kernel.ops.layer_norm)",
    )
)
add(
    Impl(
        name="apex",
        make=make_apex,
        family="apex",
        kind="peer",
        array="torch",
        device="cuda",
        affine=True,
        saved="mean-rstd",
        # apex's CUDA extension; the PyPI project called "apex" is an unrelated package
        requires=("fused_layer_norm_cuda",),
        probe=apex_probe,
        doc="NVIDIA apex fused_layer_norm_cuda.backward_affine (FusedLayerNorm's backward)",
    )
)
