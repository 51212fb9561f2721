"""Reading the JSON files of an asv results folder, each problem a one-line reason.

A file is read as bytes and decoded by ``orjson`` when that package is installed, else by the
standard library's :mod:`json`. orjson decodes asv result files about three times faster,
and decoding is the largest single part of loading a long history: ``load_results`` of the
django-size tree of ``scripts/bench-report --perf-only`` (4,700 files) takes 1.2 s of CPU
time with orjson and 1.8 s with json (best of 3 in one process, 2-core x86_64 VM).

orjson keeps to RFC 8259, which has no ``NaN`` or ``Infinity``; Python's json module (and so
asv, which writes its files with it) writes those literals for skipped and infinite values.
A document orjson refuses is therefore decoded again by :mod:`json`: both decoders give the
same Python objects for every file (floats by correct rounding, objects as dicts in file
order), and every error message is json's, whichever decoder ran first. Without orjson
nothing changes but the speed.

Every reader here raises ``ValueError`` with a one-line reason (:func:`one_line`); the
loader turns it into a :class:`LoadError` naming the file, and loads everything else.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # optional: a faster decoder of the same documents
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the installation
    _orjson = None


class ResultsDirError(Exception):
    """The results directory itself is missing or is not a directory (CLI exit code 2)."""


@dataclass(frozen=True)
class LoadError:
    """A file that could not be read, or could be read only in part."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not a string, not NaN or infinity)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def decode(raw: bytes) -> Any:
    """The JSON document in ``raw`` (UTF-8); ValueError with a one-line reason."""
    if _orjson is not None:
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass  # NaN/Infinity, or not JSON: json decides, and words the error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"cannot read: {one_line(exc)}") from None
    if not text.strip():
        raise ValueError("empty file")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON (truncated or corrupted?): {one_line(exc)}") from None


def read_json(path: Path) -> Any:
    """Parse a JSON file; raises ValueError with a one-line reason."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read: {one_line(exc)}") from None
    return decode(raw)


def check_version(data: Any, expected: int) -> None:
    """ValueError unless ``data`` is an object with ``"version": expected`` (asv's files)."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    if "version" not in data:
        raise ValueError("no 'version' key: not an asv file")
    if data["version"] != expected:
        raise ValueError(
            f"unknown format version {data['version']!r} (this reader knows {expected})"
        )
