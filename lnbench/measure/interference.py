"""Interference while measuring: the machine's load, CPU steal and copy bandwidth around a
sampling window, the spread of its samples, and the verdict ``noisy`` with its reason.

A time measured while something else uses the machine is a time of both. lnbench interleaves
the implementations of a case (:func:`lnbench.measure.timing.time_interleaved`) so that a slow
spell hits every contender alike, but a slow spell still changes the absolute times, and it does
not slow every contender by the same factor: a backward that runs on every core in lockstep
(torch's and numba's thread pools) waits for its slowest thread, one that runs on one core
(NumPy) may not notice a process on the other. So every point carries what was measured about
the machine while it was sampled, and a point measured under more than the thresholds below is
measured again (bounded: ``lnbench run --retries``, default 2) and, if still disturbed, stored
with status ``noisy`` and the reason. A noisy point is a real measurement, kept and shown; it is
never a judged failure: ``lnbench run`` does not exit 1 for it and the regression gate does not
fail on it.

Signals, per sampling window (one case: all its implementations' rounds):

``load`` (cores)
    CPU time used by *other* processes over the window, in cores' worth (1.0 = one core busy the
    whole window): the busy time of ``/proc/stat``'s ``cpu`` line (user, nice, system, irq,
    softirq; guest time is inside user) between the window's start and end, minus this process's
    own CPU time (``psutil.Process().cpu_times()``: every thread, and children it waited for),
    over the wall time. ``os.getloadavg`` is not used: it counts this process's own threads and is
    a one-minute exponential average, longer than most windows.
``steal`` (cores)
    ``/proc/stat``'s steal field over the window: time the hypervisor ran another guest while this
    VM wanted the CPU.
``copy_gbps_before``, ``copy_gbps_after``
    This process's copy bandwidth (:func:`copy_gbps_quick`: ``np.copyto`` and torch's threaded
    ``copy_`` of a buffer 4x the last-level cache, median of 3 each, best of the two) right before
    and right after the window. A neighbour streaming memory (another VM on the host, a process
    here) takes bandwidth that every bandwidth-bound backward needs, and shows in neither load
    nor steal when it is outside this VM.
``spread``
    Interquartile range over median of each implementation's samples.

Thresholds, and why:

- ``load > 0.1`` core (``LOAD_MAX``) beyond the counters' resolution. A thread pool that runs in
  lockstep on every core is slowed by about ``1 + L`` when other processes take ``L`` cores'
  worth (``L <= 1``): the scheduler shares one core between its thread and the intruder, and the
  others wait for it at the next barrier. On a 2-core machine one busy process (``L = 1``) halves
  such a backward's speed while a single-threaded contender on the other core keeps its own, so
  the ratio between the two moves 2x; 0.1 core keeps that error within 10 %, the tolerance of
  pyperf's "unstable" warning below. The counters tick at ``SC_CLK_TCK`` (100 Hz), so over a window
  of ``w`` seconds the reading is uncertain by about ``2 (ncpu + 1)`` ticks ``/ w`` cores; that is
  added to the threshold (0.06 core for 1 s on 2 cores), so a short window is not judged on
  rounding.
- ``steal > 0.1`` core (``STEAL_MAX``): the same budget, for time the hypervisor took.
- copy bandwidth before or after below ``0.8`` (``COPY_MIN_RATIO``) of the best this process has
  measured: a backward bound by memory bandwidth slows in proportion to the bandwidth lost, and
  20 % is well above the repeatability of the copy measurement itself (medians of 3 copies of the
  same buffers within a few % on a quiet 2-core x86_64 VM) while below the 2x of a busy
  neighbour.
- ``spread > 0.135`` (``SPREAD_MAX``): pyperf warns that a result "may be unstable" when the
  standard deviation exceeds 10 % of the mean; for normally distributed samples the
  interquartile range is 1.349 standard deviations, so 10 % of the mean is an IQR/median of
  0.135. The IQR is used rather than the standard deviation because one preempted sample should
  not condemn a point whose median it does not move.

Prior art: Google Benchmark's user guide ("Reducing Variance": disable frequency scaling, pin to
an isolated core, avoid other load) and pyperf's ``system tune`` (``isolcpus``, no other
processes on the benchmark's CPUs) remove interference before measuring; pyperf also *detects*
it after the fact ("the benchmark result may be unstable" when std dev > 10 % of the mean, or the
minimum is far below the mean). lnbench's users run on shared CI runners where they can do
neither, so it measures the interference instead and says so per point.

For asv's own ``time_backward`` points, asv stores only numbers: the suite writes the same
signals (with ``noisy``/``ok`` and the reason) to a sidecar file per asv run (:func:`write_sidecar`,
format in :data:`SIDECAR_VERSION`'s comment); asv times them, so they are not re-measured.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lnbench.measure.timing import _l3_bytes, spread_of  # noqa: F401  (spread_of: re-exported)

LOAD_MAX = 0.1  # cores of other processes' CPU time over the window
STEAL_MAX = 0.1  # cores stolen by the hypervisor over the window
COPY_MIN_RATIO = 0.8  # copy bandwidth before/after, over the best this process measured
SPREAD_MAX = 0.135  # IQR / median of a point's samples (pyperf's std > 10 % of the mean)
RETRIES = 2  # re-measurements of a disturbed case (lnbench run --retries)

BUSY = ("user", "nice", "system", "irq", "softirq")  # /proc/stat; guest is inside user


def cpu_times() -> dict[str, float]:
    """The machine's CPU time so far, seconds summed over CPUs (``/proc/stat``'s cpu line)."""
    import psutil

    return dict(psutil.cpu_times()._asdict())


def own_cpu_seconds() -> float:
    """CPU seconds of this process: all its threads, and the children it has waited for."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def tick_seconds() -> float:
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 0.01


def cpu_load(before: Mapping[str, float], after: Mapping[str, float], own_seconds: float,
             wall: float) -> tuple[float, float]:
    """(load, steal) in cores over a window of ``wall`` seconds, from two readings of the
    machine's CPU times (``/proc/stat`` fields, seconds) and this process's CPU seconds in it.
    Pure: the tests feed it fabricated deltas."""
    if wall <= 0:
        return 0.0, 0.0
    busy = sum(after.get(k, 0.0) - before.get(k, 0.0) for k in BUSY)
    steal = after.get("steal", 0.0) - before.get("steal", 0.0)
    return max(0.0, busy - own_seconds) / wall, max(0.0, steal) / wall


def resolution(wall: float, ncpu: int, tick: float | None = None) -> float:
    """Cores by which a load or steal reading over ``wall`` seconds may be off from tick
    rounding (each of ``ncpu`` CPU counters and this process's counter, at both ends)."""
    tick = tick_seconds() if tick is None else tick
    return 2 * (ncpu + 1) * tick / wall if wall > 0 else float("inf")


def judge(*, load: float | None, steal: float | None, wall: float, ncpu: int,
          copy_before: float | None = None, copy_after: float | None = None,
          copy_best: float | None = None, spread: float | None = None,
          tick: float | None = None) -> list[str]:
    """Why a point's measurement is disturbed (empty: it is not), against the thresholds above.
    Pure."""
    why: list[str] = []
    slack = resolution(wall, ncpu, tick)
    if load is not None and load > LOAD_MAX + slack:
        why.append(f"load {load:.2f} cores from other processes (> {LOAD_MAX})")
    if steal is not None and steal > STEAL_MAX + slack:
        why.append(f"CPU steal {steal:.2f} cores (> {STEAL_MAX})")
    if copy_best:
        low = [(n, v) for n, v in (("before", copy_before), ("after", copy_after))
               if v is not None and v < COPY_MIN_RATIO * copy_best]
        if low:
            n, v = min(low, key=lambda t: t[1])
            why.append(f"copy bandwidth {n} {v:.1f} GB/s < {COPY_MIN_RATIO:.0%} of "
                       f"{copy_best:.1f}")
    if spread is not None and spread > SPREAD_MAX:
        why.append(f"spread IQR/median {spread:.2f} (> {SPREAD_MAX})")
    return why


@dataclass
class Reading:
    """What one sampling window saw of the machine."""

    load: float
    steal: float
    wall: float
    ncpu: int
    copy_before: float | None = None
    copy_after: float | None = None

    def reasons(self, spread: float | None = None) -> list[str]:
        return judge(load=self.load, steal=self.steal, wall=self.wall, ncpu=self.ncpu,
                     copy_before=self.copy_before, copy_after=self.copy_after,
                     copy_best=best_copy(), spread=spread)


class Window:
    """A sampling window: ``start()`` before the samples, ``stop()`` after (a Reading)."""

    def __init__(self, copy: bool = True) -> None:
        self.copy = copy
        self._t0 = 0.0
        self._sys: dict[str, float] = {}
        self._own = 0.0
        self._copy_before: float | None = None

    def start(self) -> Window:
        self._copy_before = copy_gbps_quick() if self.copy else None
        self._sys, self._own, self._t0 = cpu_times(), own_cpu_seconds(), time.perf_counter()
        return self

    def stop(self) -> Reading:
        wall = time.perf_counter() - self._t0
        own, sys_now = own_cpu_seconds(), cpu_times()
        load, steal = cpu_load(self._sys, sys_now, own - self._own, wall)
        after = copy_gbps_quick() if self.copy else None
        return Reading(load=load, steal=steal, wall=wall, ncpu=os.cpu_count() or 1,
                       copy_before=self._copy_before, copy_after=after)


_BUF: list[Any] = []
_BEST: list[float] = []


def copy_gbps_quick(repeat: int = 3) -> float | None:
    """This process's copy bandwidth now, GB/s counting read + write (see the module docstring);
    the buffers are made once per process. None if it cannot be measured."""
    import numpy as np

    from lnbench.measure.machine import copy_best

    try:
        if not _BUF:
            n = max(64 * 2**20, 4 * _l3_bytes()) // 8
            src = np.ones(n)
            _BUF.extend([src, np.empty_like(src)])
        gbps = copy_best(_BUF[0], _BUF[1], repeat)
    except (MemoryError, ValueError, ZeroDivisionError):
        return None
    if not _BEST or gbps > _BEST[0]:
        _BEST[:] = [gbps]
    return gbps


def best_copy() -> float | None:
    """The best :func:`copy_gbps_quick` reading of this process so far."""
    return _BEST[0] if _BEST else None


# ---- the asv sidecar ---------------------------------------------------------------------------

# <results_dir>/lnbench-interference/<asv result file's relative path>, i.e.
# <machine>/<commit[:8]>-<env_name>.json (asv.results.get_filename: env names of 128 characters
# or more become env-<md5>), holding
# {"version": 1, "machine": str, "commit": full hash, "env": env name,
#  "points": [{"benchmark": full asv name, "params": {"impl": str, "shape": str, "dtype": str},
#              "status": "ok" | "noisy", "reason": str, "load": float, "steal": float,
#              "copy_gbps_before": float | None, "copy_gbps_after": float | None,
#              "spread": float | None}]}
SIDECAR_VERSION = 1
SIDECAR_DIR = "lnbench-interference"


def sidecar_path(results_dir: str | os.PathLike, machine: str, commit: str, env: str) -> Path:
    """Where the interference of asv's result file (machine, commit, env) is stored."""
    from asv.results import get_filename

    return Path(results_dir) / SIDECAR_DIR / get_filename(machine, commit, env)


def sidecar_point(benchmark: str, params: Mapping[str, str], *, reason: str,
                  load: float | None, steal: float | None, copy_before: float | None,
                  copy_after: float | None, spread: float | None) -> dict[str, Any]:
    """One sidecar point: status ``noisy`` when ``reason`` is not empty."""
    return {"benchmark": benchmark, "params": {k: str(v) for k, v in params.items()},
            "status": "noisy" if reason else "ok", "reason": reason, "load": _r(load),
            "steal": _r(steal), "copy_gbps_before": _r(copy_before),
            "copy_gbps_after": _r(copy_after), "spread": _r(spread)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def write_sidecar(path: str | os.PathLike, *, machine: str, commit: str, env: str,
                  points: Iterable[Mapping[str, Any]]) -> Path:
    """Add ``points`` to the sidecar at ``path`` (a point with the same benchmark and params
    replaces the stored one), under an exclusive ``fcntl`` lock on its folder (asv runs each
    benchmark in a process of its own: several may write one file; no lock file is left in the
    results), replaced atomically (a reader never sees half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        doc: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(p.read_text())
        if not isinstance(doc, dict) or doc.get("version") != SIDECAR_VERSION \
                or doc.get("commit") != commit:
            doc = {}
        old = [q for q in doc.get("points", []) if isinstance(q, dict)]
        new = list(points)
        keys = {_pkey(q) for q in new}
        doc = {"version": SIDECAR_VERSION, "machine": machine, "commit": commit, "env": env,
               "points": [q for q in old if _pkey(q) not in keys] + new}
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(p)
    finally:
        os.close(fd)  # releases the lock
    return p


def _pkey(q: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return str(q.get("benchmark")), tuple(sorted((q.get("params") or {}).items()))
