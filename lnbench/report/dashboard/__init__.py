"""``lnbench dashboard``: a static HTML site (index.html + PNGs) from stored results.

Sections: overview (machines, their facts, unreadable files); history of ``time_backward``
and ``track_gbps`` per machine with detected changes marked (small multiples of the ``top``
series, the ones with detected changes first -- never hundreds of lines on one axis; the x
axis is this machine's commits, labelled with short hashes); GB/s against the bytes one
backward moves (log-log, one line per implementation, one panel per dtype) from the latest
result of each series, with the machine's copy bandwidth as a dashed line (points above it
are cache-resident); a heatmap of ``track_rel_err_dx`` (implementation × distribution/dtype,
log colour scale); the regressions table; a link to the asv site.
Each section says what is missing instead of failing when its data is absent or all NaN.
Values beyond ±``PLOT_MAX`` (absurd, e.g. 1e300 GB/s) are drawn off scale, as triangles on the
edge of their panel (the heatmap's colours saturate, its text keeps the value), with a note on
the page, so the axes stay readable and the commits and changes stay visible; the change table
and the reports use them as stored.
Plots use matplotlib's Agg backend through ``Figure`` objects (no pyplot state).

Modules, one per concept: :mod:`.plotting` (what every plot shares: figures, units, off-scale
values, NoData), :mod:`.history` (series over commits, the series that changed most),
:mod:`.bandwidth` (GB/s against bytes moved; the bytes model is ``lnbench.metrics``),
:mod:`.accuracy` (the dx error heatmap), :mod:`.page` (``build_dashboard``: the HTML page).
"""

from lnbench.report.dashboard.accuracy import (
    MIN_CASE_ELEMENTS,
    accuracy_cells,
    accuracy_heatmap,
    case_elements,
)
from lnbench.report.dashboard.bandwidth import gbps_plot
from lnbench.report.dashboard.history import (
    changed_most_plot,
    history_plot,
    net_change,
    series_that_changed_most,
)
from lnbench.report.dashboard.page import HISTORY_METRICS, build_dashboard
from lnbench.report.dashboard.plotting import (
    MAX_TICK_LABELS,
    PLOT_MAX,
    NoData,
    _commit_ticks,
    _figure,
)

__all__ = [
    "HISTORY_METRICS", "MAX_TICK_LABELS", "MIN_CASE_ELEMENTS", "PLOT_MAX", "NoData",
    "_commit_ticks", "_figure", "accuracy_cells", "accuracy_heatmap", "build_dashboard",
    "case_elements", "changed_most_plot", "gbps_plot",
    "history_plot", "net_change", "series_that_changed_most",
]
