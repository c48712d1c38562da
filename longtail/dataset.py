"""The dataset index: paths or feature rows, integer labels and class names.

A :class:`Dataset` never holds pixels. Paths live in one Arrow string array
(a few bytes of overhead per sample), labels in an int32 NumPy array, so a
million-file index takes tens of MB. Datasets are immutable: ``split``,
``subset`` and ``loader`` return new objects.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import pyarrow as pa

from longtail.errors import DataError

__all__ = ["Dataset"]

_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


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
        kind: ``"files"`` (paths to decode), ``"features"`` (numeric rows)
            or ``"cache"`` (rows of a :mod:`longtail.cache`; :attr:`paths`
            are the source files, :attr:`cache_rows` the rows to read).
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
    ):
        if (paths is None) == (features is None):
            raise DataError("a Dataset holds either paths or features, exactly one of them")
        self.class_names = list(class_names)
        self.labels = _readonly(np.ascontiguousarray(labels, dtype=np.int32))
        self._paths = paths
        self.root = root
        self.features = _readonly(
            None if features is None else np.ascontiguousarray(features, dtype=np.float32))
        self.feature_names = None if feature_names is None else list(feature_names)
        self.weights = _readonly(
            None if weights is None else np.ascontiguousarray(weights, dtype=np.float32))
        if (cache is None) != (cache_rows is None) or (cache is not None and paths is None):
            raise DataError("a cache Dataset needs `cache`, `cache_rows` and the source `paths`")
        self.cache = cache
        self.cache_rows = _readonly(
            None if cache_rows is None else np.ascontiguousarray(cache_rows, dtype=np.int64))
        n = len(self.labels)
        for name, array in (("paths", paths), ("features", self.features),
                            ("weights", self.weights), ("cache_rows", self.cache_rows)):
            if array is not None and len(array) != n:
                raise DataError(f"`{name}` has {len(array)} rows but there are {n} labels")
        if len(set(self.class_names)) != len(self.class_names):
            raise DataError(f"class names must be unique; got {self.class_names}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(
                f"labels must be in 0..{len(self.class_names) - 1}; "
                f"got {self.labels.min()}..{self.labels.max()}"
            )
        self.kind = "cache" if cache is not None else \
            "files" if paths is not None else "features"

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
                   paths=pa.array(scan.paths, pa.string()), root=os.path.abspath(path))

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
            file: A ``.csv``, ``.tsv`` or ``.parquet`` file.
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
        from longtail.cache import is_cache_manifest, load_split
        from longtail.sources.table import read_table

        if is_cache_manifest(file):  # rows of a cache: read them from the cache
            return load_split(file, class_names=class_names,
                              allow_outside_root=allow_outside_root)
        data = read_table(
            file, label_column=label_column, path_column=path_column,
            weight_column=weight_column,
            feature_columns=None if feature_columns is None else list(feature_columns),
            class_names=None if class_names is None else list(class_names),
            allow_outside_root=allow_outside_root,
        )
        return cls(class_names=data.class_names, labels=data.labels, paths=data.paths,
                   root=data.root, features=data.features,
                   feature_names=data.feature_names, weights=data.weights)

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
                ``follow_symlinks``) or :meth:`from_table` (``label_column``,
                ``path_column``, ``weight_column``, ``allow_outside_root``);
                options that do not apply to the form found are ignored.
        """
        if isinstance(data, Dataset):
            return data
        path = os.fspath(data)
        from longtail.cache import is_cache

        if is_cache(path):
            from longtail.cache import open_cache

            return open_cache(path, allow_outside_root=bool(options.get(
                "allow_outside_root"))).dataset(class_names=options.get("class_names"))
        if os.path.isdir(path):
            keys = ("extensions", "follow_symlinks", "class_names", "progress")
            return cls.from_directory(path, **{k: v for k, v in options.items()
                                               if k in keys and v is not None})
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file or folder")
        if path.lower().endswith(_TABLE_SUFFIXES):
            keys = ("label_column", "path_column", "weight_column", "feature_columns",
                    "class_names", "allow_outside_root")
            return cls.from_table(path, **{k: v for k, v in options.items()
                                           if k in keys and v is not None})
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
    def relative_paths(self) -> pa.Array | None:
        """Paths as stored: relative to :attr:`root` (or absolute when it is None)."""
        return self._paths

    def path(self, i: int) -> str:
        """The absolute path of sample ``i``."""
        rel = self._paths[i].as_py()
        return rel if self.root is None else os.path.join(self.root, rel)

    @property
    def paths(self) -> np.ndarray:
        """Absolute paths of every sample as a NumPy array of str."""
        if self._paths is None:
            raise DataError("this dataset holds feature rows, not paths")
        return self.absolute_paths.to_numpy(zero_copy_only=False).astype(str)

    @property
    def absolute_paths(self) -> pa.Array:
        """Absolute paths of every sample as an Arrow string array (no Python strings).

        What :attr:`paths` gives as NumPy, built in Arrow: ``os.path.join(root,
        path)`` for each stored path, vectorised.
        """
        if self._paths is None:
            raise DataError("this dataset holds feature rows, not paths")
        if self.root is None:
            return self._paths
        if os.name == "nt":  # os.path.join's drive and separator rules
            return pa.array([os.path.join(self.root, p) for p in self._paths.to_pylist()],
                            pa.string())
        import pyarrow.compute as pc

        joined = pc.binary_join_element_wise(os.path.join(self.root, ""), self._paths, "")
        return pc.if_else(pc.starts_with(self._paths, "/"), self._paths, joined)

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
        return Dataset(
            class_names=self.class_names,
            labels=self.labels[indices],
            paths=None if self._paths is None else self._paths.take(pa.array(indices)),
            root=self.root,
            features=None if self.features is None else self.features[indices],
            feature_names=self.feature_names,
            weights=None if self.weights is None else self.weights[indices],
            cache=self.cache,
            cache_rows=None if self.cache_rows is None else self.cache_rows[indices],
        )

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

    def loader(self, batch_size: int = 32, **options):
        """A batch loader for Keras ``fit``; see :func:`longtail.loader.make_loader`."""
        from longtail.loader import make_loader

        return make_loader(self, batch_size=batch_size, **options)

    # ------------------------------------------------------------------- files
    def to_table(self, relative_to: str | None = None) -> pa.Table:
        """The index as an Arrow table (the manifest format).

        Args:
            relative_to: Folder the stored root is written relative to (the
                manifest's folder), so a manifest moved with its data stays valid.
        """
        columns, names = [], []
        meta: dict = {"version": 1, "class_names": self.class_names, "kind": self.kind}
        if self._paths is not None:
            columns.append(self._paths)
            names.append("path")
            root = self.root
            if root is not None and relative_to is not None:
                try:
                    root = os.path.relpath(root, relative_to)
                except ValueError:  # another drive on Windows
                    pass
            meta["root"] = root
        else:
            for j, name in enumerate(self.feature_names):
                columns.append(pa.array(self.features[:, j]))
                names.append(name)
        labels = pa.DictionaryArray.from_arrays(
            pa.array(self.labels), pa.array(self.class_names, pa.string()))
        columns.append(labels)
        names.append("label")
        if self.weights is not None:
            columns.append(pa.array(self.weights))
            names.append("weight")
            meta["weight_column"] = "weight"
        if self.cache is not None:  # rows of a cache: its folder and the row indices
            columns.append(pa.array(self.cache_rows))
            names.append("row")
            cache_root = self.cache.root
            if relative_to is not None:
                try:
                    cache_root = os.path.relpath(cache_root, relative_to)
                except ValueError:
                    pass
            meta["cache"] = cache_root
        table = pa.table(columns, names=names)
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
        with atomic_path(path) as tmp:
            pq.write_table(self._rooted().to_table(relative_to=folder), tmp)
        return path

    def _rooted(self) -> "Dataset":
        """This dataset with every path inside :attr:`root` (a new root if needed)."""
        import pyarrow.compute as pc

        if self._paths is None or len(self) == 0:
            return self
        if self.root is not None:
            suspect = pc.or_(pc.starts_with(self._paths, "/"),
                             pc.match_substring(self._paths, ".."))
            if os.name != "nt" and not pc.any(suspect).as_py():
                return self
        full = [os.path.normpath(p) for p in self.paths.tolist()]
        inside = os.path.join(os.path.normpath(self.root), "") if self.root else None
        if inside is not None and all(p.startswith(inside) for p in full):
            return self
        try:
            root = os.path.commonpath([os.path.dirname(p) for p in full])
        except ValueError:  # paths on several Windows drives: keep them absolute
            return self
        return Dataset(class_names=self.class_names, labels=self.labels,
                       paths=pa.array([os.path.relpath(p, root) for p in full], pa.string()),
                       root=root, weights=self.weights, cache=self.cache,
                       cache_rows=self.cache_rows)

    def equals(self, other: "Dataset") -> bool:
        """Whether two datasets index the same samples with the same labels."""
        if not isinstance(other, Dataset) or self.kind != other.kind:
            return False
        same = (self.class_names == other.class_names
                and np.array_equal(self.labels, other.labels)
                and (self.weights is None) == (other.weights is None)
                and (self.weights is None or np.array_equal(self.weights, other.weights)))
        if not same:
            return False
        if self.kind == "features":
            return np.array_equal(self.features, other.features)
        if self.kind == "cache" and not (
                os.path.realpath(self.cache.root) == os.path.realpath(other.cache.root)
                and np.array_equal(self.cache_rows, other.cache_rows)):
            return False
        return bool(np.array_equal(self.paths, other.paths))

