"""The CLI's layout as lnbench/cli/__init__.py states it: imports go down only (no import
circle through the CLI or the case loop; nothing below the CLI imports it; measure/ formats
nothing for a console), every command module follows the one pattern, and the shared pieces
(summary line, reasons cut between words, the case loop's fault handling) behave."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lnbench"
#: the entry point, above every command
SHIMS = {"lnbench.__main__"}


def _modules(pkg: Path = PKG) -> dict[str, Path]:
    mods = {}
    for f in pkg.rglob("*.py"):
        parts = list(f.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere: function-level imports and those
    under ``if TYPE_CHECKING:`` included (every import statement in the file is an edge)."""
    mods = _modules(pkg)
    top = pkg.name

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                         for a in n.names]
            graph[m] |= {resolve(x) for x in names
                         if x == top or x.startswith(top + ".")} - {m, ""}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return out


OURS = ("lnbench.cli", "lnbench.caseloop", "lnbench.measure.run", "lnbench.report.tables")


def test_no_import_circle_through_the_cli_or_the_case_loop() -> None:
    bad = [sorted(c) for c in cycles(import_graph())
           if any(m == o or m.startswith(o + ".") for m in c for o in OURS)]
    assert not bad, bad


#: The import circles still allowed, each exactly as it stands (a circle that grows fails too):
#: none.
ALLOWED_CIRCLES: list[set[str]] = []


def test_no_import_circle_anywhere_in_lnbench() -> None:
    """Imports go down only in the whole package (issue 16's "no import circle"), lazy imports
    inside functions and ``if TYPE_CHECKING:`` imports counted as edges, but for
    :data:`ALLOWED_CIRCLES`."""
    found = cycles(import_graph())
    bad = [sorted(c) for c in found if c not in ALLOWED_CIRCLES]
    assert not bad, f"import circles: {bad}"


def test_the_graph_counts_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg.a import f\n",
        "a.py": "def f():\n    from pkg.sub import c  # lazy\n    return c\n",
        "sub/__init__.py": "",
        "sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..d import g\n",
        "sub/c.py": "from . import b\nfrom .b import x\nimport pkg.sub.b as bb\nimport os\n",
        "d.py": "import pkgother\nfrom pkg import sub\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    g = import_graph(pkg)
    assert g == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.c"}, "pkg.sub": set(),
                 "pkg.sub.b": {"pkg.d"}, "pkg.sub.c": {"pkg.sub.b"}, "pkg.d": {"pkg.sub"}}
    assert cycles(g) == []
    (pkg / "d.py").write_text("def g():\n    from .a import f\n    return f\n")
    assert cycles(import_graph(pkg)) == [{"pkg.a", "pkg.sub.c", "pkg.sub.b", "pkg.d"}]


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_below_the_cli_imports_it() -> None:
    graph = import_graph()
    up = {m: sorted(d for d in deps if d == "lnbench.cli" or d.startswith("lnbench.cli."))
          for m, deps in graph.items()
          if not (m == "lnbench.cli" or m.startswith("lnbench.cli.")) and m not in SHIMS}
    assert not {m: d for m, d in up.items() if d}


def test_measure_formats_nothing_for_a_console() -> None:
    for f in (PKG / "measure").rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        for word in ("import rich", "from rich", "to_markdown", "tqdm"):
            assert word not in text, (f, word)


def test_every_command_module_follows_the_pattern() -> None:
    from lnbench.cli import app
    from lnbench.cli.common import Parser

    mods = app.command_modules()
    assert {m.__name__.rsplit(".", 1)[1] for m in mods} >= set(app.COMMANDS) - {"gpu_check"}
    for m in mods:
        assert callable(m.configure), m
        ap = Parser(prog="x")
        sub = ap.add_subparsers(dest="command", parser_class=Parser)
        m.configure(sub)
        assert sub.choices, m
        if getattr(m, "RAW", False):
            assert callable(m.run_argv) and m.NAME in sub.choices
            continue
        for name, p in sub.choices.items():
            leaves = [p]
            for a in p._actions:  # report's subcommands
                if isinstance(a, argparse._SubParsersAction):
                    leaves = list(a.choices.values())
            for leaf in leaves:
                assert callable(leaf.get_default("func")), (m.__name__, name, leaf.prog)


def test_a_listed_command_module_that_is_missing_is_left_out(monkeypatch) -> None:
    from lnbench.cli import app

    monkeypatch.setattr(app, "COMMANDS", (*app.COMMANDS, "no_such_command"))
    names = [m.__name__ for m in app.command_modules()]
    assert "lnbench.cli.no_such_command" not in names and "lnbench.cli.check" in names
    assert app.main(["list", "--json"]) == 0


def test_old_import_paths_still_resolve() -> None:
    import lnbench.cli as cli
    from lnbench.cli import check, common

    assert cli.run_checks is check.run_checks and cli.UsageError is common.UsageError
    with pytest.raises(AttributeError):
        _ = cli.no_such_name


# --- the shared pieces ---------------------------------------------------------------------------


def test_shorten_cuts_between_words_and_keeps_one_line() -> None:
    from lnbench.cli.common import shorten

    reason = "RuntimeError: the kernel\nfailed to launch because the device ran out of memory"
    s = shorten(reason, 40)
    assert len(s) <= 40 and "\n" not in s and s.endswith("…")
    kept = s.removesuffix("…").split()
    assert all(w in reason.split() for w in kept)  # whole words only
    assert shorten("short", 40) == "short"
    assert len(shorten("x" * 100, 10)) == 10  # one long word: cut, marked


def test_times_and_bytes_are_written_once() -> None:
    from lnbench.cli.common import nbytes, seconds

    assert [seconds(s) for s in (None, 2.5e-6, 2.5e-3, 2.5)] == ["–", "2.5 µs", "2.50 ms",
                                                                "2.50 s"]
    assert [nbytes(n) for n in (None, 12, 2048, 3 * 2**20, 5 * 2**30)] == [
        "–", "12 B", "2.0 KiB", "3.0 MiB", "5.0 GiB"]
    for f in (PKG / "cli").glob("*.py"):  # no second copy of the formatting in a command
        if f.name != "common.py":
            assert "µs\"" not in f.read_text(encoding="utf-8"), f


def test_summary_line_explains_the_exit_code_and_counts_skip_reasons() -> None:
    from lnbench.cli.check import check_summary
    from lnbench.cli.run import run_summary
    from lnbench.judge import GradResult

    def row(status: str, reason: str = "") -> GradResult:
        return GradResult("a", "2x4-float32-normal", 2, 4, "float32", "normal", "dx", None,
                          None, None, status == "ok", status, reason)

    rows = [row("ok")] * 4 + [row("fail", "dx out of bounds")] + \
        [row("skipped", "cupy is not installed")] * 3 + [row("skipped", "no GPU")]
    summary = {"ok": 4, "fail": 1, "error": 0, "skipped": 4}
    line = check_summary(rows, summary, 1)
    assert line.startswith("check: ok 4, fail 1, error 0, skipped 4 — exit 1: 1 judged failure")
    assert line.endswith("skipped: cupy is not installed ×3; no GPU ×1")
    assert "\n" not in line
    ok = check_summary([row("ok")], {"ok": 1, "fail": 0, "error": 0, "skipped": 0}, 0)
    assert "exit 0: every judged check passed" in ok and "skipped:" not in ok
    recs = [{"status": "noisy", "reason": "load 1.2"}, {"status": "error", "reason": "boom"},
            {"status": "skipped", "reason": "cupy is not installed"}]
    line = run_summary(recs, 1)
    assert line.startswith("run: ok 0, noisy 1, fail 0, error 1, skipped 1 — exit 1: 1 error")
    assert "cupy is not installed ×1" in line
    from lnbench.cli.common import counted

    many = [f"reason {k}" for k in range(6) for _ in range(6 - k)]
    assert counted(many) == ("reason 0 ×6; reason 1 ×5; reason 2 ×4; reason 3 ×3; "
                             "2 other reason(s) ×3")


def test_the_case_loop_makes_inputs_once_and_a_fault_costs_its_point() -> None:
    from lnbench.caseloop import Key, attempt, run_cases
    from lnbench.grid import Case
    from lnbench.registry import get

    made: list[Case] = []

    def make(case: Case):
        from lnbench.grid import make_data

        made.append(case)
        if case.N == 40:
            raise MemoryError("cannot allocate")
        return make_data(case)

    impls = [get("numpy.kevin"), get("cupy.kevin")]
    cases = [Case(2, 4, "float32"), Case(3, 40, "float32")]
    got = run_cases(
        impls, cases, make=make,
        per_case=lambda imps, data: [(Key.of(i, data), "ran") for i in imps],
        without_inputs=lambda i, c, skip, why: [(Key.of(i, c), skip or why)])
    assert made == cases  # once per case, for both implementations
    by = {(k.impl, k.case): v for k, v in got}
    assert by[("numpy.kevin", "2x4-float32-normal")] == "ran"
    assert by[("numpy.kevin", "3x40-float32-normal")].startswith("inputs: out of memory")
    assert by[("cupy.kevin", "3x40-float32-normal")] == get("cupy.kevin").unavailable()
    assert attempt(lambda: 1 / 0) == (None, "ZeroDivisionError: division by zero")
    assert attempt(lambda: sys.exit(3))[1].startswith("SystemExit")
    with pytest.raises(KeyboardInterrupt):
        attempt(lambda: (_ for _ in ()).throw(KeyboardInterrupt))


def test_records_carry_the_one_key() -> None:
    from lnbench.caseloop import Key
    from lnbench.grid import Case, make_data
    from lnbench.measure.run import measure
    from lnbench.registry import get

    impl, data = get("numpy.kevin"), make_data(Case(2, 4, "float32"))
    rec = measure(impl, data, repeat=1, max_time=0.05, memory=False, retries=0,
                  copy_gbps=lambda _d: None)
    assert rec.key == Key.of(impl, data) == Key("numpy.kevin", "2x4-float32-normal", 2, 4,
                                                "float32", "normal", "cpu")
    assert {k: rec.to_dict()[k] for k in rec.key.as_dict()} == rec.key.as_dict()


def test_a_profile_carries_the_one_key() -> None:
    from lnbench.caseloop import Key
    from lnbench.grid import Case, make_data
    from lnbench.measure.profile import profile_impl
    from lnbench.registry import get

    impl, data = get("numpy.kevin"), make_data(Case(8, 16, "float32"))
    assert profile_impl(impl, data).key == Key.of(impl, data)
