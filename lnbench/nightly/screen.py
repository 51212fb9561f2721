"""The triage's second source of alarms: the regression report's method run on a low quantile of
the recorded timing samples instead of asv's stored median (:mod:`lnbench.nightly.triage`,
step 1).

Why. Interference on a shared machine only ever adds time: a neighbour's job, a preemption, a
cache another process just emptied make a sample slower, never faster. The samples of one
commit are then a mixture of an undisturbed body and a slowed part whose share changes from
minute to minute, and asv's stored value, the median of the pooled samples, lands in the body
or in the slowed part depending on that share. A low quantile stays in the body as long as
the undisturbed share is larger than the quantile (the argument for the minimum of Chen and
Revels, "Robust benchmarking in noisy environments", 2016, and for low quantiles in
Kalibera and Jones, "Rigorous benchmarking in reasonable time", ISMM 2013). On the busy 2-core
x86_64 VM (load average 7) the medians of identical code spread by 13 % (log standard
deviation) between the commits of one interleaved asv run, their 10th percentiles by 3 %
(``tests/test_nightly_e2e.py``'s project, 16x512 float64, 1,600 samples per commit): a 1.3x
step is 2 standard deviations of the medians and 9 of the 10th percentiles.

Method (``low_quantile_alarms``): the results are read by ``lnbench.report.loader`` (ordered by
the project's first-parent history when its commits are on it, as the report does), each
timing point with at least ``MIN_SAMPLES`` recorded samples gets the ``QUANTILE`` of its
samples as its value (points without samples are left out), and the report's own detector and
document (``lnbench.report.regressions.regression_report``, ``latest_only``) run on that
frame unchanged: the same noise estimate, persistence, newest-point test (Mann-Whitney U of
the samples and the run-to-run z test), thresholds and open-ness. Its regressions are alarms
like the report's; the triage then re-measures them A/B and compares 10th percentiles there
too (``QUANTILE``). The gate still fails only on confirmed alarms: this source adds re-runs,
never failures by itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

#: the quantile of the recorded samples the screen judges (and the A/B of its alarms compares)
QUANTILE = 0.10
#: fewer samples than this and a point is left out (the 10th percentile of 20 samples is the
#: mean of the 2nd and 3rd smallest)
MIN_SAMPLES = 20
#: the source name of this screen's alarms (``Alarm.source``)
SOURCE = "p10 of the samples"
#: at least this share of the result commits on the project's first-parent history and it
#: orders them (what ``lnbench report regressions`` does in a repository)
REPO_MATCH_SHARE = 0.5


def low_quantile(samples: Any, q: float = QUANTILE) -> float | None:
    """``q`` quantile of the finite, positive samples; None with fewer than MIN_SAMPLES."""
    if not isinstance(samples, list | tuple | np.ndarray):
        return None
    a = np.asarray([x for x in samples if isinstance(x, int | float)], dtype=float)
    a = a[np.isfinite(a) & (a > 0)]
    if len(a) < MIN_SAMPLES:
        return None
    return float(np.quantile(a, q))


def low_quantile_alarms(results: Path, repo: Path | None = None,
                        q: float = QUANTILE) -> list[dict[str, Any]]:
    """The report's regressions (JSON entries, ``latest_only``) on the ``q`` quantile of the
    recorded samples of every timing point (module docstring)."""
    from lnbench.report.loader import (
        apply_first_parent,
        git_first_parent,
        load_results,
        share_on_history,
    )
    from lnbench.report.regressions import regression_report

    loaded = load_results(results)
    frame = loaded.frame
    if frame.empty or "samples" not in frame:
        return []
    if repo is not None:
        try:
            history = git_first_parent(repo)
        except ValueError:
            history = []
        if history and share_on_history(loaded, history) >= REPO_MATCH_SHARE:
            apply_first_parent(loaded, history)
            frame = loaded.frame
    values = frame["samples"].map(lambda s: low_quantile(s, q))
    keep = values.notna() & frame["status"].eq("ok") & frame["unit"].eq("seconds")
    if not keep.any():
        return []
    low = frame.loc[keep].copy()
    low["value"] = values[keep].astype(float)
    doc = regression_report(dataclasses.replace(loaded, frame=low), latest_only=True)
    return list(doc.get("regressions", []))
