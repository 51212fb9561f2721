"""`lnbench nightly ...` is the nightly pipeline (scripts/nightly) under the one CLI."""

from __future__ import annotations

import subprocess
import sys


def _lnbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lnbench", *args], capture_output=True,
                          text=True, timeout=120)


def test_lnbench_nightly_is_the_pipeline() -> None:
    proc = _lnbench("nightly", "--help")
    assert proc.returncode == 0 and "--range" in proc.stdout and "--no-triage" in proc.stdout
    assert "nightly" in _lnbench("--help").stdout


def test_lnbench_nightly_bad_usage_is_one_line_exit_2() -> None:
    proc = _lnbench("nightly", "--bogus")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--bogus" in proc.stderr
