"""``longtail cache --check``: which source files changed after they were cached."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from longtail.sources.cache import open_cache

__all__ = ["check_cache", "CheckResult"]


@dataclasses.dataclass
class CheckResult:
    """Sources of a cache compared with the size and mtime recorded when cached.

    Attributes:
        rows: Number of cached rows.
        changed: Source paths whose size or modification time differ.
        missing: Source paths that no longer exist (or cannot be read).
    """

    rows: int
    changed: list
    missing: list

    @property
    def ok(self) -> bool:
        return not self.changed and not self.missing


def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def check_cache(path, workers: int | None = None,
                allow_outside_root: bool = False) -> CheckResult:
    """Compares each cached row's source file with its recorded size and mtime.

    Args:
        path: The cache folder.
        workers: Threads that stat the files (default: 4 per core, at most 32;
            stats on network file systems wait on the network).
        allow_outside_root: Accept a cache whose files lead outside its
            folder (as :func:`open_cache`).

    Returns:
        A :class:`CheckResult`.
    """
    cache = open_cache(path, allow_outside_root=allow_outside_root)
    table = cache.table
    rel = table.column("path").to_pylist()
    root = cache.source_root
    paths = [p if root is None else os.path.join(root, p) for p in rel]
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        stats = np.array(list(pool.map(_stat, paths, chunksize=256)), np.int64).reshape(-1, 2)
    size = table.column("size").to_numpy()
    mtime = table.column("mtime_ns").to_numpy()
    gone = stats[:, 0] < 0
    differ = ~gone & ((stats[:, 0] != size) | (stats[:, 1] != mtime))
    return CheckResult(rows=len(paths), changed=[paths[i] for i in np.flatnonzero(differ)],
                       missing=[paths[i] for i in np.flatnonzero(gone)])
