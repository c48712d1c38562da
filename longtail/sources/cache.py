"""Rows of a decoded cache: open, verify, gather rows; the :class:`CacheSource`.

:meth:`Cache.open` reads ``cache.json`` (or writes it first, when every shard
of a split build is committed but no run has combined them yet), checks the
row table's checksum and each shard file's size, and hashes every shard file
that has not been verified in its current state (a ``.verified.json`` stamp
beside the manifest remembers size, mtime, ctime and inode of the files it
hashed; any write to a shard changes its ctime, so it is hashed again).

Raw shards are ``.npy`` files opened with ``np.load(mmap_mode="r",
allow_pickle=False)``: a batch is a gather from the page cache, no decode and
no copy beyond the batch itself. JPEG shards are one file of concatenated
JPEGs plus an offsets array; a row is decoded by simplejpeg straight into the
batch array.

:class:`CacheSource` is the Source of a cache Dataset: the rows it reads,
and the source files they were decoded from (for ``--check`` and for
manifests). The builder lives in :mod:`longtail.cache`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longtail._io import write_json
from longtail._trust import is_inside
from longtail.cache import layout
from longtail.cache.combine import combine
from longtail.decode import _convert_channels
from longtail.errors import ConfigError, DataError
from longtail.options import COLOR_MODES, ImageOptions
from longtail.sources.base import Indexed, Source, Substitute, relative_root
from longtail.sources.table import refuse_unsealed_folder, stored_folder

__all__ = ["Cache", "CacheSource", "is_cache_manifest", "open_cache", "read_split"]

_STAMP = ".verified.json"
_VERIFIED: dict[str, list] = {}  # shard file -> stat key and checksum, this process
VERIFY = ("first", "always")


def _stat_key(st) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class Cache:
    """An opened cache folder. Get one with :func:`open_cache` (or ``Cache.open``).

    Attributes:
        root: Absolute path of the cache folder.
        manifest: The ``cache.json`` dict.
        image_size: ``(height, width)`` of every row.
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
        format: ``"raw"`` or ``"jpeg"``.
        class_names: Class names; labels index into them.
        table: Arrow table, one row per image: ``path`` (of the source file,
            relative to ``source_root``), ``label``, ``weight`` (if any),
            ``size`` and ``mtime_ns`` (of the source when it was cached).
        source_root: Folder the source paths are relative to (or None).
    """

    def __init__(self, root: str, manifest: dict, table: pa.Table):
        self.root = root
        self.manifest = manifest
        self.image_size = tuple(manifest["image_size"])
        self.color_mode = manifest["color_mode"]
        self.format = manifest["format"]
        self.class_names = list(manifest["class_names"])
        self.source_root = manifest["source"]["root"]
        self.table = table
        self.channels = COLOR_MODES[self.color_mode]
        self._starts = np.array([s["start"] for s in manifest["shards"]] + [len(table)],
                                np.int64)
        self._shards: dict[int, tuple] = {}
        self._lock = threading.Lock()
        if int(self._starts[-1]) != sum(s["rows"] for s in manifest["shards"]):
            raise DataError(f"{self._manifest_path}: shard row counts add up to "
                            f"{sum(s['rows'] for s in manifest['shards'])}, the row table "
                            f"has {len(table)} rows")

    @classmethod
    def open(cls, path, verify: str = "first") -> "Cache":
        """Same as :func:`open_cache`."""
        return open_cache(path, verify=verify)

    @property
    def _manifest_path(self) -> str:
        return os.path.join(self.root, layout.MANIFEST)

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        h, w = self.image_size
        return (f"Cache({self.root!r}, {len(self)} rows, {self.format} {h}x{w} "
                f"{self.color_mode}, {len(self.manifest['shards'])} shards)")

    @property
    def labels(self) -> np.ndarray:
        """int32 class index of every row."""
        column = pc.cast(self.table.column("label"), pa.string())
        index = pc.index_in(column, value_set=pa.array(self.class_names, pa.string()))
        if index.null_count:
            raise DataError(f"{self._manifest_path}: the row table has labels that are not "
                            "in the manifest's class_names")
        return index.to_numpy().astype(np.int32)

    def index(self, class_names=None, rows=None, weights=None) -> Indexed:
        """The cache's rows as the parts of a Dataset (``Dataset.open(cache)`` uses it).

        Args:
            class_names: Explicit classes and their order; rows of other
                classes are left out. Each name must be a class of the cache.
            rows: Cache rows to take (default: all, in order).
            weights: Per-row weights for ``rows`` (default: the cached ones).
        """
        rows = np.arange(len(self), dtype=np.int64) if rows is None else \
            np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise DataError(f"{self.root}: cache rows must be in 0..{len(self) - 1}")
        labels, names = self.labels[rows], self.class_names
        if weights is None and "weight" in self.table.column_names:
            weights = self.table.column("weight").to_numpy().astype(np.float32)[rows]
        if class_names is not None and list(class_names) != names:
            missing = [c for c in class_names if c not in names]
            if missing:
                raise DataError(f"{self.root}: the cache has no class {', '.join(missing)}; "
                                f"its classes are {', '.join(names)}")
            lookup = {c: i for i, c in enumerate(class_names)}
            remap = np.array([lookup.get(c, -1) for c in names], np.int64)
            labels = remap[labels]
            keep = np.flatnonzero(labels >= 0)
            rows, labels, names = rows[keep], labels[keep], list(class_names)
            weights = None if weights is None else np.asarray(weights)[keep]
        return Indexed(names, labels, weights, CacheSource(self, rows))

    # ------------------------------------------------------------------ rows
    def _shard(self, s: int):
        entry = self._shards.get(s)
        if entry is not None:
            return entry
        with self._lock:
            if s not in self._shards:
                self._shards[s] = self._open_shard(s)
            return self._shards[s]

    def _open_shard(self, s: int):
        info = self.manifest["shards"][s]
        names = list(info["files"])
        folder = os.path.join(self.root, layout.SHARDS)
        h, w = self.image_size
        n = info["rows"]
        if self.format == "raw":
            path = os.path.join(folder, names[0])
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.shape != (n, h, w, self.channels) or array.dtype != np.uint8:
                raise DataError(f"{path}: holds a {array.dtype} array of shape {array.shape}; "
                                f"the manifest says uint8 {(n, h, w, self.channels)}")
            return (array,)
        data_path = os.path.join(folder, next(x for x in names if x.endswith(".jpegs")))
        offsets_path = os.path.join(folder, next(x for x in names if x.endswith(".npy")))
        offsets = np.load(offsets_path, allow_pickle=False)
        size = os.path.getsize(data_path)
        if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != size or \
                np.any(np.diff(offsets) <= 0):
            raise DataError(f"{offsets_path}: offsets do not describe {n} JPEGs in "
                            f"{data_path} ({size} bytes)")
        data = np.memmap(data_path, np.uint8, "r") if size else np.zeros(0, np.uint8)
        return data, offsets

    def locate(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(shard, position in shard) of each row."""
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"cache rows must be in 0..{len(self) - 1}")
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        return shard, rows - self._starts[shard]

    def read(self, rows, out: np.ndarray | None = None) -> np.ndarray:
        """The images of ``rows`` as a uint8 array ``(n, height, width, channels)``."""
        import simplejpeg

        shard, pos = self.locate(rows)
        h, w = self.image_size
        if out is None:
            out = np.empty((len(shard), h, w, self.channels), np.uint8)
        if self.format == "raw":
            for s in np.unique(shard):
                sel = shard == s
                out[sel] = self._shard(int(s))[0][pos[sel]]
            return out
        colorspace = "GRAY" if self.color_mode == "grayscale" else "RGB"
        for j, (s, p) in enumerate(zip(shard.tolist(), pos.tolist())):
            data, offsets = self._shard(s)
            simplejpeg.decode_jpeg(data[offsets[p]:offsets[p + 1]], colorspace=colorspace,
                                   buffer=out[j])
        return out

    def resolve(self, options: ImageOptions) -> ImageOptions:
        """``options`` with the cache's image size; a ConfigError if they ask another."""
        if options.image_size is None:
            return dataclasses.replace(options, image_size=self.image_size)
        if tuple(options.image_size) != self.image_size:
            h, w = self.image_size
            raise ConfigError(
                f"image_size {tuple(options.image_size)} does not match the cache {self.root}, "
                f"which holds {h}x{w} images; pass image_size=({h}, {w}) (--image-size "
                f"{h}x{w}) or build a cache at that size")
        return options

    def read_as(self, rows, options: ImageOptions) -> np.ndarray:
        """``rows`` in ``options``' colour mode and dtype (the size must be the cache's).

        Another ``color_mode`` is converted from the cache's; ``dtype="float32"``
        is a cast.
        """
        x = self.read(rows)
        if options.channels != self.channels:
            x = _convert_channels(x, options.channels)
        return x.astype(np.float32) if options.dtype == "float32" else x


class CacheSource(Source):
    """Rows of a :class:`Cache`, read decoded at the cache's size.

    Args:
        cache: The opened cache.
        rows: int64 cache row of each sample.

    Attributes:
        relative_paths: The source file each row was decoded from, relative
            to :attr:`root` (the source's root folder).
    """

    kind = "cache"

    def __init__(self, cache: Cache, rows: np.ndarray):
        self.cache = cache
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.rows.flags.writeable = False
        paths = pc.cast(cache.table.column("path"), pa.string()).combine_chunks()
        self.relative_paths = paths.take(pa.array(self.rows))
        self.root = cache.source_root

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices: np.ndarray) -> "CacheSource":
        return CacheSource(self.cache, self.rows[indices])

    @property
    def image_size(self) -> tuple[int, int]:
        return self.cache.image_size

    def resolve(self, options: ImageOptions) -> ImageOptions:
        return self.cache.resolve(options)

    def read(self, indices: np.ndarray, options: ImageOptions,
             substitute: Substitute | None = None) -> np.ndarray:
        return self.cache.read_as(self.rows[indices], self.cache.resolve(options))

    def item_shape(self, options: ImageOptions) -> tuple:
        return (*self.cache.image_size, options.channels)

    def to_columns(self, relative_to: str | None = None) -> tuple[list, list, dict]:
        return (["path", "row"], [self.relative_paths, pa.array(self.rows)],
                {"kind": self.kind, "root": relative_root(self.root, relative_to),
                 "cache": relative_root(self.cache.root, relative_to) or self.cache.root})

    def same_samples(self, other: Source) -> bool:
        return (type(other) is CacheSource
                and os.path.realpath(self.cache.root) == os.path.realpath(other.cache.root)
                and np.array_equal(self.rows, other.rows))

    def describe(self) -> str:
        h, w = self.cache.image_size
        return f"rows of the {self.cache.format} {h}x{w} {self.cache.color_mode} cache " \
               f"{self.cache.root}"


# ------------------------------------------------------------------- opening
def _incomplete(root: str) -> DataError:
    plan = layout.read_plan(root)
    n, parts = plan["num_shards"], plan["parts"]
    missing = sorted(set(range(n)) - set(layout.committed_shards(root, n)))
    where = ""
    if parts > 1:
        where = "; parts " + ", ".join(f"{p}/{parts}" for p in sorted({s % parts
                                                                        for s in missing}))
    return DataError(
        f"{root}: incomplete cache: {n - len(missing)} of {n} shards built (missing shards "
        f"{layout.ranges(missing)}{where}); rerun `longtail cache DATA --out {root}` with "
        f"the options in {layout.PLAN} to finish it")


def _read_manifest(root: str, allow_outside_root: bool = False) -> tuple[dict, pa.Table]:
    import pyarrow.parquet as pq

    path = os.path.join(root, layout.MANIFEST)
    if not os.path.exists(path):
        if not os.path.exists(os.path.join(root, layout.PLAN)):
            raise DataError(f"{root}: not a longtail cache (no {layout.MANIFEST})")
        manifest, table = combine(root, write=os.access(root, os.W_OK))
        if manifest is None:
            raise _incomplete(root)
        if manifest["rows_file"] is None:
            if not allow_outside_root:
                _refuse_outside(root, manifest)
            return manifest, table
    manifest = layout.read_json(path, "cache manifest")
    if manifest.get("format_version") != layout.FORMAT_VERSION or \
            manifest.get("kind") != "longtail-cache":
        raise DataError(f"{path}: not a longtail cache manifest of format version "
                        f"{layout.FORMAT_VERSION}")
    if not allow_outside_root:
        _refuse_outside(root, manifest)
    entry = manifest["rows_file"]
    rows_path = os.path.join(root, entry["name"])
    if not os.path.exists(rows_path):
        raise DataError(f"{rows_path}: missing; the cache is damaged, rerun `longtail "
                        f"cache` with the same options to repair it")
    if layout.file_digest(rows_path) != entry["blake2b"]:
        raise DataError(f"{rows_path}: checksum mismatch, the file is corrupted; rerun "
                        "`longtail cache` with the same options to repair the cache")
    table = pq.read_table(rows_path)
    if len(table) != manifest["num_rows"]:
        raise DataError(f"{rows_path}: has {len(table)} rows; {path} says "
                        f"{manifest['num_rows']}")
    return manifest, table


def _verify(root: str, manifest: dict, always: bool) -> None:
    """Checks every shard file's size, and hashes those not verified as they are now."""
    stamp_path = os.path.join(root, _STAMP)
    stamp = {}
    if not always:
        try:
            stamp = layout.read_json(stamp_path, "verification stamp")
        except (FileNotFoundError, DataError):
            stamp = {}
    todo, verified = [], {}
    for shard in manifest["shards"]:
        for name, expected in shard["files"].items():
            path = os.path.join(root, layout.SHARDS, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise DataError(f"{path}: shard file missing; rerun `longtail cache` with "
                                "the same options to rebuild it") from None
            if st.st_size != expected["bytes"]:
                raise DataError(f"{path}: corrupted shard: {st.st_size} bytes, the manifest "
                                f"says {expected['bytes']}; rerun `longtail cache` with the "
                                "same options to rebuild it")
            key = _stat_key(st) + [expected["blake2b"]]
            if stamp.get(name) == key or _VERIFIED.get(path) == key:
                verified[name] = key
            else:
                todo.append((name, path, expected["blake2b"], key))
    if not todo:
        return
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda t: layout.file_digest(t[1]), todo))
    for (name, path, expected, key), got in zip(todo, digests):
        if got != expected:
            raise DataError(f"{path}: corrupted shard: checksum {got} differs from the "
                            f"manifest's {expected}; rerun `longtail cache` with the same "
                            "options to rebuild it")
        verified[name] = key
        _VERIFIED[path] = key
    try:
        write_json(stamp_path, verified)
    except OSError:  # a read-only cache is verified again next time
        pass


def _refuse_outside(root: str, manifest: dict) -> None:
    """Raises DataError if a file the manifest names is not a file of the cache folder.

    Names must be plain file names (no folder, no ``..``) and, once symbolic
    links are resolved, lie in the cache's own folders.
    """
    real_root = os.path.join(os.path.realpath(root), "")
    named = [(entry.get("name"), root) for entry in [manifest.get("rows_file") or {}]
             if entry] + [(name, os.path.join(root, layout.SHARDS))
                          for shard in manifest.get("shards", [])
                          for name in shard.get("files", {})]
    for name, folder in named:
        plain = isinstance(name, str) and name not in ("", ".", "..") and \
            os.path.basename(name) == name and "/" not in name and "\\" not in name
        full = os.path.join(folder, name) if plain else None
        if not plain or not os.path.realpath(full).startswith(real_root):
            raise DataError(
                f"{os.path.join(root, layout.MANIFEST)}: names the file {name!r}, which is "
                f"not inside the cache folder {root}; pass --allow-outside-root "
                "(allow_outside_root=True) if you trust this cache")


def open_cache(path, verify: str = "first", allow_outside_root: bool = False) -> Cache:
    """Opens a cache folder, verifying its shards.

    Args:
        path: The cache folder.
        verify: ``"first"`` (default: hash each shard file the first time it
            is opened in its current state) or ``"always"``.
        allow_outside_root: Accept a manifest that names files outside the
            cache folder (a path, ``..``, or a symbolic link that leads out).

    Raises:
        DataError: not a cache, an incomplete build (names the missing
            shards and parts), a missing or corrupted file (named), or a file
            outside the cache folder.
    """
    if verify not in VERIFY:
        raise ConfigError(f"`verify` must be one of {', '.join(VERIFY)}; got {verify!r}")
    root = os.path.abspath(os.fspath(path))
    if not os.path.isdir(root):
        raise DataError(f"{path}: no such cache folder")
    manifest, table = _read_manifest(root, allow_outside_root)
    _verify(root, manifest, always=verify == "always")
    return Cache(root, manifest, table)


# ------------------------------------------------ manifests of cache subsets
def is_cache_manifest(file) -> bool:
    """Whether ``file`` is a Parquet manifest saved from a cache Dataset."""
    return _split_meta(file) is not None


def _split_meta(file) -> dict | None:
    import pyarrow.parquet as pq

    file = os.fspath(file)
    if not file.lower().endswith((".parquet", ".pq")) or not os.path.isfile(file):
        return None
    try:
        meta = (pq.read_schema(file).metadata or {}).get(b"longtail")
        meta = json.loads(meta) if meta else None
    except (pa.ArrowInvalid, OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("kind") == "cache" else None


def read_split(file, class_names=None, allow_outside_root: bool = False) -> Indexed:
    """Reads a manifest saved from a cache Dataset (``split CACHE``): rows of the cache.

    The manifest stores the cache folder (relative to the manifest) and each
    row's index in it, so the rows are read from the cache, not decoded.
    """
    import pyarrow.parquet as pq

    file = os.fspath(file)
    meta = _split_meta(file)
    if meta is None or "cache" not in meta:
        raise DataError(f"{file}: not a manifest of cache rows")
    table = pq.read_table(file)
    folder = os.path.dirname(os.path.abspath(file))
    cache_root = stored_folder(file, meta, "cache", folder)
    if not allow_outside_root and not is_inside(cache_root, folder):
        refuse_unsealed_folder(file, meta, table, "cache")
    try:
        cache = open_cache(cache_root, allow_outside_root=allow_outside_root)
    except DataError as e:
        raise DataError(f"{file}: its rows live in the cache {cache_root}, which cannot be "
                        f"opened: {e}") from e
    if "row" not in table.column_names or "label" not in table.column_names:
        raise DataError(f"{file}: a manifest of cache rows needs `row` and `label` columns")
    rows = table.column("row").to_numpy().astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(cache)):
        raise DataError(f"{file}: `row` values must be in 0..{len(cache) - 1} (rows of "
                        f"{cache_root}); got {rows.min()}..{rows.max()}")
    stored = pc.cast(table.column("label"), pa.string()).to_numpy(zero_copy_only=False)
    cached = np.asarray(cache.class_names, dtype=object)[cache.labels[rows]]
    if not np.array_equal(stored.astype(str), cached.astype(str)):
        raise DataError(f"{file}: its labels differ from those of the rows of {cache_root}; "
                        "the manifest was written from another cache")
    weights = None
    if "weight" in table.column_names:
        weights = table.column("weight").to_numpy().astype(np.float32)
    names = class_names if class_names is not None else meta.get("class_names")
    return cache.index(class_names=names, rows=rows, weights=weights)
