"""The one label normaliser: class names or class indices in, int32 indices out.

Every builder of an index (``Dataset.from_arrays``, tables and manifests,
caches) turns its label column into ``(labels, class_names)`` here, so the
rules are written once:

- String labels (NumPy ``str``/``bytes``/``object`` arrays, Python lists,
  Arrow ``string`` or dictionary columns) name classes. By default the
  classes are the distinct labels, sorted as Python sorts strings.
- Integer labels are class indices; by default the classes are
  ``"0" .. str(max)``.
- Floats, booleans, missing labels, negative indices, indices past the class
  list and names outside ``class_names`` are refused with a one-line
  :class:`~longtail.errors.DataError` naming the first bad row (1-based).

Strings are encoded with Arrow's hash-based dictionary encoding: one pass in
C over the labels, then a lookup over the few distinct names. No Python
object is made per label, so 10 million string labels cost about what 10
million integer labels do (``docs/performance.md``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longtail.errors import DataError

__all__ = ["encode_labels"]


def encode_labels(
    values,
    class_names: Sequence[str] | None = None,
    *,
    where: str = "`labels`",
) -> tuple[np.ndarray, list[str]]:
    """Turns class names or class indices into int32 indices and a class list.

    Args:
        values: One label per sample: a 1-D NumPy array, a sequence, or an
            Arrow ``Array``/``ChunkedArray`` (string, integer or dictionary).
        class_names: The class list, in class order; by default the sorted
            distinct string labels, or ``"0" .. str(max)`` for integers.
        where: What to name in an error (an argument or a file path).

    Returns:
        ``(labels, class_names)``: an int32 array of indices into the list.

    Raises:
        DataError: A label that is missing, a float, negative, past the
            class list or not one of ``class_names``; the message names the
            row.

    Example:
        >>> labels, names = encode_labels(["dog", "cat", "dog"])
        >>> labels.tolist(), names
        ([1, 0, 1], ['cat', 'dog'])
    """
    names = None if class_names is None else list(class_names)
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return _encode_arrow(values, names, where)
    array = np.asarray(values)
    if array.ndim != 1:
        raise DataError(f"{where} must be one-dimensional; got shape {array.shape}")
    if array.dtype.kind in "iu" or array.size == 0:  # np.asarray([]) is float
        return _encode_ints(array.astype(np.int64, copy=False), names, where)
    if array.dtype.kind not in "USO":
        raise DataError(f"{where} must be class names or integer class indices; "
                        f"got dtype {array.dtype}")
    if array.dtype.kind in "US" and array.dtype.itemsize:
        return _encode_fixed_width(array, names, where)
    return _encode_arrow(_as_arrow_strings(array), names, where)


def _encode_fixed_width(array: np.ndarray, names: list[str] | None, where: str):
    """NumPy ``str``/``bytes`` labels, hashed in place as fixed-width binary.

    The array's buffer is handed to Arrow as it is (no copy, no UTF-8
    conversion); only the few distinct values are decoded back to ``str``.
    """
    array = np.ascontiguousarray(array)
    width = array.dtype.itemsize
    binary = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(array), [None, pa.py_buffer(array)])
    encoded = pc.dictionary_encode(binary)
    distinct = np.frombuffer(b"".join(encoded.dictionary.to_pylist()), dtype=array.dtype)
    return _lookup(encoded.indices.to_numpy(), distinct.astype(str).tolist(), names, where)


def _as_arrow_strings(array: np.ndarray) -> pa.Array:
    """The labels as an Arrow string array, each one as ``str(label)`` gives it."""
    if array.dtype.kind == "O":
        try:
            strings = pa.array(array, type=pa.string(), from_pandas=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # ints, bytes, ... among the names
            strings = None
        if strings is not None and strings.null_count == 0:
            return strings
    if array.dtype.kind != "U":
        array = array.astype(str)
    return pa.array(array, type=pa.string())


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _encode_ints(values: np.ndarray, names: list[str] | None, where: str):
    if values.size and values.min() < 0:
        row = _first_row(values < 0)
        raise DataError(f"{where}: row {row + 1}: negative label {values[row]}")
    if names is None:
        names = [str(i) for i in range(int(values.max()) + 1 if values.size else 0)]
    if values.size and values.max() >= len(names):
        row = _first_row(values >= len(names))
        raise DataError(f"{where}: row {row + 1}: label {values[row]} is outside the "
                        f"classes 0..{len(names) - 1}")
    return values.astype(np.int32), names


def _encode_arrow(column, names: list[str] | None, where: str):
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column], column.type)
    if column.null_count:
        row = _first_row(column.is_null().to_numpy(zero_copy_only=False))
        raise DataError(f"{where}: row {row + 1}: missing label")
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.unify_dictionaries()
        dictionary = (column.chunks[0].dictionary if column.num_chunks
                      else pa.array([], kind.value_type))
        kind = kind.value_type
    elif pa.types.is_integer(kind):
        return _encode_ints(column.to_numpy(), names, where)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column = pc.dictionary_encode(column)
        dictionary = (column.chunks[0].dictionary if column.num_chunks
                      else pa.array([], pa.string()))
    else:
        raise DataError(f"{where}: labels must be class names or integer class indices; "
                        f"got {kind}")
    codes = [c.indices.to_numpy(zero_copy_only=False) for c in column.chunks]
    codes = codes[0] if len(codes) == 1 else np.concatenate(codes or [np.zeros(0, np.int32)])
    if pa.types.is_integer(kind):  # dictionary of class indices
        return _encode_ints(dictionary.to_numpy()[codes], names, where)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{where}: labels must be class names or integer class indices; "
                        f"got {kind}")
    return _lookup(codes, dictionary.to_pylist(), names, where)


def _lookup(codes: np.ndarray, values: list[str], names: list[str] | None, where: str):
    """Class indices from dictionary codes into ``values`` (the distinct labels)."""
    if names is None:  # the labels present, not every entry of a stored dictionary
        present = np.bincount(codes, minlength=len(values)) > 0
        names = sorted({v for v, used in zip(values, present) if used})
    position = {name: i for i, name in enumerate(names)}
    lookup = np.array([position.get(v, -1) for v in values], dtype=np.int32)
    labels = lookup[codes] if codes.size else np.zeros(0, np.int32)
    if labels.size and labels.min() < 0:
        row = _first_row(labels < 0)
        raise DataError(f"{where}: row {row + 1}: label {values[codes[row]]} is not one "
                        f"of the classes {', '.join(map(str, names))}")
    return labels, names
