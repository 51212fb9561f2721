"""Markdown tables of single ``lnbench`` runs: ``lnbench report speed`` (a ``lnbench run --out
FILE.json`` document) and ``lnbench report accuracy`` (a ``lnbench check --json`` document).

**Speed table.** Rows: implementations; columns: the measured points (M×N dtype); cells: GB/s
(% of the run's measured copy bandwidth), ✗ = failed the judge, ~ = ``noisy`` (measured under
interference: lnbench run re-measured it and it stayed disturbed, docs/measurement.md; its
number is shown, not trusted). The last two columns: for each implementation, the geometric
mean of % copy and of its speed-up over the baseline (default torch.native) over the points it
was measured at — the speed-up of a point is the baseline's median time over the
implementation's, both from the same run (interleaved), so the ratio does not depend on how
fast the machine happened to be. Implementations with no measured point (every record
``error`` or ``skipped``) are named below the table with their status. The bar
(docs/cpu-kernels.md, docs/speed.md): geometric mean ≥ ``bar_copy`` % of copy (default 70) and
≥ ``bar_speedup`` × the baseline (default 2) over the points with M·N ≥ 4Mi = 4,194,304, where
the bar is defined; :func:`speed_bar_points` judges the CPU bar at every such point instead
(≥ 90 % of copy and ≥ 1.0× the fastest peer there, by default).

**Accuracy table.** Rows: implementations; columns: distribution × dtype; cell: worst rel_err
of GRAD (dx, dgamma or dbeta) over the shapes with N ≥ MIN_N. ✗ marks a judged failure of any
gradient in that column, ``✗ dtype`` one where a gradient came back in the wrong dtype (the
cell's rel_err is then the error its values would have had); ``error`` an implementation that
raised (or ran out of memory) in some case of that column, with the worst rel_err of the cases
that did run; ``–`` a column the implementation was not checked in (skipped here).

Unreadable input — a file that is missing, empty, not JSON (e.g. ``--out F.csv``), not the
document expected, a record without the needed fields, nothing to tabulate, an unknown
baseline — raises :class:`TableInputError` with one line naming the file or option.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lnbench.metrics import geomean

BAR_MIN_ELEMENTS = 4 * 2**20  # the bar is defined at M·N ≥ 4Mi (docs/peers.md)
SPEED_NEEDED = ("impl", "M", "N", "dtype", "status", "seconds", "gbps", "pct_copy")
ACCURACY_NEEDED = ("impl", "N", "dtype", "dist", "grad", "rel_err", "status")
#: cell marks by record status (anything else, i.e. fail: ✗)
MARK = {"ok": "", "noisy": " ~"}
DTYPES = ("float64", "float32", "float16", "bfloat16")
DISTS = ("normal", "offset", "constant", "outlier")


class TableInputError(ValueError):
    """Unreadable input or an impossible request: one line naming the file or option."""


def read_document(path: str, what: str, key: str) -> dict:
    """The JSON document at ``path``, with a list under ``key`` (``what`` names its
    producer)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TableInputError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") \
            from None
    if not text.strip():
        raise TableInputError(f"{path}: empty file (expected `{what}` output)")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise TableInputError(f"{path}: not valid JSON (truncated, or a CSV? expected `{what}` "
                              f"output): {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise TableInputError(f"{path}: not a `{what}` document (no \"{key}\" list)")
    return doc


def _needs(path: str, rows: list, needed: tuple[str, ...], noun: str, producer: str) -> None:
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict) or any(k not in r for k in
                                                                          needed)]
    if bad:
        raise TableInputError(f"{path}: {noun} {bad[0]} is not a `{producer}` {noun} (needs "
                              f"{', '.join(needed)}); {len(bad)} such {noun}(s)")


def load_run(path: str) -> tuple[dict, pd.DataFrame]:
    """(machine facts, records frame) of a ``lnbench run --out FILE.json`` document."""
    doc = read_document(path, "lnbench run --out FILE.json", "records")
    records = doc["records"]
    _needs(path, records, SPEED_NEEDED, "record", "lnbench run")
    df = pd.DataFrame(records, columns=list(dict.fromkeys([*SPEED_NEEDED, *(
        k for r in records for k in r)])))
    try:
        for col in ("seconds", "gbps", "pct_copy"):
            df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
        df["M"] = pd.to_numeric(df.M, errors="raise").astype(int)
        df["N"] = pd.to_numeric(df.N, errors="raise").astype(int)
    except (TypeError, ValueError) as e:
        raise TableInputError(f"{path}: a record holds a non-numeric value: {e}") from None
    machine = doc.get("machine")
    return (machine if isinstance(machine, dict) else {}), df


def _fmt(v: float, spec: str, suffix: str) -> str:
    return f"{v:{spec}}{suffix}" if np.isfinite(v) else "–"


def machine_line(m: dict) -> str:
    def get(d: object, key: str) -> object:
        return d.get(key) if isinstance(d, dict) else None

    versions = m.get("versions")
    copy = get(m.get("copy_gbps"), "cpu")
    heap = m.get("malloc") or "system (recorded before lnbench set a heap policy)"
    return (f"Machine `{m.get('machine', 'unknown')}`: {m.get('cpu_model', 'unknown CPU')}, "
            f"{m.get('cpu_cores', '?')} cores, copy {copy if copy is not None else '?'} GB/s; "
            f"torch {get(versions, 'torch')}, numba {get(versions, 'numba')}, "
            f"numpy {get(versions, 'numpy')}; heap {heap}.\n")


@dataclass
class SpeedTable:
    """The speed table's text and the measured points it was made from."""

    path: str
    baseline: str
    text: str
    points: pd.DataFrame  # measured records with point, speedup


def _measured(path: str, df: pd.DataFrame, baseline: str, bar_impl: str | None) -> pd.DataFrame:
    if df.empty:
        raise TableInputError(f"{path}: an empty run (no records): nothing to tabulate")
    measured = df[df.seconds.notna() & (df.seconds > 0)].copy()
    if measured.empty:
        counts = ", ".join(f"{n} {s}" for s, n in df.status.value_counts().items())
        raise TableInputError(f"{path}: no measured record ({counts}): nothing to tabulate")
    present = ", ".join(sorted(measured.impl.unique()))
    for flag, impl in (("--baseline", baseline), ("--bar-impl", bar_impl)):
        if impl is not None and impl not in set(measured.impl):
            where = ("is in the file but has no measured point" if impl in set(df.impl)
                     else "is not in the file")
            raise TableInputError(f"{flag} {impl}: {where}; measured implementations: "
                                  f"{present}")
    return measured


def speed_table(path: str, baseline: str = "torch.native",
                bar_impl: str | None = None) -> SpeedTable:
    """The Markdown speed table of a ``lnbench run`` document (module docstring)."""
    machine, full = load_run(path)
    df = _measured(path, full, baseline, bar_impl)
    df["point"] = df.M.astype(str) + "×" + df.N.astype(str) + " " + df.dtype.astype(str)
    df["cell"] = [_gbps_cell(g, p) + MARK.get(s, " ✗")
                  for g, p, s in zip(df.gbps, df.pct_copy, df.status, strict=True)]
    df = df.drop_duplicates(["impl", "point"], keep="last")
    order = list(dict.fromkeys(df.sort_values(["dtype", "N"]).point))
    t = df.pivot(index="impl", columns="point", values="cell").reindex(columns=order)
    base = df[df.impl == baseline].set_index("point").seconds
    df["speedup"] = df.point.map(base) / df.seconds
    geo = df.groupby("impl").pct_copy.apply(geomean)
    speed = df.groupby("impl").speedup.apply(geomean)
    t["geomean % copy"] = geo.map(lambda v: _fmt(v, ".0f", "%"))
    t[f"geomean × {baseline}"] = speed.map(lambda v: _fmt(v, ".2f", "×"))
    t = t.loc[geo.fillna(-1).sort_values(ascending=False, kind="stable").index]
    lines = [machine_line(machine), t.fillna("–").to_markdown()]
    noisy = int((df.status == "noisy").sum())
    if noisy:
        lines.append(f"\n~ {noisy} point(s) measured under interference (status noisy); their "
                     f"reasons are in the file's records.")
    others = sorted(set(full.impl) - set(df.impl))
    if others:
        why = [f"{i} ({', '.join(sorted(set(full[full.impl == i].status.astype(str))))})"
               for i in others]
        lines.append(f"\nNot measured: {', '.join(why)}.")
    return SpeedTable(path, baseline, "\n".join(lines) + "\n", df)


def _gbps_cell(gbps: float, pct_copy: float) -> str:
    """A point's ``GB/s (% of copy)``."""
    return f"{gbps:.1f} ({_fmt(pct_copy, '.0f', '%')})"


def _bar_points(table: SpeedTable, bar_impl: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measured points where the bar is defined (M·N ≥ 4Mi), and those of ``bar_impl``;
    TableInputError when ``bar_impl`` has none."""
    df = table.points
    big = df[df.M * df.N >= BAR_MIN_ELEMENTS]
    mine = big[big.impl == bar_impl]
    if mine.empty:
        raise TableInputError(f"--bar-impl {bar_impl}: no measured point with M·N ≥ 4Mi "
                              f"({BAR_MIN_ELEMENTS:,}) in {table.path}: the bar is not defined "
                              f"there")
    return big, mine


def speed_bar(table: SpeedTable, bar_impl: str, bar_copy: float = 70.0,
              bar_speedup: float = 2.0) -> tuple[str, bool]:
    """The bar's line for ``bar_impl`` and whether it is met."""
    _, mine = _bar_points(table, bar_impl)
    pct, sp = geomean(mine.pct_copy), geomean(mine.speedup)
    met = bool(pct >= bar_copy and sp >= bar_speedup)
    b = table.baseline
    return (f"\nBar (≥ {bar_copy:g} % of copy and ≥ {bar_speedup:g}× {b}, geometric means "
            f"over {len(mine)} point(s) with M·N ≥ 4Mi): {bar_impl} {_fmt(pct, '.0f', ' %')} "
            f"of copy, {_fmt(sp, '.2f', '×')} {b} — {'met' if met else 'MISSED'}."), met


def speed_bar_points(table: SpeedTable, bar_impl: str, peers: list[str],
                     bar_copy: float = 90.0, bar_speedup: float = 1.0) -> tuple[str, bool]:
    """The bar at every point (docs/peers.md, the CPU bar): at each point with M·N ≥ 4Mi,
    ``bar_impl`` at ≥ ``bar_copy`` % of copy and ≥ ``bar_speedup`` × the fastest of ``peers``
    measured at that point, both from the same run. Returns a Markdown table (one row per
    point, ``~`` where either figure was measured under interference) with a last line, and
    whether every point met it."""
    big, mine = _bar_points(table, bar_impl)
    measured = set(table.points.impl)
    missing = [p for p in peers if p not in measured]
    if missing:
        raise TableInputError(f"--bar-peer {missing[0]}: no measured point in {table.path}; "
                              f"measured implementations: {', '.join(sorted(measured))}")
    rows, oks, noisy = [], [], 0
    for point, r in mine.set_index("point").iterrows():
        at = big[(big.point == point) & big.impl.isin(peers)]
        if at.empty:
            rows.append((point, _gbps_cell(r.gbps, r.pct_copy), "–", "–", "no peer measured"))
            oks.append(False)
            continue
        best = at.loc[at.seconds.idxmin()]
        ratio = best.seconds / r.seconds
        ok = bool(r.pct_copy >= bar_copy and ratio >= bar_speedup)
        rough = "noisy" in (r.status, best.status)
        noisy += rough
        oks.append(ok)
        rows.append((point, _gbps_cell(r.gbps, r.pct_copy), f"{best.impl} {best.gbps:.1f}",
                     f"{ratio:.2f}×", ("met" if ok else "MISSED") + (" ~" if rough else "")))
    out = pd.DataFrame(rows, columns=["point", f"{bar_impl} GB/s (% copy)", "fastest peer GB/s",
                                      "× fastest peer", "bar"])
    met = all(oks)
    line = (f"\nBar at every point (≥ {bar_copy:g} % of copy and ≥ {bar_speedup:g}× the "
            f"fastest of {', '.join(peers)}, at each of {len(rows)} point(s) with M·N ≥ 4Mi): "
            f"{bar_impl} meets it at {sum(oks)} of {len(rows)} — {'met' if met else 'MISSED'}"
            + (f"; ~ {noisy} point(s) measured under interference." if noisy else "."))
    return "\n" + out.to_markdown(index=False) + "\n" + line, met


def load_check(path: str) -> pd.DataFrame:
    """The results of a ``lnbench check --json`` document, one row per gradient check."""
    rows = read_document(path, "lnbench check --json", "results")["results"]
    _needs(path, rows, ACCURACY_NEEDED, "result", "lnbench check")
    df = pd.DataFrame(rows, columns=[*ACCURACY_NEEDED, "reason"])
    df["reason"] = df.reason.fillna("").astype(str)
    try:
        df["N"] = pd.to_numeric(df.N, errors="raise").astype(int)
        df["rel_err"] = pd.to_numeric(df.rel_err, errors="raise").astype(float)
    except (TypeError, ValueError) as e:
        raise TableInputError(f"{path}: a result holds a non-numeric N or rel_err: {e}") \
            from None
    return df


def accuracy_cell(errs: pd.Series, statuses: pd.Series, reasons: pd.Series | None = None) -> str:
    """Worst rel_err of the gradient asked for, ✗ on a judged failure (``✗ dtype`` when a
    gradient had the wrong dtype), ``error`` when it raised."""
    parts = []
    errs = errs.dropna()
    if len(errs):
        parts.append(f"{errs.max():.1e}")
    if (statuses == "fail").any():
        why = reasons[statuses == "fail"] if reasons is not None else pd.Series([], dtype=str)
        dtype_fail = why.str.contains(r"^\w+ dtype \w+, expected", regex=True).any()
        parts.append("✗ dtype" if dtype_fail else "✗")
    if (statuses == "error").any():
        parts.append("error")
    return " ".join(parts) or "–"


def accuracy_table(path: str, grad: str = "dx", min_n: int = 1) -> str:
    """The Markdown accuracy table of a ``lnbench check --json`` document."""
    df = load_check(path)
    df = df[df.status.isin(["ok", "fail", "error"]) & (df.N >= min_n)]
    if df.empty:
        raise TableInputError(f"{path}: no judged or errored result with N ≥ {min_n}: nothing "
                              f"to tabulate")
    rows = []
    for (impl, dist, dtype), g in df.groupby(["impl", "dist", "dtype"], sort=True):
        mine = g[g.grad == grad]
        rows.append((impl, dist, dtype, accuracy_cell(mine.rel_err, g.status, g.reason)))
    cells = pd.DataFrame(rows, columns=["impl", "dist", "dtype", "cell"])
    t = cells.pivot(index="impl", columns=["dist", "dtype"], values="cell")
    dtypes = [d for d in DTYPES if d in set(cells.dtype)]
    dtypes += sorted(set(cells.dtype) - set(dtypes))
    dists = [d for d in DISTS if d in set(cells.dist)] + sorted(set(cells.dist) - set(DISTS))
    t = t.reindex(columns=[(di, dt) for di in dists for dt in dtypes if (di, dt) in t.columns])
    t.columns = [f"{di} {dt}" for di, dt in t.columns]
    return t.fillna("–").to_markdown(disable_numparse=True)
