"""Dtype names, their NumPy types and the rounding facts the judge relies on."""

from __future__ import annotations

import ml_dtypes
import numpy as np

DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
HALF: frozenset[str] = frozenset({"float16", "bfloat16"})

_NP = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}

# Unit roundoff u = 2**-p for a p-bit significand (incl. the implicit bit).
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def np_dtype(name: str) -> np.dtype:
    """NumPy dtype for a dtype name (bfloat16 is ``ml_dtypes.bfloat16``)."""
    try:
        return _NP[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}") from None


def dtype_name(dt: object) -> str:
    """Name of a NumPy / torch / CuPy dtype, e.g. ``torch.bfloat16`` -> ``'bfloat16'``."""
    s = str(dt).replace("torch.", "")
    if s in _NP:
        return s
    try:
        return np.dtype(dt).name  # type: ignore[arg-type]
    except TypeError:
        return s


def stats_dtype(name: str) -> str:
    """Saved mean/rstd dtype: float32 for 16-bit inputs, else the input dtype (interface)."""
    return "float32" if name in HALF else name


def compute_dtype(name: str) -> str:
    """Accumulation dtype a sound kernel uses: float32 for 16-bit inputs, else the input dtype."""
    return stats_dtype(name)
