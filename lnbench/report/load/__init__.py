"""The parts of ``lnbench.report.loader``: reading an asv results folder into the tidy frame.

``jsonfile`` (decoding, one-line errors), ``layout`` (parameter combinations and shared file
layouts), ``resultfile`` (one result file into arrays), ``collect`` (the kept files in
growing arrays), ``frame`` (the frame assembled column-wise), ``machines``, ``interference``,
``history`` (first-parent order) and ``envfamily``. Import from ``lnbench.report.loader``.
"""
