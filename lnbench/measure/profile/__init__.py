"""Where a backward's time and bytes go: ``lnbench profile`` (measuring only; no formatting).

For one (implementation, case) it measures, with the thunk prepared outside any of it:

- **time**: the median of per-call samples, untraced (``lnbench.measure.timing``, as ``run``);
- **ops**: every array operation the backward performs, in time order, with the source line
  that issued it, its operand shapes, its wall time and the bytes it reads and writes:
  - NumPy: the thunk's arrays are swapped (in its closure) for views of a small ``ndarray``
    subclass whose ``__array_ufunc__``/``__array_function__``/``astype`` run the real operation
    on plain arrays and record it — operators (``a * b``), reductions (``np.sum`` →
    ``add.reduce``) and dtype casts included. ``np.empty/zeros/ones/full`` are wrapped while
    tracing, so arrays a formula creates itself are seen too;
  - torch: a ``TorchDispatchMode`` sees each aten operation below autograd with its real input
    and output tensors (views and in-place writes told apart by the op schema's alias info).
    Skipped for ``torch.compile`` (Dynamo refuses to run under a user dispatch mode).
- **profiler**: the backend's own profiler over the same thunk — ``torch.profiler`` (self CPU
  time per op; self CUDA time per kernel on GPUs; a Chrome trace), ``cProfile`` for NumPy and
  Numba (time grouped by Python function and C builtin), ``cupyx.profiler.benchmark`` for CuPy
  (GPU time of the whole call; no per-kernel breakdown in-process);
- **temporaries**: arrays allocated by the ops minus the returned outputs (count and bytes), the
  peak workspace (``lnbench.measure.memory``: tracemalloc for NumPy/Numba, torch profiler memory
  events on the CPU, allocator statistics on CUDA), Numba NRT allocations for compiled code and
  the bytes torch's profiler saw allocated;
- **page faults**: minor faults per untraced call and per op (``getrusage``), with this
  machine's cost of one fault (:func:`fault_cost_seconds`): every fresh temporary is zero-filled
  by the kernel page by page on first touch, which can cost more than the arithmetic;
- **bytes moved** against ``Case.nbytes_min``: the model is Σ over ops of (bytes of input arrays
  read + bytes of outputs written), counting a broadcast operand once; when the ops hide the work
  (a compiled kernel: Numba, Inductor) the *boundary* model counts the arrays the thunk holds as
  read once and its outputs as written once — the least a single fused pass can move.

Bytes are a model of traffic between operations, not a hardware counter: an operand that fits in
cache may not reach DRAM (so "effective GB/s" above the copy bandwidth means cache reuse).

One concept per module:

- :mod:`.ops` — the ops table: recorded events, the source expression that issued each, rows
  per call;
- :mod:`.numpy_tracer`, :mod:`.torch_tracer` — the two op tracers;
- :mod:`.profilers` — the backends' own profilers (torch.profiler, cProfile, cupyx.profiler);
- :mod:`.temporaries` — temporaries and peak workspace;
- :mod:`.faults` — page faults and their cost here;
- :mod:`.bytes_moved` — the ops and boundary models of bytes moved;
- :mod:`.chrome_trace` — the trace file of the NumPy/Numba tracer;
- :mod:`.result` — :class:`ProfileResult`; :mod:`.assemble` — :func:`profile_impl`, which runs
  all of the above and assembles it.
"""

from lnbench.measure.profile.assemble import BACKENDS, backend_for, profile_impl
from lnbench.measure.profile.faults import fault_cost_seconds
from lnbench.measure.profile.numpy_tracer import trace_numpy
from lnbench.measure.profile.ops import OpStat
from lnbench.measure.profile.result import ProfileResult, ProfileUnavailable

# The NumPy tracer under its former private name (tests/test_profile.py imports it).
_trace_numpy = trace_numpy

__all__ = [
    "BACKENDS",
    "OpStat",
    "ProfileResult",
    "ProfileUnavailable",
    "backend_for",
    "fault_cost_seconds",
    "profile_impl",
    "trace_numpy",
]
