"""What a cache folder holds, and the small helpers every cache module shares.

A cache folder::

    CACHE/
      build.json            the build plan: options, source fingerprint, shard count
      source.parquet        the source index that is being cached (Dataset.save)
      shards/00000.npy      raw: uint8 array (rows, height, width, channels)
      shards/00000.jpegs    jpeg: the rows' JPEG files, concatenated
      shards/00000.offsets.npy   jpeg: int64 byte offsets, rows + 1 of them
      shards/00000.json     the shard's record: source rows kept, their size and
                            mtime, files skipped, and each file's checksum
      rows-<digest>.parquet one row per cached image: source path, label,
                            weight, size, mtime_ns (named by its checksum)
      cache.json            the manifest, written last

Every file is written atomically (temporary file, fsync, rename). A shard's
data files are renamed into place before its record is written, so the record
is the commit point of a shard, and ``cache.json`` that of the whole cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from longtail.errors import ConfigError, DataError
from longtail.options import COLOR_MODES, RESIZE_MODES, parse_image_size, parse_one_of

FORMAT_VERSION = 1
MANIFEST = "cache.json"
PLAN = "build.json"
SOURCE = "source.parquet"
SHARDS = "shards"
FORMATS = ("raw", "jpeg")
CHANNELS = COLOR_MODES  # colour mode -> channels, as longtail.options has it
_TARGET_SHARD_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class CacheOptions:
    """What a cache stores; part of the build plan, so a resumed build matches.

    Args:
        image_size: ``(height, width)`` or an int (square), or ``"HxW"``.
        format: ``"raw"`` (uint8 arrays, memory-mapped when read) or
            ``"jpeg"`` (re-encoded JPEGs at the target size).
        quality: JPEG quality 1..100 (``"jpeg"`` only; default 90).
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"`` (``"raw"`` only).
        resize: ``"stretch"``, ``"crop"`` or ``"pad"``, as the loader's.
        rows_per_shard: images per shard; default about 64 MB of raw pixels
            (for ``"jpeg"``, the same row count as raw would use).
    """

    image_size: tuple[int, int]
    format: str = "raw"
    quality: int | None = None
    color_mode: str = "rgb"
    resize: str = "stretch"
    rows_per_shard: int | None = None

    def __post_init__(self):
        if self.image_size is None:
            raise ConfigError("image_size is required to build a cache (e.g. 64 or 64x48)")
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        for name, accepted in (("format", FORMATS), ("color_mode", tuple(COLOR_MODES)),
                               ("resize", RESIZE_MODES)):
            parse_one_of(name, getattr(self, name), accepted)
        quality = self.quality
        if self.format == "raw":
            if quality is not None:
                raise ConfigError("`quality` applies to format='jpeg' only; got "
                                  f"quality={quality!r} with format='raw'")
        else:
            quality = 90 if quality is None else quality
            if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) \
                    or not 1 <= quality <= 100:
                raise ConfigError(f"`quality` must be an int in 1..100; got {quality!r}")
            object.__setattr__(self, "quality", int(quality))
            if self.color_mode == "rgba":
                raise ConfigError("format='jpeg' cannot store an alpha channel; use "
                                  "format='raw' or color_mode='rgb'")
        rows = self.rows_per_shard
        if rows is None:
            rows = int(np.clip(_TARGET_SHARD_BYTES // self.row_bytes, 64, 65536))
        elif isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
            raise ConfigError(f"`rows_per_shard` must be an int >= 1; got {rows!r}")
        object.__setattr__(self, "rows_per_shard", int(rows))

    @property
    def channels(self) -> int:
        return CHANNELS[self.color_mode]

    @property
    def row_bytes(self) -> int:
        """Bytes of one decoded row."""
        return self.image_size[0] * self.image_size[1] * self.channels

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        return out


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def shard_files(shard: int, format: str) -> list[str]:
    """The data files of a shard, relative to the ``shards`` folder."""
    name = shard_name(shard)
    return [f"{name}.npy"] if format == "raw" else [f"{name}.jpegs", f"{name}.offsets.npy"]


def record_path(root: str, shard: int) -> str:
    return os.path.join(root, SHARDS, f"{shard_name(shard)}.json")


def bytes_digest(data: bytes) -> str:
    """BLAKE2b (128-bit) of ``data``, as hex: what :func:`file_digest` gives for a file."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: str) -> str:
    """BLAKE2b (128-bit) of a file's bytes, as hex; reads in 4 MB blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(4 * 2**20):  # hashlib releases the GIL on big blocks
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the {what}: {e}") from e
    if not isinstance(value, dict):
        raise DataError(f"{path}: the {what} must be a JSON object")
    return value


def is_cache(path) -> bool:
    """Whether ``path`` is a cache folder (complete or not)."""
    path = os.fspath(path)
    return os.path.isdir(path) and (os.path.isfile(os.path.join(path, MANIFEST))
                                    or os.path.isfile(os.path.join(path, PLAN)))


def read_plan(root: str) -> dict:
    plan = read_json(os.path.join(root, PLAN), "cache build plan")
    if plan.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{os.path.join(root, PLAN)}: cache format version "
                        f"{plan.get('format_version')!r}; this longtail reads version "
                        f"{FORMAT_VERSION}")
    return plan


def committed_shards(root: str, num_shards: int) -> list[int]:
    """Shards whose record exists (the commit point of a shard)."""
    folder = os.path.join(root, SHARDS)
    try:
        names = set(os.listdir(folder))
    except FileNotFoundError:
        return []
    return [s for s in range(num_shards) if f"{shard_name(s)}.json" in names]


def ranges(numbers) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out, numbers = [], sorted(numbers)
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ", ".join(out)
