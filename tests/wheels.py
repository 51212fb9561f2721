"""A minimal valid pure-Python wheel (PEP 427) made without any network, for the tests of the
offline wheel paths (scripts/gpu-prep; scripts/gpu-check --wheels, before lnbench imports)."""

from __future__ import annotations

import zipfile
from pathlib import Path


def make_wheel(folder: Path, name: str, version: str = "1.0", body: str = "") -> Path:
    """``folder/name-version-py3-none-any.whl`` holding the module ``name`` (source ``body``)."""
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"{name}-{version}-py3-none-any.whl"
    di = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": body,
             f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                            "Tag: py3-none-any\n"}
    files[f"{di}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{di}/RECORD,,\n"
    with zipfile.ZipFile(whl, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return whl
