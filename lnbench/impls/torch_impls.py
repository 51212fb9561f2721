"""PyTorch's own LayerNorm backward: the seed's autograd path and the aten kernel.

Both run on this machine's torch device (CUDA when available). The forward that saves state runs
in the maker; the thunk runs only the backward.
"""

from __future__ import annotations

from lnbench.arrays import to_array, torch_device
from lnbench.impl import Impl, Numerics, Thunk, add

# torch's own forward computes the statistics; ATen's backward is dx = a·dy·γ + b·x + c in raw x
ATEN_NUMERICS = Numerics(stats="own", formula="raw-x")


def autograd_maker(device: str):
    def make(data) -> Thunk:
        """Seed ``pytorch_layernorm_backward``: nn.LayerNorm forward, then autograd backward.

        ``torch.autograd.grad(..., retain_graph=True)`` returns fresh gradients each call (no
        accumulation into .grad), so the thunk can be timed repeatedly.
        """
        import torch

        x = to_array(data.x, "torch", device).requires_grad_(True)
        M, N = x.shape
        ln = torch.nn.LayerNorm(N, eps=data.eps, device=device, dtype=x.dtype)
        with torch.no_grad():
            ln.weight.copy_(to_array(data.gamma, "torch", device))
            ln.bias.copy_(to_array(data.beta, "torch", device))
        y = ln(x)
        dy = to_array(data.dy, "torch", device)
        params = (x, ln.weight, ln.bias)
        return lambda: torch.autograd.grad(y, params, dy, retain_graph=True)

    return make


def native_maker(device: str):
    def make(data) -> Thunk:
        """``aten.native_layer_norm_backward`` from the mean/rstd torch's own forward saves
        (input dtype on the CPU, float32 for 16-bit inputs on CUDA)."""
        import torch

        x = to_array(data.x, "torch", device)
        N = x.shape[1]
        w = to_array(data.gamma, "torch", device)
        b = to_array(data.beta, "torch", device)
        _, mean, rstd = torch.ops.aten.native_layer_norm(x, [N], w, b, data.eps)
        dy = to_array(data.dy, "torch", device)
        op = torch.ops.aten.native_layer_norm_backward
        mask = [True, True, True]
        return lambda: op(dy, x, [N], mean, rstd, w, b, mask)

    return make


_dev = torch_device()
add(
    Impl(
        name="torch.autograd",
        make=autograd_maker(_dev),
        kind="vendor",
        array="torch",
        device=_dev,
        saved="autograd-graph",
        numerics=ATEN_NUMERICS,
        requires=("torch",),
        doc="seed pytorch_layernorm_backward: nn.LayerNorm forward + autograd backward",
    )
)
add(
    Impl(
        name="torch.native",
        make=native_maker(_dev),
        kind="vendor",
        array="torch",
        device=_dev,
        saved="mean-rstd",
        numerics=ATEN_NUMERICS,
        requires=("torch",),
        doc="torch.ops.aten.native_layer_norm_backward from torch's saved mean/rstd",
    )
)
