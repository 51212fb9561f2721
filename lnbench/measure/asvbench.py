"""The logic behind the asv suite in benchmarks/ (which stays a thin list of metrics).

Parameters come from lnbench's one grid (``LNBENCH_GRID`` = quick | full | anchors) and registry
(plus ``LNBENCH_PLUGINS``). Unavailable implementations stay in the parameters (so machines share
one benchmark layout) and are skipped in ``setup`` with NotImplementedError(reason), which asv
records as skipped — never as a number.

``Metrics.setup_cache`` measures every point once with ``lnbench.measure.run`` (the code behind
``lnbench run``) and each ``track_*`` reads its number; asv's own ``time_``/``peakmem_`` time
the same thunk with asv's timer (CUDA calls are synchronised so the host timer is valid).
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

from lnbench.grid import DISTS, GRIDS, Case, grid_name, make_data, parse_shape, shape_str
from lnbench.measure import heap

# before any case allocates or any worker thread starts: asv's forkserver (asv.conf.json's
# launch_method) imports the suite once and forks every benchmark from it, so each benchmark
# process inherits this; with asv's default, spawn, each process imports the suite and applies it
heap.steady()


def _key(*parts: str) -> str:
    return "|".join(parts)


@cache
def _load_plugins() -> tuple[str, ...]:
    """Load $LNBENCH_PLUGINS; a file that fails to load is said on stderr (asv shows it with
    --show-stderr and in its log) and left out, and the rest of the suite runs."""
    from lnbench.plugins import load_env

    errors = tuple(load_env())
    listed = os.environ.get("LNBENCH_PLUGINS", "").split(":")
    rel = [p for p in listed if p and not os.path.isabs(p)]
    for e in errors:
        hint = (" (asv runs benchmarks in a temporary folder: give plugins as absolute paths, "
                "e.g. LNBENCH_PLUGINS=$PWD/FILE.py; scripts/nightly does this)") if rel else ""
        print(f"lnbench: LNBENCH_PLUGINS: {e}{hint}", file=sys.stderr)
    return errors


def _check_env() -> None:
    """The suite's environment variables, refused with ValueError naming the variable (asv shows
    it when it collects the benchmarks) rather than silently giving another suite."""
    forced = os.environ.get("LNBENCH_TORCH_DEVICE")
    if forced is not None and forced not in ("cpu", "cuda"):
        raise ValueError(f"LNBENCH_TORCH_DEVICE={forced!r}: must be cpu or cuda")


def impl_names() -> list[str]:
    from lnbench.registry import registry

    _load_plugins()
    only = os.environ.get("LNBENCH_IMPLS")  # optional comma-separated globs, e.g. for CI
    _check_env()
    impls = list(registry().values())
    if only:
        import fnmatch

        pats = [p.strip() for p in only.split(",") if p.strip()]
        for p in pats:
            if not any(fnmatch.fnmatchcase(i.name, p) for i in impls):
                raise ValueError(f"LNBENCH_IMPLS: {p!r} matches no implementation "
                                 "(`lnbench list` shows the ids; a plugin that failed to load "
                                 "is named above)")
        impls = [i for i in impls if any(fnmatch.fnmatchcase(i.name, p) for p in pats)]
    return [i.name for i in impls]


def shapes() -> list[str]:
    return [shape_str(M, N) for M, N in GRIDS[grid_name()]]


def dtypes() -> list[str]:
    from lnbench.dtypes import DTYPES

    only = os.environ.get("LNBENCH_DTYPES")
    if not only:
        return list(DTYPES)
    want = [d.strip() for d in only.split(",") if d.strip()]
    bad = [d for d in want if d not in DTYPES]
    if bad or not want:
        raise ValueError(f"LNBENCH_DTYPES={only!r}: {', '.join(bad) or 'empty'}; choose from "
                         f"{', '.join(DTYPES)}")
    return [d for d in DTYPES if d in want]


def backward_params() -> list[list[str]]:
    return [impl_names(), shapes(), dtypes()]


def accuracy_params() -> list[list[str]]:
    return [impl_names(), shapes(), dtypes(), list(DISTS)]


class Point:
    """One (impl, shape, dtype[, dist]) point with its prepared thunk, for asv's own timers."""

    def __init__(self, impl: str, shape: str, dtype: str, dist: str = "normal") -> None:
        from lnbench.registry import get

        _load_plugins()
        self.impl = get(impl)
        M, N = parse_shape(shape)
        case = Case(M, N, dtype, dist)
        why = self.impl.unavailable() or self.impl.unsupported(case)
        if why:
            raise NotImplementedError(why)
        if self.impl.kind == "compiled" and grid_name() == "quick":
            # asv runs each point in a fresh process, so each would compile again (~3 s with a
            # warm Inductor cache); the quick grid times it once in Metrics.track_seconds.
            raise NotImplementedError("asv-timed on the full grid only (compiles per process)")
        self.thunk = self.impl.make(make_data(case))
        self.call()  # warm-up outside asv's timing (first-touch, lazy init)

    def call(self) -> Any:
        from lnbench.measure.timing import call_synchronized

        return call_synchronized(self.thunk, self.impl.device)


def measure_all(bench_file: str | None = None) -> dict[str, dict[str, Any]]:
    """Measure every Backward point once (lnbench.measure.run) and write the machine facts."""
    from lnbench.measure.run import measure
    from lnbench.registry import get

    _load_plugins()
    _write_facts(bench_file)
    out: dict[str, dict[str, Any]] = {}
    names, shs, dts = backward_params()
    for sh in shs:
        M, N = parse_shape(sh)
        for dt in dts:
            data = make_data(Case(M, N, dt))
            for name in names:
                out[_key(name, sh, dt)] = measure(get(name), data).to_dict()
    return out


def check_all() -> dict[str, dict[str, Any]]:
    """rel_err of dx, dγ, dβ for every Accuracy point (lnbench.judge)."""
    from lnbench.judge import check_impl
    from lnbench.registry import get

    _load_plugins()
    out: dict[str, dict[str, Any]] = {}
    names, shs, dts, dists = accuracy_params()
    for sh in shs:
        M, N = parse_shape(sh)
        for dt in dts:
            for di in dists:
                data = make_data(Case(M, N, dt, di))
                for name in names:
                    rows = check_impl(get(name), data)
                    out[_key(name, sh, dt, di)] = {
                        "status": rows[0].status if rows[0].status == "skipped" else "ok",
                        "reason": rows[0].reason,
                        **{f"rel_err_{r.grad}": r.rel_err for r in rows},
                        "error": next((r.reason for r in rows if r.status == "error"), ""),
                    }
    return out


def lookup(cache_: dict[str, dict[str, Any]], *params: str) -> dict[str, Any]:
    """The stored record for a point; NotImplementedError(reason) when it has no number."""
    rec = cache_.get(_key(*params))
    if rec is None:
        raise NotImplementedError(f"no measurement for {params}")
    if rec.get("status") == "skipped":
        raise NotImplementedError(rec.get("reason") or "skipped")
    if rec.get("status") == "error" or rec.get("error"):
        raise RuntimeError(rec.get("reason") or rec.get("error"))
    return rec


def value(rec: dict[str, Any], key: str) -> float:
    v = rec.get(key)
    if v is None:
        return float("nan")  # asv stores NaN as a failed value, never a made-up number
    return float(v)


def asv_results_dir(bench_file: str | None = None) -> Path | None:
    """The ``results_dir`` of the asv run this process belongs to, or None when none is found.

    asv changes into the folder of the config it reads (``--config``, default asv.conf.json or
    .jsonc) and resolves ``results_dir`` against it; benchmarks run in a temporary folder, and
    ``ASV_CONF_DIR`` is set only in environments asv builds (not with ``--python=same``). So the
    first ``asv`` process among this process's ancestors (psutil) names the config: its working
    folder and ``--config``'s file name. Without one: ``ASV_CONF_DIR``, else the folder above
    the benchmarks if it holds asv.conf.json.
    """
    conf = _asv_ancestor_config()
    if conf is None:
        folder = os.environ.get("ASV_CONF_DIR")
        if not folder and bench_file:
            folder = str(Path(bench_file).resolve().parent.parent)
        if not folder:
            return None
        conf = next((c for c in (Path(folder) / "asv.conf.json", Path(folder) / "asv.conf.jsonc")
                     if c.is_file()), None)
        if conf is None:
            return None
    from asv.util import load_json

    try:
        cfg = load_json(str(conf), js_comments=True)
    except Exception:  # asv raises its UserError for bad JSON; facts are a courtesy, not a must
        return None
    return conf.parent / str(cfg.get("results_dir") or "results")


def _asv_argv(args: list[str]) -> list[str] | None:
    """asv's own arguments when ``args`` (a command line) runs asv, else None.

    ``asv …`` (the entry point), ``python …/asv …`` (the entry point run by an interpreter) and
    ``python -m asv …``; not a command that merely has an argument named asv (``tox -e asv``).
    """
    if not args:
        return None
    if Path(args[0]).name in ("asv", "asv.exe"):
        return args[1:]
    if not Path(args[0]).name.lower().startswith("python"):
        return None
    if len(args) > 1 and Path(args[1]).name in ("asv", "asv-script.py"):
        return args[2:]
    for i, a in enumerate(args[1:-1], start=1):
        if a == "-m" and args[i + 1] == "asv":
            return args[i + 2:]
    return None


def _asv_ancestor_config() -> Path | None:
    """The config file of the nearest ancestor process that runs asv (see asv_results_dir)."""
    import psutil

    try:
        for proc in psutil.Process().parents():
            argv = _asv_argv(proc.cmdline())
            if argv is None:
                continue
            try:  # asv's own parser: it accepts --config, --config=X and prefixes like --conf
                from asv.commands import make_argparser

                config = make_argparser()[0].parse_known_args(argv)[0].config
            except (SystemExit, Exception):  # noqa: BLE001 - an argv asv itself would refuse
                config = None
            folder = Path(proc.cwd())  # asv has changed into the config's folder
            names = [Path(config).name] if config else ["asv.conf.json", "asv.conf.jsonc"]
            return next((folder / n for n in names if (folder / n).is_file()), None)
    except (psutil.Error, OSError):
        return None
    return None


def _write_facts(bench_file: str | None = None) -> None:
    """Store machine facts in the running asv's results folder (see :func:`asv_results_dir`)."""
    results = asv_results_dir(bench_file)
    if results is None:
        return
    from lnbench.measure.machine import write_facts

    try:
        write_facts(results)
    except (OSError, ValueError):
        pass
