"""The one registry of LayerNorm-backward implementations: lookups by id and glob
(:func:`registry`, :func:`get`, :func:`resolve`) and the plugin API (:func:`register`).

An implementation is a *maker*: given a case's data it prepares everything a forward would have
saved (outside any timing) and returns a zero-argument thunk that runs only the backward and
returns ``(dx, dgamma, dbeta)`` — the pattern of tritonbench's registered backends. Plugins use
the docs/interface.md signature ``fn(dy, x, gamma, mean, rstd, eps)`` and are wrapped into a maker.

What an implementation *is* (:class:`Impl`, :class:`Numerics`, :func:`add` and the table) lives
one level down in ``lnbench.impl``, which the built-ins in ``lnbench.impls`` import; this module
imports both (the built-ins lazily, on the first lookup) and re-exports those names, so imports
go down only.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lnbench.dtypes import DTYPES
from lnbench.impl import (  # noqa: F401  (re-exported: lnbench.registry is where users find them)
    _REGISTRY,
    _UNAVAILABLE,
    ACC_STYLES,
    ANY,
    FORMULA_STYLES,
    OWN_CENTERED,
    SAVED,
    SAVED_CENTERED,
    STATS_STYLES,
    Impl,
    Maker,
    Numerics,
    Thunk,
    add,
)

if TYPE_CHECKING:
    from lnbench.grid import CaseData

_BUILTINS_LOADED = False


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
