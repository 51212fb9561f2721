"""Measuring: runtime, memory, bandwidth and error of one implementation on one case.

Used by both ``lnbench run`` and the asv suite (benchmarks/), so there is one measuring code
path. Nothing here formats reports; ``lnbench.report`` reads only what this package stores.
"""
