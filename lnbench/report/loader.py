"""Load an asv results directory into tidy pandas frames.

Reads the on-disk format of asv 0.6 (``asv/results.py``: ``Results.save``/``Results.load``,
results ``version`` 2, version 1 converted as ``asv update`` does; ``benchmarks.json``
version 2; ``machine.json`` version 1) without asv's own loader, plus lnbench's machine facts
(``DIR/lnbench-machines/<machine>.json``) and interference sidecars
(``DIR/lnbench-interference/``).

One row per (machine, commit, environment, benchmark, parameter combination):

=================  ==========================================================================
column             meaning
=================  ==========================================================================
machine            ``params["machine"]`` of the result file (else its directory name)
commit             full commit hash as stored; ``commit_order`` ranks commits by asv ``date``
                   (the commit date), ties broken by the earliest ``started_at``, then hash;
                   with a first-parent history, the position on it (``load.history``)
date               commit date (UTC); ``started_at`` when that benchmark ran (UTC)
env                asv environment name; ``env_family`` the environment it stands for
                   (``load.envfamily``: path and hash-like parts dropped, requirements kept)
benchmark          full asv name, e.g. ``bench_backward.Backward.time_backward``
<param names>      one column per parameter (``impl``, ``shape``, ``dtype``, ``dist`` …),
                   asv's repr strings unquoted (``"'float32'"`` -> ``float32``)
metric, unit       method name (``time_backward``) and the unit from benchmarks.json
higher_is_better   see ``lnbench.report.metrics``
value              the stored number (asv: median of samples for timings); NaN unless ok
status             ``ok``; ``failed`` (asv stored null); ``skipped`` (asv stored NaN);
                   ``invalid`` (stored value not a finite number, e.g. Infinity, a string or
                   a boolean, or one its metric cannot take: a time <= 0, negative bytes or
                   rel_err — see ``metrics.lower_bound``; listed in ``errors`` per file and
                   benchmark, and never used); ``noisy`` (an interference sidecar says the
                   run was disturbed; ``noise_reason`` says how)
ci_99_a … repeat   asv's stored statistics (``stats_*`` columns), NaN where absent
samples            list of raw samples (``--record-samples``) or None
version_ok         False when the stored benchmark version differs from benchmarks.json
                   (asv itself ignores such results when publishing); ``bench_version`` the
                   stored version; ``retired``: the benchmark is not in benchmarks.json
file               the result file the row came from
=================  ==========================================================================

Every file that cannot be read (bad JSON, truncated, unknown format version, missing keys,
a ``date`` or ``started_at`` that is not a time in milliseconds between 1970 and 2262, a
results entry whose length does not match its parameters) becomes a :class:`LoadError`
with its path and a one-line reason; everything else still loads. Stored values that are not
finite numbers and machine facts of the wrong type are listed the same way (file and what)
and treated as unknown.

Method, and where each part lives (package ``lnbench.report.load``):

* ``jsonfile``: files are decoded by orjson when installed, else by :mod:`json`, with the
  same documents and messages either way;
* ``resultfile``: each result file is read column-wise (entries transposed in C, columns
  flattened into numpy arrays after one type check), irregular files entry by entry;
* ``layout``: the (benchmark, params) sequence of a file is expanded once and shared by
  every file that repeats it, with its combination and benchmark codes;
* ``frame``: the frame is assembled column-wise from per-file arrays and small tables
  (categoricals from codes, one shared NaN array for statistics no file stores);
* ``machines``, ``interference``, ``history``, ``envfamily``: the other files and orders.
* ``loaded``: :class:`LoadedResults`, what :func:`load_results` returns (re-exported here).

Cost: linear in the number of result files (per file: one decode and a few C-level passes
over its entries). ``scripts/bench-report --perf-only`` measures a django-size history
(4,700 files, 690 series, 1.08 M values) and one of half its commits.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lnbench.report.load.collect import Collector
from lnbench.report.load.envfamily import env_family
from lnbench.report.load.frame import STATUSES, assemble, empty_frame
from lnbench.report.load.history import (
    apply_first_parent,
    git_first_parent,
    read_first_parent,
    share_on_history,
)
from lnbench.report.load.interference import (
    INTERFERENCE_DIR,
    INTERFERENCE_VERSION,
    load_interference,
    match_noisy,
)
from lnbench.report.load.jsonfile import (
    LoadError,
    ResultsDirError,
    check_version,
    read_json,
)
from lnbench.report.load.layout import Combos, param_value
from lnbench.report.load.loaded import LoadedResults
from lnbench.report.load.machines import (
    FACT_FIELDS,
    FACTS_DIR,
    MACHINE_VERSION,
    load_facts,
    machine_info,
    machines_frame,
)
from lnbench.report.load.resultfile import (
    MS_MAX,
    MS_MIN,
    RESULTS_VERSION,
    STAT_KEYS,
    FileRead,
    read_result_file,
)

__all__ = [
    "BENCHMARKS_VERSION", "FACTS_DIR", "FACT_FIELDS", "INTERFERENCE_DIR",
    "INTERFERENCE_VERSION", "MACHINE_VERSION", "MAX_WORKERS", "MS_MAX", "MS_MIN",
    "PARALLEL_MIN_FILES", "RESULTS_VERSION", "STATUSES", "STAT_KEYS", "LoadError",
    "LoadedResults", "ResultsDirError", "apply_first_parent", "env_family",
    "git_first_parent", "load_results", "param_value", "read_first_parent",
    "share_on_history",
]

BENCHMARKS_VERSION = 2

#: with ``LNBENCH_REPORT_WORKERS=N`` (N > 1, at most ``MAX_WORKERS``), histories of at least
#: this many result files are read by N worker processes; the default reads in this process
#: (the workers add the pickling of every file's arrays to the total CPU time, and on a
#: 2-core machine shared with other jobs they did not shorten the wall time)
PARALLEL_MIN_FILES = 400
MAX_WORKERS = 4
_WORKER_COMBOS: Combos | None = None


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while files are read and joined.

    Decoding makes thousands of lists per file that form no reference cycles, and each of
    them counts towards the collector's next run, which then traverses every young
    container (the document being read included) again: ``load_results`` of the django-size
    tree of ``scripts/bench-report --perf-only`` takes 2.0 s of CPU time with the collector
    running and 1.2 s with it paused (best of 3 in one process, 2-core x86_64 VM).
    Reference counting still frees each document as soon as it is read.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _json_files(folder: Path) -> list[Path]:
    """``folder``'s ``*.json`` entries but machine.json, in name order."""
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.name.endswith(".json") and e.name != "machine.json")
    return [folder / n for n in names]


def _load_benchmarks(results_dir: Path, errors: list[LoadError]) -> dict[str, dict[str, Any]]:
    path = results_dir / "benchmarks.json"
    if not path.is_file():
        errors.append(LoadError(str(path), "missing: units and parameter names are guessed"))
        return {}
    try:
        data = read_json(path)
        check_version(data, BENCHMARKS_VERSION)
    except ValueError as exc:
        errors.append(LoadError(str(path), f"{exc}; units and parameter names are guessed"))
        return {}
    return {k: v for k, v in data.items() if k != "version" and isinstance(v, dict)}


def _read_batch(tasks: list[tuple[Path, str]], benchmarks: dict[str, dict[str, Any]]
                ) -> list[FileRead]:
    """Worker: read a batch of result files (laid out with the worker's own table, which
    stays behind: the main process lays each file out again from its names and params)."""
    global _WORKER_COMBOS
    if _WORKER_COMBOS is None:
        _WORKER_COMBOS = Combos(benchmarks)
    out = [read_result_file(p, m, _WORKER_COMBOS) for p, m in tasks]
    for fr in out:
        fr.layout = None
    return out


def _read_all(tasks: list[tuple[Path, str]], combos: Combos) -> Iterator[FileRead]:
    """Every result file read, in order: in worker processes (fork) for large histories when
    ``LNBENCH_REPORT_WORKERS`` asks for them -- decoding is most of the work and is per
    file -- else here."""
    try:
        workers = min(int(os.environ.get("LNBENCH_REPORT_WORKERS", "1")), MAX_WORKERS)
    except ValueError:
        workers = 1
    if workers > 1 and len(tasks) >= PARALLEL_MIN_FILES:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        try:
            ctx = multiprocessing.get_context("fork")
        except ValueError:
            ctx = None
        if ctx is not None:
            size = max(50, len(tasks) // (workers * 8))
            batches = [tasks[i:i + size] for i in range(0, len(tasks), size)]
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for out in pool.map(_read_batch, batches, [combos.benchmarks] * len(batches)):
                    yield from out
            return
    for path, machine in tasks:
        yield read_result_file(path, machine, combos)


def load_results(
    results_dir: str | os.PathLike[str], first_parent: Sequence[str] | None = None
) -> LoadedResults:
    """Read an asv results directory (asv 0.6 format; version-1 files converted as ``asv
    update`` does) into :class:`LoadedResults`.

    ``frame`` has one row per stored value (columns in the module docstring), ``machines``
    one row per machine seen in results or in ``lnbench-machines/`` (facts are None where
    no facts file exists), ``errors`` every unreadable file with a one-line reason.
    ``first_parent``: the project's first-parent history, newest first (``git rev-list
    --first-parent``, as asv orders commits); ``commit_order`` is then the position on it and
    results of commits off it are left out (``off_history``). Without it commits are ordered
    by date.

    Raises :class:`ResultsDirError` only when ``results_dir`` is not a directory.
    """
    root = Path(results_dir)
    if not root.exists():
        raise ResultsDirError(f"--results {root}: no such directory")
    if not root.is_dir():
        raise ResultsDirError(f"--results {root}: not a directory")

    errors: list[LoadError] = []
    benchmarks = _load_benchmarks(root, errors)
    facts: dict[str, dict[str, Any]] = {}
    asv_info: dict[str, dict[str, Any]] = {}
    combos = Combos(benchmarks)
    tasks: list[tuple[Path, str]] = []
    infos: dict[str, dict[str, Any]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name == FACTS_DIR:
            facts = load_facts(sub, errors)
            continue
        if sub.name == INTERFERENCE_DIR:
            continue
        machine_json = sub / "machine.json"
        jsons = _json_files(sub)
        if not machine_json.is_file():
            if jsons:
                errors.append(LoadError(str(sub), "no machine.json: not an asv machine folder"))
            continue
        infos[sub.name] = machine_info(machine_json, errors)
        tasks.extend((path, sub.name) for path in jsons)
    col = Collector(combos, len(tasks))
    with _gc_paused():
        for fr in _read_all(tasks, combos):
            errors.extend(fr.errors)
            if fr.rec is not None:
                col.add(fr)
                asv_info.setdefault(fr.rec["machine"], infos[fr.path.parent.name])
        if col.files and col.n_rows:
            side_errors: list[LoadError] = []
            noisy = match_noisy(load_interference(root, side_errors), col)
            frame = assemble(col, errors, noisy)
            errors.extend(side_errors)
            if noisy is not None and noisy.missing:
                errors.append(LoadError(str(root / INTERFERENCE_DIR),
                                        f"{noisy.missing} noisy point(s) match no stored ok "
                                        "value"))
        else:
            frame = empty_frame(combos.names)
    machines = machines_frame(asv_info, facts)
    loaded = LoadedResults(root, frame, machines, errors, benchmarks, list(combos.names))
    if first_parent is not None:
        apply_first_parent(loaded, first_parent)
    return loaded
