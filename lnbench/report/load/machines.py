"""Machines: asv's ``machine.json`` of each machine folder and lnbench's own machine facts.

asv writes ``DIR/<machine>/machine.json`` (``asv/machine.py``, ``Machine.api_version`` 1:
``arch``, ``cpu``, ``num_cpu``, ``os``, ``ram``); lnbench adds what asv does not record in
``DIR/lnbench-machines/<machine>.json`` (``lnbench.measure``: CPU model and cores, memory,
GPU, driver, CUDA, allocator, the measured copy bandwidth per device and package versions).
The ``machines`` frame has one row per machine seen in either place: facts are None where no
facts file exists, and a fact of the wrong type is listed in ``errors`` (file and what) and
treated as unknown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lnbench.report.load.jsonfile import (
    LoadError,
    check_version,
    is_number,
    read_json,
    short_repr,
)

MACHINE_VERSION = 1
FACTS_DIR = "lnbench-machines"
FACT_FIELDS = (
    "recorded_at", "cpu_model", "cpu_cores", "memory_bytes", "gpu_name", "gpu_memory_bytes",
    "driver", "cuda", "malloc",
)
#: numeric machine facts; a value of another type is listed in ``errors`` and treated as unknown
_NUMERIC_FACTS = ("cpu_cores", "memory_bytes", "gpu_memory_bytes")


def facts_row(machine: str, facts: dict[str, Any], bad: list[str]) -> dict[str, Any]:
    """One ``machines`` row; a value of the wrong type becomes None and is named in ``bad``."""
    row: dict[str, Any] = {"machine": machine}
    for key in FACT_FIELDS:
        row[key] = facts.get(key)
    for key in _NUMERIC_FACTS:
        value = row[key]
        if value is not None and not (is_number(value) and value >= 0):
            bad.append(f"{key} {short_repr(value)} is not a number ≥ 0")
            row[key] = None
    if row["malloc"] is not None and not isinstance(row["malloc"], str):
        bad.append(f"malloc {short_repr(row['malloc'])} is not a string")
        row["malloc"] = None
    copy = facts.get("copy_gbps")
    if copy is not None and not isinstance(copy, dict):
        bad.append(f"copy_gbps {short_repr(copy)} is not an object")
        copy = None
    for dev in ("cpu", "cuda"):
        value = (copy or {}).get(dev)
        if value is not None and not (is_number(value) and value > 0):
            bad.append(f"copy_gbps.{dev} {short_repr(value)} is not a positive number")
            value = None
        row[f"copy_gbps_{dev}"] = value
    versions = facts.get("versions")
    if isinstance(versions, dict):
        for name, ver in versions.items():
            row[f"version_{name}"] = ver
    elif versions is not None:
        bad.append(f"versions {short_repr(versions)} is not an object")
    return row


def load_facts(facts_dir: Path, errors: list[LoadError]) -> dict[str, dict[str, Any]]:
    """``machine -> machines row`` of every facts file in ``facts_dir``."""
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(facts_dir.glob("*.json")):
        try:
            data = read_json(path)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            errors.append(LoadError(str(path), str(exc)))
            continue
        machine = data.get("machine") if isinstance(data.get("machine"), str) else path.stem
        bad: list[str] = []
        rows[machine] = facts_row(machine, data, bad)
        if bad:
            errors.append(LoadError(str(path), "; ".join(bad) + ": treated as unknown"))
    return rows


def machine_info(path: Path, errors: list[LoadError]) -> dict[str, Any]:
    """asv's facts of one machine folder (``asv_arch`` …), {} when machine.json is unreadable."""
    try:
        data = read_json(path)
        check_version(data, MACHINE_VERSION)
    except ValueError as exc:
        errors.append(LoadError(str(path), f"{exc}; results in this folder still loaded"))
        return {}
    return {f"asv_{k}": data.get(k) for k in ("arch", "cpu", "num_cpu", "os", "ram")}


def machines_frame(
    asv_info: dict[str, dict[str, Any]], facts: dict[str, dict[str, Any]]
) -> pd.DataFrame:
    """One row per machine in results or facts: the fact fields first, then the rest."""
    rows = []
    for machine in sorted(set(asv_info) | set(facts)):
        row = {"machine": machine, "has_facts": machine in facts, "in_results": machine in asv_info}
        row.update(asv_info.get(machine, {}))
        row.update(facts.get(machine, {"machine": machine}))
        rows.append(row)
    base = ["machine", "has_facts", "in_results", *FACT_FIELDS, "copy_gbps_cpu", "copy_gbps_cuda"]
    frame = pd.DataFrame(rows)
    for col in base:
        if col not in frame.columns:
            frame[col] = pd.Series([None] * len(frame), dtype=object)
    rest = [c for c in frame.columns if c not in base]
    return frame[base + rest]
