"""Shared, opt-in fixtures (nothing autouse: other test files live here too)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def clean_registry():
    """Undo whatever a test registers (``lnbench.register``, ``--plugin``) when it ends.

    Built-ins are loaded first so they stay; plugin modules imported during the test are dropped
    from ``sys.modules`` so a later load of the same file registers again.
    """
    import importlib

    reg = importlib.import_module("lnbench.registry")  # `lnbench.registry` is also a function
    reg.registry()
    saved = dict(reg._REGISTRY)
    mods = {m for m in sys.modules if m.startswith("lnbench_plugin_")}
    yield reg
    reg._REGISTRY.clear()
    reg._REGISTRY.update(saved)
    for m in [m for m in sys.modules if m.startswith("lnbench_plugin_") and m not in mods]:
        del sys.modules[m]


@pytest.fixture
def write_plugin(tmp_path, clean_registry):
    """``write_plugin(source, name="plugin.py") -> str``: a plugin file in tmp_path."""

    def write(source: str, name: str = "plugin.py") -> str:
        p = Path(tmp_path) / name
        p.write_text(textwrap.dedent(source))
        return str(p)

    return write
