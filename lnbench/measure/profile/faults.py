"""Minor page faults: how many a call takes, and what one costs on this machine.

A minor fault is the kernel mapping a page on its first touch. Memory a process gets fresh from
the kernel (a new ``mmap``, which large NumPy/torch temporaries are) is zero-filled page by page
on that first touch, so every fresh temporary costs one fault per 4 KiB page before any
arithmetic runs — for an elementwise op over a large array, which does a few flops per element,
this can cost more than the op itself. ``getrusage(RUSAGE_SELF).ru_minflt`` counts them for the
whole process (all threads); a difference around a call is that call's faults.

:func:`fault_cost_seconds` prices one fault: the wall time of touching each page of a fresh
anonymous mapping once, divided by the faults it took (the median of a few mappings).
"""

from __future__ import annotations

import functools
import time

import numpy as np

try:
    import resource
except ImportError:  # not on Windows: page faults are then reported as 0
    resource = None  # type: ignore[assignment]


def minflt() -> int:
    """Minor page faults of this process so far (all threads): first touches of fresh pages."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


@functools.cache
def fault_cost_seconds(nbytes: int = 64 * 2**20, repeat: int = 3) -> float | None:
    """Seconds one minor page fault costs on this machine: first touches of a fresh anonymous
    mapping, one write per 4 KiB page, median of ``repeat`` mappings (None without faults)."""
    import mmap

    costs = []
    for _ in range(repeat):
        m = mmap.mmap(-1, nbytes)
        a = np.frombuffer(m, dtype=np.uint8)
        f0 = minflt()
        t0 = time.perf_counter()
        a[::4096] = 1
        dt = time.perf_counter() - t0
        n = minflt() - f0
        del a
        m.close()
        if n > 0:
            costs.append(dt / n)
    return float(np.median(costs)) if costs else None
