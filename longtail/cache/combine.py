"""Combining the shards of a cache build into its manifest (``cache.json``).

The last step of a build, and of opening a cache whose parts were built on
several machines: reads every shard record and the source index, writes the
per-row table and then the manifest.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pyarrow as pa

from longtail._io import atomic_path, write_json
from longtail.cache import layout
from longtail.errors import DataError

__all__ = ["combine"]


def combine(root: str, write: bool = True):
    """Writes the manifest of a cache whose shards are all committed.

    Reads every shard record and the source index, writes the per-row table
    (``rows-<digest>.parquet``, named by its content so that concurrent
    combiners cannot mix two versions) and then ``cache.json``.

    Args:
        root: The cache folder.
        write: Write the files; with False (or when the folder is read-only)
            the manifest is only built in memory.

    Returns:
        ``(manifest, rows table)``, or ``(None, None)`` if shards are missing.
    """
    import pyarrow.parquet as pq

    plan = layout.read_plan(root)
    num_shards = plan["num_shards"]
    if len(layout.committed_shards(root, num_shards)) < num_shards:
        return None, None
    records = [layout.read_json(layout.record_path(root, s), "shard record")
               for s in range(num_shards)]
    source = pq.read_table(os.path.join(root, layout.SOURCE))
    if len(source) != plan["num_rows"]:
        raise DataError(f"{os.path.join(root, layout.SOURCE)}: has {len(source)} rows; the "
                        f"build plan says {plan['num_rows']}")
    kept = np.array([i for r in records for i in r["rows"]], np.int64)
    table = source.take(pa.array(kept))
    table = table.append_column("size", pa.array(
        [v for r in records for v in r["size"]], pa.int64()))
    table = table.append_column("mtime_ns", pa.array(
        [v for r in records for v in r["mtime_ns"]], pa.int64()))
    meta = {"version": 1, "kind": "files", "class_names": plan["class_names"],
            "root": plan["source_root"]}  # read as a table: the source files
    if "weight" in table.column_names:
        meta["weight_column"] = "weight"
    table = table.replace_schema_metadata({b"longtail": json.dumps(meta).encode()})
    shards, start = [], 0
    for r in records:
        shards.append({"name": layout.shard_name(r["shard"]), "start": start,
                       "rows": len(r["rows"]), "files": r["files"]})
        start += len(r["rows"])
    skipped = [e for r in records for e in r["skipped"]]
    options = plan["options"]
    manifest = {
        "format_version": layout.FORMAT_VERSION,
        "kind": "longtail-cache",
        "image_size": options["image_size"],
        "color_mode": options["color_mode"],
        "resize": options["resize"],
        "format": options["format"],
        "quality": options["quality"],
        "dtype": "uint8",
        "class_names": plan["class_names"],
        "num_rows": int(len(kept)),
        "weighted": "weight" in table.column_names,
        "source": {"root": plan["source_root"], "data": plan["data"],
                   "rows": plan["num_rows"], "fingerprint": plan["fingerprint"]},
        "rows_file": None,
        "shards": shards,
        "skipped": {"count": len(skipped), "files": skipped},
    }
    if write:
        try:
            manifest["rows_file"] = _write_rows(root, table)
            write_json(os.path.join(root, layout.MANIFEST), manifest)
        except OSError as e:
            warnings.warn(f"{root}: cannot write the cache manifest ({e.strerror or e}); "
                          "using it in memory", stacklevel=2)
            manifest["rows_file"] = None
    return manifest, table


def _write_rows(root: str, table) -> dict:
    """Writes the row table under a name made of its checksum; returns its entry.

    The table is serialised in memory first (a few tens of bytes a row), so
    that its name is known before :func:`longtail._io.atomic_path` writes it.
    """
    import pyarrow.parquet as pq

    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    data = buffer.getvalue().to_pybytes()
    digest = layout.bytes_digest(data)
    entry = {"name": f"rows-{digest[:16]}.parquet", "bytes": len(data), "blake2b": digest}
    with atomic_path(os.path.join(root, entry["name"])) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return entry
