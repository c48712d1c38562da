"""Backbone embeddings from a feature store (``longtail features``): the :class:`EmbeddingSource`.

A feature store is a Parquet file of feature columns ``f0000 ...``, a
``label`` column and optionally ``weight``, whose schema metadata
``longtail_features`` names the backbone that wrote it (see
:mod:`longtail.features`). Its rows are vectors like any table's, so heads
train on them with the tabular ``mlp``; what the source adds is the backbone
identity, which lets a run trained on it hand over one model that takes
images: ``backbone -> head`` (:meth:`EmbeddingSource.take_away`), and lets
that model be evaluated on feature rows again (:meth:`EmbeddingSource.model_for`).

Manifests saved from an embedding Dataset (``longtail split FEATS``) hold
the same columns and carry the identity in their ``longtail`` metadata with
``kind: "embeddings"``, so a split of a feature store is a feature store.
"""

from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np
import pyarrow as pa

from longtail.errors import DataError
from longtail.sources.base import Indexed, Source
from longtail.sources.features import FeatureSource

__all__ = ["EmbeddingSource", "is_embeddings", "read_embeddings", "store_identity"]

#: Key of a feature store's description in its Parquet schema metadata.
STORE_KEY = b"longtail_features"
_MANIFEST_KEY = b"longtail"
_FEATURE = re.compile(r"^f\d+$")
HEAD_NAME = "head"  # the head's name inside a take-away backbone+head model


def _metadata(file) -> dict:
    import pyarrow.parquet as pq

    file = os.fspath(file)
    if not file.lower().endswith((".parquet", ".pq")) or not os.path.isfile(file):
        return {}
    try:
        return pq.read_schema(file).metadata or {}
    except (pa.ArrowInvalid, OSError, ValueError):
        return {}


def store_identity(file) -> dict | None:
    """The backbone identity of a feature store or of a manifest saved from one, else None."""
    metadata = _metadata(file)
    try:
        if STORE_KEY in metadata:
            return json.loads(metadata[STORE_KEY])
        meta = json.loads(metadata.get(_MANIFEST_KEY) or b"{}")
    except ValueError as e:
        raise DataError(f"{file}: its longtail metadata is not JSON: {e}") from e
    if isinstance(meta, dict) and meta.get("kind") == EmbeddingSource.kind:
        return meta.get("identity") or {}
    return None


def is_embeddings(file) -> bool:
    """Whether ``file`` is a feature store or a manifest of its rows."""
    return store_identity(file) is not None


def read_embeddings(file, *, class_names=None) -> Indexed:
    """Reads a feature store (or a manifest saved from one) as the parts of a Dataset.

    Labels and weights are read into memory; the feature rows are not: they
    are converted once into a row file beside the store (see
    :mod:`longtail.sources.rows`) and read a batch at a time.

    Args:
        file: The ``.parquet`` file.
        class_names: Explicit classes and their order (default: the store's).
    """
    import pyarrow.parquet as pq

    from longtail._labels import encode_labels
    from longtail.sources.rows import open_rows
    from longtail.sources.table import METADATA_KEY, _weights

    file = os.fspath(file)
    identity = store_identity(file)
    if identity is None:
        raise DataError(f"{file}: not a longtail feature store")
    schema = pq.read_schema(file)
    columns = schema.names
    features = [c for c in columns if _FEATURE.match(c)]
    if not features or "label" not in columns:
        raise DataError(f"{file}: a feature store needs f0000... feature columns and a "
                        "`label` column")
    names = class_names if class_names is not None else identity.get("class_names")
    if names is None:  # a manifest names its classes in its own metadata
        names = json.loads((schema.metadata or {}).get(METADATA_KEY) or b"{}").get(
            "class_names")
    weighted = "weight" in columns
    try:
        table = pq.read_table(file, columns=["label", "weight"] if weighted else ["label"])
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{file}: cannot read table: {str(e).splitlines()[0]}") from e
    labels, names = encode_labels(table.column("label"), names, where=file)
    weights = _weights(file, table.column("weight"), "weight") if weighted else None
    rows = open_rows(file, features)
    if len(rows) != len(labels):
        raise DataError(f"{file}: {len(rows)} feature rows for {len(labels)} labels")
    return Indexed(names, labels, weights, EmbeddingSource(rows, features, identity))


class EmbeddingSource(FeatureSource):
    """Backbone embeddings, one row per sample, with the backbone that made them.

    The rows stay where they are stored (a :class:`~longtail.sources.rows.RowFile`:
    a feature store's row file, or an array in memory); a source holds them
    and the indices of its own samples, so :meth:`take` copies indices, never
    rows, and :meth:`read` reads only the rows of one batch.

    Args:
        features: ``(samples, features)`` embeddings (checked finite, held as
            float32), or a :class:`~longtail.sources.rows.RowFile`.
        feature_names: One name per column.
        identity: The store's description: ``backbone``, ``weights``,
            ``weights_file``, ``weights_sha256``, ``image_size``, ``source``...
        index: The rows of ``features`` this source holds, in order (default all).
    """

    kind = "embeddings"

    def __init__(self, features, feature_names=None, identity: dict | None = None, *,
                 index: np.ndarray | None = None):
        from longtail.sources.rows import RowFile

        if not isinstance(features, RowFile):
            checked = FeatureSource(features, feature_names)  # float32, finite
            features, feature_names = RowFile(array=checked.features), checked.feature_names
        self.row_file = features
        if index is not None:
            index = np.array(index, dtype=np.int64)
            index.flags.writeable = False
        self.row_index = index
        width = features.shape[1]
        self.feature_names = ([f"f{i}" for i in range(width)] if feature_names is None
                              else list(feature_names))
        if len(self.feature_names) != width:
            raise ValueError(f"`feature_names` has {len(self.feature_names)} names for "
                             f"{width} feature columns")
        self.identity = dict(identity or {})

    @property
    def manifest_rows(self) -> int:
        """Rows :meth:`longtail.Dataset.save` writes at a time (bounded: 4M values).

        Fewer, larger parts: Parquet writes each column of each part apart.
        """
        return 2 * self._block

    @property
    def _block(self) -> int:
        from longtail.sources.rows import block_rows

        return block_rows(self.row_file.shape[1])

    @property
    def features(self) -> np.ndarray:
        """Every row as one float32 array: 4 bytes a value, read whole.

        For code written before stores were read a batch at a time; use
        :meth:`read` or :meth:`row_blocks` to keep memory bounded.
        """
        return np.concatenate(list(self.row_blocks()) or
                              [np.zeros((0, self.row_file.shape[1]), np.float32)])

    def __len__(self) -> int:
        return len(self.row_file) if self.row_index is None else len(self.row_index)

    def _file_rows(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if self.row_index is not None:
            return self.row_index[indices]
        return np.where(indices < 0, indices + len(self), indices)

    def take(self, indices: np.ndarray) -> "EmbeddingSource":
        return EmbeddingSource(self.row_file, self.feature_names, self.identity,
                               index=self._file_rows(indices))

    def read(self, indices: np.ndarray, options=None, substitute=None) -> np.ndarray:
        return self.row_file.gather(self._file_rows(indices)).astype(np.float32)

    def item_shape(self, options) -> tuple:
        return (self.row_file.shape[1],)

    def _blocks(self, rows: int):
        """The rows in order, in the stored dtype, at most ``rows`` at a time."""
        for start in range(0, len(self), rows):
            stop = min(start + rows, len(self))
            if self.row_index is None:
                yield self.row_file.block(start, stop)
            else:
                yield self.row_file.gather(self.row_index[start:stop])

    def row_blocks(self, rows: int | None = None):
        for block in self._blocks(rows or self._block):
            yield block.astype(np.float32)

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, variance)`` of each column, accumulated a block at a time (float64)."""
        width = self.row_file.shape[1]
        n, mean, m2 = 0, np.zeros(width), np.zeros(width)
        for block in self._blocks(self._block // 4):  # Chan et al.'s pairwise update
            block = block.astype(np.float64)
            k, block_mean = len(block), block.mean(axis=0)
            delta = block_mean - mean
            m2 += ((block - block_mean) ** 2).sum(axis=0) + delta ** 2 * n * k / (n + k)
            mean += delta * k / (n + k)
            n += k
        return mean.astype(np.float32), (m2 / max(n, 1)).astype(np.float32)

    def to_columns(self, relative_to: str | None = None) -> tuple[list, list, dict]:
        by_column = np.empty((self.row_file.shape[1], len(self)), self.row_file.dtype)
        start = 0
        for block in self._blocks(self._block):
            by_column[:, start:start + len(block)] = block.T
            start += len(block)
        arrays = [pa.array(column) for column in by_column]
        return list(self.feature_names), arrays, {"kind": self.kind, "identity": self.identity}

    def same_samples(self, other: Source) -> bool:
        if not (type(other) is EmbeddingSource and other.identity == self.identity
                and other.feature_names == self.feature_names and len(other) == len(self)):
            return False
        same_file = (other.row_file is self.row_file or (
            self.row_file.path is not None and other.row_file.path == self.row_file.path))
        if same_file and (self.row_index is None) == (other.row_index is None) and (
                self.row_index is None or np.array_equal(self.row_index, other.row_index)):
            return True
        step = self._block // 2  # as stored: float16 compares exactly with float16 or float32
        return all(np.array_equal(a, b) for a, b in zip(self._blocks(step), other._blocks(step)))

    def describe(self) -> str:
        backbone = self.identity.get("backbone", "backbone")
        size = self.identity.get("image_size")
        at = f" at {size[0]}x{size[1]}" if size else ""
        return f"{backbone} embeddings{at} ({self.row_file.shape[1]} columns)"

    # ------------------------------------------------- the model of a run
    def run_record(self) -> dict:
        """What a run trained on these rows records about them (``config.json``)."""
        keys = ("backbone", "weights", "weights_file", "weights_sha256", "image_size",
                "dtype", "source", "source_fingerprint")
        return {"feature_store": {k: self.identity.get(k) for k in keys}}

    def take_away(self, head):
        """One model from images to logits: this store's backbone, then ``head``.

        The backbone is rebuilt from the identity (its weights file, checked
        by hash); when that is not possible (random weights, a missing or
        changed file) the head alone is handed over, with a warning.
        """
        import keras

        from longtail.backbones import build_backbone

        name, size = self.identity.get("backbone"), self.identity.get("image_size")
        path, sha = self.identity.get("weights_file"), self.identity.get("weights_sha256")
        why = None
        if not name or not size:
            why = "the feature store does not name its backbone"
        elif not path or not sha:
            why = f"the backbone's weights were {self.identity.get('weights')!r}, not a file"
        elif not os.path.isfile(path):
            why = f"its weights file {path} is missing"
        if why is None:
            backbone, record = build_backbone(name, (*size, 3), path, model_name="backbone")
            if record.get("weights_sha256") != sha:
                why = f"its weights file {path} changed since the features were written"
        if why is not None:
            warnings.warn(f"model.keras takes feature rows, not images: {why}", stacklevel=3)
            return head
        head = keras.Model(head.inputs, head.outputs, name=HEAD_NAME)
        images = keras.Input((*size, 3), name="image")
        return keras.Model(images, head(backbone(images)), name=f"{name}_{HEAD_NAME}")

    def model_for(self, model):
        """The part of ``model`` that takes these rows: the head of a backbone+head model."""
        if len(model.inputs[0].shape) == 2:
            return model
        try:
            return model.get_layer(HEAD_NAME)
        except ValueError:
            raise DataError(f"the model takes images {tuple(model.inputs[0].shape[1:])}, "
                            f"not {self.describe()}") from None
