"""lnbench profile: op tracing (NumPy subclass, torch dispatch mode), profilers, bytes model,
temporaries, traces, and the command line's JSON and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lnbench.cli import main
from lnbench.grid import Case, make_data
from lnbench.measure.profile import ProfileUnavailable, _trace_numpy, profile_impl
from lnbench.registry import get, registry

M, N = 64, 256
F32 = 4


def _prof(name: str, **kw):
    impl = get(name)
    why = impl.unavailable()
    if why:
        pytest.skip(f"{name}: {why}")
    return profile_impl(impl, make_data(Case(M, N, "float32")), budget=0.05, max_time=0.2, **kw)


def _by_code(ops, code: str):
    hits = [o for o in ops if o.code == code]
    assert hits, [o.code for o in ops]
    return hits[0]


def test_numpy_ops_are_traced_to_their_formula_expressions() -> None:
    p = _prof("numpy.kevin")
    assert p.backend == "numpy" and p.bytes_method == "ops"
    names = {o.name for o in p.ops}
    assert {"multiply", "subtract", "sum"} <= names
    assert all(o.where.startswith("lnbench/formulas.py:") for o in p.ops)
    # exact bytes of one op: dxhat = dy * gamma reads dy (M*N) and gamma (N), writes M*N
    g = _by_code(p.ops, "dy * gamma")
    assert (g.bytes_read, g.bytes_written) == (F32 * (M * N + N), F32 * M * N)
    assert g.signature.startswith(f"{M}x{N}·{N} → {M}x{N}")
    s = _by_code(p.ops, "xp.sum(dy, axis=0, keepdims=True)")
    assert (s.bytes_read, s.bytes_written) == (F32 * M * N, F32 * N)
    # the bytes model is the sum over ops, well above the minimal model for this formula
    assert p.bytes_moved == pytest.approx(sum(o.bytes_read + o.bytes_written for o in p.ops))
    assert p.nbytes_min == Case(M, N, "float32").nbytes_min
    assert 5 < p.moves_x_min < 10
    # temporaries: each elementwise op allocates an (M, N) array; three outputs are returned.
    # kevin: dy*γ, K*dxhat, two subtractions, dxhat*xhat, xhat*Σ, xhat*dy (dx is returned)
    t = p.temporaries
    assert t["allocations"] >= 10 and t["count"] == t["allocations"] - 3
    assert 7 * F32 * M * N <= t["bytes"] < 8 * F32 * M * N and t["peak_workspace_bytes"] > 0
    assert any("kevin" in r["name"] for r in p.profiler_rows)  # cProfile, by function
    assert p.seconds > 0 and p.gbps > 0 and 0 < sum(o.pct for o in p.ops) <= 100.01


def test_cs231n_moves_more_bytes_than_kevin() -> None:
    # the staged formula materialises more (M, N) temporaries (the dtype-preserving ones,
    # dxmu1/dxmu2/dx1/dx2 ...): the model must see it, and see the array np.ones creates
    cs, kv = _prof("numpy.cs231n"), _prof("numpy.kevin")
    assert cs.moves_x_min > kv.moves_x_min + 2
    assert cs.temporaries["count"] > kv.temporaries["count"]
    assert any(o.name == "ones" and o.bytes_written == F32 * M * N for o in cs.ops)


def test_tracing_leaves_results_and_the_thunk_unchanged() -> None:
    thunk = get("numpy.rocking").make(make_data(Case(8, 32, "float32")))
    plain = thunk()
    events, _, traced, _ = _trace_numpy(thunk, 2, inject=True)
    assert events
    for a, b in zip(plain, traced, strict=True):
        assert type(b) is np.ndarray and np.array_equal(a, b)
    cells = [c.cell_contents for c in thunk.__closure__]
    arrays = [v for c in cells for v in (c if isinstance(c, tuple) else (c,))
              if isinstance(v, np.ndarray)]
    assert arrays and all(type(a) is np.ndarray for a in arrays)
    again = thunk()
    assert all(type(a) is np.ndarray and np.array_equal(a, b)
               for a, b in zip(again, plain, strict=True))


def test_torch_eager_formula_and_native_kernel(tmp_path) -> None:
    pytest.importorskip("torch")
    kv = _prof("torch.kevin")
    assert kv.backend == "torch" and kv.bytes_method == "ops"
    assert {"aten::mul", "aten::sum", "aten::sub"} <= {o.name for o in kv.ops}
    assert kv.moves_x_min > 5
    assert any(r["name"] == "aten::mul" for r in kv.profiler_rows)

    trace = tmp_path / "native.json"
    nat = _prof("torch.native", trace=str(trace))
    assert [o.name for o in nat.ops] == ["aten::native_layer_norm_backward"]
    assert nat.moves_x_min == pytest.approx(1.0, rel=0.02)  # one kernel: inputs + outputs
    assert nat.temporaries["count"] == 0 and nat.temporaries["allocations"] == 3
    assert any(r["name"] == "aten::native_layer_norm_backward" for r in nat.profiler_rows)
    doc = json.loads(trace.read_text())
    names = {e.get("name") for e in doc["traceEvents"]}
    assert "aten::native_layer_norm_backward" in names
    assert nat.trace == str(trace)


def test_numba_kernel_uses_the_boundary_model() -> None:
    p = _prof("numba.fused")
    assert p.backend == "numba" and p.bytes_method == "boundary"
    assert p.moves_x_min == pytest.approx(1.0, rel=0.05)
    assert any("_backward_kernel" in r["name"] for r in p.profiler_rows)
    # the arrays created around the kernel: dx, dγ, dβ, the widened γ, the two partial-sum
    # buffers and, where dx is streamed, the staging rows
    from lnbench.impls.numba_fused import streams_dx

    staged = int(streams_dx(M, N, "float32"))
    assert {o.name for o in p.ops} == {"empty"}
    assert p.temporaries["allocations"] == 6 + staged
    assert p.temporaries["count"] == 3 + staged
    assert any("Numba" in n for n in p.notes)


def test_numpy_trace_file(tmp_path) -> None:
    trace = tmp_path / "t.json"
    p = _prof("numpy.kevin", trace=str(trace))
    doc = json.loads(trace.read_text())
    ops = [e for e in doc["traceEvents"] if e.get("cat") == "op"]
    calls = [e for e in doc["traceEvents"] if e.get("cat") == "call"]
    assert len(calls) == p.iterations and len(ops) >= 10 * p.iterations
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in ops)


def test_unavailable_raises() -> None:
    gone = [i for i in registry().values() if i.unavailable()]
    if not gone:
        pytest.skip("every implementation is available here")
    with pytest.raises(ProfileUnavailable, match=gone[0].name):
        profile_impl(gone[0], make_data(Case(2, 4, "float32")))


# --- command line --------------------------------------------------------------------------------


def test_cli_json(capsys) -> None:
    rc = main(["profile", "--impl", "numpy.c9", "--shape", "16x64", "--json", "--top", "3"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("impl", "case", "backend", "seconds", "nbytes_min", "bytes_moved",
                "moves_x_min", "gbps", "copy_gbps", "pct_copy", "effective_gbps", "ops",
                "ops_total", "profiler_rows", "temporaries", "machine", "notes"):
        assert key in d, key
    assert d["impl"] == "numpy.c9" and d["case"] == "16x64-float32-normal"
    assert len(d["ops"]) == 3 and d["ops_total"] > 3 and len(d["profiler_rows"]) <= 3
    assert {"name", "where", "code", "signature", "seconds", "bytes_read",
            "bytes_written"} <= set(d["ops"][0])
    assert d["ops"][0]["seconds"] >= d["ops"][-1]["seconds"]


def test_cli_table(capsys) -> None:
    assert main(["profile", "--impl", "numpy.kevin", "--shape", "16x64"]) == 0
    out = capsys.readouterr().out
    assert "where the time goes" in out and "the minimal bytes" in out
    assert "formulas.py" in out and "cProfile" in out


@pytest.mark.parametrize("argv,needle", [
    (["--impl", "no.such", "--shape", "2x4"], "no.such"),
    (["--impl", "numpy.kevin", "--shape", "2y4"], "2y4"),
    (["--impl", "numpy.kevin"], "--shape"),
    (["--shape", "2x4"], "--impl"),
    (["--impl", "numpy.kevin", "--impl", "numpy.c9", "--shape", "2x4"], "exactly one"),
    (["--impl", "numpy.kevin", "--shape", "2x4", "--shape", "4x4"], "exactly one"),
    (["--impl", "numpy.kevin", "--shape", "2x4", "--dtype", "float8"], "float8"),
    (["--impl", "numpy.kevin", "--shape", "2x4", "--dist", "weird"], "weird"),
    (["--impl", "numpy.kevin", "--shape", "2x4", "--top", "-1"], "--top"),
    (["--impl", "numpy.kevin", "--shape", "2x4", "--trace", "/no/such/dir/t.json"], "/no/such"),
])
def test_cli_bad_usage_exits_2(argv, needle, capsys) -> None:
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_cli_unavailable_impl_exits_2(capsys) -> None:
    gone = [i for i in registry().values() if i.unavailable()]
    if not gone:
        pytest.skip("every implementation is available here")
    assert main(["profile", "--impl", gone[0].name, "--shape", "2x4"]) == 2
    err = capsys.readouterr().err
    assert gone[0].name in err and "not available here" in err


def test_page_faults_are_counted() -> None:
    from lnbench.measure.profile import fault_cost_seconds

    cost = fault_cost_seconds()
    assert cost is None or 1e-8 < cost < 1e-3
    p = _prof("numpy.cs231n")
    assert p.page_faults_per_call is not None and p.page_faults_per_call >= 0
    assert all(o.page_faults >= 0 for o in p.ops)
