"""Measure the reporting side: regression-detection quality next to asv's, and load speed.

    scripts/bench-report                # evaluation (1,000 histories per cell) + speed check
    scripts/bench-report --quick        # 50 histories per cell, no speed check
    scripts/bench-report --perf-only    # only: load + report a django-size history
    scripts/bench-report --real DIR [--first-parent FILE]   # lnbench vs asv on real results

Options: ``--series N`` histories per cell (default 1,000, so that a share of 1 % is ten
histories, not two; 50 with ``--quick``: an explicit ``--series`` wins over ``--quick``),
``--seed S``, ``--no-asv``, ``--no-latency`` (no commits-to-catch columns; most of the time
of a large ``--series``) (evaluation); ``--commits N`` (default 1800), ``--repeats N``
(default 3) (speed check). N must be a positive integer. An
option for a part that will not run is refused rather than ignored: ``--quick`` with
``--perf-only`` (nothing would run), ``--commits``/``--repeats`` with ``--quick`` (no speed
check), ``--series``/``--seed``/``--no-asv``/``--no-latency`` with ``--perf-only`` (no evaluation).
``--check``: exit 1 when a target of the evaluation is not met (the tables and the speed
check are still printed). Exit codes: 0 done; 1 with ``--check``, a target not met; 2 bad
usage, one line on stderr naming the argument.

Evaluation: ``lnbench.report.evaluate.evaluate`` on generated histories (3 % log-normal
noise; the same plus 2 % outliers slowed by 10-40 %; 1 % noise with 5 % steps), steps
injected at commit 40 of 60, then steps on the newest commit with 7 stored samples per run
(run-level noise plus 1 % within-run spread), each detector on the same histories. Speed: a
django-size asv results tree (``lnbench.report.synthetic.write_ci_history``: 1,800 commits,
three environments, 4,700 result files, 690 series) and one of half the commits, each read
by ``load_results`` and reported by ``regression_report`` in a fresh process: wall and CPU
seconds and peak RSS. Prints markdown; the numbers in docs/reports.md come from this script.
Next to each newest-commit recall it prints the Neyman–Pearson bound on any one-run test
(``lnbench.report.newest``), next to each step inside the history the share a known-level
split misplaces, then the targets judged where those limits allow them
(``lnbench.report.evaluate.criteria``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

from lnbench.argtypes import OneLineParser, positive_int
from lnbench.report.evaluate import EvalSpec, evaluate, markdown_table


def quality(n_series: int, seed: int, with_asv: bool, latency: bool = True) -> bool:
    """Print the evaluation tables and the targets; True when every target is met
    (``latency=False``: without the commits-to-catch columns)."""
    from lnbench.report.evaluate import asv_detector, criteria, lnbench_detector

    detectors = {"lnbench (all)": lnbench_detector(),
                 "lnbench (open)": lnbench_detector(open_only=True)}
    if with_asv:
        detectors["asv"] = asv_detector()
    cells = [
        ("3 % noise", EvalSpec(n_series=n_series, noise=0.03, seed=seed)),
        ("3 % noise, 2 % outliers", EvalSpec(n_series=n_series, noise=0.03, outlier_rate=0.02,
                                              seed=seed)),
        ("1 % noise, 5 % steps", EvalSpec(n_series=n_series, noise=0.01, steps=(0.05, 0.10),
                                          seed=seed)),
        ("step on the newest commit, 3 % run-to-run noise, 7 samples per run (1 % within-run)",
         EvalSpec(n_series=n_series, noise=0.03, newest=True, samples=7, within=0.01,
                  steps=(0.10, 0.20, 0.50), seed=seed)),
        ("step on the newest commit, 1 % run-to-run noise, 7 samples per run (1 % within-run)",
         EvalSpec(n_series=n_series, noise=0.01, newest=True, samples=7, within=0.01,
                  steps=(0.05, 0.10), seed=seed)),
    ]
    results = []
    for title, spec in cells:
        where = "the newest commit" if spec.newest else f"commit {spec.step_at}"
        tol = "exact" if spec.newest else f"±{spec.tolerance}"
        print(f"\n### {title} — {n_series} histories of {spec.n_commits} commits per cell, "
              f"step at {where} (tolerance {tol}), seed {seed}\n")
        df = evaluate(spec, detectors, latency=latency)
        results.append((spec, df))
        print(markdown_table(df))
    verdict = criteria(results)
    print("\n### Targets (lnbench (all); on the rows where the limits allow them)\n")
    for line, met in verdict:
        print(f"- {'met' if met else 'NOT MET'}: {line}")
    return all(met for _, met in verdict)


def _measure_child(root: str, repeats: int) -> dict[str, float]:
    """Load + report ``root`` in a fresh interpreter: best wall/CPU seconds of ``repeats``
    and its peak RSS (resource.getrusage: what the process held at most)."""
    import json
    import subprocess

    code = (
        "import json, resource, sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from lnbench.report.loader import load_results\n"
        "from lnbench.report.regressions import regression_report\n"
        "out = []\n"
        f"for _ in range({repeats}):\n"
        "    c0, t0 = time.process_time(), time.perf_counter()\n"
        f"    loaded = load_results({root!r})\n"
        "    t1 = time.perf_counter()\n"
        "    doc = regression_report(loaded)\n"
        "    t2 = time.perf_counter()\n"
        "    out.append((t1 - t0, t2 - t1, t2 - t0, time.process_time() - c0))\n"
        "    del loaded, doc\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'runs': out, 'rss_mb': rss}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed(n_commits: int, repeats: int) -> None:
    from lnbench.report import synthetic

    print(f"\n### Speed — {n_commits} commits and {n_commits // 2}: a django-size history "
          f"(generic asv suite on one CI machine, three environments), {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}\n")
    print("| commits | result files | series | values | load (s) | report (s) | total (s) "
          "| CPU (s) | peak RSS (MB) |\n|---|---|---|---|---|---|---|---|---|")
    for commits in (n_commits // 2, n_commits):
        with tempfile.TemporaryDirectory() as tmp:
            counts = synthetic.write_ci_history(Path(tmp), n_commits=commits,
                                                envs={"virtualenv-py3.10": commits,
                                                      "virtualenv-py3.11": commits,
                                                      "virtualenv-py3.12": commits * 11 // 18})
            got = _measure_child(tmp, repeats)
        best = min(got["runs"], key=lambda r: r[2])
        values = counts["files"] * (counts["series"] // 3)
        print(f"| {commits:,} | {counts['files']:,} | {counts['series']} | ~{values:,} | "
              f"{best[0]:.2f} | {best[1]:.2f} | {best[2]:.2f} | {best[3]:.2f} | "
              f"{got['rss_mb']:.0f} |")
    print(f"\n(best of {repeats} in one fresh process each; load average while measuring: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())})")


def real(results: str, first_parent: str | None) -> int:
    """lnbench's and asv's detection side by side on a real results folder."""
    from lnbench.report.evaluate import real_comparison
    from lnbench.report.loader import ResultsDirError, load_results, read_first_parent

    try:
        order = read_first_parent(first_parent) if first_parent else None
        loaded = load_results(results, order)
    except (ValueError, ResultsDirError) as exc:
        print(f"bench-report: error: {exc}", file=sys.stderr)
        return 2
    got = real_comparison(loaded)
    print(f"\n### {results} ({'first-parent order' if order else 'date order'}; "
          f"{got['series']} series, {loaded.frame['commit'].nunique()} commits)\n")
    print("| | series with a listed regression | of them also listed by the other | "
          "listed regressions that got faster |\n|---|---|---|---|")
    print(f"| lnbench (open) | {got['lnbench_open_regression_series']} | {got['both']} | "
          f"{got['lnbench_listed_faster']} |")
    print(f"| asv (publish) | {got['asv_regression_series']} | {got['both']} | "
          f"{got['asv_listed_faster']} |")
    return 0


class _Parser(OneLineParser):
    error_name = "bench-report"  # argparse's own errors: one line, exit 2


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _Parser(prog="scripts/bench-report", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="50 histories per cell (unless --series), no speed check")
    ap.add_argument("--series", type=positive_int, metavar="N",
                    help="histories per cell (default 1000, 50 with --quick)")
    ap.add_argument("--seed", type=int, metavar="S", help="evaluation seed (default 0)")
    ap.add_argument("--no-asv", action="store_true", help="skip asv's detector (slow)")
    ap.add_argument("--no-latency", action="store_true",
                    help="skip the commits-to-catch columns (each detector re-run on 8 prefixes "
                         "of every step history: most of the time of a large --series)")
    ap.add_argument("--perf-only", action="store_true", help="only the speed check")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when a target of the evaluation is not met")
    ap.add_argument("--commits", type=positive_int, metavar="N",
                    help="commits in the speed tree (default 1800)")
    ap.add_argument("--repeats", type=positive_int, metavar="N",
                    help="speed-check repeats (default 3)")
    ap.add_argument("--real", metavar="DIR",
                    help="only: lnbench and asv detection side by side on real results DIR")
    ap.add_argument("--first-parent", metavar="FILE",
                    help="with --real: the first-parent commit list (newest first)")
    args = ap.parse_args(argv)
    def given(*names: str) -> str:
        return "/".join(f"--{n.replace('_', '-')}" for n in names
                        if getattr(args, n) is not None and getattr(args, n) is not False)

    if args.quick and args.perf_only:
        ap.error("--quick with --perf-only: nothing would run (--quick skips the speed check, "
                 "--perf-only runs only that)")
    if args.quick and given("commits", "repeats"):
        ap.error(f"{given('commits', 'repeats')} with --quick: --quick skips the speed check "
                 f"(--commits, --repeats)")
    if args.perf_only and given("series", "seed", "no_asv", "no_latency", "check"):
        ap.error(f"{given('series', 'seed', 'no_asv', 'no_latency', 'check')} with --perf-only: "
                 f"--perf-only skips the evaluation (--series, --seed, --no-asv, --no-latency, "
                 f"--check)")
    if args.first_parent and not args.real:
        ap.error("--first-parent without --real: it orders the commits of --real DIR")
    if args.series is None:
        args.series = 50 if args.quick else 1000
    args.seed = 0 if args.seed is None else args.seed
    args.commits = args.commits or 1800
    args.repeats = args.repeats or 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.real:
        return real(args.real, args.first_parent)
    met = True
    if not args.perf_only:
        met = quality(args.series, args.seed, not args.no_asv, not args.no_latency)
    if not args.quick:
        speed(args.commits, args.repeats)
    return 1 if args.check and not met else 0


def run(argv: list[str] | None = None) -> int:
    """``scripts/bench-report``: :func:`main`, quiet when its output pipe closes early."""
    try:
        return main(argv)
    except BrokenPipeError:  # output piped into `head` & co.: what was read is all that is wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
