"""The logic behind the asv suite in benchmarks/ (which stays a thin list of metrics).

Parameters come from lnbench's one grid (``LNBENCH_GRID`` = quick | full | anchors) and registry
(plus ``LNBENCH_PLUGINS``). Unavailable implementations stay in the parameters (so machines share
one benchmark layout) and are skipped in ``setup`` with NotImplementedError(reason), which asv
records as skipped — never as a number.

``Metrics.setup_cache`` measures every point once with ``lnbench.measure.run`` (the code behind
``lnbench run``: a case's implementations interleaved, re-measured under interference) and each
``track_*`` reads its number; asv's own ``time_``/``peakmem_`` time the same thunk with asv's
timer (CUDA calls are synchronised so the host timer is valid). asv stores numbers only, so the
interference of every Metrics point and of every ``time_backward`` point goes to a sidecar file
of the asv run (:func:`write_interference`; format in lnbench.measure.interference, where the
thresholds are derived; docs/measurement.md).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
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
    """One (impl, shape, dtype[, dist]) point with its prepared thunk, for asv's own timers.

    For asv's ``time_backward`` the interference (lnbench.measure.interference) is measured over
    the benchmark's whole run in its process: from the first ``setup`` to the ``teardown`` after
    asv has finished timing (asv re-runs setup and teardown around every sample; each gap from a
    setup's end to the next teardown is one timed call plus asv's own bookkeeping, and their
    spread stands in for that of asv's samples, which a benchmark cannot see). The point is then
    added to the run's sidecar (:func:`write_interference`); asv's number is never re-measured.
    """

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
        self._timed: _AsvTimed | None = None
        bench, _ = _asv_frame()
        if bench and bench.endswith(".time_backward"):
            key = (impl, shape, dtype)
            if key not in _TIMED:
                from lnbench.measure.interference import Window

                _TIMED[key] = _AsvTimed(bench, key, Window().start())
            self._timed = _TIMED[key]
        self.thunk = self.impl.make(make_data(case))
        self.call()  # warm-up outside asv's timing (first-touch, lazy init)
        self._ready = time.perf_counter()

    def call(self) -> Any:
        from lnbench.measure.timing import call_synchronized

        return call_synchronized(self.thunk, self.impl.device)

    def teardown(self) -> None:
        """asv's teardown: note the gap; after asv's last sample, write the interference."""
        t = self._timed
        if t is None:
            return
        t.gaps.append(time.perf_counter() - self._ready)
        if _asv_frame()[1]:  # asv is still timing: another setup and sample follow
            return
        _TIMED.pop(t.key, None)
        from lnbench.measure.interference import sidecar_point, spread_of

        reading = t.window.stop()
        spread = spread_of(t.gaps)
        reason = "; ".join(reading.reasons(spread))
        impl, shape, dtype = t.key
        write_interference([sidecar_point(
            t.bench, {"impl": impl, "shape": shape, "dtype": dtype}, reason=reason,
            load=reading.load, steal=reading.steal, copy_before=reading.copy_before,
            copy_after=reading.copy_after, spread=spread)])


@dataclass
class _AsvTimed:
    bench: str
    key: tuple[str, str, str]
    window: Any
    gaps: list[float] = field(default_factory=list)


_TIMED: dict[tuple[str, str, str], _AsvTimed] = {}


def _asv_frame() -> tuple[str | None, bool]:
    """(full name of the asv benchmark whose setup or teardown is running, whether asv is still
    running it: its ``do_run`` is on the stack), from asv_runner's frames; (None, False) outside
    asv."""
    name, running = None, False
    f = sys._getframe(1)
    while f is not None:
        code = f.f_code.co_name
        if name is None and code in ("do_setup", "do_teardown", "redo_setup"):
            name = getattr(f.f_locals.get("self"), "name", None)
        running = running or code == "do_run"
        f = f.f_back
    return (name if isinstance(name, str) else None), running


def teardown(bench: Any) -> None:
    """Backward.teardown: the point of ``bench`` (none when its setup skipped or failed)."""
    p = bench.__dict__.pop("p", None)
    if p is not None:
        p.teardown()


METRICS = ("track_seconds", "track_gbps", "track_pct_copy", "track_workspace_bytes")


def measure_all(bench_file: str | None = None) -> dict[str, dict[str, Any]]:
    """Measure every Backward point once (lnbench.measure.run: the implementations of a case
    interleaved, re-measured under interference), write the machine facts and, in an asv run,
    every measured point's interference to the run's sidecar under each Metrics benchmark."""
    from lnbench.measure.interference import sidecar_point
    from lnbench.measure.run import run
    from lnbench.registry import get

    _load_plugins()
    _write_facts(bench_file)
    names, shs, dts = backward_params()
    cases = [Case(*parse_shape(sh), dt) for sh in shs for dt in dts]
    out: dict[str, dict[str, Any]] = {}
    points: list[dict[str, Any]] = []
    for rec in run([get(n) for n in names], cases):
        r = rec.to_dict()
        sh = shape_str(rec.M, rec.N)
        out[_key(rec.impl, sh, rec.dtype)] = r
        if rec.seconds is None:
            continue
        points += [sidecar_point(f"{_bench_module(bench_file)}.Metrics.{m}",
                                 {"impl": rec.impl, "shape": sh, "dtype": rec.dtype},
                                 reason=rec.noise, load=rec.load, steal=rec.steal,
                                 copy_before=rec.copy_gbps_before,
                                 copy_after=rec.copy_gbps_after, spread=rec.spread)
                   for m in METRICS]
    write_interference(points)
    return out


def _bench_module(bench_file: str | None) -> str:
    return Path(bench_file).stem if bench_file else "bench_backward"


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


def _asv_ancestor() -> tuple[Path, Any] | None:
    """(working folder, parsed arguments) of the nearest ancestor process that runs asv."""
    import psutil

    try:
        for proc in psutil.Process().parents():
            argv = _asv_argv(proc.cmdline())
            if argv is None:
                continue
            try:  # asv's own parser: it accepts --config, --config=X and prefixes like --conf
                from asv.commands import make_argparser

                ns = make_argparser()[0].parse_known_args(argv)[0]
            except (SystemExit, Exception):  # noqa: BLE001 - an argv asv itself would refuse
                ns = None
            return Path(proc.cwd()), ns  # asv has changed into the config's folder
    except (psutil.Error, OSError):
        return None
    return None


def _asv_ancestor_config() -> Path | None:
    """The config file of the nearest ancestor process that runs asv (see asv_results_dir)."""
    found = _asv_ancestor()
    if found is None:
        return None
    folder, ns = found
    config = getattr(ns, "config", None)
    names = [Path(config).name] if config else ["asv.conf.json", "asv.conf.jsonc"]
    return next((folder / n for n in names if (folder / n).is_file()), None)


def asv_machine() -> str:
    """The machine name the running asv stores results under: its ``--machine``, else asv's own
    default (the host name, or the one entry of ~/.asv-machine.json), as ``asv.machine`` picks
    it; outside asv, :func:`lnbench.measure.machine.machine_name`."""
    from lnbench.measure.machine import machine_name

    found = _asv_ancestor()
    if found is None:
        return machine_name()
    name = getattr(found[1], "machine", None)
    try:
        from asv.machine import Machine, MachineCollection

        d = MachineCollection.load(name or Machine.get_unique_machine_name())
        return str(d.get("machine") or name or machine_name())
    except Exception:  # noqa: BLE001 - asv's UserError: nothing stored about that machine
        return name or machine_name()


@cache
def asv_run() -> dict[str, Any] | None:
    """Where this asv run stores results: ``results_dir``, ``machine``, ``commit`` (full hash)
    and ``env`` (asv's environment name), or None outside an asv run that saves results.

    asv 0.6 gives its ``ASV_*`` variables (ASV_COMMIT, ASV_ENV_NAME, ...) to build and install
    commands only, not to benchmark processes (asv/environment.py, asv/runner.py); they are used
    when present, else: the environment is the one of the running asv's environments
    (``asv.environment.get_environments`` over its config and ``--python``/``-E``) whose folder
    is this interpreter's prefix (built environments: ``<env_dir>/<md5 of the name>``) or whose
    interpreter this is (``--python=same``); the commit is the one asv installed there
    (``asv-install-status.json``) or, in an existing environment, the running asv's
    ``--set-commit-hash`` (resolved with git in the config's folder; without it asv saves no
    results)."""
    results = asv_results_dir()
    found = _asv_ancestor()
    if results is None:
        return None
    env = os.environ.get("ASV_ENV_NAME") or _asv_env_name(found)
    commit = os.environ.get("ASV_COMMIT") or _installed_commit() or _set_commit_hash(found)
    if not env or not commit:
        return None
    return {"results_dir": results, "machine": asv_machine(), "commit": commit, "env": env}


def _asv_env_name(found: tuple[Path, Any] | None) -> str | None:
    conf = _asv_ancestor_config()
    if found is None or conf is None:
        return None
    try:
        from asv import environment
        from asv.config import Config

        here = os.path.realpath(sys.executable)
        cwd = os.getcwd()
        os.chdir(found[0])  # asv resolves env_dir against its config's folder
        try:
            envs = list(environment.get_environments(Config.load(str(conf)),
                                                     getattr(found[1], "env_spec", None) or []))
        finally:
            os.chdir(cwd)
        for e in envs:
            if isinstance(e, environment.ExistingEnvironment):
                if os.path.realpath(getattr(e, "_executable", "")) == here:
                    return str(e.name)
            elif e.hashname == Path(sys.prefix).name:
                return str(e.name)
    except Exception:  # noqa: BLE001 - asv's UserError, a config asv would refuse: no sidecar
        return None
    return None


def _installed_commit() -> str | None:
    import json

    try:
        d = json.loads((Path(sys.prefix) / "asv-install-status.json").read_text())
        return str(d["commit_hash"]) if d.get("commit_hash") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _set_commit_hash(found: tuple[Path, Any] | None) -> str | None:
    import re
    import subprocess

    name = getattr(found[1], "set_commit_hash", None) if found else None
    if not name:
        return None
    if re.fullmatch(r"[0-9a-f]{40}", name):
        return name
    repo = found[0]
    conf = _asv_ancestor_config()
    try:
        from asv.util import load_json

        repo = found[0] / str(load_json(str(conf), js_comments=True).get("repo") or ".")
    except Exception:  # noqa: BLE001 - asv's UserError for a config it would refuse
        pass
    try:
        return subprocess.run(["git", "rev-parse", "--verify", f"{name}^{{commit}}"],
                              cwd=repo, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip() or None
    except (subprocess.SubprocessError, OSError):
        return None


def write_interference(points: list[dict[str, Any]]) -> Path | None:
    """Add ``points`` (lnbench.measure.interference.sidecar_point) to this asv run's sidecar;
    None outside an asv run that saves results. A failure to write is said on stderr."""
    from lnbench.measure.interference import sidecar_path, write_sidecar

    ctx = asv_run()
    if ctx is None or not points:
        return None
    path = sidecar_path(ctx["results_dir"], ctx["machine"], ctx["commit"], ctx["env"])
    try:
        return write_sidecar(path, machine=ctx["machine"], commit=ctx["commit"], env=ctx["env"],
                             points=points)
    except OSError as e:
        print(f"lnbench: interference sidecar {path}: {e}", file=sys.stderr)
        return None


def _write_facts(bench_file: str | None = None) -> None:
    """Store machine facts in the running asv's results folder (see :func:`asv_results_dir`)."""
    results = asv_results_dir(bench_file)
    if results is None:
        return
    from lnbench.measure.machine import facts, write_facts

    try:
        write_facts(results, {**facts(), "machine": asv_machine()})
    except (OSError, ValueError):
        pass
