"""Image files on disk, decoded through :mod:`longtail.decode` when read."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from longtail.decode import read_image
from longtail.errors import ConfigError, DecodeError
from longtail.options import ImageOptions
from longtail.sources.base import Source, Substitute, relative_root

__all__ = ["FileSource", "arrow_to_str"]


class FileSource(Source):
    """Image files, as paths relative to a root folder.

    Args:
        relative_paths: Arrow string array of paths, relative to ``root``
            (or absolute when ``root`` is None).
        root: The folder the paths are relative to.
    """

    kind = "files"

    def __init__(self, relative_paths: pa.Array, root: str | None = None):
        if isinstance(relative_paths, pa.ChunkedArray):
            relative_paths = relative_paths.combine_chunks()
        self.relative_paths = relative_paths
        self.root = root

    def __len__(self) -> int:
        return len(self.relative_paths)

    def take(self, indices: np.ndarray) -> "FileSource":
        return FileSource(self.relative_paths.take(pa.array(indices, pa.int64())), self.root)

    def read(self, indices: np.ndarray, options: ImageOptions,
             substitute: Substitute | None = None) -> np.ndarray:
        """The images at ``indices``, decoded straight into one batch array.

        With a fixed ``image_size`` the batch array is allocated once and
        each image is resized into its row (no per-image array, no stacking
        copy); without one, images are stacked and must share a size.
        """
        indices = np.asarray(indices, dtype=np.int64)
        paths = self._paths_at(indices)
        out = None
        if options.image_size is not None:
            out = np.empty((len(indices), *options.image_size, options.channels),
                           options.dtype)
        images = []
        for j, path in enumerate(paths):
            index = int(indices[j])
            while True:
                try:
                    images.append(read_image(path, options,
                                             out=None if out is None else out[j]))
                    break
                except DecodeError as e:
                    if substitute is None:
                        raise
                    index = int(substitute(j, index, e))
                    path = self.path(index)
        return out if out is not None else stack_images(images)

    def _paths_at(self, indices: np.ndarray) -> list:
        """Absolute paths of the samples at ``indices``, as ``str`` (one Arrow take)."""
        rel = self.relative_paths.take(pa.array(indices, pa.int64())).to_pylist()
        if self.root is None:
            return rel
        return [os.path.join(self.root, p) for p in rel]

    def item_shape(self, options: ImageOptions) -> tuple:
        h, w = options.image_size or (None, None)
        return (h, w, options.channels)

    def to_columns(self, relative_to: str | None = None) -> tuple[list, list, dict]:
        return (["path"], [self.relative_paths],
                {"kind": self.kind, "root": relative_root(self.root, relative_to)})

    def same_samples(self, other: Source) -> bool:
        return type(other) is FileSource and np.array_equal(self.paths(), other.paths())

    def paths(self) -> np.ndarray:
        """Absolute paths of every sample as a NumPy array of str."""
        if self.root is None:
            return arrow_to_str(self.relative_paths)
        if os.name == "nt":  # os.path.join's drive and separator rules
            return np.array([os.path.join(self.root, p)
                             for p in self.relative_paths.to_pylist()], dtype=str)
        import pyarrow.compute as pc

        rel = self.relative_paths
        joined = pc.binary_join_element_wise(os.path.join(self.root, ""), rel, "")
        return arrow_to_str(pc.if_else(pc.starts_with(rel, "/"), rel, joined))

    def rooted(self) -> "FileSource":
        """Every path relative to a root that holds them all (``Dataset.save`` needs it).

        The root is widened to the paths' common folder when some lie outside
        :attr:`root` (or are absolute); itself when nothing needs to change.
        """
        import pyarrow.compute as pc

        if len(self) == 0:
            return self
        if self.root is not None:
            suspect = pc.or_(pc.starts_with(self.relative_paths, "/"),
                             pc.match_substring(self.relative_paths, ".."))
            if os.name != "nt" and not pc.any(suspect).as_py():
                return self
        full = [os.path.normpath(p) for p in self.paths().tolist()]
        inside = os.path.join(os.path.normpath(self.root), "") if self.root else None
        if inside is not None and all(p.startswith(inside) for p in full):
            return self
        try:
            root = os.path.commonpath([os.path.dirname(p) for p in full])
        except ValueError:  # paths on several Windows drives: keep them absolute
            return self
        return FileSource(pa.array([os.path.relpath(p, root) for p in full], pa.string()), root)

    def describe(self) -> str:
        where = f" under {self.root}" if self.root else ""
        return f"image files{where}"


def stack_images(images: list) -> np.ndarray:
    """One array from same-shaped images; a ConfigError naming the sizes otherwise."""
    shape = images[0].shape
    if any(im.shape != shape for im in images):
        raise ConfigError(
            "images in a batch have different sizes "
            f"({sorted({im.shape for im in images})[:3]}); pass image_size=(h, w)")
    out = np.empty((len(images),) + shape, images[0].dtype)
    for j, im in enumerate(images):
        out[j] = im
    return out


_STR_CHUNK = 1 << 20  # rows converted at a time: bounds the padded temporary


def arrow_to_str(array) -> np.ndarray:
    """A NumPy ``str`` array (``<U`` of the longest string) from an Arrow string array.

    What ``array.to_numpy(zero_copy_only=False).astype(str)`` gives, without
    a Python ``str`` per row when every string is ASCII (paths usually are):
    Arrow pads each string with NULs to the longest length in one C pass, and
    the padded bytes (an ASCII byte is its own code point) are widened to the
    4-byte code units of NumPy's ``str`` in one vectorised cast, a million
    rows at a time. Other strings (and nulls) go the Python way.
    """
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    if (n == 0 or array.null_count or not pa.types.is_string(array.type)
            or not pc.all(pc.string_is_ascii(array)).as_py()):
        return array.to_numpy(zero_copy_only=False).astype(str)
    width = max(1, pc.max(pc.binary_length(array)).as_py())
    out = np.empty(n, f"<U{width}")
    codes = out.view("<u4").reshape(n, width)  # an ASCII byte is its code point
    for start in range(0, n, _STR_CHUNK):
        padded = pc.utf8_rpad(array.slice(start, _STR_CHUNK), width=width, padding="\x00")
        count = len(padded)
        first = int(np.frombuffer(padded.buffers()[1], np.int32, 1, 4 * padded.offset)[0])
        data = np.frombuffer(padded.buffers()[2], np.uint8, count * width, first)
        codes[start:start + count] = data.reshape(count, width)
    return out
