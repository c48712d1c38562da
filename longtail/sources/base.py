"""The Source protocol: the one thing that knows how a sample is stored.

A :class:`longtail.Dataset` holds class names, labels, optional per-row
weights and a :class:`Source`. Everything that depends on how samples are
stored (how a batch is read, what shape it has, which model suits it, what a
manifest stores) is a method of the source, so no other module branches on
the kind of data. In the spirit of Grain's ``RandomAccessDataSource``, a
source is a random-access sequence of samples:

* ``len(source)``: the number of samples.
* ``source.read(indices, options)``: the samples at ``indices`` as one
  stacked NumPy array (``(n, h, w, c)`` images or ``(n, features)`` rows).
* ``source.take(indices)``: a new source with those samples (a subset).
* ``source.to_columns(relative_to)``: the columns and metadata a Parquet
  manifest stores (``Dataset.save``); the ``kind`` in the metadata names the
  source class that reads it back.

Implementations: :class:`~longtail.sources.files.FileSource` (image files
decoded through :mod:`longtail.decode`),
:class:`~longtail.sources.features.FeatureSource` (numeric table rows) and
:class:`~longtail.sources.cache.CacheSource` (rows of a decoded cache) and
:class:`~longtail.sources.embeddings.EmbeddingSource` (backbone embeddings
from a feature store).

Adding a source is one new module in ``longtail/sources/`` with one subclass:

1. Subclass :class:`Source`; set ``kind`` (the manifest's ``"kind"``),
   ``is_image`` (False for vectors) and ``default_model`` (``"mlp"`` for
   vectors).
2. Implement ``__len__``, ``take``, ``read``, ``item_shape``,
   ``to_columns``, ``same_samples`` and ``describe``; override ``resolve``
   when the stored samples fix some options (as a cache fixes the image
   size), ``row_blocks`` and ``moments`` for vectors (see
   :class:`~longtail.sources.features.FeatureSource`), and ``run_record``/``take_away``/``model_for`` when a run
   trained on the samples hands over a model that takes something else (as
   embeddings hand over backbone + head).
3. Build Datasets with ``Dataset(class_names=..., labels=..., source=...)``;
   for ``Dataset.open``/``Dataset.load`` to find it, add its folder test or
   manifest ``kind`` to :func:`longtail.sources.open_source` /
   :func:`longtail.sources.read_manifest`.

The loader, training, evaluation, the PyTorch and tf.data adapters then work
with it unchanged.
"""

from __future__ import annotations

import abc
import os
from typing import Callable, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa

from longtail.options import ImageOptions

__all__ = ["Indexed", "Source", "Substitute", "relative_root"]

# ``substitute(position, index, error) -> index to try instead`` (or raise):
# how a caller replaces a sample that cannot be read, see Source.read.
Substitute = Callable[[int, int, Exception], int]


class Indexed(NamedTuple):
    """What a source reader finds: the parts of a Dataset (``Dataset(**indexed._asdict())``)."""

    class_names: list
    labels: np.ndarray
    weights: np.ndarray | None
    source: "Source"


def relative_root(root: str | None, relative_to: str | None) -> str | None:
    """``root`` relative to ``relative_to`` (a manifest's folder) when possible."""
    if root is None or relative_to is None:
        return root
    try:
        return os.path.relpath(root, relative_to)
    except ValueError:  # another drive on Windows
        return root


class Source(abc.ABC):
    """Random access to the samples of a Dataset; subclasses say how they are stored.

    Attributes:
        kind: The name a manifest stores (``"files"``, ``"features"``,
            ``"cache"``).
        is_image: Whether samples are images (``(h, w, c)``), else vectors.
        default_model: The built-in model to train when none is named.
        relative_paths: Arrow string array of source file paths (relative to
            :attr:`root`), or None for sources without files.
        root: The folder relative paths are relative to, or None.
    """

    kind: ClassVar[str]
    is_image: ClassVar[bool] = True
    default_model: ClassVar[str] = "small-cnn"
    relative_paths: pa.Array | None = None
    root: str | None = None

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of samples."""

    @abc.abstractmethod
    def take(self, indices: np.ndarray) -> "Source":
        """A new source with the samples at ``indices`` (int64), in that order."""

    @abc.abstractmethod
    def read(self, indices: np.ndarray, options: ImageOptions,
             substitute: Substitute | None = None) -> np.ndarray:
        """The samples at ``indices`` as one stacked array.

        Args:
            indices: int64 sample indices.
            options: Image options, already passed through :meth:`resolve`.
            substitute: Called as ``substitute(position, index, error)`` when
                a sample cannot be read; returns the index of a sample to
                read in its place (or raises). Without it the error is
                raised.
        """

    @abc.abstractmethod
    def item_shape(self, options: ImageOptions) -> tuple:
        """Shape of one sample as :meth:`read` gives it (None for a free side)."""

    @abc.abstractmethod
    def to_columns(self, relative_to: str | None = None) -> tuple[list, list, dict]:
        """``(names, arrays, metadata)`` a manifest stores for these samples."""

    @abc.abstractmethod
    def same_samples(self, other: "Source") -> bool:
        """Whether ``other`` holds the same samples (same class, same storage)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line saying what the samples are and where they live."""

    # ---------------------------------------------------- shared defaults
    @property
    def image_size(self) -> tuple[int, int] | None:
        """The fixed ``(height, width)`` of every sample, or None when not fixed."""
        return None

    def resolve(self, options: ImageOptions) -> ImageOptions:
        """The options to read with: checks them against what is stored."""
        return options

    def item_dtype(self, options: ImageOptions) -> str:
        """The dtype :meth:`read` gives."""
        return options.dtype if self.is_image else "float32"

    def input_shape(self, options: ImageOptions) -> tuple:
        """The model input shape for samples read with ``options``."""
        return self.item_shape(self.resolve(options))

    def row_blocks(self, rows: int = 65536):
        """Vector sources: their float32 rows in order, at most ``rows`` at a time.

        What a digest of the data (:func:`longtail.dataset.fingerprint`)
        reads, so a source whose rows live on disk is never read whole. Image
        sources yield nothing (their paths or cache rows are their identity).
        """
        return iter(())

    def run_record(self) -> dict:
        """Entries a run trained on these samples adds to its ``config.json``."""
        return {}

    def take_away(self, model):
        """The model a run trained on these samples hands over (``model.keras``).

        Args:
            model: The trained model, augmentation removed
                (:func:`longtail.training.inference.inference_model`).
        """
        return model

    def model_for(self, model):
        """The part of ``model`` (a take-away model) that takes these samples."""
        return model

    def rooted(self) -> "Source":
        """This source with every file inside :attr:`root` (itself when it is already)."""
        return self

    def path(self, index: int) -> str:
        """The absolute path of sample ``index`` (sources with files only)."""
        if self.relative_paths is None:
            raise TypeError(f"{type(self).__name__} samples are not files")
        rel = self.relative_paths[index].as_py()
        return rel if self.root is None else os.path.join(self.root, rel)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples: {self.describe()})"
