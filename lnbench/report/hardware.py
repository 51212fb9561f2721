"""Machines side by side: ``lnbench report hardware``, for any asv suite.

For one commit (``--commit``, a hash prefix) or else each machine's latest commit, two tables:

**Every benchmark** (``benchmarks``; the CSV): one row per (benchmark, parameter set, machine),
whatever the suite and its parameter names (a kedro ``runner=SequentialRunner`` and lnbench's
``impl=numpy.kevin, shape=256x1024, dtype=float32`` alike), with the stored value, its unit and
``vs_baseline``: how many times *better* than the baseline machine, in the metric's own
direction (``metrics.higher_is_better``): baseline / value for times and bytes, value /
baseline for rates. Accuracy metrics (``rel_err``) judge an implementation, not a machine:
they are left out unless ``--bench`` selects them. ``--bench REGEX`` (as asv's ``--bench``:
a regular expression searched in the full benchmark name, repeatable) narrows the table.

**Speed** (``rows``): where a benchmark class stores lnbench's own per-call measurement
(``track_seconds``, ``track_gbps``, ``track_pct_copy`` of ``bench_backward.Metrics``), one row
per (parameter set, machine) with

- ``seconds``: ``track_seconds``, the median of the same per-call samples that give the
  row's ``gbps`` and ``pct_copy``. asv's own timer (``Backward.time_backward``) is a second,
  independent measurement — asv's timer around one call, in another process and at another
  time — so it is never put beside those: a row showing ``time_backward`` 2.01 ms next to
  ``track_gbps`` 45 GB/s (which implies 70 µs) is two measurements read as one. It stays in
  the *every benchmark* table under its own name. ``measurement`` names the class.
- ``speedup``: baseline machine's seconds / this machine's seconds (> 1: faster than baseline);
- ``gbps``: ``track_gbps``;
- ``pct_copy``: ``track_pct_copy`` as measured in the run; where absent, ``gbps`` divided by
  the machine's copy bandwidth from ``lnbench-machines/<machine>.json`` (the CUDA copy for
  implementations that run on the GPU, the CPU copy otherwise). A percentage of each
  machine's own copy speed lets an H100 and a 2-core CPU box be compared fairly.
  ``pct_copy_source`` says which (``measured``, ``facts``, or None when unknown).

Environments: asv keeps one series per environment. Where no (machine, benchmark, parameters)
was measured in more than one environment at the chosen commit, each row holds its single
``env`` and the tables leave the column out. Where some was, ``env`` becomes part of the row's
key (the tables show it), and a row is compared with the baseline's row of the same
environment, or, where the baseline has no such environment, with the median over the
baseline's environments.

Only values with status ``ok`` and the benchmark's current version (``version_ok``) are used;
any other status (``failed``, ``skipped``, ``invalid`` or one added later) is not a value.
``--commit``, ``--baseline`` and ``--bench`` are checked against everything stored, so an
unknown one is a :class:`HardwareError` (exit 2) on any results folder, lnbench's or not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lnbench.metrics import pct_copy
from lnbench.report import metrics
from lnbench.report.loader import LoadedResults

#: lnbench's per-call measurement: method names in one benchmark class
SECONDS, GBPS, PCT_COPY = "track_seconds", "track_gbps", "track_pct_copy"
SPEED_METHODS = (SECONDS, GBPS, PCT_COPY)
_GPU_FAMILIES = {"cupy", "triton", "liger", "apex"}
_CPU_FAMILIES = {"numpy", "numba"}
BENCH_COLUMNS = ["benchmark", "params", "machine", "env", "commit", "value", "unit",
                 "higher_is_better", "vs_baseline"]
ROW_COLUMNS = ["machine", "env", "measurement", "seconds", "speedup", "gbps", "pct_copy",
               "pct_copy_source"]


class HardwareError(ValueError):
    """Bad ``--commit``/``--baseline``/``--bench`` for the stored results (CLI exit code 2)."""


@dataclass
class HardwareReport:
    """The tables (flat rows) plus what they were computed from.

    ``rows``: the speed table (``keys`` are its parameter columns); ``benchmarks``: every
    selected benchmark (``param_names`` are its parameter columns, ``params`` a dict per row);
    ``multi_env``: True when ``env`` is part of the rows' key (some series had several).
    """

    rows: pd.DataFrame
    machines: pd.DataFrame
    baseline: str | None
    commit: str | None
    notes: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    benchmarks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BENCH_COLUMNS))
    keys: list[str] = field(default_factory=list)
    param_names: list[str] = field(default_factory=list)
    multi_env: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "baseline": self.baseline,
            "multi_env": self.multi_env,
            "machines": _records(self.machines),
            "rows": _records(self.rows),
            "benchmarks": _records(self.benchmarks.drop(
                columns=[c for c in self.param_names if c in self.benchmarks.columns])),
            "notes": self.notes,
            "errors": self.errors,
        }


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def _fact(v: Any) -> Any:
    """A machines-frame cell as a plain value: None for pandas' missing (NaN, NA)."""
    v = _clean(v)
    try:
        return None if v is not None and not isinstance(v, list | dict) and pd.isna(v) else v
    except (TypeError, ValueError):
        return v


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    frame = frame.astype(object).where(frame.notna(), None)
    return [{k: _clean(v) for k, v in r.items()} for r in frame.to_dict("records")]


def _bandwidth(value: Any) -> float:
    """A copy bandwidth from the facts as a float; NaN when unknown or not a positive number
    (the loader already lists such facts files under ``errors``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) and v > 0 else math.nan


def _device(impl: str, facts: dict[str, Any]) -> str:
    family = impl.split(".", 1)[0]
    has_cuda = math.isfinite(_bandwidth(facts.get("copy_gbps_cuda")))
    if family in _CPU_FAMILIES or not has_cuda:
        return "cpu"
    return "cuda" if family in _GPU_FAMILIES or family == "torch" else "cpu"


def _usable(loaded: LoadedResults) -> pd.DataFrame:
    """Rows with a value: status ``ok`` (nothing else), a finite value, the current version."""
    frame = loaded.frame
    if frame.empty:
        return frame
    keep = frame["status"].astype(str).eq("ok") & np.isfinite(
        pd.to_numeric(frame["value"], errors="coerce").to_numpy(float))
    if "version_ok" in frame.columns:
        keep &= frame["version_ok"].fillna(True).astype(bool)
    return frame[keep]


def _select(names: Sequence[str], bench: Sequence[str] | None,
            notes: list[str]) -> list[str]:
    """Benchmarks the tables cover: those matching any ``--bench`` pattern, else every one
    but the accuracy metrics."""
    if not bench:
        acc = [b for b in names if metrics.is_accuracy(b)]
        if acc:
            notes.append(f"{len(acc)} accuracy benchmark(s) (rel_err) left out: they judge an "
                         "implementation, not a machine (select them with --bench)")
        return [b for b in names if not metrics.is_accuracy(b)]
    chosen: set[str] = set()
    for pattern in bench:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise HardwareError(f"--bench {pattern}: not a regular expression: {exc}") from None
        hit = {b for b in names if regex.search(b)}
        if not hit:
            raise HardwareError(f"--bench {pattern}: matches no stored benchmark")
        chosen |= hit
    return [b for b in names if b in chosen]


def _resolve_commit(frame: pd.DataFrame, commit: str) -> str:
    if not commit.strip():
        raise HardwareError(f"--commit {commit!r}: empty")
    stored = sorted(set(frame["commit"].astype(str))) if len(frame) else []
    matches = [c for c in stored if c.startswith(commit)]
    if not matches:
        raise HardwareError(f"--commit {commit}: no stored results for that commit")
    if len(matches) > 1:
        shown = ", ".join(m[:12] for m in matches[:5]) + (" …" if len(matches) > 5 else "")
        raise HardwareError(f"--commit {commit}: ambiguous, matches {len(matches)} commits "
                            f"({shown})")
    return matches[0]


def _param_key(d: pd.DataFrame, names: list[str]) -> pd.Series:
    """Per row: its non-missing parameters as ``name=value, …`` text (the row's key)."""
    text = pd.Series("", index=d.index, dtype=object)
    for p in names:
        col = d[p].astype(object)
        present = col.notna().to_numpy()
        part = np.where(present, p + "=" + col.astype(str), "")
        sep = np.where((text != "").to_numpy() & present, ", ", "")
        text = text + sep + part
    return text


def hardware_table(
    loaded: LoadedResults, commit: str | None = None, baseline: str | None = None,
    bench: Sequence[str] | None = None,
) -> HardwareReport:
    """Build the side-by-side tables; raises :class:`HardwareError` for an unknown or
    ambiguous commit, an unknown baseline machine or a ``--bench`` pattern matching nothing."""
    errors = [e.as_dict() for e in loaded.errors]
    facts = {str(r["machine"]): r for r in loaded.machines.to_dict("records")}
    stored = loaded.frame
    all_machines = sorted(set(stored["machine"].astype(str))) if len(stored) else []
    if commit is not None:
        commit = _resolve_commit(stored, commit)
    if baseline is not None and baseline not in all_machines:
        raise HardwareError(f"--baseline {baseline}: not among the machines with results "
                            f"({', '.join(all_machines) or 'none'})")
    notes: list[str] = []
    # patterns are checked against every stored benchmark, values or not
    selected = _select(sorted(set(stored["benchmark"].astype(str))) if len(stored) else [],
                       bench, notes)
    ok = _usable(loaded)
    ok = ok[ok["benchmark"].astype(str).isin(selected)] if len(ok) else ok

    empty = HardwareReport(pd.DataFrame(columns=ROW_COLUMNS), pd.DataFrame(columns=["machine"]),
                           baseline, commit, notes, errors)
    if ok.empty:
        notes.append("no stored values to compare")
        return empty
    if commit is not None:
        chosen = ok[ok["commit"].astype(str) == commit]
        missing = sorted(set(ok["machine"].astype(str)) - set(chosen["machine"].astype(str)))
        if missing:
            notes.append(f"no results at {commit[:8]} for: {', '.join(missing)}")
        if chosen.empty:
            notes.append(f"no usable values at {commit[:8]} (failed, skipped or invalid)")
            return empty
    else:
        latest = ok.groupby("machine", observed=True)["commit_order"].transform("max")
        chosen = ok[ok["commit_order"] == latest]
    machine_names = sorted(set(chosen["machine"].astype(str)))
    if baseline is None:
        baseline = machine_names[0]
    elif baseline not in machine_names:
        where = f"at {commit[:8]}" if commit else "at its latest commit"
        raise HardwareError(f"--baseline {baseline}: no results {where} for the selected "
                            f"benchmarks (machines there: {', '.join(machine_names)})")

    present = [p for p in loaded.param_names if p in chosen.columns
               and chosen[p].notna().any()]
    d = chosen.assign(machine=chosen["machine"].astype(str), env=chosen["env"].astype(str),
                      benchmark=chosen["benchmark"].astype(str),
                      value=pd.to_numeric(chosen["value"], errors="coerce").astype(float))
    d = d.assign(_p=_param_key(d, present))
    n_env = d.groupby(["machine", "benchmark", "_p"])["env"].nunique()
    multi_env = bool((n_env > 1).any())
    if multi_env:
        notes.append("some series were measured in several asv environments at the chosen "
                     "commit: env is part of each row, compared with the baseline's same "
                     "environment where it has one")

    benches = _benchmark_rows(d, present, baseline, multi_env, loaded)
    rows, keys = _speed_rows(d, present, baseline, multi_env, facts)
    machines = _machines(chosen, facts, loaded)
    if commit is None and machines["commit"].nunique() > 1:
        notes.append("machines compared at different commits (" + ", ".join(
            f"{m}: {c[:8]}" for m, c in zip(machines["machine"], machines["commit"],
                                             strict=True))
            + "): code changes are mixed with hardware; --commit C compares one commit")
    if len(rows):  # copy bandwidth and heap policy matter where there is a speed table
        info = {str(r["machine"]): r for r in machines.to_dict("records")}
        for m, i in info.items():
            if not i["has_facts"]:
                notes.append(f"{m}: no lnbench-machines/{m}.json: hardware and copy speed "
                             "unknown")
        heaps = {m: i["malloc"] if isinstance(i["malloc"], str) else "system"
                 for m, i in info.items() if i["has_facts"]}
        if len(set(heaps.values())) > 1:  # facts written before lnbench set a policy: system
            notes.append("machines measured under different heap policies ("
                         + ", ".join(f"{m}: {h}" for m, h in heaps.items())
                         + "): CPU times that allocate are not comparable "
                         "(lnbench/measure/heap.py)")
    return HardwareReport(rows, machines, baseline, commit, notes, errors, benches, keys,
                          present, multi_env)


def _better(value: np.ndarray, base: np.ndarray, higher: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(higher, value / base, base / value)


def _baseline_values(g: pd.DataFrame, key: list[str], baseline: str, multi_env: bool,
                     column: str) -> np.ndarray:
    """The baseline machine's ``column`` for each row of ``g`` (same key; same env where the
    baseline has it, else the median over the baseline's environments)."""
    base = g[g["machine"] == baseline]
    any_env = base.groupby(key)[column].median()
    idx = pd.MultiIndex.from_frame(g[key]) if len(key) > 1 else pd.Index(g[key[0]])
    out = any_env.reindex(idx).to_numpy(float)
    if multi_env:
        same = base.set_index([*key, "env"])[column]
        exact = same.reindex(pd.MultiIndex.from_frame(g[[*key, "env"]])).to_numpy(float)
        out = np.where(np.isfinite(exact), exact, out)
    return out


def _benchmark_rows(d: pd.DataFrame, present: list[str], baseline: str, multi_env: bool,
                    loaded: LoadedResults) -> pd.DataFrame:
    key = ["benchmark", "_p"]
    group = [*key, "machine", *(["env"] if multi_env else [])]
    extra = {} if multi_env else {"env": ("env", "first")}  # one env per group
    g = (d.groupby(group, observed=True, sort=False)
         .agg(value=("value", "median"), commit=("commit", "first"), unit=("unit", "first"),
              higher_is_better=("higher_is_better", "first"), **extra)
         .reset_index())
    g["commit"] = g["commit"].astype(str)
    g["unit"] = g["unit"].astype(str)
    base = _baseline_values(g, key, baseline, multi_env, "value")
    g["vs_baseline"] = _better(g["value"].to_numpy(float), base,
                               g["higher_is_better"].to_numpy(bool))
    firsts = d.drop_duplicates(key).set_index(key)
    params = firsts[present].astype(object).where(firsts[present].notna(), None)
    pdict = {k: {p: v for p, v in zip(present, vals, strict=True) if v is not None}
             for k, vals in zip(params.index, params.itertuples(index=False), strict=True)}
    g["params"] = [pdict[(b, p)] for b, p in zip(g["benchmark"], g["_p"], strict=True)]
    for p in present:
        g[p] = [pr.get(p) for pr in g["params"]]
    order = {b: i for i, b in enumerate(sorted(set(g["benchmark"])))}
    g = g.assign(_o=g["benchmark"].map(order)).sort_values(
        ["_o", "_p", "machine", "env"], kind="stable")
    return g[[*BENCH_COLUMNS, *present]].reset_index(drop=True)


def _speed_rows(d: pd.DataFrame, present: list[str], baseline: str, multi_env: bool,
                facts: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """The speed table from classes storing lnbench's per-call measurement."""
    method = d["metric"].astype(str)
    cls = d["benchmark"].str.rsplit(".", n=1).str[0]
    speed = d[method.isin(SPEED_METHODS)].assign(measurement=cls, _m=method)
    speed = speed[speed.groupby("measurement")["_m"].transform(
        lambda s: bool({SECONDS, GBPS} & set(s)))]
    if speed.empty:
        return pd.DataFrame(columns=ROW_COLUMNS), []
    keys = [p for p in present if speed[p].notna().any()]
    group = ["measurement", "_p", "machine", *(["env"] if multi_env else [])]
    wide = speed.groupby([*group, "_m"], observed=True)["value"].median().unstack("_m")
    wide = wide.reindex(columns=list(SPEED_METHODS)).reset_index()
    wide.columns.name = None
    if not multi_env:  # one env per group
        envs = speed.groupby(group, observed=True)["env"].first()
        wide["env"] = envs.reindex(pd.MultiIndex.from_frame(wide[group])).to_numpy()
    firsts = speed.drop_duplicates(["measurement", "_p"]).set_index(["measurement", "_p"])
    for k in keys:
        col = firsts[k].astype(object).where(firsts[k].notna(), None)
        wide[k] = col.reindex(pd.MultiIndex.from_frame(wide[["measurement", "_p"]])).to_numpy()
    wide["seconds"] = wide[SECONDS]
    wide["gbps"] = wide[GBPS]
    derived = []
    for _, r in wide.iterrows():
        f = facts.get(r["machine"], {})
        copy = _bandwidth(f.get(f"copy_gbps_{_device(str(r.get('impl') or ''), f)}"))
        derived.append(pct_copy(r["gbps"], copy) if math.isfinite(copy) else np.nan)
    derived_a = np.asarray(derived, dtype=float)
    measured = wide[PCT_COPY].to_numpy(dtype=float)
    wide["pct_copy"] = np.where(np.isfinite(measured), measured, derived_a)
    wide["pct_copy_source"] = np.where(
        np.isfinite(measured), "measured", np.where(np.isfinite(derived_a), "facts", None))
    base = _baseline_values(wide, ["measurement", "_p"], baseline, multi_env, "seconds")
    with np.errstate(divide="ignore", invalid="ignore"):
        wide["speedup"] = base / wide["seconds"].to_numpy(float)
    wide = wide.sort_values(["measurement", *keys, "machine", "env"], kind="stable")
    return wide[[*keys, *ROW_COLUMNS]].reset_index(drop=True), keys


def _machines(chosen: pd.DataFrame, facts: dict[str, Any],
              loaded: LoadedResults) -> pd.DataFrame:
    """One row per machine in the tables: the commit used, environments, facts or asv's
    machine.json description."""
    used = chosen.assign(machine=chosen["machine"].astype(str),
                         commit=chosen["commit"].astype(str), env=chosen["env"].astype(str))
    rows = []
    for m, grp in used.groupby("machine", sort=True):
        f = {k: _fact(v) for k, v in facts.get(m, {}).items()}
        date = grp["date"].iloc[0]
        rows.append({
            "machine": m,
            "commit": grp["commit"].iloc[0],
            "date": date.isoformat() if pd.notna(date) else None,
            "envs": sorted(set(grp["env"])),
            "has_facts": bool(f.get("has_facts", False)),
            "cpu_model": f.get("cpu_model") or f.get("asv_cpu") or "unknown",
            "cpu_cores": f.get("cpu_cores") if f.get("cpu_cores") is not None
            else f.get("asv_num_cpu"),
            "os": f.get("asv_os"),
            "arch": f.get("asv_arch"),
            "gpu_name": f.get("gpu_name") if isinstance(f.get("gpu_name"), str) else None,
            "copy_gbps_cpu": f.get("copy_gbps_cpu"),
            "copy_gbps_cuda": f.get("copy_gbps_cuda"),
            "malloc": f.get("malloc") if isinstance(f.get("malloc"), str) else None,
        })
    return pd.DataFrame(rows)
