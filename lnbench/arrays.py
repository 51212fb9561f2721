"""Moving case arrays between NumPy, torch and CuPy, and knowing what is available here."""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import ml_dtypes
import numpy as np

ARRAYS = ("numpy", "torch", "cupy")
DEVICES = ("cpu", "cuda")


@functools.cache
def unavailable(array: str, device: str) -> str | None:
    """Why ``array`` on ``device`` cannot run here, or ``None`` when it can."""
    if array == "numpy":
        return None if device == "cpu" else "NumPy runs on the CPU only"
    if array == "torch":
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed"
        if device == "cpu":
            return None
        import torch

        if not torch.cuda.is_available():
            return "torch: no CUDA device (torch.cuda.is_available() is False)"
        return None
    if array == "cupy":
        if device != "cuda":
            return "CuPy runs on CUDA devices only"
        if importlib.util.find_spec("cupy") is None:
            return "cupy is not installed"
        try:
            import cupy

            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDA driver missing, no device, ...
            return f"CuPy cannot reach a CUDA device: {type(e).__name__}: {_first_line(e)}"
        if n < 1:
            return "CuPy: no CUDA device"
        return None
    return f"unknown array library {array!r}"


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else ""


def to_array(a: np.ndarray, array: str, device: str = "cpu") -> Any:
    """A fresh copy of NumPy array ``a`` in ``array`` on ``device`` (bfloat16 kept bit-exact)."""
    if array == "numpy":
        return np.array(a, copy=True)
    if array == "torch":
        import torch

        if a.dtype == ml_dtypes.bfloat16:
            bits = np.ascontiguousarray(a).view(np.uint16).copy()
            t = torch.from_numpy(bits).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.array(a, copy=True))
        return t.to(device) if device != "cpu" else t
    if array == "cupy":
        import cupy

        if a.dtype == ml_dtypes.bfloat16:
            raise TypeError("CuPy has no bfloat16 dtype")
        return cupy.asarray(a)
    raise ValueError(f"unknown array library {array!r}")


def to_numpy(a: Any) -> np.ndarray | None:
    """Any result array as NumPy (bfloat16 as ``ml_dtypes.bfloat16``); None stays None."""
    if a is None or isinstance(a, np.ndarray):
        return a
    mod = type(a).__module__
    if mod.startswith("torch"):
        import torch

        t = a.detach()
        if t.dtype == torch.bfloat16:
            return t.cpu().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.cpu().numpy()
    if mod.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def synchronize(device: str) -> None:
    """Wait for queued device work (no-op on the CPU)."""
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if importlib.util.find_spec("cupy") is not None:
            import cupy

            cupy.cuda.get_current_stream().synchronize()


@functools.cache
def torch_device() -> str:
    """Where the torch implementations run: ``cuda`` when torch sees a GPU, else ``cpu``.

    ``LNBENCH_TORCH_DEVICE=cpu`` forces the CPU on a GPU machine.
    """
    import os

    forced = os.environ.get("LNBENCH_TORCH_DEVICE")
    if forced in DEVICES:
        return forced
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
