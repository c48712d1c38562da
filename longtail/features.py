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
from longtail.errors import ConfigError, DataError

__all__ = ["METADATA_KEY", "check_features", "read_identity", "write_features"]

#: Key of the feature store's description in the Parquet schema metadata.
METADATA_KEY = b"longtail_features"
_IDENTITY = "identity.json"


def _shard_rows(n: int, shard) -> tuple[int, int]:
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise ConfigError(f"--shard must be I/N with 0 <= I < N; got {index}/{count}")
    return n * index // count, n * (index + 1) // count


def write_features(data, out: str, *, model: str, weights: str | None = "imagenet",
                   image_size=224, batch_size: int = 64, dtype: str = "float16",
                   shard=(0, 1), resume: bool = False, rows_per_part: int = 4096,
                   data_options: dict | None = None, progress: bool = True) -> str:
    """Writes the backbone embeddings of DATA to the Parquet file ``out``.

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
        ``out``.

    Raises:
        ConfigError: Bad arguments, ``out`` exists (without ``resume``) or
            holds another run's parts.
        DataError: An image cannot be read (names the file).
    """
    if not str(out).endswith(".parquet"):
        raise ConfigError(f"--out {out}: a feature store is a .parquet file; end the name "
                          "with .parquet")
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"`dtype` must be float16 or float32; got {dtype!r}")
    # One writer per feature store: a lock beside it (its folder is the user's).
    folder, name = os.path.split(os.path.abspath(os.fspath(out)))
    with runs.locked(folder, "features", lock_name=f".{name}.longtail-lock", clean=False):
        return _write(data, out, model, weights, image_size, batch_size, dtype, shard, resume,
                      rows_per_part, data_options, progress)


def _write(data, out, model, weights, image_size, batch_size, dtype, shard, resume,
           rows_per_part, data_options, progress) -> str:
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from longtail._io import atomic_path
    from longtail.backbones import build_backbone
    from longtail.dataset import Dataset, fingerprint
    from longtail.options import parse_image_size

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
    parts = out + ".parts"
    _start_parts(parts, identity, resume, out)

    names = np.asarray(ds.class_names, dtype=object)
    bounds = list(range(start, stop, rows_per_part)) + [stop]
    bar = tqdm(total=stop - start, disable=not progress, unit="img", desc="features")
    for p, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        path = os.path.join(parts, f"part-{p:05d}.parquet")
        if os.path.exists(path):
            bar.update(hi - lo)
            continue
        rows = ds.subset(np.arange(lo, hi))
        loader = rows.loader(batch_size=batch_size, image_size=size, sampling="sequential",
                             on_error="raise")
        chunks = []
        for batch in loader:
            chunks.append(np.asarray(backbone.predict_on_batch(batch[0])).astype(dtype))
            bar.update(len(batch[0]))
            if sum(len(c) for c in chunks) >= hi - lo:
                break
        table = _table(np.concatenate(chunks)[: hi - lo], names[ds.labels[lo:hi]],
                       _row_weights(ds, lo, hi))
        with atomic_path(path, suffix=".parquet") as tmp:
            pq.write_table(table, tmp)
    bar.close()

    metadata = {METADATA_KEY: json.dumps(identity).encode()}
    files = [os.path.join(parts, f"part-{p:05d}.parquet") for p in range(len(bounds) - 1)]
    schema = pq.read_schema(files[0]).with_metadata(metadata) if files else _table(
        np.zeros((0, backbone.output_shape[-1]), dtype), names[:0],
        None if ds.weights is None else np.zeros(0, "float32")).schema.with_metadata(metadata)
    with atomic_path(out, suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for f in files:  # one part in memory at a time
                writer.write_table(pq.read_table(f).replace_schema_metadata(metadata))
    shutil.rmtree(parts)
    return out


def _row_weights(ds, lo: int, hi: int) -> np.ndarray | None:
    return None if ds.weights is None else np.asarray(ds.weights[lo:hi], "float32")


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

    Returns:
        Its identity, with ``rows`` checked.

    Raises:
        DataError: What is wrong, naming the file.
    """
    import pyarrow.parquet as pq

    identity = read_identity(path)
    table = pq.read_table(path)
    start, stop = identity["rows"]
    if table.num_rows != stop - start:
        raise DataError(f"{path}: holds {table.num_rows} rows; its metadata says "
                        f"{stop - start}")
    features = np.stack([table[c].to_numpy().astype("float32")
                         for c in table.column_names if c.startswith("f")], axis=1)
    if not np.isfinite(features).all():
        raise DataError(f"{path}: holds non-finite feature values")
    unknown = set(table["label"].to_pylist()) - set(identity["class_names"])
    if unknown:
        raise DataError(f"{path}: labels {sorted(unknown)[:3]} are not among its class names")
    return identity
