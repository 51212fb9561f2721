"""LayerNorm backward: runtime, memory, bandwidth and error. The work lives in lnbench.measure;
each metric's unit and meaning in lnbench.metrics.

Grid: LNBENCH_GRID=quick|full|anchors (default quick); plugins: LNBENCH_PLUGINS=a.py:b.py.
"""

from lnbench import metrics as M
from lnbench.measure import asvbench as B


class Backward:
    """asv's own timer and peak RSS around one backward call (CUDA calls synchronised); the
    interference while asv timed it goes to results/lnbench-interference/ (asvbench.Point)."""

    params = B.backward_params()
    param_names = ["impl", "shape", "dtype"]
    timeout = 300

    def setup(self, impl, shape, dtype):
        self.p = B.Point(impl, shape, dtype)

    def teardown(self, impl, shape, dtype):
        B.teardown(self)  # time_backward: the interference over asv's samples, to the sidecar

    def time_backward(self, impl, shape, dtype):
        self.p.call()

    def peakmem_backward(self, impl, shape, dtype):
        self.p.call()


class Metrics:
    """lnbench's measurements (median of per-call samples; CUDA events on GPUs), one per metric."""

    params = B.backward_params()
    param_names = ["impl", "shape", "dtype"]
    timeout = 7200

    def setup_cache(self):
        return B.measure_all(__file__)

    def setup(self, cache, impl, shape, dtype):
        self.r = B.lookup(cache, impl, shape, dtype)

    def track_seconds(self, cache, impl, shape, dtype):
        return B.value(self.r, "track_seconds")

    def track_gbps(self, cache, impl, shape, dtype):
        return B.value(self.r, "track_gbps")

    def track_pct_copy(self, cache, impl, shape, dtype):
        return B.value(self.r, "track_pct_copy")

    def track_workspace_bytes(self, cache, impl, shape, dtype):
        return B.value(self.r, "track_workspace_bytes")

    track_seconds.unit = M.unit("track_seconds")
    track_gbps.unit = M.unit("track_gbps")
    track_pct_copy.unit = M.unit("track_pct_copy")
    track_workspace_bytes.unit = M.unit("track_workspace_bytes")


class Accuracy:
    """rel_err = max|got - ref| / max|ref| against the extended-precision reference."""

    params = B.accuracy_params()
    param_names = ["impl", "shape", "dtype", "dist"]
    timeout = 1800

    def setup_cache(self):
        return B.check_all()

    def setup(self, cache, impl, shape, dtype, dist):
        self.r = B.lookup(cache, impl, shape, dtype, dist)

    def track_rel_err_dx(self, cache, impl, shape, dtype, dist):
        return B.value(self.r, "track_rel_err_dx")

    def track_rel_err_dgamma(self, cache, impl, shape, dtype, dist):
        return B.value(self.r, "track_rel_err_dgamma")

    def track_rel_err_dbeta(self, cache, impl, shape, dtype, dist):
        return B.value(self.r, "track_rel_err_dbeta")

    track_rel_err_dx.unit = M.unit("track_rel_err_dx")
    track_rel_err_dgamma.unit = M.unit("track_rel_err_dgamma")
    track_rel_err_dbeta.unit = M.unit("track_rel_err_dbeta")
