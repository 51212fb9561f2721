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
from pathlib import Path

import pytest

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is for glibc")


def _env(malloc: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LNBENCH_MALLOC", "LD_PRELOAD")}
    env["LNBENCH_TORCH_DEVICE"] = "cpu"
    if malloc is not None:
        env["LNBENCH_MALLOC"] = malloc
    return env


def _python(code: str, malloc: str | None, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], env=_env(malloc),
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# glibc's own account: bytes held in mmap'd blocks after a 64 MiB malloc (above glibc's largest
# dynamic mmap threshold, 32 MiB, so its defaults always map it fresh)
MMAPPED = r"""
import ctypes, json
from lnbench.measure import heap
policy = heap.steady()
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.mallinfo2.restype = MallInfo2
p = libc.malloc(64 << 20)
print(json.dumps({"policy": policy, "mmapped": libc.mallinfo2().hblkhd}))
"""


@glibc
@pytest.mark.parametrize("malloc,policy,mapped", [(None, "steady", False),
                                                   ("system", "system", True)])
def test_large_blocks_come_from_the_heap_only_when_steady(malloc: str | None, policy: str,
                                                           mapped: bool) -> None:
    got = _python(MMAPPED, malloc)
    assert got["policy"] == policy
    assert (got["mmapped"] >= 64 << 20) is mapped, got


FAULTS = r"""
import json, resource, sys
from lnbench.measure import heap
policy = heap.steady()
from lnbench.grid import Case, make_data
from lnbench.registry import get
out = {"policy": policy, "faults": {}}
for name, M, N, dt in json.loads(sys.argv[1]):
    th = get(name).make(make_data(Case(M, N, dt, "normal")))
    for _ in range(20):  # the first calls grow the heap towards its high-water mark
        th()
    batches = []  # it may still grow a block now and then: the quietest of 6 batches of 5
    for _ in range(6):
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            th()
        batches.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5)
    out["faults"][name] = min(batches)
print(json.dumps(out))
"""

# each allocates 4-16 MiB blocks per call; torch's ops and numba.fused use worker threads
CASES = [("torch.kevin", 4096, 1024, "float32"), ("numpy.kevin", 1024, 1024, "float32"),
         ("numba.fused", 2048, 2048, "float32")]


def _thp_always() -> bool:
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@glibc
def test_steady_heap_calls_fault_no_pages() -> None:
    steady = _python(FAULTS, None, json.dumps(CASES))
    assert steady["policy"] == "steady"
    # a 16 MiB block from fresh 4 KiB pages costs 4,096 faults; allow a few for the interpreter
    assert all(f < 20 for f in steady["faults"].values()), steady
    system = _python(FAULTS, "system", json.dumps(CASES))
    assert system["policy"] == "system"
    if not _thp_always():  # with 2 MiB pages glibc's fresh blocks fault 512x less
        # glibc's defaults: torch.kevin's fresh temporaries fault on every call (7,756 per
        # call on the 2-core VM), which is what the steady heap removes
        assert system["faults"]["torch.kevin"] > 1000, system


def test_bad_policy_is_refused_naming_the_variable() -> None:
    env = dict(_env(None), LNBENCH_MALLOC="jemalloc")
    proc = subprocess.run([sys.executable, "-m", "lnbench", "run", "--impl", "numpy.kevin",
                           "--shape", "2x4", "--dtype", "float32"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lnbench: error: LNBENCH_MALLOC='jemalloc': must be steady or system"]
    proc = subprocess.run([sys.executable, "-c", "import lnbench.measure.asvbench"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "LNBENCH_MALLOC='jemalloc'" in proc.stderr


@glibc
@pytest.mark.parametrize("malloc,policy", [(None, "steady"), ("system", "system")])
def test_run_records_the_policy_it_measured_under(tmp_path: Path, malloc: str | None,
                                                  policy: str) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "lnbench", "run", "--impl", "numpy.kevin",
                           "--shape", "2x4", "--dtype", "float32", "--no-memory", "--repeat", "3",
                           "--out", str(out)], env=_env(malloc), capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["machine"]["malloc"] == policy


def test_preloaded_allocator_is_named_not_configured() -> None:
    code = ("import json, os; os.environ['LD_PRELOAD'] = '/usr/lib/libjemalloc.so.2'\n"
            "from lnbench.measure import heap; print(json.dumps({'policy': heap.steady()}))")
    assert _python(code, None)["policy"] == "preloaded (libjemalloc.so.2)"
