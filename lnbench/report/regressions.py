"""The ``lnbench report regressions`` document, in the JSON shape docs/interface.md fixes.

``{"regressions": [...], "improvements": [...], "errors": [...], "noisy": [...],
"no_baseline": [...], "summary": {...}}``; each change entry has the contract keys
``benchmark, params, machine, commit, metric, before, after, ratio`` and, in addition,
``unit, env, prev_commit, date, z, open, newest, p_value, retired``:

- ``commit`` is the first commit at the new level, ``prev_commit`` the last one before it
  (the change lies between them); ``before``/``after`` are medians of the stored values on
  each side of the final change point, in ``unit``; ``ratio = after / before`` (for
  higher-is-better metrics such as ``track_gbps`` a regression has ``ratio < 1``).
- ``open`` is true while the change is still visible at the series' latest commit. By default
  only open changes are listed (like asv's regressions page); ``include_resolved`` lists all.
- ``newest``: judged at the series' newest commit from its stored samples (``p_value``: the
  Mann–Whitney U p of that test); other changes need two commits at the new level.
- ``retired``: the benchmark is no longer in ``benchmarks.json``; its changes are never open.
- ``noisy`` lists the points the measuring side stored as disturbed (interference sidecars,
  ``loader``): never used by detection, so ``--fail-on-regression`` never fails on them.
- ``no_baseline`` lists the series measured at their machine's latest commit that have
  fewer than ``min_history`` earlier points in their environment family (a new machine, a
  new benchmark, an environment with other package versions): nothing can be said about
  them yet, and the report says so instead of passing them silently.
- ``errors`` lists ``{"path", "reason"}`` for every file that could not be read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lnbench.report.detect import (
    ACCURACY,
    SPEED,
    DetectConfig,
    detection_keys,
    find_changes,
    series_columns,
)
from lnbench.report.loader import LoadedResults


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _params(row: Any, param_names: list[str]) -> dict[str, str]:
    return {p: str(row[p]) for p in param_names if p in row and pd.notna(row[p])}


def _entry(row: pd.Series, param_names: list[str]) -> dict[str, Any]:
    return {
        "benchmark": str(row["benchmark"]),
        "params": _params(row, param_names),
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
        "newest": bool(row.get("newest", False)),
        "p_value": _num(row.get("p_value")),
        "retired": bool(row.get("retired", False)),
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
    frame = loaded.frame
    if changes is None:
        changes = find_changes(frame, loaded.param_names, speed, accuracy)
    changes, by_copy = _without_copy_moves(changes, loaded.param_names)
    stale = 0
    if latest_only and len(changes):
        changes, stale = _measured_at_latest(changes, frame, loaded.param_names)
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
    doc["noisy"] = _noisy(frame, loaded.param_names)
    doc["no_baseline"] = _no_baseline(frame, loaded.param_names, speed.min_history)
    retired = (sorted(map(str, frame.loc[frame["retired"].astype(bool), "benchmark"].unique()))
               if len(frame) and "retired" in frame else [])
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
        "commit_order": loaded.order,
        "left_out_off_history": len(loaded.off_history),
        "off_history_commits": list(loaded.off_history),
        "retired_benchmarks": retired,
        "noisy_points": len(doc["noisy"]),
        "no_baseline_series": len(doc["no_baseline"]),
    }
    doc["notes"] = _notes(doc["summary"])
    return doc


def _notes(summ: dict[str, Any]) -> list[str]:
    """One-line statements of what the report left out or could not judge."""
    notes = []
    if summ["left_out_off_history"]:
        notes.append(f"Left out: results of {summ['left_out_off_history']} commit(s) not on "
                     "the first-parent history (branch commits).")
    if summ["retired_benchmarks"]:
        notes.append(f"Retired: {len(summ['retired_benchmarks'])} benchmark(s) no longer in "
                     "benchmarks.json; their changes are never open.")
    if summ["noisy_points"]:
        notes.append(f"Noisy: {summ['noisy_points']} point(s) stored as measured under "
                     "interference; not used, and never a failure.")
    if summ["no_baseline_series"]:
        notes.append(f"No baseline yet: {summ['no_baseline_series']} series measured at their "
                     "machine's latest commit have too few earlier points in their "
                     "environment to be judged.")
    return notes


def _noisy(frame: pd.DataFrame, param_names: list[str]) -> list[dict[str, Any]]:
    if frame.empty or "noise_reason" not in frame:
        return []
    rows = frame[frame["status"].astype(str) == "noisy"]
    return [{"benchmark": str(r["benchmark"]), "params": _params(r, param_names),
             "machine": str(r["machine"]), "commit": str(r["commit"]), "env": str(r["env"]),
             "metric": str(r["metric"]), "value": _num(r["value"]),
             "reason": str(r["noise_reason"])} for _, r in rows.iterrows()]


def _no_baseline(frame: pd.DataFrame, param_names: list[str], min_history: int
                 ) -> list[dict[str, Any]]:
    """Series measured (ok) at their machine's latest commit with fewer than ``min_history``
    earlier ok points in their detection series (same machine, environment family,
    benchmark version and parameters)."""
    if frame.empty:
        return []
    keys = detection_keys(frame, param_names)
    need = list(dict.fromkeys([*keys, *series_columns(frame, param_names), "commit",
                               "commit_order", "metric"]))
    mask = frame["status"].astype(str).eq("ok") & np.isfinite(frame["value"].astype(float))
    ok = frame.loc[mask, need]
    if ok.empty:
        return []
    latest = frame.groupby("machine", observed=True)["commit_order"].max()
    top = ok["machine"].map(latest).to_numpy(np.int64)
    order = ok["commit_order"].to_numpy(np.int64)
    gid = ok.groupby(keys, observed=True, dropna=False, sort=False).ngroup().to_numpy()
    earlier = np.bincount(gid, weights=(order < top).astype(float), minlength=gid.max() + 1)
    at_top = order == top
    short = at_top & (earlier[gid] < min_history)
    if not short.any():
        return []
    rows = ok.loc[short].assign(_earlier=earlier[gid[short]]).drop_duplicates(
        subset=series_columns(ok, param_names))
    return [{"benchmark": str(r["benchmark"]), "params": _params(r, param_names),
             "machine": str(r["machine"]), "commit": str(r["commit"]), "env": str(r["env"]),
             "metric": str(r["metric"]), "earlier_points": int(r["_earlier"])}
            for _, r in rows.iterrows()]


def _measured_at_latest(changes: pd.DataFrame, frame: pd.DataFrame, param_names: list[str]
                        ) -> tuple[pd.DataFrame, int]:
    """Keep the changes of series that have a value at their machine's latest commit.

    A series is its environment *family* here (``loader.env_family``): a new asv environment
    of a known machine whose name differs only by its path or a hash (a fresh virtualenv
    under ``--python=same``) continues that machine's history and is judged against it. A
    series the newest run did not measure (an implementation no longer in the suite, an
    environment with other package versions) cannot say anything about that run; the
    nightly gate asks only about what it measured. Returns the kept changes and how many
    were left out.
    """
    env_col = "env_family" if "env_family" in frame and "env_family" in changes else "env"
    cols = [env_col if c == "env" else c for c in series_columns(frame, param_names)
            if c in changes.columns]
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
