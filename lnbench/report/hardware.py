"""Machines side by side: ``lnbench report hardware``.

For one commit (``--commit``, a hash prefix) or else each machine's latest commit, one row per
(impl, shape, dtype, machine), from the speed metrics whatever class stores them
(``bench_backward.Backward.time_backward``, ``bench_backward.Metrics.track_*``):

- ``seconds``: ``time_backward`` (``track_seconds`` where no ``time_backward`` is stored);
- ``speedup``: baseline machine's seconds / this machine's seconds (> 1: faster than baseline);
- ``gbps``: ``track_gbps``;
- ``pct_copy``: ``track_pct_copy`` as measured in the run; where absent, ``gbps`` divided by the
  machine's copy bandwidth from ``lnbench-machines/<machine>.json`` (the CUDA copy for
  implementations that run on the GPU, the CPU copy otherwise). A percentage of each machine's
  own copy speed lets an H100 and a 2-core CPU box be compared fairly.
  ``pct_copy_source`` says which (``measured``, ``facts``, or None when unknown).

Several environments of one machine are combined by their median.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report.loader import LoadedResults

KEYS = ["impl", "shape", "dtype"]
_GPU_FAMILIES = {"cupy", "triton", "liger", "apex"}
_CPU_FAMILIES = {"numpy", "numba"}


class HardwareError(ValueError):
    """Bad ``--commit``/``--baseline`` for the stored results (CLI exit code 2)."""


@dataclass
class HardwareReport:
    """The table (flat rows) plus what it was computed from."""

    rows: pd.DataFrame
    machines: pd.DataFrame
    baseline: str | None
    commit: str | None
    notes: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def clean(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                     for k, v in r.items()} for r in records]

        return {
            "commit": self.commit,
            "baseline": self.baseline,
            "machines": clean(self.machines.astype(object).where(self.machines.notna(), None)
                              .to_dict("records")),
            "rows": clean(self.rows.astype(object).where(self.rows.notna(), None)
                          .to_dict("records")),
            "notes": self.notes,
            "errors": self.errors,
        }


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


def hardware_table(
    loaded: LoadedResults, commit: str | None = None, baseline: str | None = None
) -> HardwareReport:
    """Build the side-by-side table; raises :class:`HardwareError` for an unknown commit or
    baseline machine."""
    frame = loaded.frame
    errors = [e.as_dict() for e in loaded.errors]
    empty_rows = pd.DataFrame(columns=[*KEYS, "machine", "seconds", "speedup", "gbps",
                                       "pct_copy", "pct_copy_source"])
    facts = {str(r["machine"]): r for r in loaded.machines.to_dict("records")}
    if frame.empty or not set(KEYS) <= set(frame.columns):
        return HardwareReport(empty_rows, pd.DataFrame(columns=["machine"]), None, commit,
                              ["no speed results with impl/shape/dtype parameters"],
                              errors)
    ok = frame[frame["status"].eq("ok") & frame["metric"].isin(
        ["time_backward", "track_seconds", "track_gbps", "track_pct_copy"]) & frame["impl"].notna()]
    notes: list[str] = []
    if commit is not None:
        hit = ok["commit"].astype(str).str.startswith(commit)
        matches = sorted(set(ok.loc[hit, "commit"].astype(str)))
        if not matches:
            raise HardwareError(f"--commit {commit}: no stored results for that commit")
        if len(matches) > 1:
            raise HardwareError(f"--commit {commit}: ambiguous, matches {', '.join(matches)}")
        chosen = ok[hit]
        missing = sorted(set(ok["machine"].astype(str)) - set(chosen["machine"].astype(str)))
        if missing:
            notes.append(f"no results at {commit} for: {', '.join(missing)}")
        commit = matches[0]
    else:
        latest = ok.groupby("machine", observed=True)["commit_order"].transform("max")
        chosen = ok[ok["commit_order"] == latest]
    if chosen.empty:
        return HardwareReport(empty_rows, pd.DataFrame(columns=["machine"]), None, commit,
                              ["no speed results to compare"], errors)

    wide = (chosen.groupby(["machine", *KEYS, "metric"], observed=True)["value"].median()
            .unstack("metric"))
    wide = wide.reindex(columns=["time_backward", "track_seconds", "track_gbps",
                                 "track_pct_copy"])
    rows = wide.reset_index()
    rows["machine"] = rows["machine"].astype(str)
    for k in KEYS:
        rows[k] = rows[k].astype(str)
    rows["seconds"] = rows["time_backward"].fillna(rows["track_seconds"])
    rows["gbps"] = rows["track_gbps"]
    derived = []
    for _, r in rows.iterrows():
        f = facts.get(r["machine"], {})
        copy = _bandwidth(f.get(f"copy_gbps_{_device(r['impl'], f)}"))
        derived.append(100.0 * r["gbps"] / copy if math.isfinite(copy) else np.nan)
    derived = np.asarray(derived, dtype=float)
    measured = rows["track_pct_copy"].to_numpy(dtype=float)
    rows["pct_copy"] = np.where(np.isfinite(measured), measured, derived)
    rows["pct_copy_source"] = np.where(
        np.isfinite(measured), "measured", np.where(np.isfinite(derived), "facts", None))

    machine_names = sorted(rows["machine"].unique())
    if baseline is None:
        baseline = machine_names[0]
    elif baseline not in machine_names:
        raise HardwareError(f"--baseline {baseline}: not among {', '.join(machine_names)}")
    base = rows[rows["machine"] == baseline].set_index(KEYS)["seconds"]
    key_index = pd.MultiIndex.from_frame(rows[KEYS])
    rows["speedup"] = base.reindex(key_index).to_numpy(dtype=float) / rows["seconds"].to_numpy(
        dtype=float)
    rows = rows[[*KEYS, "machine", "seconds", "speedup", "gbps", "pct_copy", "pct_copy_source"]]
    rows = rows.sort_values([*KEYS, "machine"], kind="stable").reset_index(drop=True)

    used = chosen.groupby("machine", observed=True).agg(
        commit=("commit", "first"), date=("date", "first")).reset_index()
    used["machine"] = used["machine"].astype(str)
    used["commit"] = used["commit"].astype(str)
    used["date"] = used["date"].map(lambda d: d.isoformat() if pd.notna(d) else None)
    info = []
    for m in used["machine"]:
        f = facts.get(m, {})
        info.append({
            "has_facts": bool(f.get("has_facts", False)),
            "cpu_model": f.get("cpu_model") or f.get("asv_cpu") or "unknown",
            "gpu_name": f.get("gpu_name") if isinstance(f.get("gpu_name"), str) else None,
            "copy_gbps_cpu": f.get("copy_gbps_cpu"),
            "copy_gbps_cuda": f.get("copy_gbps_cuda"),
            "malloc": f.get("malloc") if isinstance(f.get("malloc"), str) else None,
        })
        if not f.get("has_facts", False):
            notes.append(f"{m}: no lnbench-machines/{m}.json: hardware and copy speed unknown")
    heaps = {m: i["malloc"] or "system" for m, i in zip(used["machine"], info, strict=True)
             if i["has_facts"]}  # no facts file: the policy is unknown, not "system"
    if len(set(heaps.values())) > 1:  # facts written before lnbench set a policy read "system"
        notes.append("machines measured under different heap policies ("
                     + ", ".join(f"{m}: {h}" for m, h in heaps.items())
                     + "): CPU times that allocate are not comparable (lnbench/measure/heap.py)")
    machines = pd.concat([used, pd.DataFrame(info)], axis=1)
    return HardwareReport(rows, machines, baseline, commit, notes, errors)
