"""The nightly log counts asv's skipped parameter sets per reason instead of printing each."""

from __future__ import annotations

from lnbench.nightly.pipeline import SkipSummary

ASV_LOG = """\
[55.56%] ··· bench_backward.Accuracy.track_rel_err_dx                              ok
[55.56%] ···· For parameters: 'cupy.caffe2', '2x4', 'float64', 'normal'
              asv: skipped: NotImplementedError('cupy is not installed')

              For parameters: 'cupy.caffe2', '2x4', 'float64', 'offset'
              asv: skipped: NotImplementedError('cupy is not installed')

              For parameters: 'triton.fused', '2x4', 'float64', 'offset'
              asv: skipped: NotImplementedError('triton is not installed')

              For parameters: 'numba.fused', '2x4', 'float64', 'offset'
              Traceback (most recent call last):
              ValueError: a real failure stays in the log
[66.67%] ··· bench_backward.Backward.time_backward                                 ok
""".splitlines()


def test_skipped_blocks_are_counted_and_everything_else_kept_in_order() -> None:
    s = SkipSummary()
    out = [o for line in ASV_LOG for o in s.feed(line)] + s.flush()
    assert not any("asv: skipped" in o for o in out)
    assert not any("cupy.caffe2" in o or "triton.fused" in o for o in out)
    # the block that is not a skip is printed whole, in order
    kept = [ln for ln in ASV_LOG if "numba.fused" in ln or "real failure" in ln
            or "Traceback" in ln or "ok" in ln.split()[-1:]]
    assert [o for o in out if o in kept] == kept
    assert s.counts == {"NotImplementedError('cupy is not installed')": 2,
                        "NotImplementedError('triton is not installed')": 1}
    summary = s.summary()
    assert summary[0].startswith("skipped parameter sets: 3")
    assert "cupy is not installed" in summary[1] and summary[1].split()[0] == "2"


def test_no_skips_no_summary() -> None:
    s = SkipSummary()
    assert s.feed("plain line") == ["plain line"] and s.summary() == []
