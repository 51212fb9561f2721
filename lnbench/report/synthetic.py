"""Write asv-format result trees and generate benchmark histories (tests, evaluation, docs).

The writer reproduces ``asv.results.Results.save`` (results version 2, ``result_columns``,
trailing ``None`` columns dropped, floats truncated to 5 significant digits like
``asv.util.truncate_float_list``) and ``asv.benchmarks.Benchmarks.save``; the tests load the
files back with ``asv.results.Results.load`` to prove the format is asv's own.

Histories: multiplicative log-normal noise (``noise`` is the relative standard deviation),
optional outliers (a fraction of points slowed by 10–40 %, as a noisy neighbour or a clock
dip does on shared CI runners), and injected steps that persist to the end.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BACKWARD = "bench_backward.Backward"
METRICS = "bench_backward.Metrics"
ACCURACY = "bench_backward.Accuracy"
#: method -> (unit, asv type), per class of benchmarks/bench_backward.py
BACKWARD_METHODS = {
    "time_backward": ("seconds", "time"),
    "peakmem_backward": ("bytes", "peakmemory"),
}
METRICS_METHODS = {
    "track_seconds": ("seconds", "track"),
    "track_gbps": ("GB/s", "track"),
    "track_pct_copy": ("%", "track"),
    "track_workspace_bytes": ("bytes", "track"),
}
ACCURACY_METHODS = {
    "track_rel_err_dx": ("relative error", "track"),
    "track_rel_err_dgamma": ("relative error", "track"),
    "track_rel_err_dbeta": ("relative error", "track"),
}
DAY_MS = 86_400_000
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class BenchSpec:
    """One asv benchmark as ``benchmarks.json`` describes it."""

    name: str
    params: list[list[str]]
    param_names: list[str]
    unit: str
    type: str
    version: str = "1"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def combos(self) -> list[tuple[str, ...]]:
        return list(itertools.product(*self.params))

    def as_json(self) -> dict[str, Any]:
        d = {
            "code": "", "name": self.name, "param_names": self.param_names,
            "params": self.params, "timeout": 60.0, "type": self.type, "unit": self.unit,
            "version": self.version,
        }
        d.update(self.extra)
        return d


def quoted(values: Iterable[str]) -> list[str]:
    """Parameter values as asv stores them (repr strings)."""
    return [repr(v) for v in values]


def lnbench_specs(
    impls: Sequence[str], shapes: Sequence[str], dtypes: Sequence[str],
    dists: Sequence[str] = ("normal", "offset"),
) -> list[BenchSpec]:
    """The lnbench suite: ``bench_backward.Backward``, ``.Metrics`` and ``.Accuracy``."""
    base = [quoted(impls), quoted(shapes), quoted(dtypes)]
    specs = [
        BenchSpec(f"{cls}.{m}", base, ["impl", "shape", "dtype"], unit, typ)
        for cls, methods in ((BACKWARD, BACKWARD_METHODS), (METRICS, METRICS_METHODS))
        for m, (unit, typ) in methods.items()
    ]
    specs += [
        BenchSpec(f"{ACCURACY}.{m}", [*base, quoted(dists)], ["impl", "shape", "dtype", "dist"],
                  unit, typ)
        for m, (unit, typ) in ACCURACY_METHODS.items()
    ]
    return specs


def _truncate(x: Any) -> Any:
    """``asv.util.truncate_float_list``: 5 significant digits."""
    if isinstance(x, float) and math.isfinite(x):
        return float(f"{x:.4e}")
    if isinstance(x, list):
        return [_truncate(v) for v in x]
    return x


def write_json(path: Path, data: Any, version: int | None = None) -> None:
    """Write ``data`` as asv does (``asv.util.write_json``, compact, with ``version``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if version is not None:
        data = dict(data, version=version)
    path.write_text(json.dumps(data), encoding="utf-8")


def write_benchmarks_json(results_dir: Path, specs: Iterable[BenchSpec]) -> Path:
    path = Path(results_dir) / "benchmarks.json"
    write_json(path, {s.name: s.as_json() for s in specs}, version=2)
    return path


def write_machine_json(results_dir: Path, machine: str, **info: Any) -> Path:
    """``DIR/<machine>/machine.json`` as ``asv machine`` writes it (version 1)."""
    data = {"arch": "x86_64", "cpu": "Generic CPU", "machine": machine, "num_cpu": "2",
            "os": "Linux", "ram": "8000000"}
    data.update(info)
    path = Path(results_dir) / machine / "machine.json"
    write_json(path, data, version=1)
    return path


def write_machine_facts(results_dir: Path, machine: str, **facts: Any) -> Path:
    """``DIR/lnbench-machines/<machine>.json`` (lnbench's own machine facts)."""
    data: dict[str, Any] = {
        "machine": machine, "recorded_at": "2026-01-01T00:00:00Z", "cpu_model": "Generic CPU",
        "cpu_cores": 2, "memory_bytes": 8 * 2**30, "gpu_name": None, "gpu_memory_bytes": None,
        "driver": None, "cuda": None, "versions": {"numpy": "2.4.6", "torch": None},
        "copy_gbps": {"cpu": 21.7, "cuda": None},
    }
    data.update(facts)
    path = Path(results_dir) / "lnbench-machines" / f"{machine}.json"
    write_json(path, data)
    return path


def _stats_of(samples: Sequence[float]) -> dict[str, float]:
    """Quantile statistics of raw samples in asv's keys (CI from the sample range)."""
    s = np.sort(np.asarray(samples, dtype=float))
    return {
        "ci_99_a": float(s[0]), "ci_99_b": float(s[-1]),
        "q_25": float(np.quantile(s, 0.25)), "q_75": float(np.quantile(s, 0.75)),
        "number": 1, "repeat": len(s),
    }


def write_result_file(
    results_dir: Path,
    machine: str,
    commit: str,
    date_ms: int,
    values: Mapping[str, Sequence[float | None] | None],
    specs: Mapping[str, BenchSpec],
    *,
    env_name: str = "virtualenv-py3.11",
    samples: Mapping[str, Sequence[Sequence[float] | None]] | None = None,
    started_at_ms: int | None = None,
) -> Path:
    """One ``DIR/<machine>/<commit8>-<env>.json`` in asv's results format, version 2.

    ``values[name]`` lists one value per parameter combination (itertools.product order);
    None means failed, NaN skipped, and a None list means the whole benchmark failed.
    ``samples[name]`` (optional) gives raw samples per combination; statistics are derived
    from them as ``asv run --record-samples`` would store them.
    """
    columns = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
               "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
               "samples", "profile"]
    started = started_at_ms if started_at_ms is not None else date_ms + 3_600_000
    results: dict[str, list[Any]] = {}
    for name, vals in values.items():
        spec = specs[name]
        smp = (samples or {}).get(name)
        stats = [_stats_of(s) if s else None for s in smp] if smp else None
        row: list[Any] = [
            None if vals is None else [None if v is None else float(v) for v in vals],
            spec.params, spec.version, started, 1.0,
        ]
        for key in ("ci_99_a", "ci_99_b", "q_25", "q_75", "number", "repeat"):
            col = None if stats is None else [None if s is None else s[key] for s in stats]
            row.append(_truncate(col) if col and any(c is not None for c in col) else None)
        row.append(None if not smp else [None if s is None else list(s) for s in smp])
        while row and row[-1] is None:
            row.pop()
        results[name] = row
    data = {
        "commit_hash": commit, "env_name": env_name, "date": int(date_ms),
        "params": {"machine": machine, "python": "3.11", "arch": "x86_64"},
        "python": "3.11", "requirements": {}, "env_vars": {}, "result_columns": columns,
        "results": results, "durations": {},
    }
    path = Path(results_dir) / machine / f"{commit[:8]}-{env_name}.json"
    write_json(path, data, version=2)
    return path


def commit_hash(i: int, salt: str = "") -> str:
    """A deterministic 40-hex-digit fake commit hash."""
    import hashlib

    return hashlib.sha1(f"{salt}commit-{i}".encode()).hexdigest()


# --------------------------------------------------------------------------- histories


def noisy_history(
    rng: np.random.Generator,
    n_series: int,
    n_commits: int,
    *,
    noise: float = 0.03,
    outlier_rate: float = 0.0,
    step: float = 0.0,
    step_at: int | None = None,
) -> np.ndarray:
    """(n_series, n_commits) positive values around 1.0, lower is better.

    Noise is log-normal with relative sd ``noise``; with probability ``outlier_rate`` a point
    is slowed by a uniform 10–40 %; from ``step_at`` on every value is multiplied by
    ``1 + step`` (a regression when ``step > 0``).
    """
    y = np.exp(rng.normal(0.0, noise, size=(n_series, n_commits)))
    if outlier_rate > 0:
        hit = rng.random((n_series, n_commits)) < outlier_rate
        y = np.where(hit, y * rng.uniform(1.1, 1.4, size=y.shape), y)
    if step and step_at is not None:
        y[:, step_at:] *= 1.0 + step
    return y


@dataclass
class Injection:
    """Multiply one series by ``factor`` from commit index ``at`` on."""

    machine: str
    method: str
    params: Mapping[str, str]
    at: int
    factor: float


def _base_values(spec: BenchSpec, copy: float) -> np.ndarray:
    """Noise-free value of every parameter combination of one lnbench benchmark."""
    elt = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
    method = spec.name.rsplit(".", 1)[1]
    out = []
    for combo in spec.combos:
        p = dict(zip(spec.param_names, (v.strip("'") for v in combo), strict=True))
        m, n = (int(x) for x in p["shape"].split("x"))
        nbytes = 3 * m * n * elt.get(p["dtype"], 4) + 8 * m
        frac = 0.05 + 0.6 * (sum(map(ord, p["impl"])) % 13) / 13  # share of copy bandwidth
        seconds = nbytes / (copy * frac * 1e9)
        value = {
            "time_backward": seconds, "track_seconds": seconds, "track_gbps": copy * frac,
            "track_pct_copy": 100 * frac, "peakmem_backward": 5.0e7 + 3 * nbytes,
            "track_workspace_bytes": float(2 * nbytes),
        }.get(method)
        if value is None:  # accuracy: one rounding of the output, worse on offset inputs
            value = {"float32": 1e-7, "float64": 1e-15}.get(p["dtype"], 3e-3)
            value *= 100 if p.get("dist") == "offset" else 1
        out.append(value)
    return np.asarray(out)


NOISY = ("time_backward", "track_seconds", "track_gbps", "track_pct_copy")


def write_suite_history(
    results_dir: Path,
    *,
    machines: Mapping[str, float] | Sequence[str] = ("cpu-box",),
    n_commits: int = 30,
    impls: Sequence[str] = ("numpy.kevin", "torch.native"),
    shapes: Sequence[str] = ("4096x1024", "4096x4096"),
    dtypes: Sequence[str] = ("float32",),
    dists: Sequence[str] = ("normal", "offset"),
    noise: float = 0.02,
    injections: Sequence[Injection] = (),
    seed: int = 0,
    record_samples: bool = True,
    facts: bool = True,
) -> list[BenchSpec]:
    """A whole lnbench results tree: every benchmark of the suite over ``n_commits`` commits.

    ``machines`` maps a machine name to its copy bandwidth in GB/s (above 500 makes it a GPU
    machine). Each impl runs at a fixed share of copy bandwidth; speed metrics get relative
    run-to-run noise ``noise`` (``time_backward`` stores 5 samples); memory and accuracy are
    deterministic; ``injections`` add persistent steps. Returns the specs.
    """
    rng = np.random.default_rng(seed)
    if not isinstance(machines, Mapping):
        machines = {m: 21.7 for m in machines}
    specs = lnbench_specs(impls, shapes, dtypes, dists)
    by_name = {s.name: s for s in specs}
    results_dir = Path(results_dir)
    write_benchmarks_json(results_dir, specs)
    for mi, (machine, copy) in enumerate(machines.items()):
        gpu = copy > 500
        write_machine_json(results_dir, machine)
        if facts:
            write_machine_facts(
                results_dir, machine, gpu_name="NVIDIA H100 80GB HBM3" if gpu else None,
                copy_gbps={"cpu": 21.7, "cuda": copy if gpu else None},
            )
        base = {s.name: _base_values(s, copy) for s in specs}
        # factor[name][commit, combo] from the injections of this machine
        factor = {s.name: np.ones((n_commits, len(base[s.name]))) for s in specs}
        for inj in injections:
            if inj.machine != machine:
                continue
            for spec in specs:
                if spec.name.rsplit(".", 1)[1] != inj.method:
                    continue
                for j, combo in enumerate(spec.combos):
                    p = dict(zip(spec.param_names, (v.strip("'") for v in combo), strict=True))
                    if all(p.get(k) == v for k, v in inj.params.items()):
                        factor[spec.name][inj.at:, j] *= inj.factor
        for c in range(n_commits):
            values: dict[str, list[float | None]] = {}
            samples: dict[str, list[list[float] | None]] = {}
            for spec in specs:
                method = spec.name.rsplit(".", 1)[1]
                v = base[spec.name] * factor[spec.name][c]
                if method in NOISY:
                    draws = v[:, None] * np.exp(rng.normal(0.0, noise, size=(len(v), 5)))
                    v = np.median(draws, axis=1)
                    if record_samples and method == "time_backward":
                        samples[spec.name] = draws.tolist()
                values[spec.name] = v.tolist()
            date = T0_MS + c * DAY_MS
            write_result_file(
                results_dir, machine, commit_hash(c), date, values, by_name,
                samples=samples, started_at_ms=date + 3_600_000 + mi * 60_000,
            )
    return specs


def write_ci_history(
    results_dir: Path,
    *,
    n_commits: int = 1800,
    envs: Mapping[str, int] | None = None,
    n_benchmarks: int = 200,
    n_param_benchmarks: int = 15,
    noise: float = 0.05,
    machine: str = "ci-runner",
    seed: int = 0,
) -> dict[str, int]:
    """A django-asv-sized history of a generic asv suite on one CI machine (no lnbench names).

    ``envs`` maps an asv environment name to how many of the newest commits it measured
    (default three environments: 1,800 + 1,800 + 1,100 commits = 4,700 files). Each environment
    runs ``n_benchmarks`` unparametrized ``time_`` benchmarks and ``n_param_benchmarks`` with
    one parameter of two values (``n_benchmarks + 2 · n_param_benchmarks`` series per
    environment: 230, 690 in all with the defaults), with log-normal run-to-run noise
    ``noise`` and asv's stored statistics but no samples (what CI histories hold). Returns
    counts ``{"files", "series", "commits"}``.
    """
    rng = np.random.default_rng(seed)
    if envs is None:
        envs = {"virtualenv-py3.10": n_commits, "virtualenv-py3.11": n_commits,
                "virtualenv-py3.12": min(n_commits, 1100)}
    specs = [BenchSpec(f"suite_{i % 20}.Time{i}.time_case", [], [], "seconds", "time",
                       version=f"{i:064x}") for i in range(n_benchmarks)]
    specs += [BenchSpec(f"suite_p.Param{i}.time_param", [quoted(["small", "large"])], ["size"],
                        "seconds", "time", version=f"{i + n_benchmarks:064x}")
              for i in range(n_param_benchmarks)]
    by_name = {s.name: s for s in specs}
    results_dir = Path(results_dir)
    write_benchmarks_json(results_dir, specs)
    write_machine_json(results_dir, machine)
    base = {s.name: np.exp(rng.uniform(-12, -2, size=max(1, len(s.combos)))) for s in specs}
    files = 0
    for env, n_env in envs.items():
        for c in range(n_commits - n_env, n_commits):
            values = {name: (b * np.exp(rng.normal(0.0, noise, size=b.shape))).tolist()
                      for name, b in base.items()}
            date = T0_MS + c * 3_600_000
            write_result_file(results_dir, machine, commit_hash(c), date, values, by_name,
                              env_name=env, started_at_ms=date + 600_000)
            files += 1
    per_env = sum(max(1, len(s.combos)) for s in specs)
    return {"files": files, "series": per_env * len(envs), "commits": n_commits}


def sampled_history(
    rng: np.random.Generator,
    n_series: int,
    n_commits: int,
    *,
    noise: float = 0.03,
    within: float = 0.01,
    n_samples: int = 7,
    step: float = 0.0,
    step_at: int | None = None,
    outlier_rate: float = 0.0,
) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """Histories with raw samples, as ``asv run --record-samples`` stores them.

    Each run gets a run-level log-normal offset (s.d. ``noise``: a shared runner slows or
    speeds a whole run), then ``n_samples`` draws with within-run spread ``within``; with
    probability ``outlier_rate`` a run is slowed by 10-40 % as a whole; the stored value is
    the samples' median. Returns (values, samples[s][t]).
    """
    run = np.exp(rng.normal(0.0, noise, size=(n_series, n_commits)))
    if outlier_rate > 0:
        hit = rng.random((n_series, n_commits)) < outlier_rate
        run = np.where(hit, run * rng.uniform(1.1, 1.4, size=run.shape), run)
    if step and step_at is not None:
        run[:, step_at:] *= 1.0 + step
    draws = run[:, :, None] * np.exp(rng.normal(0.0, within, size=(n_series, n_commits,
                                                                    n_samples)))
    values = np.median(draws, axis=2)
    return values, [list(row) for row in draws]
