"""Building a cache: decode every source image once, in parallel, into shards.

:func:`build_cache` indexes DATA, pins a build plan (``build.json``: options,
source fingerprint, shard count), then decodes the shards this run owns with
a pool of threads (JPEG decode, OpenCV resize and JPEG encode release the
GIL) while the main thread writes finished shards. It is:

- **resumable**: a shard whose record exists and whose files match their
  checksums is skipped, so a re-run continues where a killed one stopped;
- **atomic**: a shard's files are written to temporary names, fsynced,
  checksummed from disk and renamed; its record (the commit point) is
  written after them, and the manifest after every record;
- **splittable**: ``shard=(i, n)`` builds shards ``i, i + n, i + 2n, ...``,
  so n machines build disjoint parts into one folder (or into copies that are
  merged later). Whichever run finds every shard committed writes the
  manifest; opening a cache whose shards are all committed but that has no
  manifest yet writes it too (see :func:`combine`).

Bad source files are skipped, listed in their shard's record and in the
manifest, and reported.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import simplejpeg

from longtail._io import atomic_path, write_json
from longtail import runs
from longtail.cache import layout
from longtail.cache.combine import combine
from longtail.cache.layout import CacheOptions
from longtail.dataset import Dataset, fingerprint
from longtail.decode import DecodeOptions, decode_image, opencv_on_calling_thread, read_file
from longtail.errors import ConfigError, DataError, DecodeError
from longtail.sources import FileSource

__all__ = ["build_cache", "combine", "BuildResult", "parse_shard"]

_CHUNK = 16  # rows a worker decodes per task
_STALE_TEMP_S = 600  # another machine's temporary file older than this is garbage


@dataclasses.dataclass
class BuildResult:
    """What one :func:`build_cache` run did.

    Attributes:
        out: The cache folder.
        complete: Whether every shard is committed and the manifest written.
        shards_built: Shards this run decoded and wrote.
        shards_reused: Shards of this run's part that were already complete.
        images: Images this run wrote.
        skipped: ``(path, reason)`` of each unreadable source file in this
            run's part (those of reused shards included).
        missing_shards: Shards not yet committed (other parts' work).
        parts: Number of parts the build is split into.
        manifest: The manifest dict when complete, else None.
    """

    out: str
    complete: bool
    shards_built: int
    shards_reused: int
    images: int
    skipped: list
    missing_shards: list
    parts: int
    manifest: dict | None


def parse_shard(value) -> tuple[int, int]:
    """``"1/4"`` or ``(1, 4)`` -> ``(1, 4)``: part 1 of 4, parts counted from 0."""
    if isinstance(value, str):
        try:
            index, count = (int(v) for v in value.split("/"))
        except ValueError:
            raise ConfigError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4); got {value!r}")
    else:
        try:
            index, count = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"`shard` must be an (index, count) pair; got {value!r}")
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4); got {index}/{count}")
    return index, count


def _source_index(ds):
    """The index as a plain files Dataset (a cache's rows point at its sources)."""
    return Dataset(class_names=ds.class_names, labels=ds.labels, weights=ds.weights,
                   source=FileSource(ds.relative_paths, ds.root))


def _open_source(data, data_options):
    ds = Dataset.open(data, **data_options)
    if not ds.source.is_image:
        raise ConfigError(f"{data}: holds {ds.source.describe()}; a cache stores decoded "
                          "images, so DATA must list image files")
    if len(ds) == 0:
        raise DataError(f"{data}: no samples to cache")
    return ds


def _start(root: str, data, ds, options: CacheOptions, parts: int) -> dict:
    """Writes the build plan and the source index, or checks they match this run."""
    n = len(ds)
    plan = {
        "format_version": layout.FORMAT_VERSION,
        "options": options.to_json(),
        "num_rows": n,
        "num_shards": -(-n // options.rows_per_shard),
        "parts": parts,
        "class_names": ds.class_names,
        "fingerprint": fingerprint(ds),
        "source_root": ds.root,
        "data": None if isinstance(data, Dataset) else os.path.abspath(os.fspath(data)),
    }
    plan_path = os.path.join(root, layout.PLAN)
    if not os.path.exists(plan_path):
        ours = (layout.PLAN, layout.SHARDS, layout.SOURCE)  # a killed start leaves these
        if os.path.isdir(root) and any(not e.startswith(".") and e not in ours
                                       for e in os.listdir(root)):
            raise ConfigError(f"--out {root}: the folder exists and is not a longtail cache; "
                              "choose a new or empty folder")
        write_json(plan_path, plan)  # parts started together write equal plans
    old = layout.read_plan(root)
    for key in ("options", "parts", "num_rows", "class_names", "fingerprint"):
        if old.get(key) == plan[key]:
            continue
        if key in ("num_rows", "class_names", "fingerprint"):
            raise ConfigError(
                f"--out {root}: holds a cache of different data ({old.get('num_rows')} "
                f"rows of {old.get('data') or 'DATA'}; this DATA has {n} rows"
                f"{'' if key == 'num_rows' else ' but other paths, labels or weights'}"
                "); choose another --out")
        raise ConfigError(f"--out {root}: this cache was started with {_differences(old, plan)}; "
                          "rerun with the same options or choose another --out")
    os.makedirs(os.path.join(root, layout.SHARDS), exist_ok=True)
    source = os.path.join(root, layout.SOURCE)
    if not os.path.exists(source):
        import pyarrow.parquet as pq

        with atomic_path(source) as tmp:
            pq.write_table(_source_index(ds).to_table(), tmp)
    return old


_FLAGS = {"image_size": "--image-size", "format": "--format", "quality": "--quality",
          "color_mode": "--color-mode", "resize": "--resize",
          "rows_per_shard": "--rows-per-shard"}


def _differences(old: dict, new: dict) -> str:
    """``--image-size 12x10 (this run: 12x12), ...`` for a plan that does not match."""
    def show(key, value):
        return "x".join(map(str, value)) if key == "image_size" else str(value)

    out = [f"{flag} {show(key, old['options'].get(key))} (this run: "
           f"{show(key, new['options'][key])})"
           for key, flag in _FLAGS.items() if old["options"].get(key) != new["options"][key]]
    if old.get("parts") != new["parts"]:
        out.append(f"--shard I/{old.get('parts')} (this run: I/{new['parts']})")
    return ", ".join(out)


def _clean_temporaries(root: str, mine: set[int], parts: int) -> None:
    """Removes temporary files a killed run left (this part's; old ones of others)."""
    now = time.time()
    for path in glob.glob(os.path.join(root, layout.SHARDS, ".*.tmp")) + \
            glob.glob(os.path.join(root, ".*.tmp")):
        name = os.path.basename(path)
        digits = name[1:6]
        ours = parts == 1 or (digits.isdigit() and int(digits) in mine)
        try:
            if ours or now - os.path.getmtime(path) > _STALE_TEMP_S:
                os.remove(path)
        except FileNotFoundError:
            pass


def _record_ok(root: str, shard: int, fmt: str) -> dict | None:
    """The shard's record if it and the files it names are intact, else None."""
    try:
        record = layout.read_json(layout.record_path(root, shard), "shard record")
    except (FileNotFoundError, DataError):
        return None
    files = record.get("files", {})
    if record.get("shard") != shard or sorted(files) != sorted(layout.shard_files(shard, fmt)):
        return None
    for name, expected in files.items():
        path = os.path.join(root, layout.SHARDS, name)
        try:
            if os.path.getsize(path) != expected["bytes"]:
                return None
        except OSError:
            return None
        if layout.file_digest(path) != expected["blake2b"]:
            return None
    return record


def _read_source(path: str, options: DecodeOptions):
    data, stat = read_file(path, options.max_file_bytes)
    return decode_image(data, options, path=path), stat.st_size, stat.st_mtime_ns


class _Shard:
    """One shard being decoded: buffers the workers fill, in row order."""

    def __init__(self, shard: int, start: int, rel_paths: list[str], root: str | None,
                 options: CacheOptions):
        n = len(rel_paths)
        self.shard, self.start, self.rel_paths = shard, start, rel_paths
        self.paths = rel_paths if root is None else [os.path.join(root, p) for p in rel_paths]
        self.ok = np.zeros(n, bool)
        self.size = np.zeros(n, np.int64)
        self.mtime_ns = np.zeros(n, np.int64)
        self.errors: dict[int, str] = {}
        h, w = options.image_size
        if options.format == "raw":
            self.pixels = np.empty((n, h, w, options.channels), np.uint8)
        else:
            self.blobs: list[bytes] = [b""] * n
        self.futures = []

    def decode(self, lo: int, hi: int, options: CacheOptions, decode_options) -> int:
        gray = options.color_mode == "grayscale"
        for j in range(lo, hi):
            try:
                image, self.size[j], self.mtime_ns[j] = _read_source(self.paths[j],
                                                                       decode_options)
            except DecodeError as e:
                self.errors[j] = e.reason
                continue
            if options.format == "raw":
                self.pixels[j] = image
            else:
                self.blobs[j] = simplejpeg.encode_jpeg(
                    np.ascontiguousarray(image), quality=options.quality,
                    colorspace="GRAY" if gray else "RGB",
                    colorsubsampling="Gray" if gray else "444")
            self.ok[j] = True
        return hi - lo


def _write_file(path: str, write) -> dict:
    """Writes a file atomically; its checksum is computed from the bytes on disk."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
        entry = {"bytes": os.path.getsize(tmp), "blake2b": layout.file_digest(tmp)}
    return entry


def _commit(root: str, job: _Shard, options: CacheOptions) -> dict:
    """Writes a decoded shard's files, then its record (the commit point)."""
    kept = np.flatnonzero(job.ok)
    folder = os.path.join(root, layout.SHARDS)
    names = layout.shard_files(job.shard, options.format)
    files = {}
    if options.format == "raw":
        pixels = job.pixels if len(kept) == len(job.ok) else job.pixels[kept]
        files[names[0]] = _write_file(
            os.path.join(folder, names[0]),
            lambda f: np.lib.format.write_array(f, pixels, allow_pickle=False))
    else:
        blobs = [job.blobs[j] for j in kept]
        offsets = np.zeros(len(blobs) + 1, np.int64)
        np.cumsum([len(b) for b in blobs], out=offsets[1:])
        files[names[0]] = _write_file(os.path.join(folder, names[0]),
                                      lambda f: f.writelines(blobs))
        files[names[1]] = _write_file(
            os.path.join(folder, names[1]),
            lambda f: np.lib.format.write_array(f, offsets, allow_pickle=False))
    record = {
        "format_version": layout.FORMAT_VERSION,
        "shard": job.shard,
        "rows": (job.start + kept).tolist(),
        "size": job.size[kept].tolist(),
        "mtime_ns": job.mtime_ns[kept].tolist(),
        "skipped": [{"index": job.start + j, "path": job.rel_paths[j], "reason": job.errors[j]}
                    for j in sorted(job.errors)],
        "files": files,
    }
    write_json(layout.record_path(root, job.shard), record)
    return record


def build_cache(data, out, *, image_size, format: str = "raw", quality: int | None = None,
                color_mode: str = "rgb", resize: str = "stretch", shard=(0, 1),
                workers: int | None = None, rows_per_shard: int | None = None,
                progress: bool | None = None, max_pixels: int | None = 89_478_485,
                max_file_bytes: int | str | None = "default",
                **data_options) -> BuildResult:
    """Decodes DATA once into a cache folder that every command accepts as DATA.

    Args:
        data: Any DATA form (folder, table, manifest, cache, or a Dataset of
            files).
        out: The cache folder (new, empty, or a cache this call resumes).
        image_size: Stored size: an int, ``"HxW"`` or ``(height, width)``.
        format: ``"raw"`` (uint8 arrays, read through memory mapping) or
            ``"jpeg"`` (re-encoded JPEGs at the target size, about 4-6x
            smaller than raw on photo-like images; see docs/cache.md).
        quality: JPEG quality 1..100 (default 90; ``"jpeg"`` only).
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"`` (``"raw"`` only).
        resize: ``"stretch"``, ``"crop"`` or ``"pad"``, as the loader's.
        shard: ``(i, n)`` or ``"i/n"``: build part i of n (shards i, i + n, ...).
        workers: Decoding threads (default: the number of cores).
        rows_per_shard: Images per shard (default: about 64 MB of pixels).
        progress: Show a progress bar with an ETA (default: on a terminal).
        max_pixels: Decompression-bomb guard, as in ``DecodeOptions``.
        max_file_bytes: Larger source files are unreadable without being read
            (default 256 MiB), as in ``DecodeOptions``.
        **data_options: Passed to ``Dataset.open`` (``label_column``, ...).

    Returns:
        A :class:`BuildResult`.

    Example:
        >>> build_cache("photos/", "photos-64", image_size=64)  # doctest: +SKIP
        >>> Dataset.open("photos-64").loader(batch_size=64)     # doctest: +SKIP
    """
    root = os.path.abspath(os.fspath(out))
    if rows_per_shard is None and os.path.isfile(os.path.join(root, layout.PLAN)):
        rows_per_shard = layout.read_plan(root)["options"].get("rows_per_shard")  # resume
    options = CacheOptions(image_size=image_size, format=format, quality=quality,
                           color_mode=color_mode, resize=resize, rows_per_shard=rows_per_shard)
    index, parts = parse_shard(shard)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1; got {workers}")
    decode_options = DecodeOptions(image_size=options.image_size, color_mode=options.color_mode,
                                   resize=options.resize, max_pixels=max_pixels,
                                   max_file_bytes=max_file_bytes)
    if isinstance(data, (str, os.PathLike)) and not layout.is_cache(data):
        runs.check_out_outside_data(out, data)
    # One writer per part: parts of one cache are built side by side.
    with runs.locked(root, f"cache part {index}/{parts}", lock_name=f".longtail-part-{index}.lock",
                     clean=False):  # the cache cleans its own part's files
        return _build(data, root, options, index, parts, workers, decode_options,
                      data_options, progress)


def _build(data, root, options, index, parts, workers, decode_options, data_options, progress):
    """:func:`build_cache` once this part's lock is held."""
    from tqdm.auto import tqdm

    ds = _open_source(data, {k: v for k, v in data_options.items() if v is not None})
    plan = _start(root, data, ds, options, parts)
    rows, num_shards = options.rows_per_shard, plan["num_shards"]
    mine = list(range(index, num_shards, parts))
    _clean_temporaries(root, set(mine), parts)

    opencv_on_calling_thread()  # the pool's threads decode in parallel already
    with ThreadPoolExecutor(workers) as pool:
        records = dict(zip(mine, pool.map(lambda s: _record_ok(root, s, options.format),
                                          mine)))
        todo = [s for s in mine if records[s] is None]
        reused = len(mine) - len(todo)
        manifest_path = os.path.join(root, layout.MANIFEST)
        if todo and os.path.exists(manifest_path):  # incomplete until they are rebuilt
            os.remove(manifest_path)
        total = sum(min(len(ds), (s + 1) * rows) - s * rows for s in todo)
        label = "caching" if parts == 1 else f"caching part {index}/{parts}"
        bar = tqdm(total=total, desc=label, unit="img", smoothing=0.05,
                   disable=None if progress is None else not progress)
        rel_all, source_root = ds.relative_paths, ds.root
        pending: collections.deque[_Shard] = collections.deque()
        images = 0

        def finish(job: _Shard):
            nonlocal images
            for future in job.futures:
                bar.update(future.result())
            records[job.shard] = _commit(root, job, options)
            images += int(job.ok.sum())

        try:
            for s in todo:
                start, stop = s * rows, min(len(ds), (s + 1) * rows)
                rel = rel_all[start:stop].to_pylist()
                job = _Shard(s, start, rel, source_root, options)
                job.futures = [pool.submit(job.decode, lo, min(lo + _CHUNK, len(job.paths)),
                                           options, decode_options)
                               for lo in range(0, len(job.paths), _CHUNK)]
                pending.append(job)
                if len(pending) > 1:  # decode the next shard while this one is written
                    finish(pending.popleft())
            while pending:
                finish(pending.popleft())
        finally:
            for job in pending:
                for future in job.futures:
                    future.cancel()
            bar.close()

    root_of = ds.root or ""
    skipped = [(os.path.join(root_of, e["path"]), e["reason"])
               for s in mine for e in records[s]["skipped"]]
    missing = sorted(set(range(num_shards)) - set(layout.committed_shards(root, num_shards)))
    manifest = None
    if not missing:
        manifest, _ = combine(root)
    if skipped:
        where = layout.MANIFEST if manifest else "the shard records"
        shown = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        warnings.warn(f"{len(skipped)} unreadable source files were skipped (listed in "
                      f"{os.path.join(root, where)}): {shown}"
                      f"{' ...' if len(skipped) > 5 else ''}", stacklevel=3)
    return BuildResult(out=root, complete=manifest is not None, shards_built=len(todo),
                       shards_reused=reused, images=images, skipped=skipped,
                       missing_shards=missing, parts=parts, manifest=manifest)
