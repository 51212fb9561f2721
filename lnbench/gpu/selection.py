"""Which implementations the GPU check measures, in which order, and the fresh-process probe
that checks the selection before any device work.

Measured: every CUDA implementation (built-ins and loaded plugins; ``--impl`` globs narrow it),
ours first, then the peers they must beat, then the seeds; ``torch.compile`` (slow to compile)
last among its tier. Passes go over the whole grid tier by tier (:data:`TIERS`), so that when
the budget runs out what is lost is the least needed: first ours and the peers the bar compares
them with (liger, apex, torch native), then torch.compile (a real contender, 31-54 % of copy in
docs/peers.md, but it compiles per dtype and shape), then the seed formulas (3-7 % of copy
there: never the best peer, but measured).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from typing import Any

from lnbench.gpu.preflight import PROBE_MARK

ORDER = ("cupy.fused", "triton.fused", "liger", "apex", "torch.native", "torch.kevin", "cupy.*",
         "torch.compile")
TIERS = (("custom", "plugin", "peer", "vendor"), ("compiled",), ("seed",))
SKIP_BY_DEFAULT = ("torch.autograd",)  # torch.native's kernel plus autograd bookkeeping


def choose_impls(patterns: list[str]) -> list[Any]:
    """The CUDA implementations to measure: built-ins and loaded plugins, ours first."""
    from lnbench.registry import registry

    reg = registry()
    names = [n for n, i in reg.items() if i.device == "cuda"]
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    else:
        names = [n for n in names if n not in SKIP_BY_DEFAULT]

    def rank(n: str) -> int:
        return next((k for k, p in enumerate(ORDER) if fnmatch.fnmatchcase(n, p)), len(ORDER))

    return [reg[n] for n in sorted(names, key=lambda n: (rank(n), n))]


def tier(impl: Any) -> int:
    return next((k for k, kinds in enumerate(TIERS) if impl.kind in kinds), len(TIERS) - 1)


def probe_main(args: argparse.Namespace) -> int:
    """--probe, in a fresh process (as the workers will be): lnbench and its implementations
    import, the --plugin files load, every --shape parses and every --impl glob matches; one
    line ``PROBE_MARK {"imported": true}`` after the imports, then one with the selection, or
    with "usage" (one line naming the argument) when an argument is wrong. An import failure is
    a traceback (its last line names the missing module) and no mark."""
    import lnbench.grid
    import lnbench.judge
    import lnbench.measure.cuda  # noqa: F401
    from lnbench.registry import registry, resolve

    builtin = set(registry())
    print(PROBE_MARK + json.dumps({"imported": True}), flush=True)

    def answer(**kw: Any) -> int:
        print(PROBE_MARK + json.dumps({"usage": None, "selected": [], "not_cuda": []} | kw),
              flush=True)
        return 0

    for s in args.shape or []:
        try:
            lnbench.grid.parse_shape(s)
        except ValueError as e:
            return answer(usage=f"--shape: {e}")
    from lnbench.plugins import PluginError, load, load_env

    for f in args.plugin or []:
        try:
            load(f)
        except PluginError as e:
            return answer(usage=f"--plugin: {e}")
    mine = [n for n in registry() if n not in builtin]  # what the --plugin files registered
    load_env()  # LNBENCH_PLUGINS as the worker loads it (the worker reports its errors)
    reg = registry()
    matched: list[str] = []
    for pat in args.impl or []:
        try:
            matched += [i.name for i in resolve([pat])]
        except KeyError as e:
            return answer(usage=f"--impl: {e.args[0]}")
    not_cuda = [n for n in dict.fromkeys(matched if args.impl else mine)
                if reg[n].device != "cuda"]
    return answer(selected=[i.name for i in choose_impls(args.impl or [])], not_cuda=not_cuda)
