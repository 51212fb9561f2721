"""What the GPU check does before lnbench can be imported: its options, the GPU's presence, the
carried wheels, lnbench's own dependencies, the import-and-selection probe, the output folder.

Standard library only, on purpose: ``scripts/gpu-check`` loads this file by its path on a GPU box
where lnbench does not import yet (no ml_dtypes or array-api-compat, no PyPI), installs the
wheels that ``scripts/gpu-prep`` downloaded elsewhere (``.whl/``) into a private folder first on
``sys.path`` and ``PYTHONPATH`` (so every process the check starts sees them;
:func:`before_import`), and only then imports :mod:`lnbench.gpu.check`. ``lnbench gpu-check``
runs the same steps from :func:`lnbench.gpu.check.main`. Nothing here imports lnbench: every
other module of the check imports this one, so imports go down only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DTYPES = ("float32", "bfloat16", "float16")
PROBE_MARK = "gpu-check-probe: "
DESCRIPTION = ("One prepared GPU check (about 5 minutes on one card): the GPU tests, then the "
               "benchmark table over the anchor grid, judged against the bar.")


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parser(prog: str = "gpu-check") -> argparse.ArgumentParser:
    """The check's options (one parser for ``lnbench gpu-check`` and ``scripts/gpu-check``)."""
    ap = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    ap.add_argument("out", nargs="?", help="output directory (default: $OUT, else a temp dir)")
    ap.add_argument("--budget-s", type=float, default=280.0, help="wall-clock budget (s)")
    ap.add_argument("--no-install", action="store_true", help="never download with pip")
    ap.add_argument("--wheels", type=Path, default=None,
                    help="folder of wheels to install first, offline (default: .whl/ if present;"
                         " scripts/gpu-prep makes it)")
    ap.add_argument("--no-tests", action="store_true", help="skip tests/test_gpu.py")
    ap.add_argument("--all-tests", action="store_true",
                    help="all of tests/test_gpu.py, not only its GPU tests")
    ap.add_argument("--impl", action="append", help="glob of implementation ids (repeatable)")
    ap.add_argument("--plugin", action="append", default=[],
                    help="plugin file registering more implementations (repeatable; added to"
                         " LNBENCH_PLUGINS); its CUDA implementations are held to the bar too")
    ap.add_argument("--dtype", action="append", choices=("float64", *DEFAULT_DTYPES))
    ap.add_argument("--shape", action="append", help="MxN (repeatable; default: anchor grid)")
    ap.add_argument("--exact-ref", action="store_true",
                    help="judge against lnbench's extended-precision CPU reference (slower)")
    ap.add_argument("--sweep", action="store_true",
                    help="after the table, time every launch variant of cupy.fused and"
                         " triton.fused (tile, threads, blocks per SM) while budget lasts")
    ap.add_argument("--commit", help="commit to name in the report when the copy has no .git"
                                     " (a working tree copied without .git)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--exclude", action="append", help=argparse.SUPPRESS)
    return ap


def out_folder(args: argparse.Namespace) -> Path | None:
    """The output folder the arguments name (OUT, else $OUT), or None."""
    given = args.out or os.environ.get("OUT")
    return Path(given) if given else None


def out_problem(out: Path) -> str | None:
    """Why the output folder cannot be made or written, else None (it exists after)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".gpu-check-write-test-"):
            pass
    except OSError as e:
        return f"output folder {out}: not writable ({type(e).__name__}: {e.strerror or e})"
    return None


def write_stop(out: Path | None, report: dict[str, Any], status: str, reason: str) -> None:
    """gpu-check.json and gpu-check.md for a run that stops before measuring anything."""
    if out is None:
        return
    report = report | {"status": status, "reason": reason}
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu-check.md").write_text(
        f"# gpu-check\n\n- **{status}**: {reason}\n- commit {report.get('commit', '?')}, "
        f"{report.get('when', '')}\n")


def new_report(args: argparse.Namespace) -> dict[str, Any]:
    return {"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "exact_ref": args.exact_ref}


def gpu_present() -> tuple[bool, str]:
    """(present, detail) from nvidia-smi, falling back to torch."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            if r.returncode == 0 and "GPU" in r.stdout:
                return True, r.stdout.strip().splitlines()[0]
            return False, f"nvidia-smi -L: {(r.stderr or r.stdout).strip()[:200]}"
        except (OSError, subprocess.SubprocessError) as e:
            return False, f"nvidia-smi failed: {e}"
    try:
        import torch

        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name()
    except Exception:  # noqa: BLE001 - no torch: no way to see a GPU either
        pass
    return False, "no nvidia-smi and torch sees no CUDA device"


def _pythonpath_first(*folders: str) -> None:
    parts = [*folders, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))


def use_wheels(folder: Path, report: dict[str, Any]) -> None:
    """Install the wheels in ``folder`` (scripts/gpu-prep) into a private site folder, put first
    on sys.path and PYTHONPATH (this process and every worker and test process it starts)."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        return
    site = Path(tempfile.mkdtemp(prefix="gpu-check-site-"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
           "--no-compile", "--disable-pip-version-check", "--target", str(site),
           *map(str, wheels)]
    log(f"wheels: installing {len(wheels)} from {folder} into {site}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    report["wheels"] = {"rc": r.returncode, "files": [w.name for w in wheels],
                        "tail": (r.stdout + r.stderr)[-1000:]}
    if r.returncode != 0:
        log(f"wheels: pip exit {r.returncode}: "
            + ((r.stderr or r.stdout).strip().splitlines() or ["?"])[-1][:300])
        return
    sys.path.insert(0, str(site))
    _pythonpath_first(str(site), str(ROOT))


def carried_wheels(args: argparse.Namespace, report: dict[str, Any], install: bool = True,
                   ) -> None:
    """--wheels DIR, else .whl/ when it exists: installed (unless ``install`` is False: done
    already); a --wheels that is no folder is said."""
    wheels = args.wheels or (ROOT / ".whl")
    if args.wheels is not None and not wheels.is_dir():
        log(f"--wheels {wheels}: not a folder")
    elif wheels.is_dir() and install:
        use_wheels(wheels, report)


def _pip(report: dict[str, Any], key: str, cmd: list[str]) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        report[key] = {"rc": r.returncode, "tail": (r.stdout + r.stderr)[-2000:]}
    except subprocess.TimeoutExpired:
        report[key] = {"rc": None, "tail": "timed out after 300 s"}
    log(f"install rc={report[key]['rc']}")


PIP = [sys.executable, "-m", "pip", "install", "--retries", "0", "--timeout", "15"]


def install_base(report: dict[str, Any]) -> None:
    """pip install lnbench's own dependencies but torch (which must stay the box's CUDA build)."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    deps = [d for d in deps if not d.replace(" ", "").startswith("torch")]
    log("installing lnbench's dependencies (not torch): " + " ".join(deps))
    _pip(report, "install_base", [*PIP, "-q", *deps])


def install(report: dict[str, Any]) -> None:
    """pip install -e '.[gpu]' (no retries, short timeouts: a box without PyPI fails fast)."""
    cmd = [*PIP, "-e", f"{ROOT}[gpu]"]
    log("installing: " + " ".join(cmd[2:]))
    _pip(report, "install", cmd)


def probe(impl: list[str] | None = None, shape: list[str] | None = None,
          plugin: list[str] | None = None) -> dict[str, Any]:
    """What ``python -m lnbench.gpu --probe`` (:func:`lnbench.gpu.probe.probe_main`) says in a
    fresh process: {"import_problem": the error's last line when lnbench or its implementations
    do not import (e.g. "ModuleNotFoundError: No module named 'array_api_compat'"), else None;
    "usage": one line naming a wrong --shape, --plugin or --impl, else None; "selected": the CUDA
    implementations the workers will measure; "not_cuda": those the --impl globs (else the
    --plugin files) name that are not CUDA}."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys([str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]))
    cmd = [sys.executable, "-m", "lnbench.gpu", "--probe"]
    for flag, vals in (("--impl", impl), ("--shape", shape), ("--plugin", plugin)):
        for v in vals or []:
            cmd += [flag, v]
    res: dict[str, Any] = {"import_problem": None, "usage": None, "selected": [], "not_cuda": []}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return res | {"import_problem": "importing lnbench took more than 300 s"}
    marks = [json.loads(ln[len(PROBE_MARK):]) for ln in r.stdout.splitlines()
             if ln.startswith(PROBE_MARK)]
    lines = (r.stderr or r.stdout).strip().splitlines()
    last = lines[-1][:300] if lines else f"exit {r.returncode}"
    if not marks:
        return res | {"import_problem": last}
    if len(marks) == 1:  # imported, then something (a plugin's import) ended the process
        return res | {"usage": f"--plugin: loading the plugins ended the process (exit "
                               f"{r.returncode}): {last}"}
    return res | marks[-1]


def lnbench_import_problem() -> str | None:
    """None when lnbench and its implementations import here (in a fresh process), else the
    error's last line (e.g. "ModuleNotFoundError: No module named 'array_api_compat'")."""
    return probe()["import_problem"]


def importable(args: argparse.Namespace, report: dict[str, Any],
               sel: dict[str, Any] | None = None) -> dict[str, Any]:
    """The probe's answer, after installing lnbench's dependencies once when it does not import
    (unless --no-install)."""
    sel = sel or probe(args.impl, args.shape, args.plugin)
    if sel["import_problem"] and not args.no_install:
        log(f"lnbench does not import: {sel['import_problem']}")
        install_base(report)
        sel = probe(args.impl, args.shape, args.plugin)
    return sel


def import_error(out: Path | None, report: dict[str, Any], problem: str) -> int:
    log(f"ERROR: lnbench cannot be imported here: {problem}. On a machine with PyPI run "
        "scripts/gpu-prep and carry .whl/ (docs/gpu.md); nothing measured, exit 2")
    write_stop(out, report, "error", f"lnbench import: {problem}")
    return 2


def no_gpu(out: Path | None, report: dict[str, Any], detail: str) -> int:
    log(f"SKIP: no NVIDIA GPU here ({detail}); nothing measured, exit 0")
    for name in ("GPU tests (tests/test_gpu.py)", "GPU benchmark"):
        log(f"  skipped: {name}: no GPU")
    write_stop(out, report, "skipped", f"no NVIDIA GPU: {detail}")
    return 0


def before_import(argv: list[str]) -> int | tuple[dict[str, Any], dict[str, Any]]:
    """``scripts/gpu-check``'s steps before lnbench imports: on a GPU box, the carried wheels and
    lnbench's dependencies. When lnbench imports then: ``(report, probe answer)``, with which the
    script runs :func:`lnbench.gpu.check.main` in its process (lnbench is first on ``sys.path``);
    this module never imports lnbench, so the check's modules import it downwards only. When it
    cannot import: the exit status, said — no GPU here (0), else one ERROR line naming the
    missing module (2)."""
    args = parser().parse_args(argv)
    report = new_report(args)
    present, detail = gpu_present()
    wheels = args.wheels or (ROOT / ".whl")
    if present and wheels.is_dir():
        use_wheels(wheels, report)
    plugins = [os.path.abspath(f) for f in args.plugin]  # the probe runs in the repository root
    sel = probe(args.impl, args.shape, plugins)
    if sel["import_problem"] and present and not args.no_install:
        sel = importable(args, report, sel)
    if sel["import_problem"] is None:
        sys.path.insert(0, str(ROOT))
        return report, sel
    out = out_folder(args)
    if out is not None and (why := out_problem(out)):
        print(f"gpu-check: {why}", file=sys.stderr)
        return 2
    problem = sel["import_problem"]
    return import_error(out, report, problem) if present else no_gpu(out, report, detail)
