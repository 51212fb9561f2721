"""Where the asv suite stores machine facts: the results folder of the asv run it belongs to.

asv changes into its config's folder and resolves ``results_dir`` there, but runs benchmarks in
a temporary folder and sets ``ASV_CONF_DIR`` only in environments it builds. A stand-in ``asv``
script (a real ancestor process, as asv is of every benchmark process) checks that the suite
finds the config from the running asv's folder and ``--config`` in every form asv accepts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = "from lnbench.measure.asvbench import asv_results_dir; print(asv_results_dir())"

# a stand-in for asv's entry point: chdir to the config's folder as asv.main does, then start a
# benchmark process in another folder (asv runs benchmarks in a temporary one)
FAKE_ASV = f"""
import os, subprocess, sys
from asv.commands import make_argparser
conf = make_argparser()[0].parse_known_args(sys.argv[1:])[0].config
if conf:
    os.chdir(os.path.dirname(os.path.abspath(conf)))
sys.exit(subprocess.run([sys.executable, "-c", {PROBE!r}], cwd=os.environ["BENCH_CWD"]).returncode)
"""


def _run_fake_asv(tmp: Path, start: Path, *args: str) -> str:
    asv = tmp / "bin" / "asv"
    asv.parent.mkdir(exist_ok=True)
    asv.write_text(FAKE_ASV)
    (tmp / "bench").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASV_")}
    env["BENCH_CWD"] = str(tmp / "bench")
    proc = subprocess.run([sys.executable, str(asv), *args, "run", "--python=same"], cwd=start,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("form", ["--config X", "--config=X", "--conf X"])
def test_config_elsewhere_named_anything(tmp_path: Path, form: str) -> None:
    conf_dir = tmp_path / "confs"
    conf_dir.mkdir()
    (conf_dir / "nightly.json").write_text(json.dumps({"version": 1, "results_dir": "out"}))
    start = tmp_path / "start"
    start.mkdir()
    arg = "../confs/nightly.json"  # relative to where asv was started, not to its new folder
    args = {"--config X": ["--config", arg], "--config=X": [f"--config={arg}"],
            "--conf X": ["--conf", arg]}[form]  # asv's argparse takes unambiguous prefixes
    got = _run_fake_asv(tmp_path, start, *args)
    assert Path(got) == (conf_dir / "out").resolve()


def test_default_config_with_comments_and_absolute_results(tmp_path: Path) -> None:
    (tmp_path / "asv.conf.jsonc").write_text(
        '{\n  // asv accepts comments\n  "version": 1,\n'
        f'  "results_dir": {json.dumps(str(tmp_path / "abs"))}\n}}\n')
    assert Path(_run_fake_asv(tmp_path, tmp_path)) == tmp_path / "abs"


def test_unreadable_config_or_no_asv_gives_none(tmp_path: Path) -> None:
    (tmp_path / "asv.conf.json").write_text("{ not json")
    assert _run_fake_asv(tmp_path, tmp_path) == "None"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASV_")}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "None"  # no asv ancestor, no ASV_CONF_DIR: nothing written


def test_a_command_merely_naming_asv_is_not_asv(tmp_path: Path) -> None:
    """``tox -e asv``, ``make asv``: an argument named asv does not make a process asv's."""
    (tmp_path / "asv.conf.json").write_text(json.dumps({"version": 1, "results_dir": "r"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASV_")}
    parent = ("import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]], "
              "check=True)")
    proc = subprocess.run([sys.executable, "-c", parent, PROBE, "-e", "asv"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "None"
