"""The ``lnbench report regressions`` document, in the JSON shape CONTRACT.md fixes.

``{"regressions": [...], "improvements": [...], "errors": [...]}``; each entry has the
contract keys ``benchmark, params, machine, commit, metric, before, after, ratio`` and, in
addition, ``unit, env, prev_commit, date, z, open``:

- ``commit`` is the first commit at the new level, ``prev_commit`` the last one before it
  (the change lies between them); ``before``/``after`` are medians of the stored values on
  each side, in ``unit``; ``ratio = after / before`` (for higher-is-better metrics such as
  ``track_gbps`` a regression has ``ratio < 1``).
- ``open`` is true while the change is still visible at the series' latest commit. By default
  only open changes are listed (like asv's regressions page); ``include_resolved`` lists all.
- ``errors`` lists ``{"path", "reason"}`` for every file that could not be read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report.detect import ACCURACY, SPEED, DetectConfig, find_changes, series_columns
from lnbench.report.loader import LoadedResults


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _entry(row: pd.Series, param_names: list[str]) -> dict[str, Any]:
    params = {p: str(row[p]) for p in param_names if p in row and pd.notna(row[p])}
    return {
        "benchmark": str(row["benchmark"]),
        "params": params,
        "machine": str(row["machine"]),
        "commit": str(row["commit"]),
        "metric": str(row["metric"]),
        "before": _num(row["before"]),
        "after": _num(row["after"]),
        "ratio": _num(row["ratio"]),
        "unit": str(row["unit"]),
        "env": str(row["env"]),
        "prev_commit": None if row["prev_commit"] is None else str(row["prev_commit"]),
        "date": row["date"].isoformat() if pd.notna(row["date"]) else None,
        "z": _num(row["z"]),
        "open": bool(row["open"]),
    }


def regression_report(
    loaded: LoadedResults,
    *,
    include_resolved: bool = False,
    speed: DetectConfig = SPEED,
    accuracy: DetectConfig = ACCURACY,
    changes: pd.DataFrame | None = None,
    latest_only: bool = False,
) -> dict[str, Any]:
    """Detect changes in ``loaded`` (``lnbench.report.detect.find_changes``) and build the
    contract document. Newest commits first, then the largest changes."""
    if changes is None:
        changes = find_changes(loaded.frame, loaded.param_names, speed, accuracy)
    changes, by_copy = _without_copy_moves(changes, loaded.param_names)
    stale = 0
    if latest_only and len(changes):
        changes, stale = _measured_at_latest(changes, loaded.frame, loaded.param_names)
    if not include_resolved and len(changes):
        changes = changes[changes["open"].astype(bool)]
    doc: dict[str, Any] = {"regressions": [], "improvements": [], "errors": []}
    if len(changes):
        severity = changes["ratio"].astype(float).map(lambda r: abs(math.log(r)) if r > 0 else 0)
        changes = changes.assign(_sev=severity).sort_values(
            ["commit_order", "_sev"], ascending=[False, False], kind="stable"
        )
        for _, row in changes.iterrows():
            key = "regressions" if row["kind"] == "regression" else "improvements"
            doc[key].append(_entry(row, loaded.param_names))
    doc["errors"] = [e.as_dict() for e in loaded.errors]
    frame = loaded.frame
    doc["summary"] = {
        "results": str(loaded.results_dir),
        "machines": sorted(map(str, frame["machine"].unique())) if len(frame) else [],
        "commits": int(frame["commit"].nunique()) if len(frame) else 0,
        "series": frame.groupby(series_columns(frame, loaded.param_names), observed=True,
                                dropna=False).ngroups if len(frame) else 0,
        "include_resolved": include_resolved,
        "pct_copy_moved_with_copy_bandwidth": by_copy,
        "latest_only": latest_only,
        "left_out_not_measured_at_latest": stale,
    }
    return doc


def _measured_at_latest(changes: pd.DataFrame, frame: pd.DataFrame, param_names: list[str]
                        ) -> tuple[pd.DataFrame, int]:
    """Keep the changes of series that have a value at their machine's latest commit.

    A series the newest run did not measure (another asv environment, e.g. a fresh virtualenv
    under ``--python=same``, whose name holds its path; an implementation no longer in the
    suite) cannot say anything about that run; the nightly gate asks only about what it
    measured. Returns the kept changes and how many were left out.
    """
    cols = [c for c in series_columns(frame, param_names) if c in changes.columns]
    latest = frame.groupby("machine", observed=True)["commit_order"].transform("max")
    at_latest = frame[frame["commit_order"] == latest]

    def keys(f: pd.DataFrame) -> list[tuple[str, ...]]:
        return list(zip(*(f[c].astype(object).map(str) for c in cols), strict=True))

    measured = set(keys(at_latest))
    keep = np.fromiter((k in measured for k in keys(changes)), dtype=bool, count=len(changes))
    return changes[keep], int((~keep).sum())


def _without_copy_moves(changes: pd.DataFrame, param_names: list[str]
                        ) -> tuple[pd.DataFrame, int]:
    """Drop % of copy changes that the same point's GB/s does not share (no GB/s change at that
    commit, or one the other way).

    ``track_pct_copy`` is ``track_gbps`` over the copy bandwidth measured in that run. A change
    of the one without the other is the machine's copy measurement moving, not the code (on
    the project's VM the copy read 40-46 GB/s in most runs and 78-80 GB/s in some, while the
    kernels' own GB/s did not move), so it is no regression; the GB/s change, when there is
    one, is reported on its own. Returns the kept changes and how many were dropped.
    """
    if not len(changes):
        return changes, 0
    metric = changes["metric"].astype(str)
    pct = metric.str.contains("pct_copy", regex=False).to_numpy()
    if not pct.any():
        return changes, 0
    keys = ["machine", "env", "commit", *[p for p in param_names if p in changes.columns]]

    def key_of(frame: pd.DataFrame) -> list[tuple[str, ...]]:
        return list(zip(*(frame[k].astype(object).map(str) for k in keys), strict=True))

    is_gbps = (metric == "track_gbps").to_numpy()
    up = np.log(changes["ratio"].astype(float).to_numpy()) > 0
    gbps = dict(zip(key_of(changes[is_gbps]), up[is_gbps], strict=True))
    shared = np.fromiter((gbps.get(k) is not None and gbps[k] == u
                          for k, u in zip(key_of(changes), up, strict=True)),
                         dtype=bool, count=len(changes))
    explained = pct & ~shared
    return changes[~explained], int(explained.sum())
