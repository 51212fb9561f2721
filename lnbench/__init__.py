"""lnbench: judge, benchmark and profile LayerNorm-backward implementations.

Import-light on purpose (asv imports it in every benchmark process): heavy array
libraries load lazily inside the implementations that need them.
"""

from lnbench.registry import Impl, get, register, registry, resolve

__all__ = ["Impl", "get", "register", "registry", "resolve"]
__version__ = "0.1.0"
