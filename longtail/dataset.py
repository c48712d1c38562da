"""The dataset index: class names, integer labels, weights and a Source.

A :class:`Dataset` never holds pixels. Labels live in an int32 NumPy array;
how the samples are stored (paths in one Arrow string array, feature rows,
rows of a cache) is the business of its :class:`longtail.sources.Source`,
so a million-file index takes tens of MB. Datasets are immutable:
``split``, ``subset`` and ``loader`` return new objects.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
from typing import Sequence

import numpy as np
import pyarrow as pa

from longtail._trust import seal_manifest
from longtail.errors import ConfigError, DataError
from longtail.options import MAX_PIXELS
from longtail.sources import (CacheSource, FeatureSource, FileSource, Indexed, Source,
                              is_cache, open_folder, read_manifest)

__all__ = ["Dataset", "fingerprint"]

_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
WEIGHT_STRATEGIES = ("balanced", "inverse", "sqrt", "effective")  # the columns of describe()


def _path_array(items) -> pa.Array:
    """File paths as one Arrow string array.

    An Arrow string array is kept as it is; a NumPy array of ``str`` or a
    list of ``str`` is converted in one call, with no Python loop; anything
    else (``pathlib`` paths) goes through ``os.fspath`` one by one.
    """
    if isinstance(items, pa.ChunkedArray):
        items = items.combine_chunks()
    paths = None
    if isinstance(items, pa.Array):
        if pa.types.is_string(items.type) or pa.types.is_large_string(items.type):
            paths = items.cast(pa.string())
    elif isinstance(items, (list, tuple, np.ndarray)):
        try:
            paths = pa.array(items, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # pathlib paths among them
            pass
    if paths is None:
        paths = pa.array([os.fspath(p) for p in items], pa.string())
    if paths.null_count:
        row = int(np.argmax(paths.is_null().to_numpy(zero_copy_only=False))) + 1
        raise DataError(f"`items`: row {row}: missing path")
    return paths


def _all_absolute(paths: pa.Array) -> bool:
    if os.name == "nt":
        return all(os.path.isabs(p) for p in paths.to_pylist())
    import pyarrow.compute as pc

    return len(paths) == 0 or pc.all(pc.starts_with(paths, "/")).as_py()


def _readonly(array: np.ndarray | None) -> np.ndarray | None:
    if array is not None:
        array.flags.writeable = False
    return array


class Dataset:
    """An immutable index of samples with integer labels.

    Build one with :meth:`from_directory`, :meth:`from_table`,
    :meth:`from_arrays`, :meth:`open` (any DATA form the CLI takes) or
    :meth:`load`.

    Attributes:
        class_names: Class names; a label is an index into this list.
        labels: int32 array of class indices, one per sample.
        weights: float32 per-sample weights, or None.
        source: The :class:`longtail.sources.Source` that stores the
            samples (files, feature rows, cache rows).
        kind: The source's kind, ``"files"``, ``"features"`` or ``"cache"``
            (read-only; behaviour belongs to :attr:`source`).
    """

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        labels: np.ndarray,
        paths: pa.Array | None = None,
        root: str | None = None,
        features: np.ndarray | None = None,
        feature_names: Sequence[str] | None = None,
        weights: np.ndarray | None = None,
        cache=None,
        cache_rows: np.ndarray | None = None,
        source: Source | None = None,
    ):
        if source is None:
            source = _legacy_source(paths, root, features, feature_names, cache, cache_rows)
        elif any(v is not None for v in (paths, root, features, feature_names, cache,
                                         cache_rows)):
            raise DataError("pass either `source` or paths/features/cache, not both")
        self.source = source
        self.class_names = list(class_names)
        self.labels = _readonly(np.ascontiguousarray(labels, dtype=np.int32))
        self.weights = _readonly(
            None if weights is None else np.ascontiguousarray(weights, dtype=np.float32))
        n = len(self.labels)
        for name, length in (("source", len(source)),
                             ("weights", None if self.weights is None else len(self.weights))):
            if length is not None and length != n:
                raise DataError(f"`{name}` has {length} rows but there are {n} labels")
        if len(set(self.class_names)) != len(self.class_names):
            raise DataError(f"class names must be unique; got {self.class_names}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(
                f"labels must be in 0..{len(self.class_names) - 1}; "
                f"got {self.labels.min()}..{self.labels.max()}"
            )

    @classmethod
    def _of(cls, indexed: Indexed) -> "Dataset":
        return cls(class_names=indexed.class_names, labels=indexed.labels,
                   weights=indexed.weights, source=indexed.source)

    # ----------------------------------------------------------------- builders
    @classmethod
    def from_directory(
        cls,
        path: str,
        *,
        extensions: Sequence[str] | None = None,
        follow_symlinks: bool = False,
        class_names: Sequence[str] | None = None,
        progress: bool | None = None,
    ) -> "Dataset":
        """Indexes a folder with one sub-folder per class, reading no pixels.

        Class names are the sub-folder names sorted as Keras'
        ``image_dataset_from_directory`` sorts them. Files are found
        recursively; hidden files and folders are skipped; symbolic links
        are skipped unless ``follow_symlinks`` (then each folder is entered
        once, so loops end); top-level files are ignored with a warning; an
        empty class folder stays a class with zero samples, with a warning.

        Args:
            path: The top folder.
            extensions: Accepted extensions (default jpg, jpeg, png, bmp,
                gif, webp, tif, tiff, npy), any case.
            follow_symlinks: Follow symbolic links to files and folders.
            class_names: Explicit sub-folders to use, in class order.
            progress: Show a progress bar (default: on a terminal only).

        Example:
            >>> ds = Dataset.from_directory("flowers/")  # doctest: +SKIP
            >>> ds.class_names, ds.class_counts  # doctest: +SKIP
        """
        from longtail.sources.directory import DEFAULT_EXTENSIONS, scan_directory

        scan = scan_directory(
            path,
            extensions=DEFAULT_EXTENSIONS if extensions is None else extensions,
            follow_symlinks=follow_symlinks,
            class_names=None if class_names is None else list(class_names),
            progress=progress,
        )
        return cls(class_names=scan.class_names, labels=scan.labels,
                   source=FileSource(pa.array(scan.paths, pa.string()), os.path.abspath(path)))

    @classmethod
    def from_table(
        cls,
        file: str,
        *,
        label_column: str = "label",
        path_column: str = "path",
        weight_column: str | None = None,
        feature_columns: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        allow_outside_root: bool = False,
    ) -> "Dataset":
        """Reads a CSV or Parquet table, or a manifest written by :meth:`save`.

        Args:
            file: A ``.csv``, ``.tsv`` or ``.parquet`` file, or an in-memory
                ``pyarrow.Table`` or pandas DataFrame.
            label_column: Column of class names or integer class indices.
            path_column: Column of file paths, relative to the table's folder
                (absolute paths must lie inside it too, unless
                ``allow_outside_root``). Without it the numeric columns (other
                than label and weight) are the features of tabular data.
            weight_column: Optional per-row weights, finite and >= 0.
            feature_columns: Explicit feature columns (tabular data).
            class_names: Explicit class list; by default the sorted distinct
                labels (or ``0..max`` for integer labels).
            allow_outside_root: Accept paths that lead outside the table's
                root (the table's folder, or the root a manifest stores):
                absolute paths elsewhere or ``..``. Refused by default, so a
                table from elsewhere cannot point longtail at other files.

        Raises:
            DataError: A missing column, a bad label or weight, or a path
                outside the root (names the row).
        """
        return cls._of(read_manifest(
            file, label_column=label_column, path_column=path_column,
            weight_column=weight_column,
            feature_columns=None if feature_columns is None else list(feature_columns),
            class_names=None if class_names is None else list(class_names),
            allow_outside_root=allow_outside_root,
        ))

    @classmethod
    def from_arrays(
        cls,
        items,
        labels,
        class_names: Sequence[str] | None = None,
        *,
        root: str | None = None,
        weights=None,
    ) -> "Dataset":
        """Builds a dataset from a list of paths (or a 2-D feature array) and labels.

        This is what a hand-made generator's inputs look like: a filenames
        array and a labels array.

        Args:
            items: Sequence of file paths (relative to ``root`` when given,
                else to the current folder), or a 2-D numeric array of features.
            labels: Integer class indices or class-name strings.
            class_names: Class list; by default the sorted distinct string
                labels, or ``"0".."max"`` for integer labels.
            root: Folder that relative paths are relative to.
            weights: Optional per-sample weights, finite and >= 0.

        Example:
            >>> ds = Dataset.from_arrays(["a.png", "b.png"], ["cat", "dog"])
            >>> ds.class_names
            ['cat', 'dog']
        """
        from longtail._labels import encode_labels

        labels, names = encode_labels(labels, class_names)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if not np.all(np.isfinite(weights) & (weights >= 0)):
                raise DataError("`weights` must be finite and >= 0")
        if isinstance(items, np.ndarray) and items.ndim == 2 and items.dtype.kind in "fiub":
            return cls(class_names=names, labels=labels, features=items, weights=weights,
                       feature_names=[f"f{i}" for i in range(items.shape[1])])
        paths = _path_array(items)
        if root is not None:
            root = os.path.abspath(root)
        elif not _all_absolute(paths):
            root = os.getcwd()
        return cls(class_names=names, labels=labels, paths=paths, root=root, weights=weights)

    @classmethod
    def open(cls, data, **options) -> "Dataset":
        """Opens any DATA form the command line takes.

        Args:
            data: A folder with one sub-folder per class, a table or manifest
                file (``.csv``, ``.tsv``, ``.parquet``), a cache folder
                (``longtail cache``), or a Dataset.
            **options: Passed to :meth:`from_directory` (``extensions``,
                ``follow_symlinks``, ``progress``) or :meth:`from_table`
                (``label_column``, ``path_column``, ``weight_column``,
                ``feature_columns``, ``allow_outside_root``); ``class_names``
                applies to every form (a Dataset object is returned as is;
                the caller compares its classes). None, or the default the
                CLI passes, counts as not given.

        Raises:
            ConfigError: An option that does not apply to the form found
                (e.g. ``weight_column`` for a folder, which has no columns);
                ``allow_outside_root`` and ``progress`` are ignored where
                they have nothing to do.
            TypeError: An unknown option.
        """
        unknown = sorted(set(options) - _OPEN_OPTIONS)
        if unknown:
            raise TypeError(f"Dataset.open() got unexpected options {unknown}; accepted: "
                            f"{', '.join(sorted(_OPEN_OPTIONS))}")
        if isinstance(data, Dataset):  # opened already: only its classes may be named
            _applicable(options, {"class_names"}, "data is a Dataset object, opened already",
                        ignore=("allow_outside_root", "progress"))
            return data
        path = os.fspath(data)
        if is_cache(path):
            kw = _applicable(options, {"class_names", "allow_outside_root"},
                             f"{path} is a cache folder", ignore=("progress",))
            return cls._of(open_folder(path, **kw))
        if os.path.isdir(path):
            kw = _applicable(options, _keywords(cls.from_directory),
                             f"{path} is a folder with one sub-folder per class",
                             ignore=("allow_outside_root",))
            return cls.from_directory(path, **kw)
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file or folder")
        if path.lower().endswith(_TABLE_SUFFIXES):
            kw = _applicable(options, _keywords(cls.from_table), f"{path} is a table",
                             ignore=("progress",))
            return cls.from_table(path, **kw)
        raise DataError(
            f"{path}: expected a folder with one sub-folder per class, or a .csv or "
            ".parquet table"
        )

    load = from_table

    # --------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_counts(self) -> np.ndarray:
        """int64 array: number of samples per class, in ``class_names`` order."""
        return np.bincount(self.labels, minlength=len(self.class_names)).astype(np.int64)

    @property
    def priors(self) -> np.ndarray:
        """float64 array: the share of each class (sums to 1)."""
        counts = self.class_counts
        return counts / max(counts.sum(), 1)

    @property
    def imbalance_ratio(self) -> float:
        """Largest class count over smallest non-zero class count."""
        counts = self.class_counts[self.class_counts > 0]
        return float(counts.max() / counts.min()) if counts.size else float("nan")

    @property
    def kind(self) -> str:
        """The source's kind (``"files"``, ``"features"``, ``"cache"``), read-only."""
        return self.source.kind

    @property
    def relative_paths(self) -> pa.Array | None:
        """Paths as stored: relative to :attr:`root` (or absolute when it is None)."""
        return self.source.relative_paths

    @property
    def root(self) -> str | None:
        """The folder :attr:`relative_paths` are relative to."""
        return self.source.root

    # Views of what some sources hold, kept for code written before Sources.
    features = property(lambda self: getattr(self.source, "features", None),
                        doc="float32 feature rows (a feature source), else None; the rows "
                            "of a feature store are read whole for it.")
    feature_names = property(lambda self: getattr(self.source, "feature_names", None),
                             doc="Names of the feature columns, or None.")
    cache = property(lambda self: getattr(self.source, "cache", None),
                     doc="The :class:`longtail.cache.Cache` of a cache source, else None.")
    cache_rows = property(lambda self: getattr(self.source, "rows", None),
                          doc="int64 cache row of each sample (a cache source), else None.")

    def path(self, i: int) -> str:
        """The absolute path of sample ``i``."""
        return self.source.path(i)

    @property
    def paths(self) -> np.ndarray:
        """Absolute paths of every sample as a NumPy array of str."""
        if self.relative_paths is None:
            raise DataError(f"this dataset holds {self.source.describe()}, not paths")
        from longtail.sources.files import arrow_to_str

        return arrow_to_str(self.absolute_paths)

    @property
    def absolute_paths(self) -> pa.Array:
        """Absolute paths of every sample as an Arrow string array (no Python strings).

        What :attr:`paths` gives as NumPy, built in Arrow: ``os.path.join(root,
        path)`` for each stored path, vectorised.
        """
        rel = self.relative_paths
        if rel is None:
            raise DataError(f"this dataset holds {self.source.describe()}, not paths")
        if self.root is None:
            return rel
        if os.name == "nt":  # os.path.join's drive and separator rules
            return pa.array([os.path.join(self.root, p) for p in rel.to_pylist()],
                            pa.string())
        import pyarrow.compute as pc

        joined = pc.binary_join_element_wise(os.path.join(self.root, ""), rel, "")
        return pc.if_else(pc.starts_with(rel, "/"), rel, joined)

    def __repr__(self) -> str:
        return (f"Dataset({len(self)} {self.kind}, {self.num_classes} classes, "
                f"imbalance ratio {self.imbalance_ratio:.1f})")

    # --------------------------------------------------------------- new views
    def subset(self, indices) -> "Dataset":
        """A new dataset with the given rows (an index array or a boolean mask)."""
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise DataError(f"subset indices must be in 0..{len(self) - 1}")
        return Dataset(class_names=self.class_names, labels=self.labels[indices],
                       weights=None if self.weights is None else self.weights[indices],
                       source=self.source.take(indices))

    def split(self, val: float = 0.2, test: float = 0.0, seed: int = 0) -> tuple["Dataset", ...]:
        """Splits stratified by class; see :func:`longtail.split.stratified_split`.

        Returns:
            ``(train, val)``, or ``(train, val, test)`` when ``test > 0``
            (``(train, test)`` when ``val == 0``).
        """
        from longtail.split import stratified_split

        parts = stratified_split(self.labels, val=val, test=test, seed=seed,
                                 class_names=self.class_names)
        return tuple(self.subset(p) for p in parts)

    def loader(self, batch_size: int = 32, image_size=None, sampling="shuffle",
               class_weight=None, label_mode: str = "int", seed: int = 0,
               shard=(0, 1), num_workers: int | None = None,
               prefetch: int | None = None, on_error: str = "skip",
               color_mode: str = "rgb", resize: str = "stretch",
               dtype: str = "uint8", epoch_length: int | None = None,
               drop_remainder: bool | None = None, max_pixels: int | None = MAX_PIXELS,
               max_file_bytes: int | str | None = "default"):
        """A batch loader for Keras ``fit``; see :func:`longtail.loader.make_loader`.

        ``image_size`` takes ``64``, ``"64x48"`` or ``(64, 48)`` (height
        first), as ``train`` and ``--image-size`` do.
        """
        options = dict(locals())  # every argument, by the names make_loader takes
        del options["self"]
        from longtail.loader import make_loader

        return make_loader(self, **options)

    def describe(self) -> dict:
        """What ``longtail stats`` prints: counts, shares and class weights per class.

        Returns:
            A JSON-able dict: ``kind``, ``source`` (one line), ``samples``,
            ``classes``, ``imbalance_ratio``, ``weighted_rows`` and
            ``per_class``, a list of ``{"class", "count", "share",
            "weights"}`` with the weight of every strategy of
            :func:`longtail.class_weights` (balanced, inverse, sqrt,
            effective).
        """
        from longtail.weights import class_weights

        counts = self.class_counts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-count classes: already shown as 0
            weights = {s: class_weights(self, s) for s in WEIGHT_STRATEGIES}
        rows = [
            {"class": name, "count": int(counts[i]),
             "share": float(counts[i] / max(counts.sum(), 1)),
             "weights": {s: weights[s][i] for s in WEIGHT_STRATEGIES}}
            for i, name in enumerate(self.class_names)
        ]
        return {"kind": self.kind, "source": self.source.describe(), "samples": len(self),
                "classes": self.num_classes, "imbalance_ratio": self.imbalance_ratio,
                "weighted_rows": self.weights is not None, "per_class": rows}

    # ------------------------------------------------------------------- files
    def to_table(self, relative_to: str | None = None) -> pa.Table:
        """The index as an Arrow table (the manifest format).

        Args:
            relative_to: Folder the stored root is written relative to (the
                manifest's folder), so a manifest moved with its data stays valid.
        """
        names, columns, source_meta = self.source.to_columns(relative_to)
        meta: dict = {"version": 1, "class_names": self.class_names, **source_meta}
        names, columns = list(names), list(columns)
        labels = pa.DictionaryArray.from_arrays(
            pa.array(self.labels), pa.array(self.class_names, pa.string()))
        columns.append(labels)
        names.append("label")
        if self.weights is not None:
            columns.append(pa.array(self.weights))
            names.append("weight")
            meta["weight_column"] = "weight"
        table = pa.table(columns, names=names)
        if "root" in meta or "cache" in meta:  # folders a reader trusts only when sealed
            meta["seal"] = seal_manifest(meta, table)
        return table.replace_schema_metadata({b"longtail": json.dumps(meta).encode()})

    def save(self, path: str) -> str:
        """Writes the index as a Parquet manifest, atomically; :meth:`load` reads it back.

        The class list (with empty classes and their order), labels, paths,
        features and weights round-trip exactly. No pickle is involved. Every
        path is stored relative to the stored root, which is widened to the
        paths' common folder when some lie outside :attr:`root`, so the
        manifest loads without ``allow_outside_root``.
        """
        import pyarrow.parquet as pq

        from longtail._io import atomic_path

        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        ds = self._rooted()
        step = getattr(ds.source, "manifest_rows", None)  # rows held on disk: write in parts
        with atomic_path(path) as tmp:
            if step is None or len(ds) <= step:
                pq.write_table(ds.to_table(relative_to=folder), tmp)
                return path
            parts = (ds.subset(np.arange(start, min(start + step, len(ds))))
                     for start in range(0, len(ds), step))
            first = next(parts).to_table(relative_to=folder)
            # Dictionaries and statistics only for the label: numbers gain nothing
            # from them, and trying them costs most of the write time.
            with pq.ParquetWriter(tmp, first.schema, use_dictionary=["label"],
                                  write_statistics=["label"]) as writer:
                writer.write_table(first)
                for part in parts:
                    writer.write_table(part.to_table(relative_to=folder))
        return path

    def _rooted(self) -> "Dataset":
        """This dataset with every path inside :attr:`root` (a new root if needed)."""
        source = self.source.rooted()
        if source is self.source:
            return self
        return Dataset(class_names=self.class_names, labels=self.labels,
                       weights=self.weights, source=source)

    def equals(self, other: "Dataset") -> bool:
        """Whether two datasets index the same samples with the same labels."""
        if not isinstance(other, Dataset):
            return False
        return bool(self.class_names == other.class_names
                    and np.array_equal(self.labels, other.labels)
                    and (self.weights is None) == (other.weights is None)
                    and (self.weights is None or np.array_equal(self.weights, other.weights))
                    and self.source.same_samples(other.source))


def fingerprint(ds: Dataset) -> str:
    """A digest of a dataset's index: class names, labels, paths or rows, weights.

    The one fingerprint of a dataset: a resumed run checks with it that it
    sees the data it started with, and a cache build that the DATA of each
    part and of a continued build is the same. Files edited in place under
    the same name are not detected. Paths count as :meth:`Dataset.save`
    stores them, so a validation Dataset object matches the val.parquet a
    resumed run reopens.
    """
    ds = ds._rooted()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([ds.kind, ds.class_names]).encode())
    digest.update(np.ascontiguousarray(ds.labels, dtype="<i4").tobytes())
    for block in ds.source.row_blocks():  # feature rows, never read whole
        digest.update(np.ascontiguousarray(block, dtype="<f4"))
    if ds.relative_paths is not None:
        digest.update(_string_bytes(ds.relative_paths))
    if ds.weights is not None:
        digest.update(np.ascontiguousarray(ds.weights, dtype="<f4").tobytes())
    if ds.cache_rows is not None:
        digest.update(np.ascontiguousarray(ds.cache_rows, dtype="<i8").tobytes())
    return digest.hexdigest()


def _string_bytes(array) -> bytes:
    """An Arrow string array as its offsets and characters (no per-string loop)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if wide else np.int32)
    offsets = offsets[array.offset:array.offset + len(array) + 1].astype("<i8")
    chars = memoryview(array.buffers()[2] or b"")[offsets[0]:offsets[-1]]
    return (offsets - offsets[0]).tobytes() + bytes(chars)


# ------------------------------------------------------------------ helpers
def _legacy_source(paths, root, features, feature_names, cache, cache_rows) -> Source:
    """The Source the keyword arguments of older code describe."""
    if (paths is None) == (features is None) and cache is None:
        raise DataError("a Dataset holds either paths or features, exactly one of them")
    if (cache is None) != (cache_rows is None):
        raise DataError("a cache Dataset needs `cache` and `cache_rows`")
    if cache is not None:
        return CacheSource(cache, cache_rows)
    if features is not None:
        return FeatureSource(features, feature_names)
    return FileSource(paths, root)


_OPEN_OPTIONS = {"extensions", "follow_symlinks", "class_names", "progress", "label_column",
                 "path_column", "weight_column", "feature_columns", "allow_outside_root"}
# Values that mean "not given" (the CLI passes its defaults for every form).
_NOT_GIVEN = {"label_column": "label", "path_column": "path", "follow_symlinks": False,
              "allow_outside_root": False, "progress": False}
_OPTION_OF = {
    "extensions": "folders", "follow_symlinks": "folders", "progress": "folders",
    "label_column": "tables", "path_column": "tables", "weight_column": "tables",
    "feature_columns": "tables", "allow_outside_root": "tables and caches",
    "class_names": "every form",
}


def _keywords(method) -> set:
    """The keyword-only parameters of a builder."""
    return {name for name, p in inspect.signature(method).parameters.items()
            if p.kind is p.KEYWORD_ONLY}


def _given(options: dict) -> list:
    """Names of the options given a value that is not None nor a "not given" default."""
    return [k for k, v in options.items() if v is not None
            and not (k in _NOT_GIVEN and isinstance(v, type(_NOT_GIVEN[k]))
                     and v == _NOT_GIVEN[k])]


def _applicable(options: dict, accepted, what: str, ignore=()) -> dict:
    """The options in ``accepted``; a ConfigError naming a given one that does not apply."""
    for name in _given(options):
        if name not in accepted and name not in ignore:
            raise ConfigError(f"`{name}` does not apply here: {what}; it is an option of "
                              f"{_OPTION_OF[name]}")
    return {k: v for k, v in options.items() if k in accepted and v is not None}
