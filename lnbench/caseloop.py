"""The one case loop: judge or measure every selected implementation on every case.

``lnbench check`` (judge.check_impl per point), ``lnbench run`` (lnbench.measure.run: the
implementations of a case timed interleaved), ``lnbench profile`` (one point) and the asv
suite all walk the same loop, so they agree on three things:

* **Inputs are made once per case** (``grid.make_data``), then every implementation runs on
  them; a case no selected implementation can run here (every one unavailable or not taking
  its dtype: GPU grids on a CPU) makes no inputs at all.
* **A fault costs only its point.** Inputs too large for the machine (``MemoryError`` while
  making them) become an ``error`` of every point of that case that would have run, with the
  one-line reason ``inputs: out of memory: ...``; an implementation that raises, runs out of
  memory or calls ``sys.exit`` becomes that point's ``error`` (:func:`attempt`, one line from
  ``judge.error_reason``), and the loop goes on. Ctrl-C (``KeyboardInterrupt``) is never
  caught: it ends the command (exit 130), and no interrupted point is reported as judged.
* **One result key**, :class:`Key` = (impl, case, M, N, dtype, dist, device), the same for
  every result of a point: ``measure.run.Record.key`` and ``measure.profile.ProfileResult.key``;
  a ``judge.GradResult`` (one per gradient, and it does not store the device) has
  ``Key.of(impl, case)``, or ``Key.of_result(result, device=impl.device)``.

API::

    for case, data, why in each_case(impls, items):   # data None: nothing to run, or `why`
        ...
    results = run_cases(impls, items, per_case=..., without_inputs=...)
    value, reason = attempt(fn)                          # fn() or its one-line error reason
    data, why = make_inputs(case)                        # one case's inputs, or why not
    Key.of(impl, case), Key.of_result(result), skip_reason(impl, case)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from lnbench.grid import Case, CaseData
from lnbench.judge import error_reason
from lnbench.registry import Impl

R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Key:
    """What one result is about: which implementation, on which case, on which device."""

    impl: str
    case: str
    M: int
    N: int
    dtype: str
    dist: str
    device: str

    @classmethod
    def of(cls, impl: Impl, case: Case | CaseData) -> Key:
        c = case.case if isinstance(case, CaseData) else case
        return cls(impl.name, c.name, c.M, c.N, c.dtype, c.dist, impl.device)

    @classmethod
    def of_result(cls, result: Any, device: str | None = None) -> Key:
        """The key of any result with the key's fields as attributes (``device`` given for a
        result that does not carry it)."""
        return cls(result.impl, result.case, result.M, result.N, result.dtype, result.dist,
                   device if device is not None else result.device)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def skip_reason(impl: Impl, case: Case | CaseData) -> str | None:
    """Why ``impl`` does not run ``case`` here (unavailable, or not its dtype), or None."""
    c = case.case if isinstance(case, CaseData) else case
    return impl.unavailable() or impl.unsupported(c)


def attempt(fn: Callable[[], T]) -> tuple[T | None, str]:
    """``(fn(), "")``, or ``(None, reason)`` when it raised (any Exception, MemoryError and
    ``sys.exit`` included: a result, not the end of the run). Ctrl-C is not caught."""
    try:
        return fn(), ""
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure of a point is its result
        return None, error_reason(e)


def each_case(
    impls: Sequence[Impl],
    items: Iterable[Case | CaseData],
    make: Callable[[Case], CaseData] | None = None,
) -> Iterator[tuple[Case, CaseData | None, str]]:
    """``(case, data, why)`` per item, inputs made once (``make``, default ``grid.make_data``
    looked up at each call). ``data`` is None when no implementation would run the case
    (``why`` empty) or when its inputs could not be made (``why`` = ``inputs: <reason>``)."""
    for item in items:
        if isinstance(item, CaseData):
            yield item.case, item, ""
            continue
        if all(skip_reason(i, item) for i in impls):
            yield item, None, ""  # nothing here would run: no inputs to make
            continue
        data, why = make_inputs(item, make)
        yield item, data, why
        del data


def make_inputs(case: Case, make: Callable[[Case], CaseData] | None = None
                ) -> tuple[CaseData | None, str]:
    """``(data, "")``, or ``(None, "inputs: <reason>")`` when the inputs are too large for this
    machine (MemoryError: every point of the case says so). ``make`` defaults to
    ``grid.make_data``, looked up at each call (the GPU check calls this on its threads)."""
    if make is None:
        from lnbench import grid

        make = grid.make_data
    try:
        return make(case), ""
    except MemoryError as e:  # inputs too large for this machine: every point says so
        return None, f"inputs: {error_reason(e)}"


def run_cases(
    impls: Sequence[Impl],
    items: Iterable[Case | CaseData],
    *,
    per_case: Callable[[Sequence[Impl], CaseData], Iterable[R]],
    without_inputs: Callable[[Impl, Case, str | None, str], Iterable[R]],
    make: Callable[[Case], CaseData] | None = None,
    on_case: Callable[[list[R]], None] | None = None,
) -> list[R]:
    """Every implementation on every case: ``per_case(impls, data)`` gives a case's results;
    a case without inputs gives ``without_inputs(impl, case, skip_reason, why)`` per
    implementation (``skip_reason`` None: it would have run, and ``why`` says what failed).
    ``on_case`` sees each case's results as they come (progress bars)."""
    impls = list(impls)
    out: list[R] = []
    for case, data, why in each_case(impls, items, make):
        if data is None:
            got = [r for i in impls for r in without_inputs(i, case, skip_reason(i, case), why)]
        else:
            got = list(per_case(impls, data))
        del data
        out.extend(got)
        if on_case is not None:
            on_case(got)
    return out
