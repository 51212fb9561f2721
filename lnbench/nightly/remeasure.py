"""Re-measuring series for the triage: ``asv run --interleave-rounds --record-samples`` of
exactly the flagged parameter combinations over a few commits (:mod:`lnbench.nightly.triage`,
step 2), and the stored history of a series (for the choice of A)."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnbench.nightly.rule import Point, at_quantile
from lnbench.nightly.screen import low_quantile
from lnbench.nightly.verdicts import Series

#: ``measure(commits, series) -> {(series, commit): Point}``; a missing key is a failed or
#: absent measurement
Measure = Callable[[list[str], list[Series]], dict[tuple[Series, str], Point]]


def _unquote(v: str) -> str:
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"" else v


class AsvMeasure:
    """Re-measure series with ``asv run --interleave-rounds --record-samples`` over a
    HASHFILE of commits, into a temporary results folder (module docstring, step 2)."""

    def __init__(self, config: Path, machine: str, work: Path, env: dict[str, str] | None = None,
                 rounds: int | None = None, log: Any = None) -> None:
        from lnbench.nightly.pipeline import load_config

        self.config, self.machine, self.work = config, machine, work
        self.env = dict(env or os.environ)
        self.rounds, self.log = rounds, log or sys.stderr
        self.conf = load_config(config)
        self.runs = 0
        self.seconds = 0.0
        self.commands: list[list[str]] = []

    def _derived(self, folder: Path) -> Path:
        base = self.config.parent
        conf = dict(self.conf)
        for key, default in (("repo", "."), ("benchmark_dir", "benchmarks"),
                             ("env_dir", "env"), ("build_cache_dir", None)):
            value = conf.get(key, default)
            if value is not None and not (key == "repo" and "://" in str(value)):
                conf[key] = str((base / value).resolve())
        conf["results_dir"] = str(folder / "results")
        conf["html_dir"] = str(folder / "html")
        path = folder / "asv.conf.json"
        path.write_text(json.dumps(conf, indent=2) + "\n")
        return path

    @staticmethod
    def regex(series: Series, bench_params: list[list[str]], names: list[str]) -> str:
        """asv ``-b`` regex for exactly this parameter combination (asv matches
        ``name(p1, p2, ...)`` with the parameters' reprs)."""
        if not bench_params:
            return f"^{re.escape(series.benchmark)}$"
        given = dict(series.params)
        parts = []
        for name, values in zip(names, bench_params, strict=False):
            want = given.get(name)
            match = [v for v in values if _unquote(v) == want]
            parts.append(re.escape(match[0]) if match else ".*")
        return f"^{re.escape(series.benchmark)}\\({', '.join(parts)}\\)$"

    def __call__(self, commits: list[str], series: list[Series]) -> dict[tuple[Series, str], Point]:
        import time

        from asv.results import iter_results_for_machine_and_hash

        folder = Path(tempfile.mkdtemp(prefix="ab-", dir=self.work))
        conf = self._derived(folder)
        bench_json = self._benchmarks_json()
        regexes = []
        for s in series:
            info = bench_json.get(s.benchmark, {})
            regexes.append(self.regex(s, info.get("params") or [], info.get("param_names") or []))
        hashfile = folder / "commits.txt"
        hashfile.write_text("\n".join(commits) + "\n")
        cmd = [sys.executable, "-m", "asv", "run", "--interleave-rounds", "--record-samples",
               "--show-stderr", "--machine", self.machine, "--config", str(conf),
               *[a for r in sorted(set(regexes)) for a in ("-b", r)],
               *(["-a", f"rounds={self.rounds}"] if self.rounds else []),
               f"HASHFILE:{hashfile}"]
        self.commands.append(cmd)
        print("$ " + " ".join(cmd), file=self.log, flush=True)
        t0 = time.perf_counter()
        env = dict(self.env, ASV_CONF_DIR=str(folder))
        rc = subprocess.call(cmd, cwd=folder, env=env, stdout=self.log, stderr=self.log)
        self.seconds += time.perf_counter() - t0
        self.runs += 1
        print(f"--- asv run exit {rc} ({time.perf_counter() - t0:.1f} s)", file=self.log,
              flush=True)
        out: dict[tuple[Series, str], Point] = {}
        results = folder / "results"
        names = {}
        try:
            fresh = json.loads((results / "benchmarks.json").read_text())
            names = {k: v.get("param_names") or [] for k, v in fresh.items()
                     if isinstance(v, dict)}
        except (OSError, ValueError):
            pass
        for commit in commits:
            try:
                found = list(iter_results_for_machine_and_hash(str(results), self.machine,
                                                               commit))
            except Exception:  # noqa: BLE001 - asv raises plain errors for a missing commit
                found = []
            for s in series:
                for res in sorted(found, key=lambda r: r.env_name):
                    point = _point(res, s, names.get(s.benchmark, []))
                    if point is not None:
                        out[(s, commit)] = point
                        break
        shutil.rmtree(folder, ignore_errors=True)
        return out

    def _benchmarks_json(self) -> dict[str, Any]:
        results = (self.config.parent / self.conf.get("results_dir", "results")).resolve()
        try:
            return json.loads((results / "benchmarks.json").read_text())
        except (OSError, ValueError):
            return {}


class StoredHistory:
    """A series' stored values per commit, oldest first (asv's result files of its machine,
    ordered by the result's commit date), for ``anchor``; with ``quantile``, that quantile of
    each point's recorded samples instead (points without enough samples left out)."""

    def __init__(self, results: Path, quantile: float | None = None) -> None:
        self.results, self.quantile = results, quantile
        self._files: dict[str, list[Any]] = {}
        try:
            bj = json.loads((results / "benchmarks.json").read_text())
        except (OSError, ValueError):
            bj = {}
        self.names = {k: v.get("param_names") or [] for k, v in bj.items() if isinstance(v, dict)}

    def __call__(self, s: Series) -> list[tuple[str, float]]:
        from asv.results import iter_results_for_machine

        if s.machine not in self._files:
            try:
                found = list(iter_results_for_machine(str(self.results), s.machine))
            except Exception:  # noqa: BLE001 - an unreadable file: no history, no re-anchoring
                found = []
            self._files[s.machine] = sorted(found, key=lambda r: r.date or 0)
        out = []
        for res in self._files[s.machine]:
            if s.env and res.env_name != s.env:
                continue
            p = _point(res, s, self.names.get(s.benchmark, []))
            if p is not None and self.quantile is not None:
                p = at_quantile(p, self.quantile) if low_quantile(p.samples, self.quantile) \
                    else None
            if p is not None and p.value:
                out.append((res.commit_hash, p.value))
        return out


def _point(res: Any, s: Series, names: list[str]) -> Point | None:
    key = s.benchmark
    try:
        params = res.get_result_params(key)
        values = res.get_result_value(key, params)
        samples = res.get_result_samples(key, params)
        stats = res.get_result_stats(key, params)
    except KeyError:
        return None
    # asv gives lists in itertools.product order; one element when the benchmark has no params
    given = dict(s.params)
    for i, combo in enumerate(itertools.product(*params)):
        pairs = zip(names, combo, strict=False)
        if all(given.get(n) == _unquote(v) for n, v in pairs if n in given):
            value = values[i] if i < len(values) else None
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return None
            st = stats[i] if stats and i < len(stats) else None
            ci = (st["ci_99_a"], st["ci_99_b"]) if isinstance(st, dict) and \
                "ci_99_a" in st and "ci_99_b" in st else None
            smp = samples[i] if samples and i < len(samples) else None
            return Point(float(value), list(smp) if smp else None, ci)
    return None
