"""What one LayerNorm-backward implementation is: :class:`Impl` (a *maker* plus what it declares
about itself), :class:`Numerics` (the formula/statistics style the judge leaves room for) and the
table the built-ins :func:`add` themselves to.

This module sits below both ``lnbench.impls`` (whose modules import :class:`Impl` and :func:`add`
from here) and ``lnbench.registry`` (which loads ``lnbench.impls`` on first lookup and answers
lookups over the table), so the two import downwards only. The names are re-exported by
``lnbench.registry``, where users and plugins find them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lnbench.dtypes import DTYPES

if TYPE_CHECKING:
    from lnbench.grid import Case, CaseData

Thunk = Callable[[], tuple[Any, Any, Any]]
Maker = Callable[["CaseData"], Thunk]

STATS_STYLES = {
    "saved": "uses the mean and rstd it is given (the exact ones, rounded once to their dtype)",
    "own": "computes its own row mean and variance (pairwise, blocked or Welford sums)",
    "any": "not declared: judged with room for either",
}
FORMULA_STYLES = {
    "centered": "works with x − μ (or x̂ = (x − μ)·rstd) formed once per element",
    "raw-x": "carries raw x and μ in separate terms (ATen's a·dy·γ + b·x + c, caffe2's test)",
    "any": "not declared: judged with room for either",
}
ACC_STYLES = {
    "auto": "accumulates in float32 for 16-bit and float32 inputs, float64 for float64",
    "float64": "computes and accumulates in float64 whatever the input dtype",
}


@dataclass(frozen=True)
class Numerics:
    """What an implementation declares it computes; the judge's error bounds leave room for the
    declared style only (lnbench/bounds.py). The default declares nothing: room for every style,
    so a correct implementation of any style passes."""

    stats: str = "any"  # STATS_STYLES
    formula: str = "any"  # FORMULA_STYLES
    acc: str = "auto"  # ACC_STYLES

    def __post_init__(self) -> None:
        for key, allowed in (("stats", STATS_STYLES), ("formula", FORMULA_STYLES),
                             ("acc", ACC_STYLES)):
            v = getattr(self, key)
            if v not in allowed:
                raise ValueError(f"numerics {key}={v!r}; choose from {', '.join(allowed)}")

    def describe(self) -> dict[str, str]:
        return {"stats": self.stats, "formula": self.formula, "acc": self.acc}


ANY = Numerics()
SAVED_CENTERED = Numerics(stats="saved", formula="centered")
OWN_CENTERED = Numerics(stats="own", formula="centered")

SAVED = {
    "seed-cache": "the seed forward's cache (x, x−μ, sqrt(var+eps), μ, x̂, γ)",
    "mean-rstd": "x plus per-row mean and rstd",
    "autograd-graph": "the autograd graph of a torch forward",
}


@dataclass(frozen=True)
class Impl:
    """One implementation and what it declares about itself."""

    name: str
    make: Maker = field(repr=False, compare=False)
    family: str = ""
    kind: str = "custom"  # seed | vendor | compiled | custom | peer | plugin
    array: str = "numpy"  # numpy | torch | cupy
    device: str = "cpu"  # cpu | cuda
    dtypes: tuple[str, ...] = DTYPES
    affine: bool = True
    saved: str = "mean-rstd"
    numerics: Numerics = ANY  # the formula/statistics style it declares (judge's room)
    requires: tuple[str, ...] = ()  # modules that must be importable
    probe: Callable[[], str | None] | None = field(default=None, repr=False, compare=False)
    doc: str = ""
    # Optional launch-plan sweep (lnbench gpu-check --sweep): sweep(data) yields
    # (label, params, build) for each launch variant; build() returns a warmed-up thunk.
    sweep: Callable[[Any], Any] | None = field(default=None, repr=False, compare=False)

    def unavailable(self) -> str | None:
        """Why this implementation cannot run on this machine, or None (asked once)."""
        if self.name not in _UNAVAILABLE:
            _UNAVAILABLE[self.name] = self._probe_unavailable()
        return _UNAVAILABLE[self.name]

    def _probe_unavailable(self) -> str | None:
        from lnbench.arrays import unavailable

        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is not installed"
        why = unavailable(self.array, self.device)
        if why is None and self.probe is not None:
            try:
                why = self.probe()
            except Exception as e:  # a probe must never take the harness down
                why = f"{type(e).__name__}: {e}"
        return why

    def unsupported(self, case: Case) -> str | None:
        """Why this implementation does not take ``case``, or None."""
        if case.dtype not in self.dtypes:
            return f"{self.name} does not support {case.dtype} (declares {', '.join(self.dtypes)})"
        return None

    def describe(self) -> dict[str, Any]:
        """The ``lnbench list --json`` record (docs/interface.md) plus kind/saved/doc."""
        why = self.unavailable()
        return {
            "name": self.name,
            "family": self.family,
            "array": self.array,
            "device": self.device,
            "dtypes": list(self.dtypes),
            "affine": self.affine,
            "available": why is None,
            "reason": why or "",
            "kind": self.kind,
            "saved": self.saved,
            "numerics": self.numerics.describe(),
            "doc": self.doc,
        }


_REGISTRY: dict[str, Impl] = {}
_UNAVAILABLE: dict[str, str | None] = {}


def add(impl: Impl) -> Impl:
    """Register a fully specified implementation (built-ins use this)."""
    if not impl.family:
        object.__setattr__(impl, "family", impl.name.split(".", 1)[0])
    _REGISTRY[impl.name] = impl
    _UNAVAILABLE.pop(impl.name, None)
    return impl
