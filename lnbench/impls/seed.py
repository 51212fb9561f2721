"""The seed formulations as implementations on NumPy, CuPy and torch.

The seed's forward (its cache tuple) runs in the maker, outside timing. 16-bit inputs are upcast
to float32 for the computation, as every production kernel does; the timed thunk includes the
upcast of dy and the downcast of the outputs to the input dtype.
"""

from __future__ import annotations

from typing import Any

from lnbench.arrays import to_array, torch_device
from lnbench.dtypes import DTYPES, compute_dtype
from lnbench.formulas import AFFINE, FORMULAS, seed_forward
from lnbench.impl import OWN_CENTERED, Impl, Numerics, Thunk, add

SEED_NAMES = {
    "caffe2": "seed layernorm_nogamma_beta_backward (caffe2, no affine: dx only)",
    "rocking": "seed rocking_layernorm_backward",
    "c9": "seed c9_layernorm_backward",
    "cs231n": "seed cs231n_layernorm_backward (dtype-preserving ones)",
    "kevin": "seed kevin_layernorm_backward",
}
# What each formulation computes (lnbench.judge's room): every one takes the mean and variance of
# seed_forward (its own xp.mean/xp.var); caffe2's formula carries raw x and μ in separate terms,
# the others work with x − μ and x̂.
SEED_NUMERICS = {v: Numerics(stats="own", formula="raw-x" if v == "caffe2" else "centered")
                 for v in SEED_NAMES}


def namespace(array: str) -> Any:
    if array == "numpy":
        import array_api_compat.numpy as xp
    elif array == "torch":
        import array_api_compat.torch as xp
    elif array == "cupy":
        import array_api_compat.cupy as xp
    else:
        raise ValueError(array)
    return xp


def _xp_dtype(xp: Any, name: str) -> Any:
    return getattr(xp, name)


def seed_maker(variant: str, array: str, device: str):
    formula, affine = FORMULAS[variant], AFFINE[variant]

    def make(data) -> Thunk:
        xp = namespace(array)
        cdt = _xp_dtype(xp, compute_dtype(data.case.dtype))
        x = to_array(data.x, array, device)
        out_dt = x.dtype
        up = out_dt != cdt
        gamma = xp.astype(to_array(data.gamma_for(affine), array, device), cdt)
        beta = xp.astype(to_array(data.beta, array, device), cdt)
        xc = xp.astype(x, cdt) if up else x
        _, cache = seed_forward(xp, xc, gamma, beta, data.eps)
        dy = to_array(data.dy, array, device)

        def call():
            out = formula(xp, xp.astype(dy, cdt) if up else dy, cache)
            outs = out if isinstance(out, tuple) else (out, None, None)
            if up:
                outs = tuple(None if o is None else xp.astype(o, out_dt) for o in outs)
            return outs

        return call

    return make


# CuPy has no bfloat16 dtype; its seed variants take the other three.
_DTYPES = {"numpy": DTYPES, "torch": DTYPES, "cupy": ("float64", "float32", "float16")}

for _v, _doc in SEED_NAMES.items():
    for _array, _device in (("numpy", "cpu"), ("cupy", "cuda")):
        add(
            Impl(
                name=f"{_array}.{_v}",
                make=seed_maker(_v, _array, _device),
                kind="seed",
                array=_array,
                device=_device,
                dtypes=_DTYPES[_array],
                affine=AFFINE[_v],
                saved="seed-cache",
                numerics=SEED_NUMERICS[_v],
                requires=("array_api_compat",),
                doc=_doc + f" on {'NumPy' if _array == 'numpy' else 'CuPy'}",
            )
        )

# The "torch eager formula" peer (docs/peers.md): seed's kevin formula on torch tensors, the same
# code as numpy.kevin, on the torch device of this machine (CUDA when torch sees a GPU).
add(
    Impl(
        name="torch.kevin",
        make=seed_maker("kevin", "torch", torch_device()),
        kind="seed",
        array="torch",
        device=torch_device(),
        affine=True,
        saved="seed-cache",
        numerics=OWN_CENTERED,
        requires=("array_api_compat",),
        doc="seed kevin_layernorm_backward on torch eager tensors",
    )
)
