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


def point(impl: Any, case: Any, status: str, reason: str) -> dict[str, Any]:
    """A ``point`` row of ``impl`` on ``case`` (a Case): the one result key
    (``lnbench.caseloop.Key``), kind, bytes (``Case.nbytes_min``), status and reason."""
    from lnbench.caseloop import Key

    return {"type": "point", **Key.of(impl, case).as_dict(), "kind": impl.kind,
            "bytes": case.nbytes_min, "status": status, "reason": reason}


def start(impl: Any, case: Any) -> dict[str, Any]:
    """The ``start`` row of a point being prepared: its key and kind, as its ``point`` will
    have them (so the parent can write the point of a worker that died in it)."""
    rec = point(impl, case, "", "")
    return rec | {"type": "start"}


def lost_point(all_rows: list[dict[str, Any]], impl: str, case: str,
               reason: str) -> dict[str, Any]:
    """The ``point`` row of a point whose worker died in it, from its ``start`` row."""
    begun = next((r for r in reversed(all_rows) if r.get("type") == "start"
                  and (r["impl"], r["case"]) == (impl, case)), {"impl": impl, "case": case})
    return begun | {"type": "point", "status": "error", "reason": reason}
