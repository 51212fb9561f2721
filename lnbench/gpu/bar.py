"""The bar the GPU check holds our kernels to (docs/peers.md), judged from the measured points.

Per custom or plugin implementation ("ours"; every other kind is a peer to beat), the bar is met
when all of these hold over the grid:

- the geometric mean of its % of copy bandwidth (``lnbench.metrics.geomean``) is at least
  :data:`BAR_PCT`;
- at every point it is at least as fast (GB/s) as the best peer measured there (vendor,
  compiled, seed or peer kinds);
- no point is wrong (fails the judge) or missing (an error, or skipped);
- its dγ/dβ are bit-identical run to run at every point;
- no gradient's rel_err exceeds torch native's at the same point by more than one rounding of
  the output dtype (``lnbench.dtypes.UNIT_ROUNDOFF``: both results are rounded to it, so a
  smaller difference cannot be told from noise);
- no peer was cut off by the time budget (the comparison would be incomplete; a peer whose
  package is absent is not a cut).
"""

from __future__ import annotations

from typing import Any

from lnbench import metrics
from lnbench.dtypes import UNIT_ROUNDOFF

BAR_PCT = 85.0
OURS = ("custom", "plugin")  # held to the bar; every other kind is a peer to beat
NATIVE = "torch.native"


def best_peers(ok: list[dict[str, Any]]) -> dict[str, tuple[float, str]]:
    """Per case: (GB/s, name) of the fastest correct peer."""
    best: dict[str, tuple[float, str]] = {}
    for p in ok:
        if p["kind"] not in OURS and p["gbps"] > best.get(p["case"], (0.0, ""))[0]:
            best[p["case"]] = (p["gbps"], p["impl"])
    return best


def summarize(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Per custom or plugin implementation: geometric mean % of copy, and the points where it is
    below the best peer, wrong, missing, or less accurate than torch native (module
    docstring); ``meets_bar`` when none."""
    ok = [p for p in points if p["status"] == "ok" and p.get("gbps")]
    best_peer = best_peers(ok)
    cases = sorted({p["case"] for p in points})
    cut = sorted({f"{p['impl']} at {p['case']}" for p in points if p["kind"] not in OURS
                  and p["status"] == "skipped" and "budget" in p.get("reason", "")})
    # torch native's errors wherever it ran to the end (even judged wrong: its error is its error)
    native = {p["case"]: p for p in points if p["impl"] == NATIVE and p["status"] in ("ok", "fail")}
    out: dict[str, Any] = {}
    for name in sorted({p["impl"] for p in points if p["kind"] in OURS}):
        mine = {p["case"]: p for p in ok if p["impl"] == name}
        pct = [mine[c]["pct_copy"] for c in cases if c in mine and mine[c]["pct_copy"]]
        gm = metrics.geomean(pct) if pct else None
        below = [{"case": c, "gbps": mine[c]["gbps"], "best_peer": best_peer[c][1],
                  "peer_gbps": best_peer[c][0]}
                 for c in cases
                 if c in mine and c in best_peer and mine[c]["gbps"] < best_peer[c][0]]
        wrong = sorted(p["case"] for p in points if p["impl"] == name and p["status"] == "fail")
        missing = [c for c in cases if c not in mine and c not in wrong]
        det = all(p.get("deterministic") for p in mine.values()) if mine else None
        worse = less_accurate(mine, native)
        out[name] = {"geomean_pct_copy": gm, "points": len(mine), "missing": missing,
                     "wrong": wrong, "below_best_peer": below, "deterministic": det,
                     "less_accurate_than_native": worse, "peers_not_measured": cut,
                     "meets_bar": bool(gm is not None and gm >= BAR_PCT and not below
                                       and not missing and not wrong and det and not cut
                                       and not worse)}
    return out


def less_accurate(mine: dict[str, dict[str, Any]],
                  native: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The bar's "error no larger than torch native's": each gradient's rel_err at each point
    where both were measured, allowing one rounding of the output dtype."""
    worse = []
    for case, p in sorted(mine.items()):
        q = native.get(case)
        if q is None or not q.get("rel_err"):
            continue
        u = UNIT_ROUNDOFF.get(p.get("dtype", ""), 0.0)
        for g, e in (p.get("rel_err") or {}).items():
            n = q["rel_err"].get(g)
            if e is not None and n is not None and e > n + u:
                worse.append({"case": case, "grad": g, "rel_err": e, "native_rel_err": n})
    return worse
