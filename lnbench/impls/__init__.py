"""Built-in implementations. Each module registers on import and imports its heavy library lazily,
so an implementation whose package or device is missing is still listed, with the reason."""

from lnbench.impls import seed, torch_impls  # noqa: F401

for _mod in ("numba_fused", "torch_compile", "cupy_fused", "triton_fused", "peers"):
    try:
        __import__(f"lnbench.impls.{_mod}")
    except ModuleNotFoundError as _e:  # a module not written yet, not a missing package
        if _e.name != f"lnbench.impls.{_mod}":
            raise
