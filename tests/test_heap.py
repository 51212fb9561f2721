"""The heap policy while measuring (lnbench.measure.heap).

glibc's malloc made a case's time depend on the cases measured before it in the same process
(fresh mmap pages, trimming, per-thread arenas, moving thresholds). Under the default ``steady``
policy a backward that is called again reuses freed blocks: no page faults per call. Each check
runs in a fresh process, as a benchmark process starts.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is for glibc")

PROBE = r"""
import json, resource, sys
from lnbench.measure import heap
policy = heap.steady()
from lnbench.grid import Case, make_data
from lnbench.registry import get
out = {"policy": policy, "faults": {}}
for name, M, N, dt in json.loads(sys.argv[1]):
    th = get(name).make(make_data(Case(M, N, dt, "normal")))
    for _ in range(10):  # the first calls grow the heap to its high-water mark
        th()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        th()
    out["faults"][name] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 10
print(json.dumps(out))
"""

# each allocates blocks of 2-16 MB per call; numba.fused and torch's ops use worker threads
CASES = [("torch.kevin", 256, 1024, "float64"), ("numpy.kevin", 1024, 1024, "float32"),
         ("numba.fused", 2048, 2048, "float32")]


def _probe(malloc: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LNBENCH_MALLOC"}
    env["LNBENCH_TORCH_DEVICE"] = "cpu"
    if malloc is not None:
        env["LNBENCH_MALLOC"] = malloc
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(CASES)], env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc
def test_steady_heap_calls_fault_no_pages() -> None:
    got = _probe(None)  # the default
    assert got["policy"] == "steady"
    # a 2 MB block from fresh pages costs 512 faults (glibc's defaults: 230-400 per call for
    # torch.kevin in such a fresh process on the 2-core VM); allow a few for the interpreter
    assert all(f < 20 for f in got["faults"].values()), got


def test_system_policy_changes_nothing() -> None:
    got = _probe("system")
    assert got["policy"] == "system" and set(got["faults"]) == {c[0] for c in CASES}


def test_bad_policy_is_refused_naming_the_variable() -> None:
    env = dict(os.environ, LNBENCH_MALLOC="jemalloc")
    proc = subprocess.run([sys.executable, "-m", "lnbench", "run", "--impl", "numpy.kevin",
                           "--shape", "2x4", "--dtype", "float32"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lnbench: error: LNBENCH_MALLOC='jemalloc': must be steady or system"]
    proc = subprocess.run([sys.executable, "-c", "import lnbench.measure.asvbench"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "LNBENCH_MALLOC='jemalloc'" in proc.stderr


def test_policy_is_a_machine_fact() -> None:
    from lnbench.measure import heap
    from lnbench.measure.machine import facts

    assert facts(measure_bandwidth=False)["malloc"] == heap.policy()
