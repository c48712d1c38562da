"""Index a folder with one sub-folder per class, without reading a pixel.

Rules (documented in the README and ``Dataset.from_directory``):

- Class names are the sub-folder names, sorted with Python's ``sorted`` (as
  Keras' ``image_dataset_from_directory`` sorts them). Hidden sub-folders
  (names starting with ``.``) are not classes.
- Files are found recursively inside each class folder; hidden files and
  folders are skipped; only the accepted extensions count (case-insensitive).
- Symbolic links are skipped (and counted in a warning) unless
  ``follow_symlinks=True``; followed folders are entered at most once, so a
  link loop cannot recurse, and never from inside another class folder (a
  class folder that leads to the top folder or to another class stays empty,
  with a warning). Links that dangle or loop are counted in a warning.
- Files at the top level are ignored with a warning.
- An empty class folder stays a class (so class indices agree with Keras) with
  zero samples, and a warning names it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from longtail.errors import DataError

__all__ = ["DEFAULT_EXTENSIONS", "scan_directory", "DirectoryScan"]

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff", "npy")


@dataclass
class DirectoryScan:
    """What a scan found: relative paths, their class indices and what was skipped."""

    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    skipped_symlinks: int = 0
    top_level_files: list[str] = field(default_factory=list)


def _normalise_extensions(extensions) -> frozenset[str]:
    if isinstance(extensions, str):
        extensions = [extensions]
    return frozenset(e.lower().lstrip(".") for e in extensions)


def _walk_class(
    root: str,
    class_dir: str,
    extensions: frozenset[str],
    follow_symlinks: bool,
    seen: set,
    counters: dict,
) -> list[str]:
    """Relative paths (``class/sub/file``) of the accepted files under one class."""
    found = []
    stack = [class_dir]  # with follow_symlinks its own key is already in `seen`
    while stack:
        rel = stack.pop()
        try:
            entries = os.scandir(os.path.join(root, rel))
        except OSError as e:
            warnings.warn(f"cannot list folder {os.path.join(root, rel)}: {e.strerror}",
                          stacklevel=4)
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name[0] == ".":
                    continue
                if entry.is_symlink():
                    if not follow_symlinks:
                        counters["symlinks"] += 1
                        continue
                    try:
                        st = entry.stat()  # follows the link; fails if it dangles or loops
                    except OSError:
                        counters["broken"] += 1
                        continue
                    if os.path.isdir(entry.path):
                        key = (st.st_dev, st.st_ino)
                        if key not in seen:
                            seen.add(key)
                            stack.append(rel + "/" + name)
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    if follow_symlinks:  # a link elsewhere may lead back here
                        st = entry.stat(follow_symlinks=False)
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    stack.append(rel + "/" + name)
                    continue
                dot = name.rfind(".")
                if dot > 0 and name[dot + 1:].lower() in extensions:
                    found.append(rel + "/" + name)
    found.sort()
    return found


def _warn_links(path: str, counters: dict) -> None:
    if counters["symlinks"]:
        warnings.warn(
            f"{path}: skipped {counters['symlinks']} symbolic links; pass "
            "follow_symlinks=True (--follow-symlinks) to follow them",
            stacklevel=4,
        )
    if counters["broken"]:
        warnings.warn(
            f"{path}: skipped {counters['broken']} symbolic links that dangle or loop",
            stacklevel=4,
        )


def list_files(folder: str, *, extensions=DEFAULT_EXTENSIONS,
               follow_symlinks: bool = False) -> list[str]:
    """Paths of the accepted files under ``folder``, by the same rules as indexing.

    Hidden files and folders are skipped, and so are symbolic links unless
    ``follow_symlinks`` (then every folder is entered once), with a warning
    that counts them: ``predict FOLDER`` reads what ``from_directory`` would.
    """
    folder = os.path.abspath(os.fspath(folder))
    counters = {"symlinks": 0, "broken": 0}
    st = os.stat(folder)
    found = _walk_class(folder, ".", _normalise_extensions(extensions), follow_symlinks,
                        {(st.st_dev, st.st_ino)}, counters)
    _warn_links(folder, counters)
    return [os.path.normpath(os.path.join(folder, rel)) for rel in found]


def scan_directory(
    path: str,
    *,
    extensions=DEFAULT_EXTENSIONS,
    follow_symlinks: bool = False,
    class_names: list[str] | None = None,
    progress: bool | None = None,
) -> DirectoryScan:
    """Lists the samples of a folder-per-class tree.

    Args:
        path: The top folder.
        extensions: Accepted file extensions, without the dot, any case.
        follow_symlinks: Whether to follow symbolic links to files and folders.
        class_names: Explicit class list (sub-folder names) and their order;
            by default every non-hidden sub-folder, sorted.
        progress: Show a progress bar (default: only on a terminal).

    Returns:
        A :class:`DirectoryScan`.

    Raises:
        DataError: ``path`` is missing or not a folder, or it has no class
            sub-folders, or a requested class folder is missing.
    """
    from tqdm.auto import tqdm

    root = os.path.abspath(path)
    if not os.path.exists(root):
        raise DataError(f"{path}: no such file or folder")
    if not os.path.isdir(root):
        raise DataError(f"{path}: expected a folder with one sub-folder per class")
    subdirs, top_files, top_links = [], [], 0
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=follow_symlinks):
                subdirs.append(entry.name)
            elif entry.is_file():
                top_files.append(entry.name)
            elif entry.is_symlink() and entry.is_dir():  # a class folder, not followed
                top_links += 1
    subdirs.sort()
    if class_names is not None:
        missing = [c for c in class_names if c not in subdirs]
        if missing:
            raise DataError(f"{path}: no sub-folder for classes {', '.join(missing)}")
        subdirs = list(class_names)
    if not subdirs:
        raise DataError(
            f"{path}: no class sub-folders found; expected one sub-folder per class"
        )
    if top_files:
        shown = ", ".join(sorted(top_files)[:5]) + (" ..." if len(top_files) > 5 else "")
        warnings.warn(
            f"{path}: {len(top_files)} files at the top level are ignored "
            f"(samples must sit in a class sub-folder): {shown}",
            stacklevel=3,
        )
    exts = _normalise_extensions(extensions)
    counters = {"symlinks": top_links, "broken": 0}
    seen: set = {(os.stat(root).st_dev, os.stat(root).st_ino)}
    aliases = []  # class links to the top folder or to a class listed before
    if follow_symlinks:  # no class folder is entered from inside another one
        for name in subdirs:
            st = os.stat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) in seen:
                aliases.append(name)
            seen.add((st.st_dev, st.st_ino))
    all_paths: list[str] = []
    counts = []
    # tqdm's disable=None shows the bar only on a terminal.
    bar = tqdm(subdirs, desc="indexing", unit="class", leave=False,
               disable=None if progress is None else not progress)
    for name in bar:
        files = [] if name in aliases else _walk_class(root, name, exts, follow_symlinks,
                                                          seen, counters)
        all_paths.extend(files)
        counts.append(len(files))
    if aliases:
        warnings.warn(
            f"{path}: class folders that lead to the top folder or to another class folder "
            f"are not entered (kept as classes with zero samples): {', '.join(aliases)}",
            stacklevel=3,
        )
    empty = [c for c, n in zip(subdirs, counts) if n == 0 and c not in aliases]
    if empty:
        warnings.warn(
            f"{path}: class folders with no accepted files (kept as classes with zero "
            f"samples): {', '.join(empty)}",
            stacklevel=3,
        )
    _warn_links(path, counters)
    labels = np.repeat(np.arange(len(subdirs), dtype=np.int32), counts)
    return DirectoryScan(subdirs, all_paths, labels, counters["symlinks"], top_files)
