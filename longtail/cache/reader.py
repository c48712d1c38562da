"""Reading a cache as a Dataset; the reader itself is :mod:`longtail.sources.cache`.

Kept so that ``longtail.cache.open_cache``, ``Cache`` and ``load_split``
stay where they were.
"""

from __future__ import annotations

import os

from longtail.dataset import Dataset
from longtail.errors import DataError
from longtail.sources.cache import Cache, is_cache_manifest, open_cache

__all__ = ["Cache", "is_cache_manifest", "load_split", "open_cache"]


def load_split(file, class_names=None, allow_outside_root: bool = False) -> Dataset:
    """Reads a manifest saved from a cache Dataset (``split CACHE``) as a cache Dataset.

    The manifest stores the cache folder (relative to the manifest) and each
    row's index in it, so the rows are read from the cache, not decoded.
    """
    if not is_cache_manifest(file):
        raise DataError(f"{os.fspath(file)}: not a manifest of cache rows")
    return Dataset.from_table(file, class_names=class_names,
                              allow_outside_root=allow_outside_root)
