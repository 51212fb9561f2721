"""What loading one asv results directory yields: :class:`LoadedResults`, the tidy frame of
results (its columns are listed in ``lnbench.report.loader``), the machines, the files that
could not be read and how commits were ordered.

It sits below ``lnbench.report.loader`` (which fills it) and ``load.history`` (which reorders
it in place), so both import it downwards; ``lnbench.report.loader`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lnbench.report.load.jsonfile import LoadError


@dataclass
class LoadedResults:
    """Everything a report needs, read from one results directory."""

    results_dir: Path
    frame: pd.DataFrame
    machines: pd.DataFrame
    errors: list[LoadError] = field(default_factory=list)
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)
    param_names: list[str] = field(default_factory=list)
    #: commits whose results were left out: not on the first-parent history given
    off_history: list[str] = field(default_factory=list)
    #: how commits were ordered: "first-parent" or "date"
    order: str = "date"

    @property
    def has_results(self) -> bool:
        return not self.frame.empty
