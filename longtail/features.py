"""``longtail features``: embed DATA once with a pretrained backbone.

The feature store is one Parquet table, so every command that takes DATA
takes it as it is (a table of numeric feature columns is tabular DATA):
columns ``f0000 ...`` (float16 by default), ``label`` (the class name) and,
when the source has per-row weights, ``weight`` (pass ``--weight-column
weight`` to use it; without that flag a table reader would take it for a
feature).
The schema metadata ``longtail_features`` holds the class names, the source
fingerprint, the backbone identity (name, weights file and sha256, image
size) and the shard.

Building streams the rows through the backbone in batches (memory bounded by
one part, not by the data) into ``FEATS.parts/``, one atomically written
part per ``rows_per_part`` rows, then joins the parts into FEATS atomically.
A killed run resumes with ``resume=True``: parts already on disk are kept
when the identity is the same, and refused in one line when it is not.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from longtail import runs
from longtail.errors import ConfigError, DataError, DecodeError

__all__ = ["METADATA_KEY", "check_features", "join_shards", "read_identity", "shard_path",
           "write_features"]

#: Key of the feature store's description in the Parquet schema metadata.
METADATA_KEY = b"longtail_features"
_SKIPPED = b"longtail_skipped"  # a part's unreadable rows
_IDENTITY = "identity.json"


def _shard_rows(n: int, shard) -> tuple[int, int]:
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise ConfigError(f"--shard must be I/N with 0 <= I < N; got {index}/{count}")
    return n * index // count, n * (index + 1) // count


def shard_path(out: str, index: int, count: int) -> str:
    """Where shard ``index`` of ``count`` of the store ``out`` is written before the join."""
    return os.path.join(out + ".shards", f"{index}-of-{count}.parquet")


def write_features(data, out: str, *, model: str, weights: str | None = "imagenet",
                   image_size=224, batch_size: int = 64, dtype: str = "float16",
                   shard=(0, 1), resume: bool = False, rows_per_part: int = 4096,
                   data_options: dict | None = None, progress: bool = True) -> str:
    """Writes the backbone embeddings of DATA to the Parquet file ``out``.

    With ``shard=(I, N)`` (N > 1) the I-th of N contiguous blocks of rows is
    written to :func:`shard_path` (``FEATS.shards/I-of-N.parquet``); the run
    that finds all N shards written (the last one to finish, or any later
    run of a shard) joins them into ``out`` and removes the shards. Shards
    written with other options (backbone, weights, image size, data...) are
    refused in one line before anything is embedded.

    Unreadable images are skipped: their rows are left out, counted and
    listed in the store's metadata (``skipped``) and in one warning.

    Args:
        data: Any image DATA (folder tree, manifest, cache) or a Dataset.
        out: The feature store, a path ending in ``.parquet``.
        model: A backbone name (see :data:`longtail.backbones.BACKBONES`).
        weights: ``"imagenet"`` (from Keras' cache), ``"none"`` or a file.
        image_size: Side the images are resized to (N, "HxW" or a pair).
        batch_size: Images per backbone call.
        dtype: ``"float16"`` (default) or ``"float32"``.
        shard: ``(I, N)``: embed the I-th of N contiguous blocks of rows.
        resume: Continue a killed run into the same ``out``.
        rows_per_part: Rows per resumable part.
        data_options: Options of :meth:`Dataset.open` (``label_column``, ...).
        progress: Show a progress bar.

    Returns:
        ``out`` once it is written, else the shard file written (other
        shards are missing).

    Raises:
        ConfigError: Bad arguments, ``out`` exists (without ``resume``),
            holds another run's parts, or other shards disagree.
    """
    from longtail.backbones import build_backbone
    from longtail.dataset import Dataset, fingerprint
    from longtail.options import parse_image_size

    if not str(out).endswith(".parquet"):
        raise ConfigError(f"--out {out}: a feature store is a .parquet file; end the name "
                          "with .parquet")
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"`dtype` must be float16 or float32; got {dtype!r}")
    index, count = shard
    target = out if count == 1 else shard_path(out, index, count)
    # One writer per store or shard: a lock beside it (its folder is the user's).
    with _lock_beside(target):
        if os.path.exists(out):
            raise ConfigError(f"--out {out} already exists; choose another file")
        ds = data if isinstance(data, Dataset) else Dataset.open(data, **(data_options or {}))
        if not ds.source.is_image:
            raise DataError(f"{data}: holds feature rows, not images; features embeds images")
        size = parse_image_size(image_size)
        start, stop = _shard_rows(len(ds), tuple(shard))
        backbone, record = build_backbone(model, (*size, 3), weights)
        identity = {"format": 1, **record, "image_size": list(size), "dtype": dtype,
                    "class_names": list(ds.class_names), "source": str(data),
                    "source_fingerprint": fingerprint(ds), "shard": list(shard),
                    "rows": [start, stop], "rows_per_part": rows_per_part}
        if count > 1:
            _refuse_other_shards(out, identity)
        if not os.path.exists(target):  # a shard written before is kept; this run may join
            _embed(ds, backbone, identity, target, resume=resume, batch_size=batch_size,
                   progress=progress)
    if count == 1:
        return out
    try:
        with _lock_beside(out):
            return join_shards(out, count) or target
    except runs.LockedError:  # another shard's run is joining them
        return target


def _lock_beside(path: str):
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return runs.locked(folder, "features", lock_name=f".{name}.longtail-lock", clean=False)


def _embed(ds, backbone, identity: dict, target: str, *, resume: bool, batch_size: int,
           progress: bool) -> None:
    """Streams rows ``identity["rows"]`` of ``ds`` through ``backbone`` into ``target``."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from longtail._io import atomic_path

    dtype, size = identity["dtype"], tuple(identity["image_size"])
    start, stop = identity["rows"]
    rows_per_part = identity["rows_per_part"]
    parts = target + ".parts"
    _start_parts(parts, identity, resume, target)
    names = np.asarray(ds.class_names, dtype=object)
    bounds = list(range(start, stop, rows_per_part)) + [stop]
    bar = tqdm(total=stop - start, disable=not progress, unit="img", desc="features")
    for p, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        path = os.path.join(parts, f"part-{p:05d}.parquet")
        if os.path.exists(path):
            bar.update(hi - lo)
            continue
        features, keep, skipped = _embed_rows(ds, backbone, lo, hi, size, batch_size, bar)
        table = _table(features[keep].astype(dtype), names[ds.labels[lo:hi][keep]],
                       None if ds.weights is None else
                       np.asarray(ds.weights[lo:hi], "float32")[keep])
        table = table.replace_schema_metadata({_SKIPPED: json.dumps(skipped).encode()})
        with atomic_path(path, suffix=".parquet") as tmp:
            pq.write_table(table, tmp)
    bar.close()
    files = [os.path.join(parts, f"part-{p:05d}.parquet") for p in range(len(bounds) - 1)]
    empty = _table(np.zeros((0, backbone.output_shape[-1]), dtype), names[:0],
                   None if ds.weights is None else np.zeros(0, "float32"))
    _concatenate(files, identity, target, empty.schema)
    shutil.rmtree(parts)


def _embed_rows(ds, backbone, lo: int, hi: int, size, batch_size: int, bar):
    """Features of rows ``lo:hi``, the mask of rows read, and the skipped ones."""
    import warnings

    rows = ds.subset(np.arange(lo, hi))
    loader = rows.loader(batch_size=batch_size, image_size=size, sampling="sequential",
                         on_error="skip")  # a bad file is replaced, then its row dropped
    chunks, done = [], 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="skipping unreadable file")
        try:
            for batch in loader:
                chunks.append(np.asarray(backbone.predict_on_batch(batch[0]), "float32"))
                done += len(batch[0])
                bar.update(len(batch[0]))
                if done >= hi - lo:
                    break
        except DecodeError as e:  # no readable replacement anywhere in this part
            raise DataError(f"{e}; no image of rows {lo}..{hi - 1} could be read") from e
    keep = np.ones(hi - lo, bool)
    keep[loader.unreadable] = False
    reasons = {e.path: e.reason for e in loader.errors}
    skipped = [{"row": lo + int(i), "path": rows.path(int(i)),
                "reason": reasons.get(rows.path(int(i)), "unreadable")}
               for i in loader.unreadable]
    return np.concatenate(chunks)[: hi - lo], keep, skipped


def _concatenate(files: list, identity: dict, target: str, empty_schema) -> None:
    """Writes the rows of ``files`` (parts or shards, in order) as one store, atomically."""
    import pyarrow.parquet as pq

    from longtail._io import atomic_path

    skipped = []
    for f in files:
        metadata = pq.read_schema(f).metadata or {}
        if _SKIPPED in metadata:
            skipped += json.loads(metadata[_SKIPPED])
        elif METADATA_KEY in metadata:  # a shard: its own store
            skipped += json.loads(metadata[METADATA_KEY]).get("skipped", [])
    metadata = {METADATA_KEY: json.dumps({**identity, "skipped": skipped}).encode()}
    schema = (pq.read_schema(files[0]) if files else empty_schema).with_metadata(metadata)
    with atomic_path(target, suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for f in files:  # one part in memory at a time
                writer.write_table(pq.read_table(f).replace_schema_metadata(metadata))
    if skipped:
        import warnings

        shown = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        warnings.warn(f"{len(skipped)} unreadable images were skipped (their rows are left "
                      f"out of {target}; listed in its metadata): {shown}"
                      f"{' ...' if len(skipped) > 5 else ''}", stacklevel=4)


_SHARD_FREE = ("shard", "rows", "skipped")  # what differs between shards of one store


def _shard_files(out: str) -> dict:
    """``{(I, N): path}`` of the shard files written so far for ``out``."""
    folder, found = out + ".shards", {}
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            parts = name[: -len(".parquet")].split("-of-") if name.endswith(".parquet") else []
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                found[(int(parts[0]), int(parts[1]))] = os.path.join(folder, name)
    return found


def _refuse_other_shards(out: str, identity: dict) -> None:
    """Refuses to add a shard to shards of ``out`` written with other options."""
    mine = {k: v for k, v in identity.items() if k not in _SHARD_FREE}
    for (index, count), path in sorted(_shard_files(out).items()):
        theirs = read_identity(path)
        if count != identity["shard"][1]:
            raise ConfigError(f"--shard: {path} is shard {index} of {count}, not of "
                              f"{identity['shard'][1]}; use --shard I/{count} or remove "
                              f"{out}.shards")
        changed = sorted(k for k in set(mine) | set(theirs)
                         if k not in _SHARD_FREE and theirs.get(k) != mine.get(k))
        if changed:
            raise ConfigError(f"--shard: {path} was written with other {', '.join(changed)}; "
                              f"rerun this shard with its options or remove {out}.shards")


def join_shards(out: str, count: int) -> str | None:
    """Joins ``out``'s N shard files into ``out`` once all are written.

    Returns:
        ``out`` when joined (or joined already), None while shards are missing.
    """
    if os.path.exists(out):
        return out
    found = _shard_files(out)
    files = [found.get((i, count)) for i in range(count)]
    if any(f is None for f in files):
        return None
    identities = [read_identity(f) for f in files]
    first = {k: v for k, v in identities[0].items() if k not in _SHARD_FREE}
    for f, theirs in zip(files[1:], identities[1:]):
        changed = sorted(k for k in set(first) | set(theirs)
                         if k not in _SHARD_FREE and theirs.get(k) != first.get(k))
        if changed:
            raise ConfigError(f"--shard: {f} was written with other {', '.join(changed)} "
                              f"than {files[0]}; rerun it or remove {out}.shards")
    ends = [i["rows"] for i in identities]
    if any(a[1] != b[0] for a, b in zip(ends[:-1], ends[1:])):
        raise DataError(f"{out}.shards: the shards' rows {ends} do not follow one another")
    identity = {**first, "shard": [0, 1], "rows": [ends[0][0], ends[-1][1]]}
    _concatenate(files, identity, out, None)
    shutil.rmtree(out + ".shards", ignore_errors=True)
    return out


def _table(features: np.ndarray, labels, weights):
    import pyarrow as pa

    columns = {f"f{j:04d}": pa.array(features[:, j]) for j in range(features.shape[1])}
    columns["label"] = pa.array(list(labels), pa.string())
    if weights is not None:
        columns["weight"] = pa.array(weights, pa.float32())
    return pa.table(columns)


def _start_parts(parts: str, identity: dict, resume: bool, out: str) -> None:
    """Creates ``parts`` with its identity, or checks the one a killed run left."""
    from longtail._io import write_json

    marker = os.path.join(parts, _IDENTITY)
    if os.path.exists(marker):
        if not resume:
            raise ConfigError(f"--out {out}: an interrupted run left {parts}; pass --resume "
                              "to continue it, or remove that folder")
        with open(marker) as f:
            saved = json.load(f)
        if saved != identity:
            changed = sorted(k for k in identity if saved.get(k) != identity[k])
            raise ConfigError(f"--resume: {parts} was started with other "
                              f"{', '.join(changed)}; remove it to start again")
        return
    os.makedirs(parts, exist_ok=True)
    write_json(marker, identity)


def read_identity(path: str) -> dict:
    """The description a feature store keeps: backbone, weights, source, classes."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception as e:  # pyarrow raises several kinds for a bad file
        raise DataError(f"{path}: cannot read a Parquet file: {e}") from e
    if METADATA_KEY not in metadata:
        raise DataError(f"{path}: not a longtail feature store (no {METADATA_KEY.decode()} "
                        "metadata)")
    return json.loads(metadata[METADATA_KEY])


def check_features(path: str) -> dict:
    """Verifies a feature store: metadata, row count, finite values, known labels.

    The feature values are read a row group at a time (memory bounded by
    one, not by the store).

    Returns:
        Its identity, with ``rows`` checked (``skipped`` lists the unreadable
        images left out).

    Raises:
        DataError: What is wrong, naming the file.
    """
    import pyarrow.parquet as pq

    if not os.path.exists(path) and _shard_files(path):
        found = _shard_files(path)
        count = max(n for _, n in found)
        missing = [f"{i}/{count}" for i in range(count) if (i, count) not in found]
        raise DataError(f"{path}: not joined yet; shards {', '.join(missing)} are missing "
                        f"in {path}.shards (run `longtail features --shard I/{count}` for them)")
    from longtail.sources.rows import check_finite

    identity = read_identity(path)
    rows = pq.ParquetFile(path).metadata.num_rows
    start, stop = identity["rows"]
    expected = stop - start - len(identity.get("skipped", []))
    if rows != expected:
        raise DataError(f"{path}: holds {rows} rows; its metadata says {expected}")
    check_finite(path, [c for c in pq.read_schema(path).names if c.startswith("f")])
    labels = pq.read_table(path, columns=["label"])["label"]  # a row group at a time above
    unknown = set(labels.unique().to_pylist()) - set(identity["class_names"])
    if unknown:
        raise DataError(f"{path}: labels {sorted(unknown)[:3]} are not among its class names")
    return identity
