"""Plugin files: loading, errors that name the file, LNBENCH_PLUGINS, judged like built-ins."""

from __future__ import annotations

import pytest

from lnbench.grid import Case, make_data
from lnbench.judge import GRADS, check_impl, tolerance
from lnbench.plugins import PluginError, load, load_env
from lnbench.registry import get, registry

GOOD = '''
    """A user's kernel: the kevin formula in float32 over NumPy."""
    import numpy as np
    import lnbench

    def backward(dy, x, gamma, mean, rstd, eps):
        """kevin in float32"""
        f = np.float32
        xhat = (x.astype(f) - mean.astype(f)) * rstd.astype(f)
        g = dy.astype(f) * gamma.astype(f)
        dx = rstd * (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True))
        dg = (dy.astype(f) * xhat).sum(0)
        db = dy.astype(f).sum(0)
        return dx.astype(x.dtype), dg.astype(x.dtype), db.astype(x.dtype)

    lnbench.register("{name}", backward, dtypes=("float32", "float16", "bfloat16"))
'''


def test_load_registers_and_is_judged_like_builtins(write_plugin):
    path = write_plugin(GOOD.format(name="user.kevin32"))
    load(path)
    impl = get("user.kevin32")
    assert impl.kind == "plugin" and impl.family == "user" and impl.doc == "kevin in float32"
    for dtype in ("float32", "float16", "bfloat16"):
        data = make_data(Case(16, 256, dtype, "offset"))
        ours = check_impl(impl, data)
        assert [r.status for r in ours] == ["ok"] * 3, [r.reason for r in ours]
        # same yardstick as a built-in: the bounds of its declared (here: undeclared) style
        assert [r.tol for r in ours] == [tolerance(data, g, True, impl.numerics) for g in GRADS]
    skipped = check_impl(impl, make_data(Case(2, 4, "float64", "normal")))
    assert all(r.status == "skipped" for r in skipped)


def test_load_twice_is_a_no_op(write_plugin):
    path = write_plugin(GOOD.format(name="user.once"))
    load(path)
    first = get("user.once")
    load(path)
    assert get("user.once") is first


def test_missing_file_is_named(tmp_path):
    p = str(tmp_path / "nothere.py")
    with pytest.raises(PluginError, match=r"nothere\.py: no such file"):
        load(p)
    with pytest.raises(PluginError, match="no such file"):
        load(str(tmp_path))  # a directory is not a plugin file


@pytest.mark.parametrize(
    "source,match",
    [
        ("raise RuntimeError('kaboom')\n", "RuntimeError: kaboom"),
        ("def broken(:\n", "SyntaxError"),
        ("import surely_not_installed_xyz\n", "ModuleNotFoundError"),
        ("import sys\nsys.exit(3)\n", "SystemExit"),
        ("import lnbench\nlnbench.register('bad.dtype', print, dtypes=('float8',))\n",
         "float8"),
    ],
    ids=["raises", "syntax", "import", "sys-exit", "bad-register"],
)
def test_failing_plugin_is_a_plugin_error_naming_the_file(write_plugin, source, match):
    path = write_plugin(source, name="failing_plugin.py")
    with pytest.raises(PluginError) as ei:
        load(path)
    msg = str(ei.value)
    assert "failing_plugin.py" in msg and "failed to import" in msg and match in msg
    assert "\n" not in msg
    assert "bad.dtype" not in registry()


def test_failed_plugin_can_be_fixed_and_reloaded(write_plugin):
    path = write_plugin("raise ValueError('not yet')\n", name="later.py")
    with pytest.raises(PluginError):
        load(path)
    write_plugin(GOOD.format(name="user.later"), name="later.py")
    load(path)
    assert "user.later" in registry()


def test_load_env_loads_each_path_and_returns_errors(write_plugin, monkeypatch, tmp_path):
    a = write_plugin(GOOD.format(name="env.a"), name="a.py")
    b = write_plugin(GOOD.format(name="env.b"), name="b.py")
    bad = write_plugin("raise RuntimeError('nope')\n", name="bad.py")
    missing = str(tmp_path / "missing.py")
    monkeypatch.setenv("LNBENCH_PLUGINS", f"{a}:{bad}::{missing}:{b}")
    errors = load_env()
    assert {"env.a", "env.b"} <= set(registry())
    assert len(errors) == 2
    assert any("bad.py" in e and "nope" in e for e in errors)
    assert any("missing.py" in e and "no such file" in e for e in errors)
    monkeypatch.delenv("LNBENCH_PLUGINS")
    assert load_env() == []


def test_torch_plugin_file(write_plugin):
    path = write_plugin('''
        import torch
        import lnbench

        def backward(dy, x, gamma, mean, rstd, eps):
            f = torch.float32
            xhat = (x.to(f) - mean) * rstd
            g = dy.to(f) * gamma.to(f)
            dx = rstd * (g - g.mean(1, keepdim=True) - xhat * (g * xhat).mean(1, keepdim=True))
            return dx.to(x.dtype), (dy.to(f) * xhat).sum(0).to(x.dtype), dy.to(f).sum(0).to(x.dtype)

        lnbench.register("user.torch32", backward, array="torch",
                         dtypes=("float32", "float16", "bfloat16"))
    ''')
    load(path)
    for dtype in ("float32", "bfloat16"):
        rows = check_impl(get("user.torch32"), make_data(Case(16, 256, dtype, "normal")))
        assert [r.status for r in rows] == ["ok"] * 3, [r.reason for r in rows]
