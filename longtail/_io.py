"""Atomic file writes: every file longtail writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile

__all__ = ["atomic_path", "write_text", "write_json", "remove_stale_temps", "csv_cell"]

# What atomic_path names a temporary file: ".NAME." + mkstemp's 8 characters + suffix.
_TEMP = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.[A-Za-z0-9]+")


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp"):
    """Yields a temporary path beside ``path``; renames it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    ``suffix`` ends the temporary name (Keras wants ``.keras``, say).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix,
                               dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and _disk_full(e):
            free = shutil.disk_usage(folder).free
            raise OSError(errno.ENOSPC, f"the disk is full while writing this file "
                                        f"({free / 2**20:.1f} MB free on its device)",
                          path) from e
        raise


def _disk_full(error: OSError) -> bool:
    return error.errno == errno.ENOSPC or "No space left on device" in str(error)


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path: str, obj) -> None:
    """Writes ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def remove_stale_temps(folder: str) -> list[str]:
    """Removes the temporary files that a killed process left in ``folder``.

    Only names that :func:`atomic_path` makes (``.NAME.XXXXXXXX.SUFFIX``) are
    removed, and only when no other process may be writing them: call it
    from the one process that writes ``folder``. Returns the removed paths.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if _TEMP.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    removed.append(entry.path)
    return removed


# First characters that make a spreadsheet run a cell as a formula (OWASP's list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    """A text cell for a CSV file that a spreadsheet shows as text, never runs.

    Cells starting with ``= + - @``, a tab or a carriage return get a leading
    single quote, as OWASP's CSV-injection advice says; numbers written by
    longtail are passed as numbers and stay as they are.
    """
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text
