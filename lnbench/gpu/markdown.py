"""``gpu-check.md``: the GPU check's report as Markdown (formatting only; the numbers are the
report's, the tables are drawn by ``lnbench.report.render``).

Sections: the card, copy bandwidth, commit and tests; per dtype a GB/s (% of copy) table over
the shapes; the summary against the bar (:mod:`lnbench.gpu.bar`); the launch-plan sweep; every
measured point in detail; the worker's crash, if any; the skipped points by reason.
"""

from __future__ import annotations

from typing import Any

from lnbench import metrics
from lnbench.gpu.bar import BAR_PCT, NATIVE
from lnbench.gpu.preflight import DEFAULT_DTYPES
from lnbench.judge import GRADS


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    from lnbench.report.render import _md_table

    return _md_table(header, rows).splitlines()


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "" if v is None else format(v * scale, spec)


def header_lines(report: dict[str, Any]) -> list[str]:
    dev = report.get("device") or {}
    lines = [f"- card: **{dev.get('name', '?')}** (sm {dev.get('capability', '?')}, "
             f"{dev.get('sms', '?')} SMs), driver {dev.get('driver', '?')}, "
             f"torch {dev.get('torch', '?')} / CUDA {dev.get('torch_cuda', '?')}, "
             f"cupy {dev.get('cupy', '-')}, triton {dev.get('triton', '-')}"]
    if report.get("copy_gbps"):
        lines.append(f"- device-to-device copy: **{report['copy_gbps']:.0f} GB/s** (read + write)")
    lines.append(f"- commit {report.get('commit', '?')}, {report.get('when', '')}, "
                 f"{report.get('wall_s', 0):.0f} s")
    lines.append(f"- tests/test_gpu.py: {(report.get('tests') or {}).get('summary', 'not run')}")
    lines += [f"- plugin not loaded: {err}" for err in report.get("plugin_errors") or []]
    if report.get("not_cuda"):
        lines.append(f"- not measured (not CUDA implementations): {', '.join(report['not_cuda'])}")
    if report.get("nothing_measured"):
        lines.append(f"- **nothing measured**: {report['nothing_measured']}")
    lines += crash_lines(report)
    lines.append("- timing: median of CUDA-event-timed calls, L2 flushed before each, rounds "
                 f"interleaved; bytes = {metrics.BYTES_FORMULA}; reference: "
                 + ("lnbench extended precision (CPU)" if report.get("exact_ref")
                    else "float64 on the GPU") + "; verdict: the judge's per-element bounds")
    return lines


def crash_lines(report: dict[str, Any]) -> list[str]:
    fail = report.get("worker_failure")
    crashes = report.get("worker_crashes") or []
    if fail:
        n = sum(c["reason"] == fail["reason"] for c in crashes)
        return [f"- **the worker crashed outside any point** ({n}x, exit {fail['rc']}; the"
                f" points it had not reached are missing, no bar is met): {fail['reason']}"]
    return [f"- worker {c['attempt']} crashed outside any point (exit {c['rc']}), the next one"
            f" went on: {c['reason']}" for c in crashes]


def _cell(p: dict[str, Any] | None) -> str:
    if p is None:
        return ""
    if p["status"] == "ok":
        return f"{p['gbps']:.0f} ({p['pct_copy']:.0f}%)"
    if p["status"] == "fail" and p.get("gbps"):
        return f"{p['gbps']:.0f} WRONG"
    return p["status"]


def dtype_tables(report: dict[str, Any]) -> list[str]:
    pts = report["points"]
    order = [tuple(s) for s in report["shapes"]]
    lines = []
    for dt in sorted({p["dtype"] for p in pts}, key=lambda d: DEFAULT_DTYPES.index(d)
                     if d in DEFAULT_DTYPES else 9):
        shapes = sorted({(p["M"], p["N"]) for p in pts if p["dtype"] == dt},
                        key=lambda s: order.index(s) if s in order else len(order))
        at = {(p["impl"], p["M"], p["N"]): p for p in pts if p["dtype"] == dt}
        rows = []
        for name in dict.fromkeys(p["impl"] for p in pts if p["dtype"] == dt):
            cells = [_cell(at.get((name, M, N))) for M, N in shapes]
            if any(c not in ("", "skipped") for c in cells):
                rows.append([name, *cells])
        lines += [f"## {dt}: GB/s (% of copy)", "",
                  *table(["impl", *(f"{M}×{N}" for M, N in shapes)], rows), ""]
    return lines


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"## Summary against the bar (≥ {BAR_PCT:.0f}% of copy, geometric mean; ≥ best peer"
             " everywhere; error ≤ torch native's; deterministic dγ/dβ)", ""]
    for name, s in summary.items():
        gm = s["geomean_pct_copy"]
        lines.append(f"- **{name}**: geomean {gm:.1f}% of copy over {s['points']} points"
                     if gm is not None else f"- **{name}**: no successful point")
        if s.get("wrong"):
            lines.append(f"  - WRONG results (fail the judge): {', '.join(s['wrong'])}")
        if s["missing"]:
            lines.append(f"  - missing points (error or skipped): {', '.join(s['missing'])}")
        lines += [f"  - below {b['best_peer']} at {b['case']}: {b['gbps']:.0f} < "
                  f"{b['peer_gbps']:.0f} GB/s" for b in s["below_best_peer"]]
        lines += [f"  - less accurate than {NATIVE} at {w['case']} {w['grad']}: rel_err "
                  f"{w['rel_err']:.2e} > {w['native_rel_err']:.2e}"
                  for w in s.get("less_accurate_than_native") or []]
        cut = s.get("peers_not_measured") or []
        if cut:
            lines.append(f"  - peers the time budget cut off (comparison incomplete): "
                         f"{', '.join(cut[:12])}" + (" …" if len(cut) > 12 else ""))
        det = {True: "yes", False: "NO", None: "n/a"}[s["deterministic"]]
        lines.append(f"  - deterministic dγ/dβ: {det}; **meets the bar: {s['meets_bar']}**")
    return [*lines, ""]


def sweep_lines(report: dict[str, Any]) -> list[str]:
    best = report.get("sweep_best") or []
    if not best:
        return []
    rows = [[b["impl"], b["case"], b["default"] or "–", _fmt(b["default_gbps"], ".0f"),
             b["best"] or "–", _fmt(b["best_gbps"], ".0f"),
             "–" if b["gain_pct"] is None else f"{b['gain_pct']:+.0f}%",
             f"{b['variants']} ({b['not_ok']})"] for b in best]
    return ["## Launch-plan sweep (--sweep): the heuristic's plan against the fastest correct"
            " variant", "",
            *table(["impl", "case", "heuristic", "GB/s", "fastest", "GB/s", "gain",
                    "variants (not ok)"], rows),
            *(f"- {n}" for n in report.get("sweep_notes") or []), ""]


def detail_cells(p: dict[str, Any]) -> list[str]:
    re_ = p.get("rel_err") or {}
    errs = " / ".join("–" if re_.get(g) is None else f"{re_[g]:.1e}" for g in GRADS)
    det = p.get("deterministic")
    return [p["impl"], p["case"], p["status"], _fmt(p.get("median_s"), ".1f", 1e6),
            _fmt(p.get("gbps"), ".0f"), _fmt(p.get("pct_copy"), ".1f"), errs,
            "" if det is None else ("yes" if det else "NO"),
            _fmt(p.get("workspace_bytes"), ".2f", 1e-6), p.get("reason", "")[:120]]


def detail_lines(report: dict[str, Any]) -> list[str]:
    pts = report["points"]
    lines = ["## Details", "", *table(
        ["impl", "case", "status", "median µs", "GB/s", "% copy", "rel_err dx / dγ / dβ",
         "det.", "workspace MB", "reason"],
        [detail_cells(p) for p in pts if p["status"] != "skipped"])]
    fail = report.get("worker_failure")
    if fail and fail.get("traceback"):
        lines += ["", "## The worker's crash outside any point", "", "```",
                  fail["traceback"].rstrip(), "```"]
    skipped = [p for p in pts if p["status"] == "skipped"]
    if skipped:
        lines += ["", "## Skipped", ""]
        for reason in sorted({p["reason"] for p in skipped}):
            who = sorted({p["impl"] for p in skipped if p["reason"] == reason})
            lines.append(f"- {', '.join(who)}: {reason}")
    return lines


def render(report: dict[str, Any]) -> str:
    """The whole of ``gpu-check.md``."""
    lines = ["# gpu-check", "", *header_lines(report), "", *dtype_tables(report),
             *summary_lines(report["summary"]), *sweep_lines(report), *detail_lines(report)]
    return "\n".join(lines) + "\n"
