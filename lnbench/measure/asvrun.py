"""Where the running asv stores things: its results folder, machine, commit and environment,
and the two files lnbench adds beside asv's results — the machine facts
(``results/lnbench-machines/``) and the interference sidecar of a run
(``lnbench.measure.interference``).

asv 0.6 tells a benchmark process none of this (its ``ASV_*`` variables go to build and install
commands only, asv/environment.py and asv/runner.py), so it is read from the nearest ancestor
process that runs asv (psutil): its working folder, which asv changed into the config's folder,
and its arguments, parsed with asv's own parser. Everything here is a courtesy: outside asv, or
where asv's config cannot be read, the functions return None and write nothing.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path
from typing import Any


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


def write_facts(bench_file: str | None = None) -> None:
    """Store machine facts in the running asv's results folder (see :func:`asv_results_dir`)."""
    results = asv_results_dir(bench_file)
    if results is None:
        return
    from lnbench.measure import machine

    try:
        machine.write_facts(results, {**machine.facts(), "machine": asv_machine()})
    except (OSError, ValueError):
        pass
