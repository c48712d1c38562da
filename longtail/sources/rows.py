"""The rows of a feature store as one uncompressed row-major file, read batch by batch.

A feature store is Parquet: columnar and compressed, so one row costs a
decode of every column chunk that holds it, and a reader that wants rows
reads the whole table (``~4 d`` bytes a row as float32; 5 GB per million
rows of EfficientNet-Lite0). The first read of a store converts its feature
columns, one Parquet batch at a time, into ``.NAME.rows-KEY.npy`` beside it:
a plain ``.npy`` (the store's dtype, float16 by default, ``(rows,
features)``) whose rows are read with one ``pread`` per run of consecutive
rows. Memory is then bounded by the batch, not the data, and every later
command, job and seed reads the same file without converting again.

``KEY`` is a digest of the store's size, modification time and Parquet
footer (row groups, column statistics, metadata), so a changed store is
never read through an old conversion; conversions of older versions are
removed when a new one is written. The file is written atomically under a
lock beside the store (two commands converting at once: one converts, the
other waits and reads it). Values are checked to be finite once, while
converting. Where the store's folder is not writable the rows are converted
into memory instead (the store's dtype, half of float32 for float16), with
a warning.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import threading
import time
import warnings

import numpy as np

from longtail.errors import DataError

__all__ = ["RowFile", "block_rows", "check_finite", "open_rows"]

BLOCK_VALUES = 1 << 21  # values converted, checked or read at a time (8 MB as float32)


def block_rows(width: int) -> int:
    """Rows in one bounded block of a ``width``-column array."""
    return max(64, BLOCK_VALUES // max(width, 1))


_WAIT = 600.0  # seconds to wait for another process converting the same store


class RowFile:
    """Random access to the rows of a ``(rows, features)`` array: a ``.npy`` file or memory.

    Args:
        path: The ``.npy`` file (rows read with ``pread``), or None.
        array: The rows in memory (when ``path`` is None).
    """

    def __init__(self, path: str | None = None, array: np.ndarray | None = None):
        self.path = path
        self._array = array
        self._fd = None
        self._lock = threading.Lock()
        if path is not None:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                self.offset = f.tell()
            if fortran or len(shape) != 2:
                raise DataError(f"{path}: expected a C-ordered (rows, features) array")
            self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        else:
            self.shape, self.dtype = array.shape, array.dtype
        self.row_bytes = self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):  # a worker process reopens the file
        return {**self.__dict__, "_fd": None, "_lock": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def mmap(self) -> np.ndarray:
        """The rows as a read-only ``np.memmap`` (or the in-memory array): no copy."""
        if self.path is None:
            return self._array
        return np.load(self.path, mmap_mode="r", allow_pickle=False)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (a copy, the file's dtype)."""
        if self.path is None:
            return np.array(self._array[start:stop])
        out = np.empty((stop - start, self.shape[1]), self.dtype)
        self._read_into(out, start)
        return out

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The rows at ``rows`` (int64, any order, repeats allowed), the file's dtype."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.path is None:
            return self._array[rows]
        if rows.size == 0:
            return np.empty((0, self.shape[1]), self.dtype)
        unique, inverse = np.unique(rows, return_inverse=True)
        if unique[0] < 0 or unique[-1] >= len(self):
            raise IndexError(f"row indices must lie in 0..{len(self) - 1}")
        got = np.empty((len(unique), self.shape[1]), self.dtype)
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1  # runs of consecutive rows
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(unique)]):
            self._read_into(got[lo:hi], int(unique[lo]))
        return got if len(unique) == len(rows) and np.array_equal(unique, rows) \
            else got[inverse.reshape(-1)]

    def _read_into(self, out: np.ndarray, start: int) -> None:
        view = memoryview(out.reshape(-1).view(np.uint8))
        position = self.offset + start * self.row_bytes
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):
                n = os.preadv(self._fd, [view[done:]], position + done)
            else:  # no positional read (Windows): seek and read under the lock
                with self._lock:
                    os.lseek(self._fd, position + done, os.SEEK_SET)
                    chunk = os.read(self._fd, len(view) - done)
                    view[done:done + len(chunk)] = chunk
                    n = len(chunk)
            if n <= 0:
                raise DataError(f"{self.path}: ends before its {len(self)} rows; remove it "
                                "to convert the store again")
            done += n


def _key(store: str, columns: list[str], dtype: np.dtype) -> str:
    """A digest of what the store holds: size, modification time, Parquet footer."""
    stat = os.stat(store)
    digest = hashlib.blake2b(digest_size=8)
    digest.update(repr((1, stat.st_size, stat.st_mtime_ns, columns, dtype.str)).encode())
    with open(store, "rb") as f:  # footer: ... <metadata> <4-byte length> PAR1
        f.seek(max(stat.st_size - 8, 0))
        tail = f.read(8)
        length = int.from_bytes(tail[:4], "little") if len(tail) == 8 else 0
        f.seek(max(stat.st_size - 8 - length, 0))
        digest.update(f.read(length + 8))
    return digest.hexdigest()


def sidecar(store: str, key: str = "*") -> str:
    """The path of the converted rows of ``store`` (``key="*"``: a glob of every version)."""
    folder, name = os.path.split(os.path.abspath(store))
    return os.path.join(folder, f".{name}.rows-{key}.npy")


def _dtype(schema, columns: list[str]) -> np.dtype:
    """The one float dtype of the feature columns (float32 when they differ or are not float)."""
    types = {schema.field(c).type for c in columns}
    if len(types) == 1:
        (t,) = types
        if str(t) in ("halffloat", "float"):
            return np.dtype("float16" if str(t) == "halffloat" else "float32")
    return np.dtype("float32")


def open_rows(store: str, columns: list[str]) -> RowFile:
    """The feature rows of ``store`` (columns ``columns``), converted on first use.

    Raises:
        DataError: A value that is not a finite number (naming its row and
            column), or a store that cannot be read.
    """
    import pyarrow.parquet as pq

    from longtail.runs import LockedError, locked

    dtype = _dtype(pq.read_schema(store), columns)
    path = sidecar(store, _key(store, columns, dtype))
    if os.path.exists(path):
        return RowFile(path)
    folder, name = os.path.split(os.path.abspath(store))
    waited = 0.0
    while True:
        try:
            with locked(folder, "features", lock_name=f".{name}.longtail-rows-lock",
                        clean=False):
                if not os.path.exists(path):
                    _convert(store, columns, dtype, path)
                break
        except LockedError:  # another process converts it: wait, then read its file
            if waited >= _WAIT:
                raise
            time.sleep(0.5)
            waited += 0.5
            if os.path.exists(path):
                break
        except OSError as e:  # a folder not writable, a read-only or full disk
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
                raise
            warnings.warn(f"{store}: cannot write its row file beside it ({e.strerror}); "
                          "reading its feature rows into memory instead (copy the store to "
                          "a writable folder to read it with bounded memory)", stacklevel=3)
            return RowFile(array=_read(store, columns, dtype))
    return RowFile(path)


def _batches(store: str, columns: list[str], dtype: np.dtype):
    """``(first row, rows)`` of the store, one Parquet batch at a time, checked finite."""
    import pyarrow.parquet as pq

    start = 0
    file = pq.ParquetFile(store)
    step = block_rows(len(columns))

    def groups():  # one row group at a time: a reader of the whole file reads ahead
        for group in range(file.num_row_groups):
            if file.metadata.row_group(group).num_rows * len(columns) <= 16 * BLOCK_VALUES:
                table = file.read_row_group(group, columns=columns)  # whole: faster
                yield from table.to_batches(max_chunksize=step)
            else:
                yield from file.iter_batches(batch_size=step, row_groups=[group],
                                             columns=columns, use_threads=False)

    for batch in groups():
        by_column = np.empty((len(columns), batch.num_rows), dtype)  # contiguous writes
        for j, column in enumerate(batch.columns):
            if column.null_count:
                row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                raise DataError(f"{store}: row {start + row + 1}: an empty cell or NaN in "
                                f"feature column {columns[j]!r}; feature values must be "
                                "finite numbers")
            by_column[j] = column.to_numpy(zero_copy_only=False)
        rows = by_column.T  # a view: (rows, columns)
        bad = ~np.isfinite(by_column)
        if bad.any():
            row, j = (int(i) for i in np.argwhere(bad.T)[0])
            value = rows[row, j]
            what = "an empty cell or NaN" if np.isnan(value) else f"value {value}"
            raise DataError(f"{store}: row {start + row + 1}: {what} in feature column "
                            f"{columns[j]!r}; feature values must be finite numbers")
        yield start, rows
        start += batch.num_rows


def check_finite(store: str, columns: list[str]) -> None:
    """Reads every value of ``columns`` a block at a time; DataError at the first non-finite one."""
    import pyarrow.parquet as pq

    for _ in _batches(store, columns, _dtype(pq.read_schema(store), columns)):
        pass


def _read(store: str, columns: list[str], dtype: np.dtype) -> np.ndarray:
    import pyarrow.parquet as pq

    out = np.empty((pq.ParquetFile(store).metadata.num_rows, len(columns)), dtype)
    for start, rows in _batches(store, columns, dtype):
        out[start:start + len(rows)] = rows
    out.flags.writeable = False
    return out


def _convert(store: str, columns: list[str], dtype: np.dtype, path: str) -> None:
    """Writes the store's rows to ``path`` (a ``.npy``), atomically; removes older versions."""
    import pyarrow.parquet as pq

    from longtail._io import atomic_path

    rows = pq.ParquetFile(store).metadata.num_rows
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": (rows, len(columns))}
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for _, block in _batches(store, columns, dtype):
                f.write(np.ascontiguousarray(block).data)
    for old in glob.glob(glob.escape(sidecar(store, "")[:-len(".npy")]) + "*.npy"):
        if old != path:
            with contextlib.suppress(OSError):  # a reader may still hold it (Windows)
                os.remove(old)
