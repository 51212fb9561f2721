"""Ctrl-C ends any lnbench command with exit 130 and one line, never a traceback, and
``check`` does not turn the interruption into a judged failure."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.mark.parametrize("argv", [
    ["check", "--grid", "full", "--impl", "numpy.*", "--json"],
    ["check", "--grid", "full", "--impl", "numpy.*"],
    ["run", "--grid", "full", "--impl", "numpy.kevin", "--no-memory"],
])
def test_ctrl_c_is_exit_130_with_one_line(argv: list[str]) -> None:
    # SIGINT as a terminal's foreground job has it: a suite started in the background of a
    # non-interactive shell inherits SIGINT ignored, and so would the command
    proc = subprocess.Popen([sys.executable, "-m", "lnbench", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # past the imports and into the case loop (the full grid takes minutes)
    time.sleep(6.0)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out[-500:], err[-2000:])
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "lnbench: interrupted"
    assert '"status": "fail"' not in out  # nothing reported as judged
    assert "exit 1" not in out + err and "FAIL" not in out  # no summary of a judged failure
