"""Checkpoints of a run folder: saving each epoch, resuming, and checking the data.

``checkpoints/epoch-N.keras`` holds the model and optimizer after N finished
epochs; ``checkpoints/state.json`` names it and holds the history, the random
state of the model's augmentation layers (which ``.keras`` files leave out)
and, with early stopping, the patience count and ``best-N.npz``. ``state.json``
is replaced only after the files it names are on disk.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import time
import zipfile

import numpy as np

from longtail.dataset import fingerprint  # noqa: F401 (the one home; re-exported)
from longtail.errors import ConfigError, DataError

__all__ = ["STATE", "check_same_data", "checkpoint_callback", "csv_text", "early_stopping",
           "fingerprint", "load_weights", "stop_on_divergence", "remove_stale_checkpoints",
           "resume_point", "rng_states", "set_rng_states"]

STATE = "state.json"


def csv_text(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    for row in rows[1:]:
        keys += [k for k in row if k not in keys]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def rng_states(model) -> list:
    """The states of the model's seed generators (augmentation, dropout), in order.

    ``model.save`` leaves them out, so a resumed run would redraw the first
    epoch's augmentations; :func:`train` keeps them in ``state.json``.
    """
    return [np.asarray(v.numpy()).tolist() for v in model.variables
            if v.name == "seed_generator_state"]


def set_rng_states(model, states: list, path: str) -> None:
    variables = [v for v in model.variables if v.name == "seed_generator_state"]
    if len(variables) != len(states):
        raise DataError(f"{path}: holds {len(states)} random states but the model has "
                        f"{len(variables)} seed generators; the checkpoint does not match")
    for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def early_stopping(patience: int, saved: dict | None = None, best_weights=None):
    """EarlyStopping on validation balanced accuracy that carries on after a resume.

    ``saved`` (from ``state.json``) and ``best_weights`` restore its patience
    count, best value and best weights, which a fresh callback would forget.
    """
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if saved is not None:
                self.wait, self.best = saved["wait"], saved["best"]
                self.best_epoch, self.best_weights = saved["best_epoch"], best_weights

    return ResumableEarlyStopping(monitor="val_balanced_accuracy", mode="max",
                                  patience=patience, restore_best_weights=True)


def stop_on_divergence(learning_rate: float):
    """Stops a run whose training loss is no longer finite, naming the epoch.

    It runs before the checkpoint, so the last checkpoint stays a finite one.
    """
    import keras

    class StopOnDivergence(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                raise DataError(
                    f"training diverged in epoch {epoch + 1} (loss {float(loss)}); lower "
                    f"--learning-rate (now {learning_rate:g}), check the data for extreme "
                    "values, or try another --balance")

    return StopOnDivergence()


def load_weights(path: str) -> list[np.ndarray]:
    """The best weights ``best-N.npz`` holds; a damaged file is a DataError naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"--resume: {path}: cannot read the best weights ({e}); start a new "
                        "run in another folder") from e


def checkpoint_callback(run_dir: str, history_rows: list[dict], early=None):
    """Saves model + optimizer, then the epoch counter and history, atomically.

    The model goes to a new ``epoch-N.keras`` (and, with early stopping, the
    best weights so far to ``best-N.npz``); ``state.json`` then names them,
    and only then are older checkpoints removed. A kill between two steps
    leaves ``state.json`` naming complete files of its own epoch count.
    """
    import keras

    from longtail._io import atomic_path, write_json, write_text

    folder = os.path.join(run_dir, "checkpoints")

    class RunCheckpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch}
            row.update({k: float(v) for k, v in (logs or {}).items()})
            row["epoch_seconds"] = time.perf_counter() - self._started
            history_rows.append(row)
            name = f"epoch-{epoch + 1}.keras"
            from longtail._seed import tensorflow_left_unloaded

            with atomic_path(os.path.join(folder, name), suffix=".keras") as tmp, \
                    tensorflow_left_unloaded():
                self.model.save(tmp)
            state = {"epochs_done": epoch + 1, "model": name, "rng": rng_states(self.model),
                     "stopped": bool(self.model.stop_training), "history": history_rows}
            keep = [name]
            if early is not None and early.best_weights is not None:
                best = f"best-{early.best_epoch + 1}.npz"
                if early.best_epoch == epoch:  # this epoch's weights are the best so far
                    with atomic_path(os.path.join(folder, best), suffix=".npz") as tmp:
                        np.savez(tmp, *early.best_weights)
                state["early_stopping"] = {"wait": early.wait, "best": float(early.best),
                                           "best_epoch": early.best_epoch, "weights": best}
                keep.append(best)
            write_json(os.path.join(folder, STATE), state)
            write_text(os.path.join(run_dir, "history.csv"), csv_text(history_rows))
            remove_stale_checkpoints(folder, keep=keep)

    return RunCheckpoint()


def remove_stale_checkpoints(folder: str, keep=()) -> None:
    """Removes checkpoints not named in ``keep``, and temp files a kill left behind."""
    from longtail._io import remove_stale_temps

    for path in glob.glob(os.path.join(folder, "epoch-*.keras")) + glob.glob(
            os.path.join(folder, "best-*.npz")):
        if os.path.basename(path) not in keep and os.path.exists(path):
            os.remove(path)
    remove_stale_temps(folder)


def resume_point(out: str | None) -> tuple[dict, dict | None]:
    """``config.json`` and ``checkpoints/state.json`` (None before the first epoch ended)."""
    from longtail import runs

    if out is None:
        raise ConfigError("--resume needs the run folder (--out) to continue")
    if not os.path.isdir(out):
        raise ConfigError(f"--resume: {out}: no such run folder; start the run without --resume")
    if not os.path.exists(os.path.join(out, runs.CONFIG)):
        raise ConfigError(f"--resume: {out} holds no run (no config.json: it was stopped "
                          "before training began); start it again without --resume")
    run_config = runs.read_config(out)
    if not isinstance(run_config.get("data_fingerprint"), dict):
        raise DataError(f"{os.path.join(out, runs.CONFIG)}: not a valid run config (no "
                        "'data_fingerprint' object); start a new run in another folder")
    state = runs.read_state(out)
    if state is not None and not state.get("finished"):
        runs.read_json(os.path.join(out, runs.STATE), "checkpoint state",
                       {"model": str, "rng": list, "stopped": bool})
    return run_config, state


def check_same_data(out: str, run_config: dict, train_ds, val_ds) -> None:
    saved = run_config["data_fingerprint"]
    now = {"train": fingerprint(train_ds), "val": fingerprint(val_ds)}
    if now != saved:
        then = f"{sum(run_config['train_counts'])} + {sum(run_config['val_counts'])}"
        raise DataError(
            f"--resume: the data has changed since the run in {out} started ({then} training "
            f"+ validation samples then, {len(train_ds)} + {len(val_ds)} now, or other files "
            "or labels); resume with the same DATA, or start a new run in another folder")
