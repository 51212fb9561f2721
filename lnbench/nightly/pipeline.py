"""The nightly benchmark pipeline: the one script the CI workflows call and the tests run.

    scripts/nightly [--grid quick|full|anchors] [--quick] [--machine NAME]
                    [--results DIR] [--html DIR] [--site DIR] [--config FILE]
                    [--bench REGEX]... [--range A..B [--steps N]] [--keep-going]
                    [--no-gate | --no-triage] [--dry-run]

(``scripts/nightly`` runs ``lnbench.nightly.pipeline.main``; ``python -m lnbench.nightly run``
is the same.)

Steps (each prints a header; a failing step stops the script with its exit code):

1. machine   ``asv machine --yes [--machine NAME]`` when ~/.asv-machine.json is missing or does
             not know NAME (CI passes a fixed NAME: runner host names change every run).
2. run       ``asv run --python=same --set-commit-hash <HEAD> --record-samples`` in this
             Python (lnbench must be installed, ``pip install -e .``), with ``LNBENCH_GRID``
             set from ``--grid``; ``--quick`` adds asv's single-run smoke mode (timings
             unusable). With ``--range SPEC`` it runs ``asv run --skip-existing-commits
             --interleave-rounds --record-samples SPEC`` instead, building an environment per
             commit as asv.conf.json says (history back-fill). SPEC is a bounded set of
             commits in asv's forms: ``A..B``, ``C^!`` (one commit) or ``HASHFILE:FILE``.
             ``--record-samples`` keeps every timing sample in the results, which the report
             uses to judge the newest commit and triage to test significance.
3. publish   ``asv publish`` (asv's own site in the html directory).
4. dashboard ``lnbench dashboard --results R --out SITE --asv-html <html/index.html, relative>``.
5. gate      ``python -m lnbench.nightly triage --results R --config C --machine M``
             (``lnbench.nightly.triage``): every regression ``lnbench report regressions
             --latest-only`` flags, and every one its method flags on the 10th percentile of
             the recorded samples (``lnbench.nightly.screen``), is re-run A/B, interleaved,
             on the commit before the step and the commit after it, and bisected when
             commits lie between; exit 1 only for
             confirmed ones (and alarms that could not be re-run), 0 when every alarm was "not
             reproduced", 2 on unreadable results. ``--no-triage`` gates on the report alone
             (``lnbench report regressions --results R --fail-on-regression --latest-only``).
             The Markdown report also goes to SITE/regressions.md and, on GitHub Actions, to
             the job summary. ``--no-gate`` skips the step.

``asv run`` exits 2 when a benchmark failed; ``--keep-going`` still publishes, builds the
dashboard and gates, then exits with the first failure's code (what the nightly workflow wants:
a red job and an up-to-date site). ``--results``/``--html`` other than asv.conf.json's make the
script write a derived config (absolute paths) into a temporary folder and pass ``--config``.
``LNBENCH_IMPLS`` / ``LNBENCH_DTYPES`` / ``LNBENCH_PLUGINS`` pass through to the asv suite;
each ``LNBENCH_PLUGINS`` entry is first made absolute (relative paths are taken from the folder
nightly runs in: asv runs the benchmarks in a temporary folder), and a listed file that does
not exist is bad usage. ``--grid``'s default comes from ``LNBENCH_GRID`` and is checked like
the option. Exit codes: 0 all steps ok; a failing step's own code (with ``--keep-going``, the
first failure's); 2 bad usage (an unknown grid, a ``--range`` that is not a bounded set,
``--bench`` not a regular expression, ``--steps`` not a positive integer, a results/html/site
path that is a file or cannot be created, an unreadable config, a missing plugin), one line on
stderr naming the argument or file.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lnbench.argtypes import OneLineParser, positive_int

#: the checkout this package lives in (``pip install -e .``): its asv.conf.json and site/ are
#: the defaults
ROOT = Path(__file__).resolve().parents[2]
GRIDS = ("quick", "full", "anchors")
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad usage or unreadable input: one line on stderr, exit 2."""


class _Parser(OneLineParser):
    error_name = "nightly"  # argparse's own errors: one line, exit 2


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"{value!r} is not a regular expression: {e}") from None
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = _Parser(prog="scripts/nightly", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--grid", choices=GRIDS, default=None,
                    help="lnbench grid for the asv suite (default: $LNBENCH_GRID, else quick)")
    ap.add_argument("--quick", action="store_true",
                    help="asv --quick: each benchmark once (smoke test; timings unusable)")
    ap.add_argument("--machine", metavar="NAME", help="asv machine name (default: host name)")
    ap.add_argument("--config", default=str(ROOT / "asv.conf.json"), metavar="FILE",
                    help="asv config (default: the repository's asv.conf.json)")
    ap.add_argument("--results", metavar="DIR", help="asv results dir (default: the config's)")
    ap.add_argument("--html", metavar="DIR", help="asv publish output (default: the config's)")
    ap.add_argument("--site", default=str(ROOT / "site"), metavar="DIR",
                    help="lnbench dashboard output (default: site/)")
    ap.add_argument("--bench", "-b", action="append", metavar="REGEX", type=_regex,
                    help="only benchmarks matching REGEX (asv run -b; repeatable)")
    ap.add_argument("--range", metavar="SPEC",
                    help="back-fill: asv run SPEC (A..B, C^! or HASHFILE:FILE) in built "
                         "environments instead of this Python")
    ap.add_argument("--steps", type=positive_int, metavar="N",
                    help="with --range: at most N commits (a positive integer)")
    ap.add_argument("--keep-going", action="store_true",
                    help="after a failed asv run, still publish, build the dashboard and gate")
    ap.add_argument("--no-gate", action="store_true", help="skip the regression gate")
    ap.add_argument("--no-triage", action="store_true",
                    help="gate on the regression report alone (no A/B re-run of the alarms)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    if args.steps is not None and not args.range:
        ap.error("--steps needs --range")
    if args.range and not bounded_range(args.range):
        ap.error(f"--range {args.range!r}: expected A..B, C^! or HASHFILE:FILE (a bounded set "
                 "of commits)")
    if args.no_gate and args.no_triage:
        ap.error("--no-triage with --no-gate: there is no gate to triage")
    if args.grid is None:  # argparse checks choices only on the command line, not on a default
        env_grid = os.environ.get("LNBENCH_GRID") or "quick"
        if env_grid not in GRIDS:
            ap.error(f"LNBENCH_GRID={env_grid!r} (the default of --grid): expected one of "
                     f"{', '.join(GRIDS)}")
        args.grid = env_grid
    return args


def bounded_range(spec: str) -> bool:
    """Whether ``spec`` names a bounded set of commits in one of asv's forms: ``A..B`` (a git
    range), ``C^!`` (one commit) or ``HASHFILE:FILE`` (listed hashes). A bare name such as
    ``main`` would make asv run every ancestor: refused."""
    return ".." in spec or spec.endswith("^!") or spec.startswith("HASHFILE:")


def load_config(path: Path) -> dict:
    try:
        from asv.util import load_json  # asv's own reader (allows // comments)

        conf = load_json(str(path), js_comments=True)
    except ImportError:
        conf = json.loads(path.read_text())
    if not isinstance(conf, dict):
        raise ValueError(f"expected a JSON object, got {type(conf).__name__}")
    return conf


def check_dir(what: str, path: Path) -> None:
    """UsageError unless ``path`` is a directory, or can be made one, that we can write to.

    Probed with a temporary folder (removed at once) so that nothing is created before the
    steps run (and nothing at all with --dry-run)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path}: not a directory")
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UsageError(f"{what} {path}: {anc} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".nightly-probe-", dir=anc))
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot create a folder in {anc}: "
                         f"{e.strerror or e}") from None


def absolute_plugins(value: str, cwd: Path) -> str:
    """$LNBENCH_PLUGINS with every entry made absolute (relative to ``cwd``, nightly's working
    folder): asv runs the benchmarks in a temporary folder, where a relative path names
    nothing. UsageError naming a listed file that does not exist."""
    out = []
    for entry in value.split(":"):
        if not entry:
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else cwd / path
        if not path.is_file():
            why = "not a file" if path.exists() else "no such file"
            raise UsageError(f"LNBENCH_PLUGINS: plugin {entry}: {why} ({path})")
        out.append(str(path))
    return ":".join(out)


def resolve_dirs(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """(results, html, derived config or None): a derived config when the dirs differ."""
    conf_path = Path(args.config).resolve()
    conf = load_config(conf_path)
    base = conf_path.parent
    conf_results = (base / conf.get("results_dir", "results")).resolve()
    conf_html = (base / conf.get("html_dir", "html")).resolve()
    results = Path(args.results).resolve() if args.results else conf_results
    html = Path(args.html).resolve() if args.html else conf_html
    if results == conf_results and html == conf_html:
        return results, html, None
    derived = dict(conf)
    for key, default in (("repo", "."), ("benchmark_dir", "benchmarks"),
                         ("env_dir", "env"), ("build_cache_dir", None)):
        value = conf.get(key, default)
        if value is not None and not (key == "repo" and "://" in str(value)):
            derived[key] = str((base / value).resolve())
    derived["results_dir"], derived["html_dir"] = str(results), str(html)
    # named asv.conf.json: asv sets ASV_CONF_DIR to its folder, where lnbench's suite reads it
    folder = tempfile.mkdtemp(prefix="lnbench-nightly-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    tmp = Path(folder) / "asv.conf.json"
    tmp.write_text(json.dumps(derived, indent=2) + "\n")
    return results, html, tmp


_PARAMS = re.compile(r"^(?:\[[\d.]+%\] [·.]+ )?\s*For parameters: ")
_SKIPPED = re.compile(r"^\s*asv: skipped: (.*)$")


class SkipSummary:
    """asv's ``--show-stderr`` prints three lines per skipped parameter set ("For parameters:
    …", "asv: skipped: <reason>", a blank line) -- thousands on a machine without a GPU. This
    filter drops those blocks from the live log and counts them per reason instead; every other
    line passes through unchanged and in order."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._held: list[str] = []

    def feed(self, line: str) -> list[str]:
        """The lines to print now, given the next line of asv's output."""
        held = self._held
        if held and len(held) == 2:  # a counted skip's trailing blank line
            self._held = []
            return [] if not line.strip() else self.feed(line)
        if held:
            m = _SKIPPED.match(line)
            if m:
                reason = m.group(1).strip()
                self.counts[reason] = self.counts.get(reason, 0) + 1
                self._held = [held[0], line]
                return []
            self._held = []
            return [held[0], *self.feed(line)]
        if _PARAMS.match(line):
            self._held = [line]
            return []
        return [line]

    def flush(self) -> list[str]:
        out = self._held[:1] if len(self._held) == 1 else []
        self._held = []
        return out

    def summary(self) -> list[str]:
        total = sum(self.counts.values())
        if not total:
            return []
        lines = [f"skipped parameter sets: {total} (asv's n/a above), by reason:"]
        lines += [f"  {n:6d}  {reason}" for reason, n in
                  sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        return lines


class Pipeline:
    def __init__(self, total: int, dry_run: bool) -> None:
        self.total, self.n, self.dry_run = total, 0, dry_run
        self.gha = os.environ.get("GITHUB_ACTIONS") == "true"

    def header(self, title: str) -> None:
        self.n += 1
        line = f"==> [{self.n}/{self.total}] {title}"
        print(f"::group::{line}" if self.gha else f"\n{line}", flush=True)

    def done(self, rc: int, seconds: float) -> None:
        print(f"--- exit {rc} after {seconds:.1f} s", flush=True)
        if self.gha:
            print("::endgroup::", flush=True)

    def run(self, title: str, cmd: list[str], env: dict[str, str] | None = None,
            capture: bool = False, cwd: Path = ROOT) -> tuple[int, str]:
        self.header(title)
        print("$ " + shlex.join(cmd), flush=True)
        if self.dry_run:
            self.done(0, 0.0)
            return 0, ""
        t0 = time.perf_counter()
        if capture:
            p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True,
                               check=False)
            sys.stdout.write(p.stdout)
            rc, out = p.returncode, p.stdout
        elif "--show-stderr" in cmd:  # asv run: its skipped points counted, not listed
            rc, out = _run_counting_skips(cmd, cwd, env), ""
        else:
            rc, out = subprocess.call(cmd, cwd=cwd, env=env), ""
        self.done(rc, time.perf_counter() - t0)
        if rc:
            print(f"nightly: step '{title}' failed with exit code {rc}", file=sys.stderr,
                  flush=True)
        return rc, out


def _run_counting_skips(cmd: list[str], cwd: Path, env: dict[str, str] | None) -> int:
    """Run ``cmd`` with its output streamed through :class:`SkipSummary`."""
    skips = SkipSummary()
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            for out in skips.feed(line.rstrip("\n")):
                print(out, flush=True)
        for out in skips.flush():
            print(out, flush=True)
        rc = proc.wait()
    for out in skips.summary():
        print(out, flush=True)
    return rc


def needs_machine(name: str | None) -> bool:
    path = Path("~/.asv-machine.json").expanduser()
    if not path.exists():
        return True
    if name is None:
        return False
    try:
        return name not in json.loads(path.read_text())
    except (OSError, ValueError):
        return True


def config_repo(config: Path) -> Path:
    """The git checkout asv.conf.json's ``repo`` names (relative to the config's folder)."""
    conf = load_config(config)
    return (config.parent / str(conf.get("repo", "."))).resolve()


def head_commit(repo: Path = ROOT) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return pipeline(args)
    except UsageError as e:
        print(f"nightly: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def _dirs(args: argparse.Namespace) -> tuple[Path, Path, Path | None, Path]:
    """(results, html, derived config or None, site), each checked writable (UsageError)."""
    try:
        results, html, derived = resolve_dirs(args)
    except (OSError, ValueError) as e:
        msg = " ".join(str(e).split())  # asv's JSON errors span lines
        raise UsageError(f"--config {args.config}: {msg}") from None
    site = Path(args.site).resolve()
    for what, given, path in (("--results", args.results, results), ("--html", args.html, html),
                              ("--site", True, site)):
        check_dir(what if given else f"{what} (from {args.config})", path)
    return results, html, derived, site


def _run_cmd(args: argparse.Namespace, conf_file: Path, conf: list[str],
             machine: list[str]) -> tuple[list[str], str]:
    """Step 2's asv command and title: HEAD in this Python, or ``--range`` in built
    environments."""
    py = sys.executable
    bench = [a for b in args.bench or [] for a in ("-b", b)]
    quick = ["--quick"] if args.quick else []
    if args.range:
        steps = ["--steps", str(args.steps)] if args.steps else []
        # --interleave-rounds: asv's timed rounds alternate between the commits (A B, then
        # B A), so a slow spell of a shared machine lasting a few minutes is spread over the
        # commits instead of reading as a step between consecutive ones (seen on the VM)
        cmd = [py, "-m", "asv", "run", "--skip-existing-commits", "--interleave-rounds",
               "--record-samples", "--show-stderr", *quick, *bench, *steps, *machine, *conf,
               args.range]
        return cmd, f"asv run {args.range} (built environments)"
    repo = ROOT
    try:
        repo = config_repo(conf_file)
        head = head_commit(repo) if not args.dry_run else "HEAD"
    except (OSError, ValueError, subprocess.CalledProcessError) as e:
        raise UsageError(f"cannot read the git HEAD of {repo}: "
                         f"{' '.join(str(e).split())}") from None
    cmd = [py, "-m", "asv", "run", "--python=same", "--set-commit-hash", head,
           "--record-samples", "--show-stderr", *quick, *bench, *machine, *conf]
    return cmd, f"asv run {head[:8]} in this Python (LNBENCH_GRID={args.grid})"


def _gate(p: Pipeline, args: argparse.Namespace, results: Path, site: Path, conf: list[str],
          machine: list[str], env: dict[str, str]) -> int:
    """Step 5: the triage (or the report alone with --no-triage); its Markdown to
    SITE/regressions.md and the GitHub job summary. The step's exit code."""
    py = sys.executable
    if args.no_triage:
        cmd = [py, "-m", "lnbench", "report", "regressions", "--results", str(results),
               "--fail-on-regression", "--latest-only"]
        title = "regression gate (report only)"
    else:
        # the alarms re-run A/B, interleaved, in built environments; bisected; only the
        # confirmed ones fail (lnbench.nightly.triage)
        cmd = [py, "-m", "lnbench.nightly", "triage", "--results", str(results),
               *conf, *machine]
        title = "regression gate (triage)"
    rc, report = p.run(title, cmd, env=env, capture=True)
    if report and not args.dry_run:
        (site / "regressions.md").write_text(report)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a") as f:
                f.write(report + "\n")
    return rc


def pipeline(args: argparse.Namespace) -> int:
    results, html, derived, site = _dirs(args)
    env = dict(os.environ, LNBENCH_GRID=args.grid, PYTHONUNBUFFERED="1")
    plugins = os.environ.get("LNBENCH_PLUGINS")
    if plugins:
        env["LNBENCH_PLUGINS"] = absolute_plugins(plugins, Path.cwd())
    conf_file = derived or Path(args.config).resolve()
    conf = ["--config", str(conf_file)]
    # asv resolves the config's relative paths against the config's folder (it changes into
    # it); run it from there too. lnbench's suite finds the config from the asv process and
    # stores machine facts in its results_dir; ASV_CONF_DIR (asv sets it only in environments
    # it builds) is the suite's fallback, so set it for --python=same as well
    asv_cwd = conf_file.parent
    env["ASV_CONF_DIR"] = str(asv_cwd)
    machine = ["--machine", args.machine] if args.machine else []
    py = sys.executable
    print(f"nightly: grid {args.grid}{' (asv --quick)' if args.quick else ''}; results "
          f"{results}; html {html}; site {site}" + (f"; config {derived}" if derived else ""),
          flush=True)
    if plugins:
        print(f"nightly: LNBENCH_PLUGINS={env['LNBENCH_PLUGINS']}", flush=True)

    p = Pipeline(total=5 - args.no_gate, dry_run=args.dry_run)
    first_failure = 0

    # 1. machine
    if needs_machine(args.machine):
        rc, _ = p.run("asv machine", [py, "-m", "asv", "machine", "--yes", *machine, *conf],
                      cwd=asv_cwd)
        if rc:
            return rc
    else:
        p.header("asv machine: ~/.asv-machine.json already describes this machine")
        p.done(0, 0.0)

    # 2. run
    cmd, title = _run_cmd(args, conf_file, conf, machine)
    rc, _ = p.run(title, cmd, env=env, cwd=asv_cwd)
    if rc:
        if not args.keep_going:
            return rc
        first_failure = rc

    # 3. publish
    html.parent.mkdir(parents=True, exist_ok=True)
    rc, _ = p.run("asv publish", [py, "-m", "asv", "publish", *conf], cwd=asv_cwd)
    if rc:
        return first_failure or rc

    # 4. dashboard
    asv_link = os.path.relpath(html / "index.html", site)
    rc, _ = p.run("lnbench dashboard", [py, "-m", "lnbench", "dashboard", "--results",
                                        str(results), "--out", str(site), "--asv-html",
                                        asv_link])
    if rc:
        return first_failure or rc

    # 5. gate
    if not args.no_gate:
        rc = _gate(p, args, results, site, conf, machine, env)
        if rc:
            return first_failure or rc
    print(f"\nnightly: done (results {results}, html {html}, site {site})", flush=True)
    return first_failure
