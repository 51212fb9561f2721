"""Loading user plugin files (``--plugin FILE.py`` and ``LNBENCH_PLUGINS``)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys


class PluginError(Exception):
    """A plugin file could not be loaded; the message names the file."""


def load(path: str) -> None:
    """Import ``path`` so that its ``lnbench.register(...)`` calls take effect."""
    if not os.path.isfile(path):
        raise PluginError(f"plugin {path}: no such file")
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    modname = f"lnbench_plugin_{digest}"
    if modname in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:  # as `python FILE.py` does: helpers next to the plugin import
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(mod)
    except BaseException as e:  # noqa: BLE001 - any failure in user code is reported, not raised
        del sys.modules[modname]
        if isinstance(e, KeyboardInterrupt):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise PluginError(f"plugin {path}: failed to import: {type(e).__name__}: {msg}") from None


def load_env(var: str = "LNBENCH_PLUGINS") -> list[str]:
    """Load every plugin named in ``$LNBENCH_PLUGINS`` (``:``-separated); returns the errors."""
    errors = []
    for p in filter(None, os.environ.get(var, "").split(":")):
        try:
            load(p)
        except PluginError as e:
            errors.append(str(e))
    return errors
