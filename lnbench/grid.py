"""The one case grid (shapes x dtypes x input distributions) shared by tests, `lnbench run` and asv.

Inputs are drawn in float64 from fixed seeds and rounded once to the case dtype; every consumer
(implementations and the reference alike) sees exactly those rounded values. The "forward" that
produces the saved mean/rstd runs here, in extended precision, outside anything that is timed.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from itertools import product

import numpy as np

from lnbench.dtypes import DTYPES, HALF, np_dtype, stats_dtype
from lnbench.metrics import bytes_moved

DISTS: tuple[str, ...] = ("normal", "offset", "constant", "outlier", "correlated")
EPS = 1e-5

# (4096, 64) in both grids, (131072, 64) in the full one: many rows, few columns — the column
# sums dγ/dβ over large M, cheaply
QUICK_SHAPES: tuple[tuple[int, int], ...] = (
    (2, 4), (1, 768), (64, 1023), (256, 1024), (32, 4096), (4096, 64),
)
FULL_SHAPES: tuple[tuple[int, int], ...] = (
    (2, 4), (1, 768), (1, 16384), (64, 1000), (64, 1023), (256, 1024), (32, 4096),
    (4096, 768), (4096, 1024), (1024, 4096), (512, 8192), (256, 16384), (4096, 4096),
    (32768, 768), (4096, 64), (131072, 64),
)
# The grid of docs/peers.md (peer GB/s measured on an H100).
ANCHOR_SHAPES: tuple[tuple[int, int], ...] = (
    (4096, 1024), (4096, 4096), (4096, 8192), (8192, 8192), (4096, 16384), (32768, 768),
)
GRIDS = {"quick": QUICK_SHAPES, "full": FULL_SHAPES, "anchors": ANCHOR_SHAPES}


def grid_name(default: str = "quick") -> str:
    """The grid chosen by ``LNBENCH_GRID`` (quick | full | anchors), else ``default``."""
    name = os.environ.get("LNBENCH_GRID", default)
    if name not in GRIDS:
        raise ValueError(f"LNBENCH_GRID={name!r}: choose from {', '.join(GRIDS)}")
    return name


def parse_shape(s: str) -> tuple[int, int]:
    """``'4096x1024'`` -> ``(4096, 1024)``; a clear ValueError for anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", s)
    if not m:
        raise ValueError(f"bad shape {s!r}: expected MxN with positive integers, e.g. 4096x1024")
    M, N = int(m.group(1)), int(m.group(2))
    if M < 1 or N < 1:
        raise ValueError(f"bad shape {s!r}: M and N must be at least 1")
    if M * N > 2**31:
        raise ValueError(f"bad shape {s!r}: {M * N} elements is more than this harness allocates")
    return M, N


def shape_str(M: int, N: int) -> str:
    return f"{M}x{N}"


@dataclass(frozen=True)
class Case:
    """One point of the grid. ``dist`` names a distribution, or ``inputs:<file>`` for user data."""

    M: int
    N: int
    dtype: str
    dist: str = "normal"
    eps: float = EPS

    @property
    def shape(self) -> str:
        return shape_str(self.M, self.N)

    @property
    def name(self) -> str:
        return f"{self.shape}-{self.dtype}-{self.dist}"

    @property
    def nbytes_min(self) -> int:
        """Bytes a backward moves at least: ``lnbench.metrics.bytes_moved`` (x, dy, dx; stats;
        γ, dγ, dβ)."""
        return bytes_moved(self.M, self.N, np_dtype(self.dtype).itemsize)


def cases(
    grid: str = "quick",
    *,
    shapes: list[tuple[int, int]] | None = None,
    dtypes: list[str] | None = None,
    dists: list[str] | None = None,
) -> list[Case]:
    """The cases of ``grid``, narrowed by explicit shapes, dtypes and distributions."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose from {', '.join(GRIDS)}")
    for d in dtypes or ():
        np_dtype(d)
    for d in dists or ():
        if d not in DISTS:
            raise ValueError(f"unknown distribution {d!r}; choose from {', '.join(DISTS)}")
    sh = shapes or list(GRIDS[grid])
    return [Case(M, N, dt, di) for (M, N), dt, di in product(sh, dtypes or DTYPES, dists or DISTS)]


def _seed(case: Case) -> list[int]:
    return [case.M, case.N, DTYPES.index(case.dtype), DISTS.index(case.dist), 20261126]


def _draw_x(rng: np.random.Generator, case: Case) -> np.ndarray:
    M, N = case.M, case.N
    x = rng.standard_normal((M, N))  # normal and correlated: N(0, 1)
    if case.dist == "offset":
        # |mean| >> std. 1e4 as in docs/peers.md; 1e2 for 16-bit types, whose spacing at 1e4 (8 for
        # float16, 64 for bfloat16) would round N(0, 1) noise away entirely.
        x += 1e2 if case.dtype in HALF else 1e4
    elif case.dist == "constant":
        # every other row has zero variance (eps dominates); the rest stay N(0, 1)
        x[::2] = rng.standard_normal((x[::2].shape[0], 1))
    elif case.dist == "outlier":
        k = max(1, N // 256)
        cols = rng.integers(0, N, size=(M, k))
        np.put_along_axis(x, cols, rng.choice([-1.0, 1.0], size=(M, k)) * 1e3, axis=1)
    return x


@dataclass
class CaseData:
    """A case's inputs in its dtype, the saved forward state, and the exact reference (lazily)."""

    case: Case
    x: np.ndarray
    dy: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray = field(init=False)
    rstd: np.ndarray = field(init=False)
    kappa: float = field(init=False)

    def __post_init__(self) -> None:
        from lnbench.reference import forward_stats

        mean, rstd = forward_stats(self.x, self.case.eps)
        sdt = np_dtype(stats_dtype(self.case.dtype))
        self.mean = mean.astype(np.float64).astype(sdt)
        self.rstd = rstd.astype(np.float64).astype(sdt)
        # Conditioning of x - mean: how large |x| is against the row's sqrt(var + eps).
        self.kappa = float(np.max(np.abs(self.x.astype(np.float64)) * rstd.astype(np.float64)))

    @property
    def eps(self) -> float:
        return self.case.eps

    def reference(self, affine: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Extended-precision dx, dγ, dβ (float64); with ``affine=False`` γ = 1, β = 0.

        Cached on the instance, so it is freed together with the CaseData."""
        return self._ref(affine)[0]

    def term_scales(self, affine: bool = True) -> tuple[float, float, float]:
        """Scale of the terms each gradient sums (see ``reference.term_scales``)."""
        return self._ref(affine)[1]

    def _ref(self, affine: bool) -> tuple[tuple, tuple]:
        cache = self.__dict__.setdefault("_ref_cache", {})
        if affine not in cache:
            from lnbench.reference import EXT, reference_backward, term_scales

            gamma = self.gamma if affine else np.ones_like(self.gamma)
            # float64 is exact enough for float32 and 16-bit cases (reference.py)
            work = EXT if self.case.dtype == "float64" else np.float64
            cache[affine] = (reference_backward(self.dy, self.x, gamma, self.case.eps, work),
                             term_scales(self.dy, self.x, gamma, self.case.eps, work))
        return cache[affine]

    def gamma_for(self, affine: bool) -> np.ndarray:
        return self.gamma if affine else np.ones_like(self.gamma)

    __hash__ = object.__hash__


@functools.lru_cache(maxsize=8)
def make_data(case: Case) -> CaseData:
    """Inputs for ``case`` from a fixed seed (same numbers on every machine and run)."""
    if case.dist not in DISTS:
        raise ValueError(f"unknown distribution {case.dist!r}")
    rng = np.random.default_rng(_seed(case))
    dt = np_dtype(case.dtype)
    x64 = _draw_x(rng, case)
    x = x64.astype(dt)
    if case.dist == "correlated":
        dy, gamma = _correlated_dy_gamma(rng, x.astype(np.float64))
        dy, gamma = dy.astype(dt), gamma.astype(dt)
    else:
        dy = rng.standard_normal((case.M, case.N)).astype(dt)
        gamma = rng.standard_normal(case.N).astype(dt)
    beta = rng.standard_normal(case.N).astype(dt)
    return CaseData(case, x, dy, gamma, beta)


def _correlated_dy_gamma(rng: np.random.Generator, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``correlated``: dy = s·x̂ + 0.01·noise per row (s ~ U(0.5, 1.5)), γ = 1 + 0.01·noise.

    The inputs that expose formula bugs: with g = dy·γ ≈ s·x̂, mean(g·x̂) ≈ s is large, so the
    x̂·mean(g·x̂) term of dx is as large as g and dx ≈ r·(noise) is what is left after it cancels;
    a wrong variance divisor (N − 1), a dropped or doubled term, or a wrong row's statistics
    shows at once. With random dy and γ, mean(g·x̂) ~ 1/√N hides them. dγ sums same-sign terms
    (s·x̂² > 0), so its error grows with M like a correct sum's."""
    M, N = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    xhat = xc / np.sqrt((xc * xc).mean(axis=1, keepdims=True) + EPS)
    s = rng.uniform(0.5, 1.5, size=(M, 1))
    dy = s * xhat + 0.01 * rng.standard_normal((M, N))
    gamma = 1.0 + 0.01 * rng.standard_normal(N)
    return dy, gamma


def load_inputs(path: str) -> CaseData:
    """A user case from ``.npz`` (keys x, dy, gamma; optional beta, eps); dtype is the arrays'."""
    from lnbench.dtypes import dtype_name

    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # OSError, BadZipFile, pickled objects, truncated files, ...
        raise ValueError(f"--inputs {path}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"--inputs {path}: not an .npz archive (np.load gave {type(z).__name__})")
    with z:
        missing = [k for k in ("x", "dy", "gamma") if k not in z.files]
        if missing:
            raise ValueError(
                f"--inputs {path}: missing key(s) {', '.join(missing)} (has {z.files})"
            )
        try:
            x, dy, gamma = z["x"], z["dy"], z["gamma"]
            beta = z["beta"] if "beta" in z.files else np.zeros_like(gamma)
            eps = float(z["eps"]) if "eps" in z.files else EPS
        except Exception as e:
            raise ValueError(f"--inputs {path}: cannot read ({type(e).__name__}: {e})") from None
    arrays = {"x": x, "dy": dy, "gamma": gamma, "beta": beta}
    v2 = [k for k, a in arrays.items() if a.dtype.kind == "V" and a.dtype.itemsize == 2]
    if v2 and len(v2) < 4:  # bfloat16 saved by ml_dtypes loads as |V2: all four, or none
        rest = ", ".join(k for k in arrays if k not in v2)
        raise ValueError(f"--inputs {path}: {', '.join(v2)} bfloat16 but {rest} not; "
                         "save all four in one dtype")
    if v2:
        x, dy, gamma, beta = (a.view(np_dtype("bfloat16")) for a in (x, dy, gamma, beta))
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"--inputs {path}: eps must be a finite number >= 0, got {eps}")
    if x.ndim != 2:
        raise ValueError(f"--inputs {path}: x must be 2-D (M, N), got shape {x.shape}")
    M, N = x.shape
    if M < 1 or N < 1:
        raise ValueError(f"--inputs {path}: x is empty, shape {x.shape}")
    if dy.shape != x.shape or gamma.shape != (N,) or beta.shape != (N,):
        raise ValueError(
            f"--inputs {path}: shapes x{x.shape} dy{dy.shape} gamma{gamma.shape} beta{beta.shape}"
            f" do not fit (M, N), (M, N), (N,), (N,)"
        )
    name = dtype_name(x.dtype)
    try:
        dt = np_dtype(name)
    except ValueError:
        raise ValueError(f"--inputs {path}: unsupported dtype {x.dtype}") from None
    for k, a in (("x", x), ("dy", dy), ("gamma", gamma), ("beta", beta)):
        try:
            finite = bool(np.isfinite(a.astype(np.float64)).all())
        except (TypeError, ValueError):
            raise ValueError(f"--inputs {path}: {k} is not numeric ({a.dtype})") from None
        if not finite:
            raise ValueError(f"--inputs {path}: {k} has NaN or infinite values (no reference "
                             "exists to judge against)")
    stem = os.path.splitext(os.path.basename(path))[0]
    case = Case(M, N, name, f"inputs:{stem}", eps)
    return CaseData(case, x, dy.astype(dt), gamma.astype(dt), beta.astype(dt))
