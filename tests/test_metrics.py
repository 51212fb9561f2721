"""lnbench.metrics: the suite's metrics declared once, the bytes model and the derived values;
the reports' reading of direction, kind and bounds (lnbench.report.metrics) for lnbench's own
metrics and for another suite's."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest

from lnbench import metrics as M
from lnbench.grid import Case
from lnbench.judge import GRADS
from lnbench.measure.run import Record
from lnbench.report import metrics as R


def _suite_methods() -> dict[str, tuple[str, object]]:
    """asv method name -> (class name, method) of every benchmark in benchmarks/."""
    import benchmarks.bench_backward as suite

    out = {}
    for cname, cls in inspect.getmembers(suite, inspect.isclass):
        if cls.__module__ != suite.__name__:
            continue
        for name, fn in vars(cls).items():
            if name.startswith(("time_", "timeraw_", "peakmem_", "mem_", "track_")):
                out[name] = (cname, fn)
    return out


def test_every_suite_method_is_declared_once_with_its_unit_and_class() -> None:
    methods = _suite_methods()
    assert set(methods) == set(M.METRICS)
    for name, (cname, fn) in methods.items():
        m = M.METRICS[name]
        assert m.cls == cname, name
        if name.startswith("track_"):  # asv gives time_/peakmem_ their unit itself
            assert fn.unit == m.unit, name
    assert M.methods_of("Metrics") == ("track_seconds", "track_gbps", "track_pct_copy",
                                       "track_workspace_bytes")


def test_record_keys_are_fields_the_measurements_fill() -> None:
    fields = {f.name for f in dataclasses.fields(Record)}
    for m in M.METRICS.values():
        if m.cls == "Metrics":
            assert m.key in fields, m
        elif m.cls == "Accuracy":
            assert m.key in {f"rel_err_{g}" for g in GRADS}, m
        else:
            assert m.key is None, m  # asv's own timer and peak RSS


def test_bytes_model_by_hand() -> None:
    # 4096x1024 float32: x, dy, dx 3·4096·1024·4; mean/rstd 8·4096; γ, dγ, dβ 3·1024·4
    assert M.bytes_moved(4096, 1024, 4) == 50331648 + 32768 + 12288
    assert M.case_bytes(4096, 1024, "float32") == 50376704
    assert M.case_bytes(2, 4, "bfloat16") == 3 * 2 * 4 * 2 + 16 + 3 * 4 * 2
    for dt in ("float64", "float32", "float16", "bfloat16"):
        assert Case(64, 1023, dt).nbytes_min == M.case_bytes(64, 1023, dt)
    assert [M.elt_bytes(d) for d in ("float64", "bfloat16", "float8_e4m3fn", "int16")] == [
        8, 2, 1, 2]
    assert M.elt_bytes("no-such-dtype") is None
    with pytest.raises(ValueError, match="no-such-dtype"):
        M.case_bytes(2, 4, "no-such-dtype")


def test_gbps_pct_copy_geomean() -> None:
    assert M.gbps(3e9, 1.5) == pytest.approx(2.0)
    assert M.pct_copy(5.0, 20.0) == pytest.approx(25.0)
    assert M.pct_copy(5.0, None) is None and M.pct_copy(5.0, 0.0) is None
    assert M.geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert M.geomean([2.0, 8.0, math.nan, None, 0.0, -3.0, math.inf]) == pytest.approx(4.0)
    assert math.isnan(M.geomean([])) and math.isnan(M.geomean([0.0, math.nan]))


def test_directions_of_lnbench_metrics_need_no_benchmarks_json() -> None:
    higher = {n for n in M.METRICS if R.higher_is_better(f"bench_backward.Metrics.{n}")}
    assert higher == {"track_gbps", "track_pct_copy"}
    assert R.is_accuracy("bench_backward.Accuracy.track_rel_err_dgamma")
    assert not R.is_accuracy("bench_backward.Metrics.track_seconds")
    assert R.lower_bound("bench_backward.Metrics.track_gbps", None) == (0.0, True)
    assert R.lower_bound("bench_backward.Accuracy.track_rel_err_dx", "unit") == (0.0, False)


def test_other_suites_follow_asvs_convention_unless_declared() -> None:
    # a name is never read for its direction: asv counts lower as better
    for name in ("bench.Io.track_throughput", "bench.Net.track_bandwidth_gbps",
                 "bench.Cpu.time_flops", "bench.Mem.peakmem_load"):
        assert not R.higher_is_better(name, {"unit": "unit"}), name
    assert R.higher_is_better("bench.Io.track_throughput", {"unit": "ops/s"})  # a rate unit
    assert R.higher_is_better("bench.Io.track_x", {"higher_is_better": True})
    assert R.higher_is_better("bench.Io.track_x", {"direction": "higher"})
    # benchmarks.json wins over lnbench's own declaration
    assert not R.higher_is_better("bench_backward.Metrics.track_gbps", {"direction": "lower"})
    assert not R.is_accuracy("bench.Fit.track_rel_err")  # not declared: not lnbench's accuracy
    assert R.lower_bound("bench.A.time_x", None) == (0.0, True)
    assert R.lower_bound("bench.A.peakmem_x", None) == (0.0, False)
    assert R.lower_bound("bench.A.track_x", "seconds") == (0.0, True)
    assert R.lower_bound("bench.A.track_x", "unit") is None
