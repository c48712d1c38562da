"""Read a CSV or Parquet table (or a longtail manifest) into index arrays.

A table has a label column and either a path column (image files; relative
paths are resolved against the table's folder) or numeric feature columns
(tabular data), and optionally a per-row weight column.

A manifest written by :meth:`longtail.Dataset.save` is a Parquet table with
the class list in its schema metadata, so empty classes and the class order
survive the round trip.

Paths must stay inside the table's root: the folder stored in a manifest's
metadata (``root``, relative to the manifest), else the table's own folder.
A path that leaves it (absolute elsewhere, or through ``..``) is refused
unless ``allow_outside_root=True``: a table from elsewhere cannot make
longtail read files the user did not point it at. The check is on the path
text; symbolic links inside the root are followed.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longtail._trust import is_inside, is_sealed_manifest
from longtail.errors import DataError

__all__ = ["read_table", "TableData", "METADATA_KEY", "stored_folder", "refuse_unsealed_folder"]

METADATA_KEY = b"longtail"


@dataclass
class TableData:
    class_names: list[str]
    labels: np.ndarray
    paths: pa.Array | None
    root: str | None
    features: np.ndarray | None
    feature_names: list[str] | None
    weights: np.ndarray | None


def _load(path: str) -> pa.Table:
    lower = path.lower()
    try:
        if lower.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if lower.endswith((".csv", ".tsv", ".txt")):
            from pyarrow import csv

            parse = csv.ParseOptions(delimiter="\t" if lower.endswith(".tsv") else ",")
            convert = csv.ConvertOptions(strings_can_be_null=True)
            return csv.read_csv(path, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read table: {str(e).splitlines()[0]}") from e
    raise DataError(f"{path}: expected a .csv, .tsv or .parquet table")


#: Column names that say "a per-row weight" (compared in lower case).
WEIGHT_LIKE = ("weight", "weights", "sample_weight", "sample_weights", "w")


def _warn_weight_like(path: str, feature_names: list[str]) -> None:
    """Warns when a feature column is named like a weight column."""
    for name in feature_names:
        if name.lower() in WEIGHT_LIKE:
            warnings.warn(f"{path}: column {name!r} is named like a per-row weight but is "
                          f"used as an input feature; pass --weight-column {name} "
                          f"(weight_column={name!r}) to weight rows by it, or "
                          "feature_columns= (Python) to choose the features",
                          stacklevel=4)


def _in_memory(data) -> tuple[pa.Table | None, str]:
    """``(table, name)`` for an in-memory table, ``(None, data)`` for a path."""
    if isinstance(data, (str, os.PathLike)):
        return None, data
    if isinstance(data, pa.Table):
        return data, "<pyarrow.Table>"
    if type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns"):
        return pa.Table.from_pandas(data, preserve_index=False), "<pandas.DataFrame>"
    if hasattr(data, "to_arrow"):
        return data.to_arrow(), f"<{type(data).__name__}>"
    raise TypeError(f"expected a table file path, a pyarrow.Table or a pandas DataFrame; "
                    f"got {type(data).__name__}")


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0]) + 1


def read_table(
    path: str,
    *,
    label_column: str = "label",
    path_column: str = "path",
    weight_column: str | None = None,
    feature_columns: list[str] | None = None,
    class_names: list[str] | None = None,
    allow_outside_root: bool = False,
) -> TableData:
    """Reads a table into index arrays; see :meth:`longtail.Dataset.from_table`.

    ``path`` may also be an in-memory table: a ``pyarrow.Table``, a pandas
    DataFrame or another frame with ``to_arrow()`` (polars); relative file
    paths in it are relative to the working directory.
    """
    table, path = _in_memory(path)
    if table is None:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file")
        if os.path.isdir(path):
            raise DataError(f"{path}: expected a table file (.csv or .parquet), got a folder")
        table = _load(path)
    meta = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(meta) if meta else {}
    if class_names is None:
        class_names = meta.get("class_names")
    if weight_column is None:
        weight_column = meta.get("weight_column")
    columns = table.column_names
    if label_column not in columns:
        raise DataError(
            f"{path}: no label column {label_column!r} (columns: {', '.join(columns)}); "
            "pick one with --label-column"
        )
    if weight_column is not None and weight_column not in columns:
        raise DataError(f"{path}: no weight column {weight_column!r} (columns: {', '.join(columns)})")

    labels, class_names = _labels(path, table.column(label_column), class_names)
    weights = None
    if weight_column is not None:
        weights = _weights(path, table.column(weight_column), weight_column)

    paths = root = features = feature_names = None
    if path_column in columns and feature_columns is None:
        column = table.column(path_column)
        if column.null_count:
            row = _first_bad_row(column.is_null().to_numpy(zero_copy_only=False))
            raise DataError(f"{path}: row {row}: empty {path_column!r}")
        paths = pc.cast(column.combine_chunks(), pa.string())
        folder = os.path.abspath(".") if path.startswith("<") else os.path.dirname(
            os.path.abspath(path))
        root = folder
        if "root" in meta:  # a manifest: paths are relative to the stored root
            root = stored_folder(path, meta, "root", folder)
        if not allow_outside_root:
            _refuse_outside_root(path, paths, root, "root" in meta)
            if root is not None and not is_inside(root, folder):
                refuse_unsealed_folder(path, meta, table, "root")
    else:
        skip = {label_column, weight_column, path_column}
        feature_names = feature_columns or [
            c for c in columns
            if c not in skip and (pa.types.is_integer(table.schema.field(c).type)
                                  or pa.types.is_floating(table.schema.field(c).type))
        ]
        if weight_column is None and feature_columns is None:
            _warn_weight_like(path, feature_names)
        if not feature_names:
            raise DataError(
                f"{path}: no path column {path_column!r} and no numeric feature columns; "
                "pick the path column with --path-column"
            )
        try:
            columns = [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                       for c in feature_names]
        except (KeyError, ValueError, TypeError) as e:
            raise DataError(f"{path}: feature columns must be numeric: {e}") from e
        for name, values in zip(feature_names, columns):
            _refuse_non_finite(path, values, name)
        features = np.column_stack(columns).astype(np.float32)
    return TableData(class_names, labels, paths, root, features, feature_names, weights)


def stored_folder(path: str, meta: dict, key: str, folder: str) -> str | None:
    """A folder a manifest stores (relative to its own folder), checked for type."""
    stored = meta[key]
    if stored is None and key == "root":
        return None
    if not isinstance(stored, str) or not stored or "\0" in stored:
        raise DataError(f"{path}: the manifest's stored {key} must be a folder path; "
                        f"got a {type(stored).__name__}")
    return os.path.normpath(os.path.join(folder, stored))


def refuse_unsealed_folder(path: str, meta: dict, table: pa.Table, key: str) -> None:
    """Refuses a stored folder outside the manifest's own unless longtail sealed it here."""
    if is_sealed_manifest(meta, table):
        return
    raise DataError(
        f"{path}: the manifest's stored {key} {meta[key]!r} leads outside its folder, and "
        "the manifest was not written by longtail for this user (or was edited since); "
        "pass --allow-outside-root (allow_outside_root=True) if you trust this file")


def _refuse_outside_root(path: str, paths: pa.Array, root: str | None,
                         manifest: bool) -> None:
    """Raises DataError naming the first row whose path leaves ``root``."""
    if len(paths) == 0:
        return
    hint = ("; pass --allow-outside-root (allow_outside_root=True) if you trust this "
            "table")
    if root is None:
        raise DataError(f"{path}: the manifest stores absolute paths and no root folder{hint}")
    # Only paths that are absolute or hold ".." can leave the root; look at those.
    suspect = pc.or_(pc.starts_with(paths, "/"), pc.match_substring(paths, ".."))
    if os.name == "nt":
        suspect = pc.or_(suspect, pc.match_substring_regex(paths, r"^\\|^[A-Za-z]:"))
    inside = os.path.join(root, "")
    for i in np.flatnonzero(suspect.to_numpy(zero_copy_only=False)):
        rel = paths[int(i)].as_py()
        full = os.path.normpath(os.path.join(root, rel))
        if full != root and not full.startswith(inside):
            where = "the manifest's root" if manifest else "the table's folder"
            raise DataError(f"{path}: row {int(i) + 1}: path {rel!r} leads outside {root} "
                            f"({where}){hint}")


def _refuse_non_finite(path: str, values: np.ndarray, name: str) -> None:
    """Raises DataError naming the first row of feature column ``name`` that is
    NaN, infinite, empty or beyond float32 (what the model is fed)."""
    with np.errstate(over="ignore"):
        bad = ~np.isfinite(values.astype(np.float32))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = values[row]
        what = ("an empty cell or NaN" if np.isnan(value) else f"value {value}"
                + ("" if np.isinf(value) else " (beyond float32)"))
        raise DataError(f"{path}: row {row + 1}: {what} in feature column {name!r}; "
                        "feature values must be finite numbers")


def _labels(path: str, column: pa.ChunkedArray, class_names):
    from longtail._labels import encode_labels

    return encode_labels(column, class_names, where=path)


def _weights(path: str, column: pa.ChunkedArray, name: str) -> np.ndarray:
    if pa.types.is_null(column.type):  # every cell empty or "nan"
        column = pc.cast(column, pa.float64())
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DataError(f"{path}: weight column {name!r} must be numeric; got {column.type}")
    values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise DataError(
            f"{path}: row {_first_bad_row(bad)}: weight {values[bad][0]} in column {name!r}; "
            "weights must be finite and >= 0"
        )
    return values.astype(np.float32)
