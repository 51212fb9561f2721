"""``lnbench gpu-check``: the GPU check from its arguments to its report and exit status.

Steps (the method of each is in its module's docstring):

1. Checked before anything else, on any machine (exit 2, one line on stderr naming it): the
   output folder can be written, ``--budget-s`` is a finite number > 0, every ``--shape``
   parses as in the CLI (``lnbench.grid.parse_shape``); a repeated ``--impl``, ``--dtype``,
   ``--shape`` or ``--plugin`` is one value.
2. Without a GPU: said, exit 0 (:mod:`lnbench.gpu.preflight`). On a GPU box: the carried
   wheels, then one fresh process checks that lnbench imports, every ``--plugin`` loads and
   every ``--impl`` glob matches (exit 2 otherwise; :mod:`lnbench.gpu.selection`); globs that
   match only non-CUDA implementations: "nothing measured: ... are not CUDA implementations",
   exit 0. torch, cupy and triton are probed; ``pip install -e '.[gpu]'`` runs when one is
   missing (unless ``--no-install``); without torch on the GPU nothing can be timed (exit 0).
3. tests/test_gpu.py (its GPU tests; ``--all-tests`` all of it) with a share of the budget.
4. The workers (:mod:`lnbench.gpu.workers`, :mod:`lnbench.gpu.worker`) over the anchor grid ×
   float32/bfloat16/float16 (or ``--shape``/``--dtype``), then ``--sweep``.
5. The report: ``gpu-check.json`` (everything as data), ``gpu-check.md``
   (:mod:`lnbench.gpu.markdown`), with the summary against the bar (:mod:`lnbench.gpu.bar`);
   ``gpu-check.jsonl`` holds the raw rows, ``pytest.txt`` the tests' output.

Exit codes (docs/interface.md, as ``lnbench run``): 0 the check ran and every measured point
passed the judge, or there is nothing to measure (no GPU, torch cannot use it, no CUDA
implementation selected, or the budget too short to start: printed and written, with the
reason); 1 some implementation failed the judge or raised at some point, or the worker kept
crashing outside any point (named on the last line; the report has the details); 2 bad usage,
or lnbench itself cannot be imported here (one line names the missing module). The files are
written in every case where the output folder can be written.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lnbench.gpu import preflight as pre
from lnbench.gpu.preflight import ROOT, log


def usage_error(args: argparse.Namespace) -> str | None:
    """One line naming a wrong argument; repeated values collapsed into one, shapes as MxN."""
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        return f"--budget-s {args.budget_s}: must be a finite number of seconds > 0"
    for opt in ("impl", "dtype", "shape", "plugin"):  # a repeated value is one point, not two
        if getattr(args, opt):
            setattr(args, opt, list(dict.fromkeys(getattr(args, opt))))
    args.plugin = list(dict.fromkeys(map(os.path.abspath, args.plugin)))
    if args.shape:
        from lnbench.grid import parse_shape, shape_str

        try:
            args.shape = list(dict.fromkeys(shape_str(*parse_shape(s)) for s in args.shape))
        except ValueError as e:
            return f"--shape: {e}"
    return None


def missing_packages() -> dict[str, str]:
    """Packages the check needs that are absent or unusable here, with why (probed in fresh
    processes, side by side)."""
    from concurrent.futures import ThreadPoolExecutor

    probe = ("import torch; assert torch.version.cuda, 'CPU-only build ' + torch.__version__;"
             " assert torch.cuda.is_available(), 'torch sees no GPU'")
    checks = {"torch": probe, "cupy": "import cupy; cupy.cuda.runtime.getDeviceCount()",
              "triton": "import triton"}

    def why(code: str) -> str | None:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
        if r.returncode == 0:
            return None
        lines = (r.stderr or r.stdout).strip().splitlines()
        return lines[-1][:300] if lines else f"exit {r.returncode}"

    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        got = dict(zip(checks, pool.map(why, checks.values()), strict=True))
    return {k: v for k, v in got.items() if v is not None}


def run_tests(out: Path, all_tests: bool, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-q", "-rs",
           "-p", "no:cacheprovider"] + ([] if all_tests else ["-k", "test_gpu_"])
    log("tests: " + " ".join(cmd[2:]))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        text, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        text += f"\n... timed out after {timeout:.0f} s"
        rc = None
    (out / "pytest.txt").write_text(text)
    summary = next((ln.strip("= ") for ln in reversed(text.splitlines())
                    if " passed" in ln or " failed" in ln or " skipped" in ln or "error" in ln),
                   text.strip().splitlines()[-1] if text.strip() else "")
    log(f"tests rc={rc}: {summary}")
    return {"rc": rc, "summary": summary}


def commit_of(args: argparse.Namespace) -> str | None:
    try:
        got = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        got = ""
    return got or args.commit


class Stop(Exception):
    """The check ends before measuring: ``code`` is the exit status (already said and
    written)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def bad_usage(out: Path | None, report: dict[str, Any], why: str) -> Stop:
    print(f"gpu-check: {why}", file=sys.stderr)
    pre.write_stop(out, report, "error", f"bad usage: {why}")
    return Stop(2)


def skipped(out: Path | None, report: dict[str, Any], why: str) -> Stop:
    pre.write_stop(out, report, "skipped", why)
    return Stop(0)


def prepare(args: argparse.Namespace, report: dict[str, Any], prepared: bool,
            probed: dict[str, Any] | None = None) -> Path:
    """Steps 1-3 of the module docstring; the output folder. Raises :class:`Stop`."""
    out = pre.out_folder(args)
    if out is not None and (why := pre.out_problem(out)):
        print(f"gpu-check: {why}", file=sys.stderr)
        raise Stop(2)
    if why := usage_error(args):
        raise bad_usage(out, report, why)
    report["commit"] = commit_of(args)
    present, detail = pre.gpu_present()
    if not present:
        raise Stop(pre.no_gpu(out, report, detail))
    out = out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    log(f"GPU: {detail}; output in {out}")
    pre.carried_wheels(args, report, install=not prepared)
    select(args, out, report, probed)
    if args.plugin:
        os.environ["LNBENCH_PLUGINS"] = ":".join(
            [*args.plugin, *filter(None, os.environ.get("LNBENCH_PLUGINS", "").split(":"))])
    packages(args, out, report)
    report["tests"] = ({"rc": None, "summary": "not run (--no-tests)"} if args.no_tests else
                       run_tests(out, args.all_tests, timeout=min(120.0, 0.4 * args.budget_s)))
    return out


def select(args: argparse.Namespace, out: Path, report: dict[str, Any],
           probed: dict[str, Any] | None = None) -> None:
    """The fresh-process probe (``probed``: its answer already): lnbench imports, the
    arguments name something to measure."""
    sel = probed or pre.importable(args, report)
    if problem := sel["import_problem"]:
        raise Stop(pre.import_error(out, report, problem))
    if sel["usage"]:
        raise bad_usage(out, report, sel["usage"])
    report["not_cuda"] = n = sel["not_cuda"]
    if n:
        what = (f"{n[0]} is not a CUDA implementation" if len(n) == 1
                else f"{', '.join(n)} are not CUDA implementations")
        if not sel["selected"]:
            log(f"nothing measured: {what}; exit 0")
            raise skipped(out, report, f"nothing measured: {what}")
        log(f"not measured: {what}")


def packages(args: argparse.Namespace, out: Path, report: dict[str, Any]) -> None:
    missing = missing_packages()
    if missing and not args.no_install:
        log("missing: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
        pre.install(report)
        missing = missing_packages()
    report["missing"] = missing
    for k, v in missing.items():
        log(f"  unavailable: {k}: {v}")
    if "torch" in missing:
        log("SKIP: torch cannot use the GPU, so nothing can be timed (CUDA events come from torch)")
        raise skipped(out, report, f"torch: {missing['torch']}")


def main(argv: list[str] | None = None, prepared: dict[str, Any] | None = None,
         prog: str = "gpu-check", probed: dict[str, Any] | None = None) -> int:
    """The check (module docstring); ``prepared``: the report so far of ``scripts/gpu-check``,
    which installed the carried wheels already, and ``probed`` its probe's answer for these
    arguments (:func:`lnbench.gpu.preflight.probe`)."""
    argv = sys.argv[1:] if argv is None else argv
    args = pre.parser(prog).parse_args(argv)
    if args.worker:
        from lnbench.gpu.worker import worker_main

        return worker_main(args)
    if args.probe:
        from lnbench.gpu.selection import probe_main

        return probe_main(args)
    t0 = time.time()
    report = prepared if prepared is not None else pre.new_report(args)
    try:
        out = prepare(args, report, prepared is not None, probed)
    except Stop as s:
        return s.code
    from lnbench.gpu.workers import run_workers

    res = run_workers(args, out, t0 + args.budget_s)
    from lnbench.gpu.report import finish

    return finish(args, out, report, res, t0)
