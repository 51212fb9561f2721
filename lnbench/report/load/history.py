"""Commit order from the project's first-parent history, as asv orders commits.

asv publishes a branch's results in the order of ``git rev-list --first-parent <branch>``
(``asv/repo.py``, ``get_branch_commits``), so that commits of merged pull-request branches
never sit between two commits of the main line. Ordering by commit date instead interleaves
them: a test commit of a fix branch becomes the "commit" of a step. Here the loader's
``commit_order`` becomes the position on such a history (oldest 0), and results of commits
off it are left out and named (``off_history``). The history comes from a list file (one
full hash a line, newest first: ``git rev-list --first-parent main > FILE``) or from a git
repository at hand; without either, the loader orders commits by date.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lnbench.report.load.jsonfile import one_line, short_repr

if TYPE_CHECKING:
    from lnbench.report.load.loaded import LoadedResults


def apply_first_parent(loaded: LoadedResults, first_parent: Sequence[str]) -> None:
    """Order ``loaded``'s commits by the first-parent history ``first_parent`` (newest first,
    full hashes, as ``git rev-list --first-parent`` prints them), in place: ``commit_order``
    becomes the position on it (oldest 0) and rows of commits off it are left out and named
    in ``loaded.off_history``. asv orders commits the same way (its branch history), where
    commit dates would mix pull-request branch commits into the history."""
    frame = loaded.frame
    loaded.order = "first-parent"
    if frame.empty:
        return
    n = len(first_parent)
    rank = {c: n - 1 - i for i, c in enumerate(first_parent)}
    cats = frame["commit"].cat.categories
    table = np.asarray([rank.get(str(c), -1) for c in cats], dtype=np.int64)
    order = table[frame["commit"].cat.codes.to_numpy()]
    away = order < 0
    used = np.zeros(len(cats), dtype=bool)
    used[np.unique(frame["commit"].cat.codes.to_numpy())] = True
    loaded.off_history = sorted(str(c) for c, r, u in zip(cats, table, used, strict=True)
                                if r < 0 and u)
    frame = frame.assign(commit_order=order)
    if away.any():
        frame = frame.loc[~away].reset_index(drop=True)
        for col in frame.select_dtypes("category").columns:
            frame[col] = frame[col].cat.remove_unused_categories()
    loaded.frame = frame


def share_on_history(loaded: LoadedResults, first_parent: Sequence[str]) -> float:
    """The share of the results' commits that lie on ``first_parent`` (0 when none)."""
    if loaded.frame.empty:
        return 0.0
    commits = set(map(str, loaded.frame["commit"].unique()))
    return len(commits & set(first_parent)) / len(commits)


def git_first_parent(repo: str | os.PathLike[str], rev: str = "HEAD") -> list[str]:
    """``git rev-list --first-parent REV`` in ``repo``: full hashes, newest first.

    Raises ValueError with a one-line reason when ``repo`` is not a git repository (or git
    is missing)."""
    import subprocess

    try:
        proc = subprocess.run(["git", "-C", str(repo), "rev-list", "--first-parent", rev],
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"cannot run git: {one_line(exc)}") from None
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["git rev-list failed"])[0]
        raise ValueError(f"not a git repository with commits ({msg})")
    return proc.stdout.split()


def read_first_parent(path: str | os.PathLike[str]) -> list[str]:
    """A first-parent list file: one full commit hash a line, newest first (``git rev-list
    --first-parent main > FILE``); blank lines and ``#`` comments ignored. ValueError with a
    one-line reason when it cannot be read or holds something else than hashes."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read: {one_line(exc)}") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not re.fullmatch(r"[0-9a-fA-F]{7,64}", line):
            raise ValueError(f"line {i}: {short_repr(line)} is not a commit hash")
        out.append(line.lower())
    if not out:
        raise ValueError("no commit hashes in it")
    return out
