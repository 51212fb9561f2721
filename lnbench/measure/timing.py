"""Runtime of a backward thunk.

CPU: ``time.perf_counter`` around ``number`` back-to-back calls, ``number`` chosen (like
``timeit.Timer.autorange``) so a sample lasts at least ``min_sample`` seconds; samples are
per-call seconds. CUDA: CUDA events with the L2 cache flushed before each call
(``lnbench.measure.cuda.time_cuda``), because a host timer without synchronisation measures
only the launch. The caller takes the median (robust to the occasional preempted sample).

Several implementations of one case are timed *interleaved* (:func:`time_interleaved`): round by
round, one sample of each per round, in an order shuffled per round from a fixed seed, as Google
Benchmark's ``--benchmark_enable_random_interleaving`` and asv's ``--interleave-rounds`` do. A
slow spell of the machine (another process, a noisy neighbour VM, a frequency drop) then lands on
every contender alike instead of on whoever happens to be measured, so the ratios between them,
taken from the same rounds, hold on a busy machine where one absolute time does not.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lnbench.arrays import synchronize


@dataclass
class Timing:
    samples: list[float]  # seconds per call
    number: int  # calls per sample (CPU); 1 on CUDA
    method: str  # "perf_counter" | "cuda-events+l2-flush"
    error: BaseException | None = None  # what the thunk raised while interleaved (then dropped)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def q25(self) -> float:
        return _quantile(self.samples, 0.25)

    @property
    def q75(self) -> float:
        return _quantile(self.samples, 0.75)

    @property
    def spread(self) -> float | None:
        """Interquartile range over median of the samples; None with fewer than 3 samples."""
        return spread_of(self.samples)


def spread_of(samples: list[float]) -> float | None:
    """IQR over median (None with fewer than 3 samples)."""
    if len(samples) < 3:
        return None
    med = statistics.median(samples)
    if med <= 0:
        return None
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return (q[2] - q[0]) / med



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
    number = _calibrate(thunk, min_sample)  # warm-up (caches, lazy init, first-touch outputs)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeat:
        samples.append(_cpu_sample(thunk, number))
        if len(samples) >= 3 and time.perf_counter() - start > max_time:
            break
    return Timing(samples, number, "perf_counter")


def _calibrate(thunk: Callable[[], Any], min_sample: float) -> int:
    """Warm-up call, then ``number`` so that a sample lasts at least ``min_sample`` seconds."""
    thunk()
    t0 = time.perf_counter()
    thunk()
    one = max(time.perf_counter() - t0, 1e-9)
    return max(1, math.ceil(min_sample / one))


def _cpu_sample(thunk: Callable[[], Any], number: int) -> float:
    if number == 1:
        flush_cache()
    t0 = time.perf_counter()
    for _ in range(number):
        thunk()
    return (time.perf_counter() - t0) / number


def time_interleaved(
    thunks: Sequence[tuple[Callable[[], Any], str]],
    *,
    repeat: int = 7,
    min_sample: float = 0.01,
    max_time: float = 2.0,
    seed: int = 0,
    before_sample: Callable[[int, int], None] | None = None,
) -> list[Timing]:
    """Per-call seconds of several ``(thunk, device)`` pairs, sampled round by round.

    Each round takes one sample of every thunk (CPU: ``number`` calls as in :func:`time_cpu`,
    caches flushed first when one call fills a sample; CUDA: CUDA-event-timed calls with the L2
    flushed, a share of ``max(repeat, 10)`` per round), in an order drawn from
    ``random.Random(seed)`` for each round. Sampling stops after ``repeat`` rounds, or earlier
    (but after at least 3 rounds) once ``max_time`` seconds per thunk have been spent, so the
    budget is that of measuring them one after another. Every Timing has the same rounds.
    ``before_sample(k, round)``, when given, is called before each sample of thunk ``k``, outside
    the timed calls (``lnbench gpu-check`` records there which point a crashed worker was in).
    """
    if not thunks:
        return []
    rng = random.Random(seed)
    n = len(thunks)
    numbers = [1] * n
    errors: list[BaseException | None] = [None] * n
    for k, (thunk, device) in enumerate(thunks):  # warm-up and calibration, before any round
        try:
            if device == "cuda":
                thunk()
                synchronize(device)
            else:
                numbers[k] = _calibrate(thunk, min_sample)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - that thunk's result; others go on
            errors[k] = e
    per_round = math.ceil(max(repeat, 10) / max(repeat, 1))
    samples: list[list[float]] = [[] for _ in thunks]
    order = [k for k in range(n) if errors[k] is None]
    start = time.perf_counter()
    rounds = 0
    while rounds < repeat and order:
        rng.shuffle(order)
        for k in list(order):
            thunk, device = thunks[k]
            if before_sample is not None:
                before_sample(k, rounds)
            try:
                if device == "cuda":
                    from lnbench.measure.cuda import time_cuda

                    samples[k].extend(time_cuda(thunk, warmup=0, rep=per_round))
                else:
                    samples[k].append(_cpu_sample(thunk, numbers[k]))
            except (Exception, SystemExit) as e:  # noqa: BLE001
                errors[k] = e
                order.remove(k)
        rounds += 1
        if rounds >= 3 and time.perf_counter() - start > max_time * n:
            break
    return [Timing(s, num, "cuda-events+l2-flush" if d == "cuda" else "perf_counter", err)
            for s, num, (_, d), err in zip(samples, numbers, thunks, errors, strict=True)]


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
