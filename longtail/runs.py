"""The run folder contract: one reader, one lock, one commit rule.

Every command that writes a folder (``train``, ``compare``, ``evaluate``,
``split``, ``cache``) holds :func:`locked` on it: an exclusive ``flock`` on
``DIR/.longtail.lock``, which holds the pid, host and command of its holder.
The kernel drops the lock when its process dies, so the lock of a killed
command is stale by construction. Under the lock, the temporary files and
unfinished sets that a killed command left are cleaned up (never before it:
concurrent processes must not delete each other's files).

Files that belong together (``split``'s parquet files, ``evaluate``'s
metrics, report and plots, the end of ``train``) are written with
:func:`commit_set`: into a staging folder, then moved in by a journal
written last, so a folder holds the complete old set or the complete new
one. A journal a kill left behind is carried out by the next writer or
reader (:func:`recover`).

Run files are read through :func:`read_json`: a file that is not JSON,
lacks a key or has a key of the wrong type is one :class:`DataError` that
names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile

from longtail.errors import ConfigError, DataError, LongtailError

__all__ = ["LockedError", "locked", "commit_set", "recover", "read_json", "read_config",
           "read_state", "model_and_config", "check_model", "check_out_outside_data", "load_model",
           "CONFIG", "STATE", "LOCK", "JOURNAL"]

CONFIG = "config.json"
STATE = os.path.join("checkpoints", "state.json")
LOCK = ".longtail.lock"
JOURNAL = ".longtail-commit.json"
_STAGE = ".longtail-stage-"

# The keys each run file must hold, with their JSON types.
_CONFIG_KEYS = {"options": dict, "class_names": list, "train_counts": list,
                "val_counts": list, "strategy": str}
_STATE_KEYS = {"epochs_done": int, "history": list}


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer",
          bool: "true or false"}


class LockedError(LongtailError):
    """Another process is writing the folder."""


# ------------------------------------------------------------------- reading
def read_json(path: str, what: str, keys: dict | None = None) -> dict:
    """Reads a JSON object from ``path``, checking ``keys`` (name -> type).

    Raises:
        DataError: naming ``path`` when it is not valid JSON, not an object,
            lacks a key or holds a key of another type.
    """
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a valid {what} ({e})") from e
    if not isinstance(value, dict):
        raise DataError(f"{path}: not a valid {what} (expected a JSON object; got "
                        f"{type(value).__name__})")
    for key, kind in (keys or {}).items():
        if key not in value:
            raise DataError(f"{path}: not a valid {what} (no {key!r} key)")
        if not isinstance(value[key], kind) or (kind is int and isinstance(value[key], bool)):
            raise DataError(f"{path}: not a valid {what} (`{key}` must be "
                            f"{_KINDS[kind]}; got {type(value[key]).__name__})")
    return value


def read_config(run_dir: str) -> dict:
    """A run folder's ``config.json``, checked."""
    path = os.path.join(run_dir, CONFIG)
    config = read_json(path, "run config", _CONFIG_KEYS)
    if len(config["train_counts"]) != len(config["class_names"]):
        raise DataError(f"{path}: not a valid run config ({len(config['class_names'])} "
                        f"class names but {len(config['train_counts'])} train counts)")
    return config


def read_state(run_dir: str) -> dict | None:
    """``checkpoints/state.json``, checked; None before the first epoch ended."""
    path = os.path.join(run_dir, STATE)
    if not os.path.exists(path):
        return None
    return read_json(path, "checkpoint state", _STATE_KEYS)


def model_and_config(model_path: str) -> tuple[str, dict | None]:
    """The .keras file for MODEL (a file or a run folder) and its run config, if any."""
    if os.path.isdir(model_path):
        model_path = os.path.join(model_path, "model.keras")
    if not os.path.isfile(model_path):
        raise DataError(f"{model_path}: no such model file (expected a .keras file or a "
                        "run folder holding model.keras)")
    run_dir = os.path.dirname(os.path.abspath(model_path))
    recover(run_dir)
    if not os.path.isfile(os.path.join(run_dir, CONFIG)):
        return model_path, None
    return model_path, read_config(run_dir)


def check_model(model, config: dict | None, path: str) -> None:
    """Refuses a model whose output layer disagrees with its run's class list."""
    if config is None:
        return
    outputs = model.outputs[0].shape[-1]
    classes = len(config["class_names"])
    if outputs != classes:
        raise DataError(f"{path}: the model has {outputs} outputs but its config.json names "
                        f"{classes} classes; the run folder is inconsistent")


def check_out_outside_data(out, data, flag: str = "--out") -> None:
    """Refuses an output folder equal to or inside a DATA folder.

    Files written there would become samples (a class folder of PNGs) and
    change the data under a resumed run.
    """
    if not isinstance(data, (str, os.PathLike)) or not os.path.isdir(data):
        return
    root, source = os.path.realpath(os.fspath(out)), os.path.realpath(os.fspath(data))
    if os.path.commonpath([root, source]) == source:
        raise ConfigError(f"{flag} {out}: is inside DATA {data}; files written there would "
                          "become part of the data; choose a folder outside DATA")


# ------------------------------------------------------------------- locking
_held: dict[str, list] = {}  # real folder path -> [file object, depth]


@contextlib.contextmanager
def locked(folder, command: str, *, lock_name: str = LOCK, clean: bool = True):
    """Holds the exclusive lock of ``folder`` (created if needed) for ``command``.

    Re-entrant within a process. Under the lock (with ``clean``), an
    unfinished commit is carried out and temporary files of killed writers
    are removed. ``lock_name`` names a narrower lock: the parts of a cache,
    built side by side, each lock their own.

    Raises:
        LockedError: another process holds the lock; names it and the holder.
    """
    folder = os.fspath(folder)
    created = not os.path.exists(folder)
    os.makedirs(folder, exist_ok=True)
    key = os.path.join(os.path.realpath(folder), lock_name)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    handle = _acquire(folder, lock_name, command)
    _held[key] = [handle, 1]
    try:
        if clean:
            _clean(folder)
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, lock_name))  # before unlocking: see _acquire
        handle.close()
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # a refused command leaves no empty folder behind


def _acquire(folder: str, lock_name: str, command: str):
    path = os.path.join(folder, lock_name)
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LockedError(f"{folder}: in use by {holder}; wait for it to end or choose "
                              "another folder") from None
        # The holder removes the file before unlocking: if ours was removed
        # meanwhile, we locked a file nobody else will see; open it again.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({command})\n")
    handle.flush()
    return handle


def _clean(folder: str) -> None:
    """Carries out an unfinished commit, then removes what killed writers left."""
    from longtail._io import remove_stale_temps

    recover(folder)
    remove_stale_temps(folder)
    for entry in os.scandir(folder):
        if entry.name.startswith(_STAGE) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


# ------------------------------------------------------------------ committing
class _Stage:
    """Where a set is written before it is committed (see :func:`commit_set`)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.dir = tempfile.mkdtemp(prefix=_STAGE, dir=folder)
        self._beside: dict[str, str] = {}  # final relative path -> temp path beside it

    def path(self, relative: str) -> str:
        """A temporary path in the folder of ``relative`` itself, for files whose
        content depends on where they sit (manifests store relative paths)."""
        target = os.path.join(self.folder, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".",
                                   suffix=".stage", dir=os.path.dirname(target))
        os.close(fd)
        self._beside[relative] = tmp
        return tmp

    def moves(self) -> list[list[str]]:
        out = []
        for parent, _, files in os.walk(self.dir):
            for name in files:
                source = os.path.relpath(os.path.join(parent, name), self.folder)
                out.append([source, os.path.relpath(os.path.join(parent, name), self.dir)])
        out += [[os.path.relpath(tmp, self.folder), relative]
                for relative, tmp in self._beside.items()]
        return sorted(out, key=lambda move: move[1])

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        for tmp in self._beside.values():
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)


@contextlib.contextmanager
def commit_set(folder, remove=()):
    """Yields a stage; what is written to it replaces ``folder``'s files at once.

    Write into ``stage.dir`` (its sub-folders kept), or to ``stage.path(name)``
    for a file that must be written in its final folder. On success a journal
    naming every move is written, then carried out by :func:`recover`; the
    names in ``remove`` that the new set lacks are deleted. A kill before the
    journal leaves the old set (and temp files the next writer removes); a
    kill after it leaves a journal that the next writer or reader finishes.
    On an exception ``folder`` is unchanged. Hold :func:`locked` on ``folder``.
    """
    from longtail._io import write_json

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    stage = _Stage(folder)
    try:
        yield stage
        moves = stage.moves()
        written = {target for _, target in moves}
        write_json(os.path.join(folder, JOURNAL),
                   {"stage": os.path.basename(stage.dir), "moves": moves,
                    "remove": [r for r in remove if r not in written]})
    except BaseException:
        stage.discard()
        raise
    recover(folder)


def recover(folder) -> bool:
    """Carries out the commit journal in ``folder``, if one is there; True if one was."""
    folder = os.fspath(folder)
    path = os.path.join(folder, JOURNAL)
    if not os.path.exists(path):
        return False
    journal = read_json(path, "commit journal", {"stage": str, "moves": list, "remove": list})
    for source, target in journal["moves"]:
        source, target = os.path.join(folder, source), os.path.join(folder, target)
        if os.path.exists(source):  # else moved before a kill, or by a concurrent reader
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.replace(source, target)
    for relative in journal["remove"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, relative))
    _sync(folder)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    shutil.rmtree(os.path.join(folder, journal["stage"]), ignore_errors=True)
    return True


def _sync(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_model(path: str):
    """Loads a ``.keras`` file; a damaged or foreign file is one DataError naming it."""
    from longtail.models import load_model as load

    try:
        return load(path)
    except LongtailError:  # already names the file
        raise
    except Exception as e:  # Keras raises many kinds for a bad file
        raise DataError(f"{path}: cannot load the model: {str(e).splitlines()[0]}") from e
