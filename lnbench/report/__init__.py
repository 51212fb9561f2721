"""Reports over stored asv results: load, detect regressions, compare hardware, plot.

Reports read only what the measuring side stored (an asv results directory plus
``lnbench-machines/*.json``); nothing here measures. Modules, one concept each:

- ``loader``      results directory -> tidy pandas frames + a list of unreadable files
- ``metrics``     which way is better for a metric, and which metrics are accuracy metrics
- ``detect``      regression/improvement detection per series (pure functions over frames)
- ``regressions`` the ``report regressions`` document (docs/interface.md JSON shape)
- ``hardware``    the ``report hardware`` table: machines side by side
- ``render``      md / html / json / csv text for both reports
- ``dashboard``   static HTML site with matplotlib (Agg) PNGs
- ``synthetic``   writer of asv-format result trees and generated histories (tests, evaluation)
- ``evaluate``    recall / false alarms / latency of the detector vs asv's step detection
- ``cli``         ``add_parsers(subparsers)`` for ``lnbench report ...`` and ``lnbench dashboard``

Kept import-light: pandas, numpy and matplotlib are imported by the modules that need them.
"""
