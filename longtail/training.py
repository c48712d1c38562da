"""``lt.train`` and ``longtail train``: from DATA to a trained model and a run folder.

The run folder holds ``config.json`` (every resolved option), ``history.csv``,
``model.keras``, ``metrics.json`` (validation split, DESIGN.md schema),
``report.html`` with its PNG plots, and ``checkpoints/`` (for ``--resume``:
``epoch-N.keras``, the model and optimizer after N finished epochs, and
``state.json``, which names that file and holds the history and the random
state of the model's augmentation layers, which ``.keras`` files leave out;
with early stopping also ``best-N.npz``, the best weights so far, and the
patience count). Every file is written atomically, so a run killed at any
point leaves either the previous complete file or the new one, never half of
one; ``state.json`` is replaced only after the files it names are on disk.
A resumed run repeats the uninterrupted run exactly (same seed, same data,
same machine and backend); ``--resume`` refuses data whose index changed, and
does nothing for a finished run (``state.json`` says ``finished``). See
docs/reliability.md, "Kill tests".
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import io
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from longtail.errors import ConfigError, DataError

__all__ = ["TrainConfig", "TrainResult", "train", "parse_image_size"]

_STATE = "state.json"
_LAST = "last.keras"  # the checkpoint name of runs written before epoch-N.keras


def parse_image_size(value) -> tuple[int, int] | None:
    """``64`` -> (64, 64); ``"64x48"`` -> (64, 48) as (height, width); a pair as is."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().split("x")
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            sizes = []
        if len(sizes) not in (1, 2):
            raise ConfigError(f"`image_size` must be N or HxW (e.g. 64 or 64x48); got {value!r}")
        value = sizes
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        value = value * 2
    if len(value) != 2 or min(value) < 1 or max(value) > 8192:
        raise ConfigError(f"`image_size` must be 1..8192 pixels per side; got {value}")
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; ``config.json`` is this, resolved.

    See :func:`train` for the meaning of each field.
    """

    balance: str = "none"
    epochs: int = 10
    batch_size: int = 64
    image_size: tuple[int, int] | None = (64, 64)
    color_mode: str = "rgb"
    model: str | None = None
    augment: str = "flip,crop"
    val_split: float = 0.2
    val: str | None = None
    label_mode: str = "int"
    seed: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    early_stopping: int | None = None
    tau: float = 1.0
    gamma: float = 2.0
    beta: float = 0.999
    drw_epoch: int | None = None
    num_workers: int | None = None
    data_options: dict = field(default_factory=dict)
    distribute: bool = False
    strategy_options: dict = field(default_factory=dict)

    def __post_init__(self):
        from longtail.strategies import resolve_strategy, resolve_strategy_options

        resolve_strategy(self.balance)
        resolve_strategy_options(self.strategy_options)
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer; got {value!r}")
        if self.label_mode not in ("int", "categorical"):
            raise ConfigError(f"`label_mode` must be int or categorical; got {self.label_mode!r}")
        if self.color_mode not in ("rgb", "grayscale", "rgba"):
            raise ConfigError(
                f"`color_mode` must be rgb, grayscale or rgba; got {self.color_mode!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"`schedule` must be cosine or constant; got {self.schedule!r}")
        if self.val is None and not 0.0 < self.val_split < 1.0:
            raise ConfigError(
                f"`val_split` must be in (0, 1) when no `val` data is given; got {self.val_split}")
        if not self.learning_rate > 0:
            raise ConfigError(f"`learning_rate` must be > 0; got {self.learning_rate}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ConfigError(f"`early_stopping` must be >= 1 epochs; got {self.early_stopping}")
        from longtail.models import resolve_augment

        resolve_augment(self.augment)

    @property
    def strategy_params(self) -> dict:
        return {"tau": self.tau, "gamma": self.gamma, "beta": self.beta,
                "drw_epoch": self.drw_epoch}

    @property
    def strategy_record(self):
        """The typed parameter record of ``balance``, with ``strategy_options`` applied."""
        from longtail.strategies import resolve_strategy

        return resolve_strategy(self.balance).resolve_params(
            self.strategy_options.get(self.balance))

    def to_json(self) -> dict:
        out = asdict(self)
        out["image_size"] = None if self.image_size is None else list(self.image_size)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: object
    history: dict
    metrics: dict | None
    run_dir: str | None
    config: dict


def _csv(rows: list[dict]) -> str:
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


def _rng_states(model) -> list:
    """The states of the model's seed generators (augmentation, dropout), in order.

    ``model.save`` leaves them out, so a resumed run would redraw the first
    epoch's augmentations; :func:`train` keeps them in ``state.json``.
    """
    return [np.asarray(v.numpy()).tolist() for v in model.variables
            if v.name == "seed_generator_state"]


def _set_rng_states(model, states: list, path: str) -> None:
    variables = [v for v in model.variables if v.name == "seed_generator_state"]
    if len(variables) != len(states):
        raise DataError(f"{path}: holds {len(states)} random states but the model has "
                        f"{len(variables)} seed generators; the checkpoint does not match")
    for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def _early_stopping(patience: int, saved: dict | None = None, best_weights=None):
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


def _load_weights(path: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _checkpoint_callback(run_dir: str, history_rows: list[dict], early=None):
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
            with atomic_path(os.path.join(folder, name), suffix=".keras") as tmp:
                self.model.save(tmp)
            state = {"epochs_done": epoch + 1, "model": name, "rng": _rng_states(self.model),
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
            write_json(os.path.join(folder, _STATE), state)
            write_text(os.path.join(run_dir, "history.csv"), _csv(history_rows))
            _remove_stale_checkpoints(folder, keep=keep)

    return RunCheckpoint()


def _remove_stale_checkpoints(folder: str, keep=()) -> None:
    """Removes checkpoints not named in ``keep``, and temp files a kill left behind."""
    from longtail._io import remove_stale_temps

    for path in glob.glob(os.path.join(folder, "epoch-*.keras")) + glob.glob(
            os.path.join(folder, "best-*.npz")) + [os.path.join(folder, _LAST)]:
        if os.path.basename(path) not in keep and os.path.exists(path):
            os.remove(path)
    remove_stale_temps(folder)


def _fingerprint(ds) -> str:
    """A digest of a dataset's index: class names, labels, paths or rows, weights.

    It tells whether a resumed run sees the data it started with; files
    edited in place under the same name are not detected. Paths count as
    ``Dataset.save`` stores them, so a validation Dataset object matches the
    val.parquet a resumed run reopens.
    """
    ds = ds._rooted()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([ds.kind, ds.class_names]).encode())
    digest.update(np.ascontiguousarray(ds.labels, dtype="<i4").tobytes())
    if ds.features is not None:
        digest.update(np.ascontiguousarray(ds.features, dtype="<f4").tobytes())
    if ds.relative_paths is not None:
        digest.update(_string_bytes(ds.relative_paths))
    if ds.weights is not None:
        digest.update(np.ascontiguousarray(ds.weights, dtype="<f4").tobytes())
    if ds.cache_rows is not None:
        digest.update(np.ascontiguousarray(ds.cache_rows, dtype="<i8").tobytes())
    return digest.hexdigest()


def _string_bytes(array) -> bytes:
    """An Arrow string array as its offsets and characters (no per-string loop)."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if wide else np.int32)
    offsets = offsets[array.offset:array.offset + len(array) + 1].astype("<i8")
    chars = memoryview(array.buffers()[2] or b"")[offsets[0]:offsets[-1]]
    return (offsets - offsets[0]).tobytes() + bytes(chars)


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a valid {what} ({e}); start a new run in another "
                        "folder") from e


def _resume_point(out: str | None) -> tuple[dict, dict | None]:
    """``config.json`` and ``checkpoints/state.json`` (None before the first epoch ended)."""
    if out is None:
        raise ConfigError("--resume needs the run folder (--out) to continue")
    if not os.path.isdir(out):
        raise ConfigError(f"--resume: {out}: no such run folder; start the run without --resume")
    config_path = os.path.join(out, "config.json")
    if not os.path.exists(config_path):
        raise ConfigError(f"--resume: {out} holds no run (no config.json: it was stopped "
                          "before training began); start it again without --resume")
    run_config = _read_json(config_path, "run config")
    state_path = os.path.join(out, "checkpoints", _STATE)
    state = _read_json(state_path, "checkpoint state") if os.path.exists(state_path) else None
    return run_config, state


def _check_same_data(out: str, run_config: dict, train_ds, val_ds) -> None:
    saved = run_config.get("data_fingerprint")
    if saved is None:  # a run folder written before fingerprints
        return
    now = {"train": _fingerprint(train_ds), "val": _fingerprint(val_ds)}
    if now != saved:
        then = f"{sum(run_config['train_counts'])} + {sum(run_config['val_counts'])}"
        raise DataError(
            f"--resume: the data has changed since the run in {out} started ({then} training "
            f"+ validation samples then, {len(train_ds)} + {len(val_ds)} now, or other files "
            "or labels); resume with the same DATA, or start a new run in another folder")


def _open_data(config: TrainConfig, data, val_data):
    from longtail.dataset import Dataset

    ds = Dataset.open(data, **config.data_options)
    if (ds.class_counts > 0).sum() < 2:
        raise DataError(f"{data}: found {(ds.class_counts > 0).sum()} class with samples; "
                        "at least 2 are needed")
    if val_data is not None:
        val = val_data if isinstance(val_data, Dataset) else Dataset.open(
            val_data, **config.data_options, class_names=ds.class_names)
        if val.class_names != ds.class_names:
            raise DataError(f"{config.val}: classes {val.class_names} differ from the "
                            f"training classes {ds.class_names}")
        return ds, val
    train_ds, val_ds = ds.split(val=config.val_split, seed=config.seed)
    return train_ds, val_ds


def _build(config: TrainConfig, train_ds, strategy, steps_per_epoch: int):
    import keras

    from longtail.models import build_model, load_user_model, resolve_augment

    counts = train_ds.class_counts
    k = train_ds.num_classes
    bias = strategy.output_bias(counts, config.strategy_params)
    if config.model and (config.model.endswith(".keras") or os.path.sep in config.model):
        model = load_user_model(config.model, k)
    else:
        name = config.model or ("mlp" if train_ds.kind == "features" else "small-cnn")
        if train_ds.kind == "features":
            features = train_ds.features
            model = build_model(name, (features.shape[1],), k, output_bias=bias,
                                seed=config.seed, mean=features.mean(axis=0),
                                variance=np.maximum(features.var(axis=0), 1e-12))
        else:  # image files or a cache of decoded images
            channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[config.color_mode]
            model = build_model(name, (*config.image_size, channels), k, output_bias=bias,
                                seed=config.seed, augment=resolve_augment(config.augment))
    total = strategy.stages(config.epochs, config.strategy_record)[0] * steps_per_epoch
    lr = config.learning_rate
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(total, 1), warmup_target=None)
    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=strategy.first_weight_decay(
        config.weight_decay, config.strategy_record))
    loss = strategy.loss(counts, config.strategy_params)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def train(data, out: str | None = None, *, resume: bool = False, verbose="auto",
          callbacks: list | None = None, cluster=None, **options) -> TrainResult:
    """Trains a classifier on DATA with a balancing strategy.

    Args:
        data: Any DATA form (folder, table, manifest, or a Dataset).
        out: Run folder; None trains without writing files.
        resume: Continue the run in ``out`` from its last checkpoint (its
            ``config.json`` options are used) to the planned epochs.
        verbose: Keras verbosity (``"auto"``, 0, 1 or 2).
        callbacks: Extra Keras callbacks, run after longtail's own (so they
            see ``val_balanced_accuracy`` and ``val_macro_f1``).
        cluster: With ``distribute=True``, the multi-process job to join: a
            :class:`longtail.distribute.Cluster` or a dict with
            ``coordinator``, ``num_processes``, ``process_id``; unset fields
            come from the environment (see :mod:`longtail.distribute`).
        **options: :class:`TrainConfig` fields: ``balance`` (none,
            class-weight, effective-weight, resample, sqrt-resample, focal,
            logit-adjust, balanced-softmax, ldam-drw), ``epochs``,
            ``batch_size``, ``image_size`` (N, "HxW" or a pair), ``color_mode``
            (rgb, grayscale, rgba), ``model`` (small-cnn, resnet, mlp or a
            .keras path), ``augment`` ("flip,crop", "crop", "none"),
            ``val_split`` or ``val`` (DATA), ``label_mode`` (int,
            categorical), ``seed``, ``learning_rate``, ``weight_decay``,
            ``schedule`` (cosine, constant), ``early_stopping`` (patience in
            epochs on validation balanced accuracy), ``tau``, ``gamma``,
            ``beta``, ``drw_epoch``, ``num_workers``, ``data_options``
            (``label_column``, ``path_column``, ``weight_column``, ...), and
            ``distribute`` (JAX backend: data parallel over every device of
            every process; ``batch_size`` is then per process, and only
            process 0 writes ``out``; see docs/scaling.md).

    Returns:
        A :class:`TrainResult` with the model, history and validation metrics.

    Example:
        >>> result = train("photos/", "runs/lt", balance="logit-adjust",
        ...                epochs=5)  # doctest: +SKIP
    """
    state = None
    if resume:  # refusals come before Keras is imported, in a fraction of a second
        saved_config, state = _resume_point(out)
        if state is not None and state.get("finished"):
            return _finished_run(out, saved_config, state)
        config = TrainConfig.from_json(saved_config["options"])
    else:
        val_data = options.get("val")
        if val_data is not None and not isinstance(val_data, (str, os.PathLike)):
            options = dict(options, val=repr(val_data))  # config.json keeps a description
        config = TrainConfig(**options)
        if out is not None and os.path.exists(os.path.join(out, "config.json")):
            raise ConfigError(f"--out {out} already holds a run; pass --resume to continue "
                              "it, or choose another folder")

    import keras

    from longtail._io import write_json
    from longtail.callbacks import PerClassMetrics
    from longtail.strategies import resolve_strategy

    placement = None
    if config.distribute:  # before any JAX work and before the model is built
        from longtail.distribute import setup

        placement = setup(cluster, batch_size=config.batch_size)
    keras.utils.set_random_seed(config.seed)
    strategy = resolve_strategy(config.balance)
    first_epochs = strategy.stages(config.epochs, config.strategy_record)[0]
    if resume:
        val_data = config.val
        if val_data is not None and not os.path.exists(val_data):
            # val was an in-memory Dataset (config.json holds its description):
            # the run saved it as val.parquet when it started.
            val_data = os.path.join(out, "val.parquet")
    train_ds, val_ds = _open_data(config, data, val_data)
    if train_ds.kind == "cache" and tuple(config.image_size) != train_ds.cache.image_size:
        # A cache holds one image size: train at it rather than fail on the shape.
        warnings.warn(f"{data}: the cache holds {train_ds.cache.image_size} images; training "
                      f"at that size instead of image_size {config.image_size}", stacklevel=2)
        config = dataclasses.replace(config, image_size=train_ds.cache.image_size)
    loader_kw = dict(label_mode=config.label_mode, num_workers=config.num_workers)
    if train_ds.kind != "features":
        loader_kw.update(image_size=config.image_size, color_mode=config.color_mode)
    batch_size = config.batch_size
    if placement is not None and len(train_ds) < batch_size * placement.num_processes:
        # Each process takes its shard of the plan; a smaller batch would also
        # have to split evenly over its devices, so say what to change instead.
        raise ConfigError(
            f"the training data has {len(train_ds)} samples, fewer than one global batch "
            f"(batch_size {batch_size} x {placement.num_processes} processes); lower "
            "--batch-size")
    if len(train_ds) < batch_size:
        warnings.warn(f"the training data has {len(train_ds)} samples, fewer than "
                      f"batch_size {batch_size}; using batches of {len(train_ds)}", stacklevel=2)
        batch_size = len(train_ds)
    train_loader = train_ds.loader(
        batch_size=batch_size, sampling=strategy.sampling,
        class_weight=strategy.class_weight, seed=config.seed,
        shard=placement.shard if placement else (0, 1), **loader_kw)
    val_loader = val_ds.loader(batch_size=config.batch_size, sampling="sequential",
                               **loader_kw)
    if placement is not None:  # the global plan needs the same data everywhere
        placement.check_same("data", train_ds.labels, val_ds.labels)

    if resume:
        _check_same_data(out, saved_config, train_ds, val_ds)
    history_rows: list[dict] = []
    initial_epoch, best_weights = 0, None
    if state is not None:
        initial_epoch, history_rows = state["epochs_done"], state["history"]
        from longtail.models import load_model

        checkpoint = os.path.join(out, "checkpoints", state.get("model", _LAST))
        if not os.path.exists(checkpoint):
            raise DataError(f"--resume: {checkpoint}: the checkpoint named by state.json is "
                            "missing; start a new run in another folder")
        model = load_model(checkpoint)
        if "rng" in state:  # absent from runs written before it was kept
            _set_rng_states(model, state["rng"], checkpoint)
        if state.get("early_stopping"):
            best_weights = _load_weights(os.path.join(out, "checkpoints",
                                                      state["early_stopping"]["weights"]))
    else:
        model = _build(config, train_ds, strategy, len(train_loader))

    run_config = {
        "options": config.to_json(), "data": str(data), "strategy": strategy.name,
        "class_names": train_ds.class_names, "train_counts": train_ds.class_counts.tolist(),
        "val_counts": val_ds.class_counts.tolist(), "priors": train_ds.priors.tolist(),
        "keras_backend": keras.backend.backend(), "keras_version": keras.__version__,
        "steps_per_epoch": len(train_loader),
        "data_fingerprint": {"train": _fingerprint(train_ds), "val": _fingerprint(val_ds)},
    }
    if placement is not None:
        run_config["distributed"] = {
            "processes": placement.num_processes, "devices": placement.devices,
            "global_batch_size": placement.global_batch(config.batch_size)}
        if placement.process_id != 0:
            out = None  # process 0 writes the run folder
    if out is not None and not resume:
        os.makedirs(out, exist_ok=True)
        val_ds.save(os.path.join(out, "val.parquet"))  # for evaluate --tune-tau
        write_json(os.path.join(out, "config.json"), run_config)

    extra_callbacks = list(callbacks or [])
    callbacks = [PerClassMetrics(val_loader, class_names=train_ds.class_names)]
    if placement is not None:  # validation on this process's undistributed copy
        callbacks = [placement.validation(callbacks, val_loader)]
    if strategy.callbacks is not None:
        callbacks += strategy.callbacks(train_ds.class_counts, config.epochs,
                                        config.strategy_params)
    early = None
    if config.early_stopping:
        early = _early_stopping(config.early_stopping,
                                state.get("early_stopping") if state else None, best_weights)
        callbacks.append(early)
    if out is not None:
        checkpoint = _checkpoint_callback(out, history_rows, early)
        callbacks.append(checkpoint if placement is None else placement.on_one_device(checkpoint))
    callbacks += extra_callbacks

    if hasattr(train_loader, "set_epoch"):
        train_loader.set_epoch(initial_epoch)
    started = time.perf_counter()
    fit_history = {}
    if state is not None and (state.get("stopped") or initial_epoch >= first_epochs):
        if best_weights is not None:  # as EarlyStopping did when training ended
            model.set_weights(best_weights)
    elif initial_epoch < first_epochs:
        fit_history = model.fit(train_loader, epochs=first_epochs,
                  validation_data=val_loader if placement is None else None,
                  initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose).history
    seconds = time.perf_counter() - started
    if placement is not None:
        model = placement.local_model(model)  # one-device copy; the distribution ends
    if strategy.second_stage is not None:  # classifier-level methods (longtail.decoupled)
        from longtail.decoupled import run_second_stage

        run_config["second_stage"], stage_rows = run_second_stage(
            strategy, config, model, train_ds, val_loader, batch_size=batch_size,
            loader_kw=loader_kw, callbacks=extra_callbacks, verbose=verbose)
        history_rows.extend(stage_rows)
        for row in stage_rows:
            for key, value in row.items():
                fit_history.setdefault(key, []).append(value)
        seconds = time.perf_counter() - started

    from longtail.evaluation import evaluate

    report = evaluate(model, val_loader, class_names=train_ds.class_names,
                      train_counts=train_ds.class_counts.tolist())
    metrics = report.to_dict()
    if "second_stage" in run_config:
        metrics["second_stage"] = run_config["second_stage"]
    metrics["train_seconds"] = seconds if not history_rows else float(
        sum(row.get("epoch_seconds", 0.0) for row in history_rows))  # resumed runs included
    unreadable = {e.path: e for loader in (train_loader, val_loader)
                  for e in getattr(loader, "errors", ())}
    if unreadable:
        shown = "; ".join(str(e) for e in list(unreadable.values())[:5])
        warnings.warn(f"{len(unreadable)} unreadable files were skipped (training drew "
                      "another sample of the same class; validation metrics leave them "
                      f"out): {shown}{' ...' if len(unreadable) > 5 else ''}", stacklevel=2)
    if out is not None:
        _finish_run(out, model, report, run_config, history_rows)
    if placement is not None:
        placement.barrier("longtail: run folder written")  # process 0 may still write
    history = {k: [float(v) for v in values] for k, values in fit_history.items()}
    if out is not None:  # the whole run, epochs before a resume included
        history = {}
        for row in history_rows:
            for key, value in row.items():
                history.setdefault(key, []).append(value)
    return TrainResult(model, history, metrics, out, run_config)


def _finish_run(out: str, model, report, run_config: dict, history_rows: list[dict]) -> None:
    """Writes model, metrics, history and report, then marks the run finished."""
    from longtail._io import atomic_path, remove_stale_temps, write_json, write_text
    from longtail.report import write_report

    with atomic_path(os.path.join(out, "model.keras"), suffix=".keras") as tmp:
        model.save(tmp)
    metrics = report.to_dict()
    if "second_stage" in run_config:  # what a classifier-level method chose
        metrics["second_stage"] = run_config["second_stage"]
        write_json(os.path.join(out, "config.json"), run_config)
    write_json(os.path.join(out, "metrics.json"), metrics)
    history_csv = os.path.join(out, "history.csv")
    if history_rows:  # a kill may have come between state.json and history.csv
        write_text(history_csv, _csv(history_rows))
    write_report(out, report.to_dict(),
                 history_csv=history_csv if os.path.exists(history_csv) else None,
                 config=run_config, train_counts=run_config["train_counts"],
                 title=f"longtail run: {run_config['strategy']}")
    folder = os.path.join(out, "checkpoints")
    write_json(os.path.join(folder, _STATE),
               {"finished": True, "epochs_done": len(history_rows), "history": history_rows})
    _remove_stale_checkpoints(folder)
    remove_stale_temps(out)


def _finished_run(out: str, run_config: dict, state: dict) -> TrainResult:
    """``--resume`` of a finished run: nothing to do; the result as written."""
    from longtail.models import load_model

    warnings.warn(f"{out}: the run is already finished ({state['epochs_done']} epochs); "
                  "nothing to resume", stacklevel=3)
    metrics = _read_json(os.path.join(out, "metrics.json"), "metrics file")
    history = {}
    for row in state["history"]:
        for key, value in row.items():
            history.setdefault(key, []).append(value)
    return TrainResult(load_model(os.path.join(out, "model.keras")), history, metrics, out,
                       run_config)
