"""Launch-plan variants for the sweep of ``lnbench gpu-check --sweep`` (shared by the custom
kernels: ``cupy_fused.variants`` and ``triton_fused.variants``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

P = TypeVar("P")


def one_knob_variants(base: P, tries: Iterable[dict[str, Any]],
                      make: Callable[..., P]) -> list[P]:
    """``base`` first, then ``make(**kw)`` for each override in ``tries`` (one knob moved at a
    time); overrides the kernel cannot take (``make`` raises ValueError) and duplicates are left
    out."""
    out = [base]
    for kw in tries:
        try:
            p = make(**kw)
        except ValueError:
            continue
        if p not in out:
            out.append(p)
    return out
