"""The one registry of LayerNorm-backward implementations.

An implementation is a *maker*: given a case's data it prepares everything a forward would have
saved (outside any timing) and returns a zero-argument thunk that runs only the backward and
returns ``(dx, dgamma, dbeta)`` — the pattern of tritonbench's registered backends. Plugins use
the docs/interface.md signature ``fn(dy, x, gamma, mean, rstd, eps)`` and are wrapped into a maker.
"""

from __future__ import annotations

import fnmatch
import importlib.util
from collections.abc import Callable, Iterable, Sequence
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
    declared style only (lnbench/judge.py). The default declares nothing: room for every style,
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
_BUILTINS_LOADED = False


def add(impl: Impl) -> Impl:
    """Register a fully specified implementation (built-ins use this)."""
    if not impl.family:
        object.__setattr__(impl, "family", impl.name.split(".", 1)[0])
    _REGISTRY[impl.name] = impl
    _UNAVAILABLE.pop(impl.name, None)
    return impl


def register(
    name: str,
    fn: Callable[..., Any],
    *,
    array: str = "numpy",
    device: str = "cpu",
    dtypes: Sequence[str] = DTYPES,
    affine: bool = True,
    stats: str = "any",
    formula: str = "any",
    acc: str = "auto",
) -> Impl:
    """Plugin API (interface): ``fn(dy, x, gamma, mean, rstd, eps) -> (dx, dgamma, dbeta)``.

    ``stats``, ``formula``, ``acc``: the style the plugin declares (:class:`Numerics`,
    docs/plugins.md); undeclared ("any", "any", "auto") it is judged with room for every style.
    """
    from lnbench.arrays import ARRAYS, DEVICES

    if not isinstance(name, str) or not name:
        raise ValueError(f"plugin name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"plugin {name!r}: fn is not callable")
    if array not in ARRAYS:
        raise ValueError(f"plugin {name!r}: array must be one of {ARRAYS}, got {array!r}")
    if device not in DEVICES:
        raise ValueError(f"plugin {name!r}: device must be one of {DEVICES}, got {device!r}")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise ValueError(f"plugin {name!r}: unknown dtype(s) {bad}; choose from {DTYPES}")
    try:
        numerics = Numerics(stats=stats, formula=formula, acc=acc)
    except ValueError as e:
        raise ValueError(f"plugin {name!r}: {e}") from None
    _load_builtins()  # a plugin may not take a built-in's id (the built-in would win silently)
    if name in _REGISTRY and _REGISTRY[name].kind != "plugin":
        raise ValueError(f"plugin {name!r}: a built-in implementation has this id; "
                         "choose another name")
    return add(
        Impl(
            name=name,
            make=contract_maker(fn, array, device, affine),
            family=name.split(".", 1)[0] if "." in name else "plugin",
            kind="plugin",
            array=array,
            device=device,
            dtypes=tuple(dtypes),
            affine=affine,
            saved="mean-rstd",
            numerics=numerics,
            doc=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
        )
    )


def contract_maker(fn: Callable[..., Any], array: str, device: str, affine: bool) -> Maker:
    """Wrap a docs/interface.md-signature function into a maker (inputs moved before timing)."""
    from lnbench.arrays import to_array

    def make(data: CaseData) -> Thunk:
        dy, x = to_array(data.dy, array, device), to_array(data.x, array, device)
        gamma = to_array(data.gamma_for(affine), array, device)
        mean, rstd = to_array(data.mean, array, device), to_array(data.rstd, array, device)
        eps = data.eps
        return lambda: as_triple(fn(dy, x, gamma, mean, rstd, eps))

    return make


def as_triple(out: Any) -> tuple[Any, Any, Any]:
    """Normalise an implementation's return value to (dx, dgamma, dbeta)."""
    if isinstance(out, tuple | list):
        if len(out) == 3:
            return out[0], out[1], out[2]
        if len(out) == 1:
            return out[0], None, None
        raise TypeError(f"returned {len(out)} values, expected (dx, dgamma, dbeta)")
    return out, None, None


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        import lnbench.impls  # noqa: F401  (registers on import)


def registry() -> dict[str, Impl]:
    """All registered implementations by name (built-ins plus loaded plugins)."""
    _load_builtins()
    return dict(_REGISTRY)


def get(name: str) -> Impl:
    """The implementation called ``name``; KeyError naming it and the known ids otherwise."""
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown implementation {name!r}; `lnbench list` shows the known ids")
    return reg[name]


def resolve(patterns: Iterable[str] | None) -> list[Impl]:
    """Implementations matching any of the glob ``patterns`` (all when none are given).

    A pattern that matches nothing raises KeyError naming it.
    """
    reg = registry()
    pats = list(patterns or [])
    if not pats:
        return list(reg.values())
    chosen: dict[str, Impl] = {}
    for p in pats:
        hits = [n for n in reg if fnmatch.fnmatchcase(n, p)]
        if not hits:
            raise KeyError(f"unknown implementation {p!r}; `lnbench list` shows the known ids")
        for n in hits:
            chosen[n] = reg[n]
    return list(chosen.values())
