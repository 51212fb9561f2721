"""The rows a GPU-check worker appends to ``gpu-check.jsonl``, and reading them back.

One JSON object a line, appended and flushed as it happens, so that what a worker measured
survives the worker (a crash, a sticky CUDA error, the budget): ``device`` and ``copy`` (once),
``plugin_error``, ``start`` (a point is being prepared), ``timing`` (a point is about to be
sampled in an interleaved round), ``point`` (a point's result: the one result key of
:class:`lnbench.caseloop.Key` with kind, bytes, status and reason, and what was measured),
``sweep_start``/``sweep``/``sweep_end`` (the launch-plan sweep), ``sweep_note`` and
``worker_error`` (a worker raised outside any point). The parent reads them to tell which point
a dead worker was in, and to write the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A CUDA error after which the context is unusable: the worker stops and a new one goes on
STICKY = ("illegal memory access", "illegal address", "unspecified launch failure",
          "misaligned address", "illegal instruction", "device-side assert", "launch timed out",
          "hardware stack error", "cudaerrorillegal", "cuda_error_illegal")
JSONL = "gpu-check.jsonl"


def is_sticky(reason: str) -> bool:
    return any(s in reason.lower() for s in STICKY)


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            pass
    return rows


def append(path: Path, *recs: dict[str, Any]) -> None:
    with path.open("a") as f:
        for rec in recs:
            f.write(json.dumps(rec) + "\n")


def case_fields(case_name: str) -> dict[str, Any]:
    """The result key's fields and the bytes model of a case named ``MxN-dtype-dist``."""
    from lnbench.grid import Case, parse_shape

    shape, dtype, dist = case_name.split("-", 2)
    M, N = parse_shape(shape)
    c = Case(M, N, dtype, dist)
    return {"case": c.name, "M": M, "N": N, "dtype": dtype, "dist": dist, "bytes": c.nbytes_min}


def point(impl: Any, case: Any, status: str, reason: str) -> dict[str, Any]:
    """A ``point`` row of ``impl`` on ``case`` (a Case) with its status and reason."""
    return {"type": "point", "impl": impl.name, "kind": impl.kind, "device": impl.device,
            **case_fields(case.name), "status": status, "reason": reason}


def kind_of(name: str) -> str:
    try:
        from lnbench.registry import get

        return get(name).kind
    except Exception:  # noqa: BLE001 - only a label for the report
        return "?"


def lost_point(impl: str, case: str, reason: str) -> dict[str, Any]:
    """The ``point`` row of a point whose worker died in it."""
    return {"type": "point", "impl": impl, "kind": kind_of(impl), "device": "cuda",
            **case_fields(case), "status": "error", "reason": reason}
