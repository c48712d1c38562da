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

    Args:
        file: The ``.parquet`` file.
        class_names: Explicit classes and their order (default: the store's).
    """
    import pyarrow.parquet as pq

    from longtail.sources.table import read_table

    file = os.fspath(file)
    identity = store_identity(file)
    if identity is None:
        raise DataError(f"{file}: not a longtail feature store")
    columns = pq.read_schema(file).names
    features = [c for c in columns if _FEATURE.match(c)]
    if not features or "label" not in columns:
        raise DataError(f"{file}: a feature store needs f0000... feature columns and a "
                        "`label` column")
    names = class_names if class_names is not None else identity.get("class_names")
    data = read_table(file, weight_column="weight" if "weight" in columns else None,
                      feature_columns=features, class_names=names)
    return Indexed(data.class_names, data.labels, data.weights,
                   EmbeddingSource(data.features, data.feature_names, identity))


class EmbeddingSource(FeatureSource):
    """Backbone embeddings, one float32 row per sample, with the backbone that made them.

    Args:
        features: ``(samples, features)`` embeddings.
        feature_names: One name per column.
        identity: The store's description: ``backbone``, ``weights``,
            ``weights_file``, ``weights_sha256``, ``image_size``, ``source``...
    """

    kind = "embeddings"

    def __init__(self, features: np.ndarray, feature_names=None, identity: dict | None = None):
        super().__init__(features, feature_names)
        self.identity = dict(identity or {})

    def take(self, indices: np.ndarray) -> "EmbeddingSource":
        return EmbeddingSource(self.features[indices], self.feature_names, self.identity)

    def to_columns(self, relative_to: str | None = None) -> tuple[list, list, dict]:
        names, arrays, _ = super().to_columns(relative_to)
        return names, arrays, {"kind": self.kind, "identity": self.identity}

    def same_samples(self, other: Source) -> bool:
        return (type(other) is EmbeddingSource and other.identity == self.identity
                and np.array_equal(self.features, other.features))

    def describe(self) -> str:
        backbone = self.identity.get("backbone", "backbone")
        size = self.identity.get("image_size")
        at = f" at {size[0]}x{size[1]}" if size else ""
        return f"{backbone} embeddings{at} ({self.features.shape[1]} columns)"

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
