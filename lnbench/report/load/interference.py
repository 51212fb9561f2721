"""Interference sidecars: the points lnbench's asv suite judged disturbed while it ran.

Next to each asv run the suite writes ``DIR/lnbench-interference/<machine>/<file>.json``
(``lnbench.measure.interference``)::

    {"version": 1, "machine", "commit", "env",
     "points": [{"benchmark", "params": {name: value}, "status": "ok"|"noisy", "reason"}]}

A point with status ``noisy`` makes the stored value of that benchmark and parameter set in
that machine's, commit's and environment's result file ``noisy`` (never used by detection)
with its ``reason``. A sidecar that is malformed is a LoadError and is not used; the number
of noisy points that match no stored ok value is one LoadError.

Method: the points are matched per result file, through a per-layout index of (benchmark,
parameters) -> row offsets, so the cost is that of the points, not of the rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lnbench.report.load.jsonfile import LoadError, check_version, read_json, short_repr

if TYPE_CHECKING:
    from lnbench.report.load.collect import Collector
    from lnbench.report.load.layout import Layout

INTERFERENCE_DIR = "lnbench-interference"
INTERFERENCE_VERSION = 1

_PointKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class NoisyPoints:
    """Rows named noisy: row index, reason and point id of each, and how many points."""

    rows: np.ndarray
    why: np.ndarray
    point: np.ndarray
    n_points: int
    #: points that matched no ok row (set when the frame is assembled)
    missing: int = 0


def load_interference(root: Path, errors: list[LoadError]) -> list[dict[str, Any]]:
    """The valid sidecar documents of ``root`` (each with its ``path``)."""
    docs = []
    for path in sorted((root / INTERFERENCE_DIR).glob("*/*.json")):
        try:
            data = read_json(path)
            check_version(data, INTERFERENCE_VERSION)
            for key in ("machine", "commit", "env"):
                if not isinstance(data.get(key), str) or not data[key]:
                    raise ValueError(f"{key!r} missing or not a string")
            points = data.get("points")
            if not isinstance(points, list):
                raise ValueError("'points' missing or not a list")
            for i, p in enumerate(points):
                if not isinstance(p, dict) or not isinstance(p.get("benchmark"), str):
                    raise ValueError(f"points[{i}]: not an object with a 'benchmark' string")
                if not isinstance(p.get("params", {}), dict):
                    raise ValueError(f"points[{i}]: 'params' is not an object")
                if p.get("status") not in ("ok", "noisy"):
                    raise ValueError(f"points[{i}]: status {short_repr(p.get('status'))} "
                                     "is not 'ok' or 'noisy'")
        except ValueError as exc:
            errors.append(LoadError(str(path), f"{exc}; interference not used"))
            continue
        data["path"] = str(path)
        docs.append(data)
    return docs


def _row_index(col: Collector, lay: Layout) -> dict[_PointKey, list[int]]:
    """(benchmark, sorted parameter items) -> row offsets within a file of layout ``lay``."""
    out: dict[_PointKey, list[int]] = defaultdict(list)
    names, rows = col.combos.bench_names, col.combos.rows
    assert lay.bench_of_row is not None
    for r, (b, cid) in enumerate(zip(lay.bench_of_row.tolist(), lay.ids.tolist(),
                                     strict=True)):
        params = tuple(sorted((n, v) for n, v in rows[cid].items() if isinstance(v, str)))
        out[(names[b], params)].append(r)
    return out


def match_noisy(docs: list[dict[str, Any]], col: Collector) -> NoisyPoints | None:
    """The rows of ``col`` that the sidecars ``docs`` name noisy (None when there are none)."""
    wanted: dict[tuple[str, str, str], dict[_PointKey, str]] = {}
    for doc in docs:
        noisy = {(p["benchmark"], tuple(sorted((str(k), str(v))
                                               for k, v in (p.get("params") or {}).items()))):
                 str(p.get("reason") or "noisy") for p in doc["points"]
                 if p.get("status") == "noisy"}
        if noisy:
            wanted.setdefault((doc["machine"], doc["commit"], doc["env"]), {}).update(noisy)
    if not wanted:
        return None
    files: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i, rec in enumerate(col.files):
        files[(rec["machine"], rec["commit"], rec["env"])].append(i)
    starts = col.row_starts()
    index: dict[int, dict[_PointKey, list[int]]] = {}
    rows: list[int] = []
    why: list[str] = []
    point: list[int] = []
    n_points = 0
    for key, points in wanted.items():
        for p, reason in points.items():
            for fi in files.get(key, ()):
                lay = col.layouts[fi]
                at = index.get(id(lay))
                if at is None:
                    at = index[id(lay)] = _row_index(col, lay)
                for r in at.get(p, ()):
                    rows.append(int(starts[fi]) + r)
                    why.append(reason)
                    point.append(n_points)
            n_points += 1
    reasons = np.empty(len(why), dtype=object)
    reasons[:] = why
    return NoisyPoints(np.asarray(rows, dtype=np.int64), reasons,
                       np.asarray(point, dtype=np.int64), n_points)
