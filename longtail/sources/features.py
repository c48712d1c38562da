"""Numeric feature rows held in memory (tabular data)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from longtail.errors import DataError
from longtail.options import ImageOptions
from longtail.sources.base import Source, Substitute

__all__ = ["FeatureSource"]


class FeatureSource(Source):
    """A 2-D float32 array, one row per sample.

    Args:
        features: ``(samples, features)`` numbers (stored as read-only float32).
        feature_names: One name per column (default ``f0, f1, ...``).
    """

    kind = "features"
    is_image = False
    default_model = "mlp"

    def __init__(self, features: np.ndarray, feature_names=None):
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise ValueError(f"`features` must be two-dimensional; got shape {features.shape}")
        bad = ~np.isfinite(features)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise DataError(f"`features` must be finite numbers; got {features[row, col]} in "
                            f"row {row + 1}, column {col + 1} (as float32)")
        features.flags.writeable = False
        self.features = features
        self.feature_names = ([f"f{i}" for i in range(features.shape[1])]
                              if feature_names is None else list(feature_names))
        if len(self.feature_names) != features.shape[1]:
            raise ValueError(f"`feature_names` has {len(self.feature_names)} names for "
                             f"{features.shape[1]} feature columns")

    def __len__(self) -> int:
        return len(self.features)

    def take(self, indices: np.ndarray) -> "FeatureSource":
        return FeatureSource(self.features[indices], self.feature_names)

    def read(self, indices: np.ndarray, options: ImageOptions,
             substitute: Substitute | None = None) -> np.ndarray:
        return np.array(self.features[indices], dtype=np.float32)

    def item_shape(self, options: ImageOptions) -> tuple:
        return (self.features.shape[1],)

    def row_blocks(self, rows: int = 65536):
        """The float32 rows in order, at most ``rows`` at a time (views, no copy)."""
        for start in range(0, len(self), rows):
            yield self.features[start:start + rows]

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, variance)`` of each column over the rows (what an MLP standardises by)."""
        return self.features.mean(axis=0), self.features.var(axis=0)

    def to_columns(self, relative_to: str | None = None) -> tuple[list, list, dict]:
        return (list(self.feature_names),
                [pa.array(self.features[:, j]) for j in range(self.features.shape[1])],
                {"kind": self.kind})

    def same_samples(self, other: Source) -> bool:
        return type(other) is FeatureSource and np.array_equal(self.features, other.features)

    def describe(self) -> str:
        return f"feature rows ({self.features.shape[1]} columns)"
