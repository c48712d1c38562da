"""Sources: how the samples of a Dataset are stored, and how they are found.

See :mod:`longtail.sources.base` for the protocol and how to add a source.
Readers: ``directory`` (a folder per class), ``table`` (CSV/Parquet tables
and manifests). Sources: ``files``, ``features``, ``cache``, ``embeddings``
(a feature store written by ``longtail features``; its rows are read a
batch at a time from a row file, see :mod:`longtail.sources.rows`).
"""

from __future__ import annotations

import os

from longtail.cache.layout import is_cache
from longtail.sources.base import Indexed, Source, Substitute
from longtail.sources.cache import CacheSource, is_cache_manifest, open_cache, read_split
from longtail.sources.embeddings import EmbeddingSource, is_embeddings, read_embeddings
from longtail.sources.features import FeatureSource
from longtail.sources.files import FileSource

__all__ = ["CacheSource", "EmbeddingSource", "FeatureSource", "FileSource", "Indexed", "Source", "Substitute",
           "is_cache", "open_folder", "read_manifest"]


def read_manifest(file, *, label_column="label", path_column="path", weight_column=None,
                  feature_columns=None, class_names=None,
                  allow_outside_root=False) -> Indexed:
    """Reads a table or a manifest: its rows of files, features or cache rows."""
    from longtail.sources.table import read_table

    if isinstance(file, (str, os.PathLike)) and is_cache_manifest(file):  # rows of a cache
        return read_split(file, class_names=class_names, allow_outside_root=allow_outside_root)
    if isinstance(file, (str, os.PathLike)) and is_embeddings(file):  # a feature store
        return read_embeddings(file, class_names=class_names)
    data = read_table(file, label_column=label_column, path_column=path_column,
                      weight_column=weight_column, feature_columns=feature_columns,
                      class_names=class_names, allow_outside_root=allow_outside_root)
    source = (FileSource(data.paths, data.root) if data.paths is not None
              else FeatureSource(data.features, data.feature_names))
    return Indexed(data.class_names, data.labels, data.weights, source)


def open_folder(path, *, class_names=None, allow_outside_root=False) -> Indexed:
    """Opens a cache folder as rows of the cache."""
    return open_cache(path, allow_outside_root=allow_outside_root).index(
        class_names=class_names)

