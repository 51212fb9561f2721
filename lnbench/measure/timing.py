"""Runtime of a backward thunk.

CPU: ``time.perf_counter`` around ``number`` back-to-back calls, ``number`` chosen (like
``timeit.Timer.autorange``) so a sample lasts at least ``min_sample`` seconds; samples are
per-call seconds. CUDA: CUDA events with the L2 cache flushed before each call
(``lnbench.measure.cuda.time_cuda``), because a host timer without synchronisation measures
only the launch. The caller takes the median (robust to the occasional preempted sample).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lnbench.arrays import synchronize


@dataclass
class Timing:
    samples: list[float]  # seconds per call
    number: int  # calls per sample (CPU); 1 on CUDA
    method: str  # "perf_counter" | "cuda-events+l2-flush"

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def q25(self) -> float:
        return _quantile(self.samples, 0.25)

    @property
    def q75(self) -> float:
        return _quantile(self.samples, 0.75)


def _quantile(xs: list[float], q: float) -> float:
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=4, method="inclusive")[round(q * 4) - 1]


def _l3_bytes() -> int:
    try:
        txt = open("/sys/devices/system/cpu/cpu0/cache/index3/size").read().strip()
        return int(txt[:-1]) * {"K": 2**10, "M": 2**20}.get(txt[-1], 1)
    except (OSError, ValueError):
        return 32 * 2**20


_FLUSH: list = []


def flush_cache() -> None:
    """Evict the CPU caches by writing a buffer of twice the last-level cache size.

    The CPU analogue of ``triton.testing.do_bench``'s L2 flush: without it, a backward whose
    inputs fit in L3 (or that runs right after another contender read the same data) is timed
    from cache, not memory."""
    import numpy as np

    if not _FLUSH:
        _FLUSH.append(np.empty(2 * _l3_bytes() // 8))
    _FLUSH[0].fill(0.0)


def time_cpu(
    thunk: Callable[[], Any],
    *,
    repeat: int = 7,
    min_sample: float = 0.01,
    max_time: float = 2.0,
) -> Timing:
    """Per-call seconds of ``thunk`` on the CPU: ``repeat`` samples, each ≥ ``min_sample`` long,
    stopping early (but with at least 3 samples) once ``max_time`` seconds are spent.

    When one call alone fills a sample (large cases), the caches are flushed before each sample,
    so the backward reads its inputs from memory as it would after a forward and other layers."""
    thunk()  # warm-up (caches, lazy initialisation, page faults of first-touch outputs)
    t0 = time.perf_counter()
    thunk()
    one = max(time.perf_counter() - t0, 1e-9)
    number = max(1, math.ceil(min_sample / one))
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeat:
        if number == 1:
            flush_cache()
        t0 = time.perf_counter()
        for _ in range(number):
            thunk()
        samples.append((time.perf_counter() - t0) / number)
        if len(samples) >= 3 and time.perf_counter() - start > max_time:
            break
    return Timing(samples, number, "perf_counter")


def time_thunk(thunk: Callable[[], Any], device: str, *, repeat: int = 7,
               max_time: float = 2.0) -> Timing:
    """Time on the implementation's device (CUDA events on ``cuda``)."""
    if device == "cuda":
        from lnbench.measure.cuda import time_cuda

        samples = time_cuda(thunk, rep=max(repeat, 10))
        return Timing(list(samples), 1, "cuda-events+l2-flush")
    return time_cpu(thunk, repeat=repeat, max_time=max_time)


def call_synchronized(thunk: Callable[[], Any], device: str) -> Any:
    """One call that returns only when the device has finished (for host-timer benchmarks)."""
    out = thunk()
    synchronize(device)
    return out
