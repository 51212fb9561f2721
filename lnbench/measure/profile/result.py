"""What ``lnbench profile`` reports for one (implementation, case): :class:`ProfileResult`.

Times are seconds per backward call; bytes are per call; rates are decimal GB/s (1e9 bytes/s).
``gbps`` is ``nbytes_min / seconds`` — the figure ``lnbench run`` reports — and
``effective_gbps`` is ``bytes_moved / seconds`` (:mod:`.bytes_moved`); ``pct_copy`` and
``effective_pct_copy`` divide them by this machine's copy bandwidth. :meth:`ProfileResult.to_dict`
is the ``--json`` output, with non-finite floats as ``null``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lnbench.measure.profile.ops import OpStat

if TYPE_CHECKING:
    from lnbench.caseloop import Key


class ProfileUnavailable(Exception):
    """The implementation cannot run here, or does not take this case (the reason says which)."""


@dataclass
class ProfileResult:
    """One implementation's profile on one case (fields as in the module docstring)."""

    impl: str
    case: str
    M: int
    N: int
    dtype: str
    dist: str
    device: str
    backend: str  # numpy | numba | torch | cupy
    profiler: str  # what produced `profiler_rows`
    seconds: float  # untraced median per call
    seconds_q25: float
    seconds_q75: float
    samples: int
    iterations: int  # backward calls averaged by the tracers and profilers
    nbytes_min: int
    bytes_moved: float | None
    bytes_method: str  # ops | boundary | unknown
    moves_x_min: float | None
    gbps: float  # nbytes_min / seconds (what `lnbench run` reports)
    effective_gbps: float | None  # bytes_moved / seconds
    copy_gbps: float | None
    pct_copy: float | None
    effective_pct_copy: float | None
    page_faults_per_call: float | None  # minor page faults per untraced call (CPU)
    fault_seconds: float | None  # one fault's cost here (fault_cost_seconds)
    traced_seconds: float | None  # wall time per call under the op tracer
    ops_seconds: float | None  # of which inside traced ops
    ops: list[OpStat] = field(default_factory=list)  # sorted by time, slowest first
    ops_total: int = 0  # distinct ops before any `top` cut
    profiler_rows: list[dict[str, Any]] = field(default_factory=list)
    temporaries: dict[str, Any] = field(default_factory=dict)
    trace: str | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> Key:
        """The result key (lnbench.caseloop.Key) that check and run results carry too."""
        from lnbench.caseloop import Key

        return Key.of_result(self)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values (non-finite floats as None)."""
        d = asdict(self)
        return _finite(d)

    def top(self, k: int) -> ProfileResult:
        """A copy keeping the ``k`` slowest ops and profiler rows (all when k <= 0)."""
        r = copy.copy(self)
        if k > 0:
            r.ops = self.ops[:k]
            r.profiler_rows = self.profiler_rows[:k]
        return r


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v
