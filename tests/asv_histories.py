"""Real asv results histories of other projects, for the report tests: where they are and how to
unpack one (kedro: asv v2; photutils: asv v1; each with its first-parent commit list).

They live beside the repository in ``../shared/data/asv-histories/`` (override with
``LNBENCH_ASV_HISTORIES``); a clone without them skips those tests with the reason.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HISTORIES = Path(os.environ.get("LNBENCH_ASV_HISTORIES")
                 or REPO.parent / "shared" / "data" / "asv-histories")


def unpack(name: str, dest: Path) -> Path:
    """Unpack ``HISTORIES/name`` into ``dest`` and return its ``results`` folder; skip the
    calling test when the archive is not there."""
    archive = HISTORIES / name
    if not archive.is_file():
        pytest.skip(f"real asv history {archive} not available (a clone without shared/; set "
                    "LNBENCH_ASV_HISTORIES)")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "results"
