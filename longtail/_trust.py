"""Which folders a manifest may send longtail into.

A manifest stores where its paths live (``root``, or the ``cache`` folder of
a split of a cache), relative to the manifest. That value is data from the
file: a manifest from elsewhere could declare ``"root": "/"`` and make
``stats``, ``cache`` or ``predict`` read files the user never pointed at. So
a stored folder that leads outside the manifest's own folder is used only
when longtail itself wrote it, for this user: :meth:`longtail.Dataset.save`
seals what it stores with an HMAC under a key kept in the user's
configuration folder (``$LONGTAIL_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/longtail``, else ``~/.config/longtail``). A manifest that
is not sealed, sealed elsewhere or edited since is held to its own folder
unless the user opts in with ``allow_outside_root=True``
(``--allow-outside-root``).

The seal covers the stored folder and the path column (or the cache rows), so
neither can be changed without losing it. It is a check of origin, not a
secret: it keeps a downloaded manifest from widening its own trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets

import numpy as np
import pyarrow as pa

__all__ = ["seal_manifest", "is_sealed_manifest", "is_inside", "strings_digest"]

_KEY_NAME = "manifest.key"
_KEY_BYTES = 32


def _config_dir() -> str:
    folder = os.environ.get("LONGTAIL_CONFIG_DIR")
    if folder:
        return folder
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "longtail")


def _read_key(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            key = f.read(_KEY_BYTES + 1)
    except OSError:
        return None
    return key if len(key) == _KEY_BYTES else None


def _key(create: bool) -> bytes | None:
    """The user's sealing key; made on first use when ``create`` (None if it cannot be)."""
    path = os.path.join(_config_dir(), _KEY_NAME)
    key = _read_key(path)
    if key is not None or not create:
        return key
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(_KEY_BYTES))
        try:
            os.link(tmp, path)  # atomic, and never replaces a key another process made
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    except OSError:
        return None
    return _read_key(path)


def strings_digest(array, block: int = 1 << 20) -> bytes:
    """A digest of an Arrow string array: its offsets and characters, no per-string loop.

    The digest covers the offsets (relative to the first, little-endian
    int64) and then the characters, as if the array were one chunk; it is
    fed chunk by chunk and ``block`` offsets at a time, so a chunked column
    of millions of paths is never combined or widened whole.
    """
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    digest = hashlib.sha256()
    spans = []  # (chunk, first offset, last offset) of each non-empty chunk
    start = 0  # characters before the current chunk
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        wide = pa.types.is_large_string(chunk.type) or pa.types.is_large_binary(chunk.type)
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if wide else np.int32)
        offsets = offsets[chunk.offset:chunk.offset + len(chunk) + 1]
        first = int(offsets[0])
        skip = 1 if spans else 0  # a later chunk's first offset is the previous one's end
        for lo in range(skip, len(offsets), block):
            part = offsets[lo:lo + block].astype("<i8")
            part += start - first
            digest.update(part.tobytes())
        spans.append((chunk, first, int(offsets[-1])))
        start += int(offsets[-1]) - first
    if not spans:
        return hashlib.sha256().digest()
    for chunk, first, last in spans:
        digest.update(memoryview(chunk.buffers()[2] or b"")[first:last])
    return digest.digest()


def _message(folder, content: bytes) -> bytes:
    return b"longtail-manifest-1\0" + json.dumps(folder).encode() + b"\0" + content


def _manifest_parts(meta: dict, table: pa.Table) -> tuple[dict, bytes]:
    """What a manifest's seal covers: its stored folders, its paths and cache rows."""
    folders = {"root": meta.get("root"), "cache": meta.get("cache")}
    content = b""
    if "path" in table.column_names:
        content += strings_digest(table.column("path").cast(pa.string()))
    if "row" in table.column_names:
        rows = table.column("row").to_numpy()
        content += np.ascontiguousarray(rows, dtype="<i8").tobytes()
    return folders, content


def seal_manifest(meta: dict, table: pa.Table) -> str | None:
    """This user's seal of a manifest's stored folders and rows (None without a key)."""
    return seal(*_manifest_parts(meta, table))


def is_sealed_manifest(meta: dict, table: pa.Table) -> bool:
    """Whether a manifest read back carries this user's seal of what it stores now."""
    return is_sealed(meta, *_manifest_parts(meta, table))


def seal(folder, content: bytes) -> str | None:
    """The seal of a stored folder and a digest of what it holds (None without a key)."""
    key = _key(create=True)
    if key is None:
        return None
    return hmac.new(key, _message(folder, content), hashlib.sha256).hexdigest()


def is_sealed(meta: dict, folder, content: bytes) -> bool:
    """Whether ``meta["seal"]`` is this user's seal of ``folder`` and ``content``."""
    stored = meta.get("seal")
    key = _key(create=False)
    if not isinstance(stored, str) or key is None:
        return False
    expected = hmac.new(key, _message(folder, content), hashlib.sha256).hexdigest()
    return hmac.compare_digest(stored, expected)


def is_inside(path: str, folder: str) -> bool:
    """Whether normalised ``path`` is ``folder`` or lies under it (by the text)."""
    path, folder = os.path.normpath(path), os.path.normpath(folder)
    return path == folder or path.startswith(os.path.join(folder, ""))
