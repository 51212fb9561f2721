"""The C heap while measuring: steady, as in a long-running process (the default), or glibc's own.

glibc's malloc adapts as a process runs. Blocks above a threshold get fresh ``mmap`` pages, which
cost a page fault and zeroing on first touch; freed memory above a trim threshold goes back to
the kernel; worker threads (numba's, torch's) allocate from arenas of their own, which are
trimmed the same way; and both thresholds move with what the process freed before (glibc's
"dynamic mmap threshold"). So the time of one backward depended on which cases had run before
it in the same process. On a 2-core x86_64 VM (AMD EPYC, glibc 2.36), ``torch.kevin`` at
256x1024 float64 took 0.33 ms inside ``lnbench run`` and 3.1 ms alone in a fresh process (2,500
page faults per call), and the regression report over real asv history flagged an 8x
regression between two commits that changed only the order of allocations before it.

:func:`steady` makes the heap behave like that of a process that has been running for a while,
which is what a caching allocator gives on a GPU (torch's and CuPy's pools): one arena, no
``mmap`` for large blocks, no trimming (``mallopt``), so freed blocks are reused: after a few
calls have grown the heap to its high-water mark, a backward faults no pages per call
(torch.kevin 4096x1024 float32 in a fresh process: 0 per call once the heap has grown, which
took 10 to 60 calls, against 7,756 per call with glibc's defaults; ``tests/test_heap.py``), and
a case's time no longer depends on the cases measured before it. The timers' warm-up and
medians absorb the calls that still grow it.
``LNBENCH_MALLOC=system`` keeps glibc's defaults, so allocation costs (page faults) are in the
times, history and all.
On a C library other than glibc nothing is changed and the policy reads ``system``; with an
allocator in ``LD_PRELOAD`` (jemalloc, tcmalloc, mimalloc…) it reads ``preloaded (<library>)``,
and ``partial`` if glibc refused some of the settings.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
from pathlib import Path

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

STEADY = "steady"
SYSTEM = "system"
ENV = "LNBENCH_MALLOC"

_applied: str | None = None


def requested() -> str:
    """The policy ``LNBENCH_MALLOC`` asks for (``steady`` when unset); ValueError otherwise."""
    want = os.environ.get(ENV, STEADY).strip() or STEADY
    if want not in (STEADY, SYSTEM):
        raise ValueError(f"{ENV}={want!r}: must be {STEADY} or {SYSTEM}")
    return want


def steady() -> str:
    """Apply ``LNBENCH_MALLOC`` to this process once, before measuring; the policy in force.

    Call it before worker threads start (numba's and torch's pools start on first use): a thread
    already attached to an arena of its own keeps it.
    """
    global _applied
    if _applied is not None:
        return _applied
    want = requested()
    preload = [Path(x).name for x in os.environ.get("LD_PRELOAD", "").replace(":", " ").split()
               if re.search(r"malloc|jemalloc|tcmalloc|mimalloc|hoard", x)]
    if preload:  # another allocator replaces glibc's: mallopt would change nothing
        _applied = f"preloaded ({', '.join(preload)})"
        return _applied
    if want == SYSTEM or platform.libc_ver()[0] != "glibc":
        _applied = SYSTEM
        return _applied
    try:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        done = [mallopt(p, v) == 1 for p, v in (
            (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))]
    except (OSError, AttributeError):
        done = [False]
    _applied = STEADY if all(done) else "partial" if any(done) else SYSTEM
    return _applied


def policy() -> str:
    """The policy in force in this process (``system`` until :func:`steady` has run)."""
    return _applied or SYSTEM
