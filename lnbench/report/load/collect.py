"""The kept result files of a results folder, gathered row-wise into growing arrays.

Method. Each file read (``lnbench.report.load.resultfile``) brings a few small arrays: its
values, status codes and started times (and statistics and samples where stored). They are
copied at once into one :class:`Growing` array per column, which doubles its capacity when
full (amortised constant cost per row, as a Python list grows), and the file's own arrays
are dropped. A large numpy array is its own memory mapping (glibc's ``malloc`` maps blocks
above its mmap threshold), so the unused tail of a buffer is never touched and costs no
memory, and a replaced buffer goes back to the system at once. Keeping one small array per
file and joining them at the end instead leaves the process heap full of holes that the
system never gets back, about 80 MB of peak RSS for the django-size tree of
``scripts/bench-report --perf-only`` (4,700 files, 1.08 M values; 2-core x86_64 VM).

What a file shares with others -- its :class:`~lnbench.report.load.layout.Layout` and the
codes of its benchmark versions -- is kept by reference. Statistics and samples get a column
only once some file stores them (earlier rows are filled with NaN or None then).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from lnbench.report.load.layout import Combos, Layout
from lnbench.report.load.resultfile import STAT_KEYS, FileRead


class Growing:
    """A 1-d numpy array that grows at its end by doubling its capacity."""

    __slots__ = ("buf", "n")

    def __init__(self, dtype: Any, capacity: int = 4096) -> None:
        self.buf = np.empty(capacity, dtype=dtype)
        self.n = 0

    def reserve(self, m: int) -> None:
        """Room for ``m`` rows in all (at least doubling the capacity when it grows)."""
        if m > len(self.buf):
            new = np.empty(max(m, 2 * len(self.buf)), dtype=self.buf.dtype)
            new[:self.n] = self.buf[:self.n]
            self.buf = new

    def extend(self, values: np.ndarray) -> None:
        m = self.n + len(values)
        self.reserve(m)
        self.buf[self.n:m] = values
        self.n = m

    def fill(self, count: int, value: Any) -> None:
        m = self.n + count
        self.reserve(m)
        self.buf[self.n:m] = value
        self.n = m

    def array(self) -> np.ndarray:
        """The rows so far (a view of the buffer)."""
        return self.buf[:self.n]


class Collector:
    """The kept files, in the order read (see the module docstring)."""

    def __init__(self, combos: Combos, n_files: int = 0) -> None:
        self.combos = combos
        #: files expected: after the first one, room for twice that many of its size is
        #: reserved (untouched, so free), so that no buffer is replaced while reading
        self.n_files = n_files
        self.files: list[dict[str, Any]] = []
        self.layouts: list[Layout] = []
        self.vcodes: list[np.ndarray] = []
        self.values = Growing(np.float64)
        self.status = Growing(np.int8)
        self.started = Growing(np.float64)  # per entry, not per row
        self.stats: list[Growing] | None = None
        self.samples: Growing | None = None
        self.version_names: list[str | None] = []
        self.version_code: dict[str | None, int] = {}

    @property
    def n_rows(self) -> int:
        return self.values.n

    def version(self, value: Any) -> int:
        """The code of a stored benchmark version (unhashable ones by their JSON text)."""
        key = value if value is None or isinstance(value, str) else json.dumps(value)
        code = self.version_code.get(key)
        if code is None:
            code = self.version_code[key] = len(self.version_names)
            self.version_names.append(key)
        return code

    def add(self, fr: FileRead) -> None:
        """Keep a file read (by this process, or by a worker: then laid out again here)."""
        assert fr.rec is not None and fr.values is not None and fr.status is not None
        assert fr.started is not None
        lay = fr.layout
        if lay is None or lay.owner is not self.combos:
            lay = self.combos.layout(fr.names, fr.params)
        self.combos.code(lay)
        if lay.vcodes is None or (fr.versions is not lay.versions
                                  and fr.versions != lay.versions):
            lay.vcodes = np.fromiter(map(self.version, fr.versions), dtype=np.int32,
                                     count=len(fr.versions))
            lay.versions = fr.versions
        n = len(fr.values)
        if not self.files and self.n_files > 1:
            for g in (self.values, self.status):
                g.reserve(2 * n * self.n_files)
            self.started.reserve(2 * len(fr.started) * self.n_files)
        if fr.stats is not None and self.stats is None:
            self.stats = [Growing(np.float64) for _ in STAT_KEYS]
            for g in self.stats:
                g.reserve(len(self.values.buf))
                g.fill(self.n_rows, np.nan)
        if self.stats is not None:
            for j, g in enumerate(self.stats):
                if fr.stats is None:
                    g.fill(n, np.nan)
                else:
                    g.extend(fr.stats[j])
        if fr.samples is not None and self.samples is None:
            self.samples = Growing(object)
            self.samples.reserve(len(self.values.buf))
            self.samples.fill(self.n_rows, None)
        if self.samples is not None:
            if fr.samples is None:
                self.samples.fill(n, None)
            else:
                self.samples.extend(np.fromiter(fr.samples, dtype=object, count=n))
        self.files.append(fr.rec)
        self.layouts.append(lay)
        self.vcodes.append(lay.vcodes)
        self.values.extend(fr.values)
        self.status.extend(fr.status)
        self.started.extend(fr.started)

    def row_starts(self) -> np.ndarray:
        """First row of each kept file, and the number of rows at the end."""
        return np.r_[0, np.cumsum([lay.total for lay in self.layouts])].astype(np.int64)
