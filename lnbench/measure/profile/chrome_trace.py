"""Trace export for the NumPy/Numba tracer: a Chrome trace of the recorded ops in each call.

The file is the Trace Event Format's JSON object form (``traceEvents``, read by
chrome://tracing and Perfetto): one complete event (``"ph": "X"``, microseconds from the first
call's start) per backward call (``cat: call``) and one per recorded op inside it (``cat: op``)
with its source expression, signature and bytes. torch writes its own trace
(``torch.profiler``'s ``export_chrome_trace``, :mod:`.profilers`); CuPy gives no in-process
timeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lnbench.measure.profile.ops import Event


def write_numpy_trace(path: str, events: list[Event], spans: list[tuple[float, float]],
                      impl: str, case: str) -> None:
    """A Chrome trace (chrome://tracing, Perfetto) of the recorded ops inside each call."""
    t00 = spans[0][0] if spans else (events[0].t0 if events else 0.0)
    evs: list[dict[str, Any]] = [{
        "name": f"lnbench backward #{i}", "cat": "call", "ph": "X", "pid": 0, "tid": 0,
        "ts": (a - t00) * 1e6, "dur": (b - a) * 1e6, "args": {"impl": impl, "case": case},
    } for i, (a, b) in enumerate(spans)]
    evs += [{
        "name": e.name, "cat": "op", "ph": "X", "pid": 0, "tid": 0,
        "ts": (e.t0 - t00) * 1e6, "dur": e.dt * 1e6,
        "args": {"where": e.where, "signature": e.signature, "bytes_read": e.read,
                 "bytes_written": e.written},
    } for e in events]
    doc = {"traceEvents": evs, "displayTimeUnit": "ms",
           "otherData": {"impl": impl, "case": case, "tool": "lnbench profile"}}
    Path(path).write_text(json.dumps(doc))
