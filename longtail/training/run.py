"""The training run: :func:`train`, from DATA to a model and a run folder.

A run holds the lock of its folder (:func:`longtail.runs.locked`) from start
to end, and commits its final files (model, metrics, history, report, the
``finished`` state) as one set (:func:`longtail.runs.commit_set`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings

import numpy as np

from longtail import runs
from longtail.errors import ConfigError, DataError
from longtail.options import channels_of
from longtail.training import checkpoint as ckpt
from longtail.training.config import TrainConfig, TrainResult

__all__ = ["train"]


def _open_data(config: TrainConfig, data, val_data):
    from longtail.dataset import Dataset

    ds = Dataset.open(data, **config.data_options)
    if (ds.class_counts > 0).sum() < 2:
        raise DataError(f"{data}: found {(ds.class_counts > 0).sum()} class with samples; "
                        "at least 2 are needed")
    if ds.weights is not None and not (np.asarray(ds.weights) > 0).any():
        raise DataError(f"{data}: every row weight is 0; nothing would be learned (give some "
                        "rows a positive weight)")
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
    from longtail.backbones.schedule import build_backbone_model, is_backbone

    if is_backbone(config.model):
        if not train_ds.source.is_image:
            raise ConfigError(f"--model {config.model} takes images; the data holds "
                              "feature rows (use mlp, the default for tables)")
        model = build_backbone_model(config, k, bias)
    elif config.model and (config.model.endswith(".keras") or os.path.sep in config.model):
        model = load_user_model(config.model, k)
    else:
        name = config.model or train_ds.source.default_model
        if not train_ds.source.is_image:
            mean, variance = train_ds.source.moments()  # a block at a time
            model = build_model(name, train_ds.source.item_shape(None), k, output_bias=bias,
                                seed=config.seed, mean=mean,
                                variance=np.maximum(variance, 1e-12))
        else:  # image files or a cache of decoded images
            model = build_model(name, (*config.image_size, channels_of(config.color_mode)), k,
                                output_bias=bias,
                                seed=config.seed, augment=resolve_augment(config.augment))
    total = config.first_epochs * steps_per_epoch
    lr = config.learning_rate
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(total, 1), warmup_target=None)
    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.first_weight_decay)
    loss = strategy.loss(counts, config.strategy_params)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def train(data, out: str | None = None, *, resume: bool = False, verbose="auto",
          callbacks: list | None = None, cluster=None, **options) -> TrainResult:
    """Trains a classifier on DATA with a balancing strategy.

    Args:
        data: Any DATA form (folder, table, manifest, or a Dataset); None
            with ``resume`` takes the DATA recorded in the run's config.json.
        out: Run folder; None trains without writing files.
        resume: Continue the run in ``out`` from its last checkpoint to the
            planned epochs, with the options of its ``config.json``; options
            passed as well must equal those (a changed option is refused:
            start a new run to change it).
        verbose: Keras verbosity (``"auto"``, 0, 1 or 2). ``"auto"`` is the
            progress bar on a terminal (or in a notebook) and one line per
            epoch (2) when the output is a file or a pipe.
        callbacks: Extra Keras callbacks, run after longtail's own (so they
            see ``val_balanced_accuracy`` and ``val_macro_f1``).
        cluster: With ``distribute=True``, the multi-process job to join: a
            :class:`longtail.distribute.Cluster` or a dict with
            ``coordinator``, ``num_processes``, ``process_id``; unset fields
            come from the environment (see :mod:`longtail.distribute`).
        **options: :class:`TrainConfig` fields: ``balance``
            (default logit-adjust, chosen by measurement, docs/guide.md; none,
            class-weight, effective-weight, resample, sqrt-resample, focal,
            logit-adjust, balanced-softmax, ldam-drw), ``epochs``,
            ``batch_size``, ``image_size`` (N, "HxW" or a pair), ``color_mode``
            (rgb, grayscale, rgba), ``model`` (small-cnn, resnet, mlp or a
            .keras path), ``augment`` ("flip,crop", "crop", "none"),
            ``val_split`` or ``val`` (DATA), ``label_mode`` (int,
            categorical), ``seed``, ``learning_rate``, ``weight_decay``,
            ``schedule`` (cosine, constant), ``early_stopping`` (patience in
            epochs on validation balanced accuracy), ``tau``, ``gamma``,
            ``beta``, ``drw_epoch``, ``num_workers``, ``shot_thresholds``
            (``(many, few)`` training counts of the report's shot groups,
            default ``(100, 20)``), ``data_options``
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
    # Refusals come before Keras is imported, in a fraction of a second.
    if data is None:
        data = _recorded_data(out, resume)
    if out is None or _distributed(out, resume, options):  # process 0 writes, unlocked
        return _train(data, out, resume, options, verbose, callbacks, cluster)
    runs.check_out_outside_data(out, data)
    if resume and not os.path.isdir(out):
        ckpt.resume_point(out)  # refuses before the lock would create the folder
    with runs.locked(out, "train"):
        return _train(data, out, resume, options, verbose, callbacks, cluster)


def _recorded_data(out, resume: bool) -> str:
    """``resume`` without DATA: the DATA the run recorded in its config.json."""
    if not resume:
        raise ConfigError("`data` is required (only a resumed run takes it from its "
                          "config.json)")
    config, _ = ckpt.resume_point(out)
    for key in ("data_path", "data"):
        if isinstance(config.get(key), str) and os.path.exists(config[key]):
            return config[key]
    raise DataError(f"{os.path.join(out, runs.CONFIG)}: the run's DATA {config.get('data')!r} "
                    "is not found from here; pass DATA to resume")


def check_image_options(ds, options: dict, data) -> None:
    """Refuses image options given for data that holds feature rows (they would do nothing)."""
    from longtail.training.config import IMAGE_OPTIONS

    given = [k for k in IMAGE_OPTIONS if options.get(k) is not None]
    if given and not ds.source.is_image:
        raise ConfigError(f"{', '.join(f'`{k}`' for k in given)} "
                          f"{'applies' if len(given) == 1 else 'apply'} to images only; "
                          f"{data} holds feature rows: drop "
                          f"{'it' if len(given) == 1 else 'them'}")


def _distributed(out: str, resume: bool, options: dict) -> bool:
    if not resume:
        return bool(options.get("distribute"))
    try:
        return bool(runs.read_config(out)["options"].get("distribute"))
    except (OSError, DataError):  # no run yet, or a damaged one: _starting_point says so
        return False


def _verbosity(verbose):
    """Keras' verbosity for this run: ``"auto"`` is a bar only on a terminal.

    Keras' progress bar redraws its line with carriage returns and escape
    codes; written to a file or a pipe (a log, CI) that is a stream of
    frames. There ``"auto"`` becomes 2: one line per epoch. Notebooks keep
    the bar, as Keras does.
    """
    if verbose != "auto":
        return verbose
    isatty = getattr(sys.stdout, "isatty", None)
    terminal = bool(isatty and isatty()) or "ipykernel" in sys.modules
    return "auto" if terminal else 2


def _train(data, out, resume: bool, options: dict, verbose, callbacks, cluster):
    """:func:`train` once the folder is locked."""
    verbose = _verbosity(verbose)
    config, saved_config, state = _starting_point(out, resume, options)
    if state is not None and state.get("finished"):
        return _finished_run(out, saved_config, state)

    # The data is indexed (and bad data refused) before Keras is imported.
    config, train_ds, val_ds = _data(config, data, out, resume, options.get("val"))
    check_image_options(train_ds, options, data)
    import keras

    from longtail._seed import seed_everything
    from longtail.strategies import resolve_strategy

    placement = _placement(config, cluster)
    seed_everything(config.seed)  # no TensorFlow import on the JAX or torch backend
    strategy = resolve_strategy(config.balance)
    train_loader, val_loader = _loaders(config, train_ds, val_ds, strategy, placement)
    config, plan = _plan_epochs(config, train_ds, len(train_loader), verbose)
    if resume:
        ckpt.check_same_data(out, saved_config, train_ds, val_ds)
    model, initial_epoch, history_rows, best_weights = _model(
        config, out, state, train_ds, strategy, len(train_loader))
    run_config = _run_config(config, data, strategy, train_ds, val_ds, len(train_loader),
                             placement)
    if plan is not None:
        run_config["epoch_plan"] = plan.to_json()
    if placement is not None and placement.process_id != 0:
        out = None  # process 0 writes the run folder
    if out is not None and not resume:
        _start_folder(out, val_ds, run_config)

    early = None
    if config.early_stopping:
        early = ckpt.early_stopping(config.early_stopping,
                                    state.get("early_stopping") if state else None,
                                    best_weights, start=config.early_stopping_start)
    extra_callbacks = list(callbacks or [])
    callbacks = _callbacks(config, out, strategy, train_ds, val_loader, placement, early,
                           history_rows) + extra_callbacks
    started = time.perf_counter()
    fit_history = _fit(model, config, train_loader, val_loader, callbacks, state,
                       initial_epoch, best_weights, placement, verbose)
    seconds = time.perf_counter() - started
    if placement is not None:
        model = placement.local_model(model)  # one-device copy; the distribution ends
    if strategy.second_stage is not None:  # classifier-level methods (longtail.decoupled)
        from longtail.decoupled import run_second_stage

        run_config["second_stage"], stage_rows = run_second_stage(
            strategy, config, model, train_ds, train_loader, val_loader,
            callbacks=extra_callbacks, verbose=verbose)
        history_rows.extend(stage_rows)
        for key, values in fit_history.items():
            values.extend(row.get(key, float("nan")) for row in stage_rows)
        seconds = time.perf_counter() - started

    report, metrics = _evaluate(model, train_ds, val_loader, history_rows, seconds, run_config)
    metrics["training"] = _stop_summary(config, history_rows or fit_history)
    report._metrics["training"] = metrics["training"]  # metrics.json records it too
    metrics["evaluated_on"] = report._metrics["evaluated_on"] = {
        "split": "validation", "samples": int(metrics["n_samples"]),
        "data": config.val if config.val is not None and os.path.exists(config.val) else
        ("val.parquet" if out is not None else  # the run folder's own: moves with it
         f"a {config.val_split:g} split of {data}")}
    if verbose != 0:
        print(f"longtail: {metrics['training']['stopped']}")
    _warn_unreadable(train_loader, val_loader)
    if out is not None:
        _finish_run(out, model, report, run_config, history_rows, train_ds.source)
    if placement is not None:
        placement.barrier("longtail: run folder written")  # process 0 may still write
    history = {k: [float(v) for v in values] for k, values in fit_history.items()}
    if out is not None:  # the whole run, epochs before a resume included
        history = _history_dict(history_rows)
    return TrainResult(model, history, metrics, out, run_config)


def _starting_point(out, resume: bool, options: dict):
    """The run's config, and with ``resume`` its saved config.json and state.json."""
    if resume:
        saved_config, state = ckpt.resume_point(out)
        config = _check_same_options(out, TrainConfig.from_json(saved_config["options"]),
                                     options)
        return config, saved_config, state
    val_data = options.get("val")
    if val_data is not None and not isinstance(val_data, (str, os.PathLike)):
        options = dict(options, val=repr(val_data))  # config.json keeps a description
    config = TrainConfig(**options)
    if out is not None and os.path.exists(os.path.join(out, "config.json")):
        raise ConfigError(f"--out {out} already holds a run; pass --resume to continue "
                          "it, or choose another folder")
    return config, None, None


def _check_same_options(out: str, config: TrainConfig, options: dict) -> TrainConfig:
    """Refuses options given with ``resume`` that differ from the run's own.

    ``num_workers`` is the exception: it does not change the results, so the
    value given applies.
    """
    if "num_workers" in options:
        config = dataclasses.replace(config, num_workers=options["num_workers"])
    if not options:
        return config
    saved = config.to_json()
    try:
        given = TrainConfig(**{**saved, **options}).to_json()
    except TypeError as e:
        raise ConfigError(f"--resume: {e}") from None
    changed = [k for k in given if given[k] != saved[k]]
    if changed:
        shown = ", ".join(f"`{k}` {saved[k]!r} (given {given[k]!r})" for k in changed)
        raise ConfigError(f"--resume: the run in {out} continues with its own options; "
                          f"{shown} differ: drop them, or start a new run in another folder "
                          "to change them")
    return config


def _plan_epochs(config: TrainConfig, train_ds, steps_per_epoch: int, verbose):
    """Resolves ``epochs="auto"`` (see :mod:`longtail.training.schedule`) into numbers.

    Returns the config with ``epochs`` and ``early_stopping`` set (config.json
    records them, so ``--resume`` continues the same plan) and the plan, or
    None when the epochs were given.
    """
    from longtail.training.schedule import AUTO, plan_epochs

    if config.epochs != AUTO:
        return config, None
    plan = plan_epochs(len(train_ds), steps_per_epoch, config.early_stopping)
    if verbose != 0:
        print(f"longtail: epochs auto: {plan.epochs} epochs of {steps_per_epoch} steps "
              f"({len(train_ds)} training samples), early stopping after {plan.patience} "
              "epochs without a better validation balanced accuracy, counted after a "
              f"warm-up of {plan.warmup} epochs")
    return dataclasses.replace(config, epochs=plan.epochs, early_stopping=plan.patience,
                               early_stopping_start=plan.warmup), plan


def _stop_summary(config: TrainConfig, history) -> dict:
    """How many epochs ran, the best one, and why training stopped (metrics.json)."""
    if isinstance(history, list):  # history.csv rows
        history = _history_dict(history)
    scores = history.get("val_balanced_accuracy", [])
    ran = len(scores) or len(history.get("loss", []))
    summary = {"epochs_planned": config.epochs, "epochs_run": ran}
    start = min(config.early_stopping_start, max(len(scores) - 1, 0))
    if config.early_stopping and scores:
        # the first best after the warm-up, as EarlyStopping keeps it
        best = start + int(np.argmax(scores[start:]))
        summary.update(best_epoch=best + 1, best_val_balanced_accuracy=float(scores[best]))
        if ran < config.epochs:
            summary["stopped"] = (f"early stopping: no better validation balanced accuracy "
                                  f"in {ran - best - 1} epochs after epoch {best + 1} "
                                  f"({scores[best]:.4f}); ended on epoch {best + 1}'s weights")
        else:
            summary["stopped"] = (f"epoch budget reached ({ran} epochs); ended on the best "
                                  f"epoch {best + 1} ({scores[best]:.4f})")
    else:
        summary["stopped"] = f"ran the {config.epochs} epochs asked for"
    return summary


def _placement(config: TrainConfig, cluster):
    """With ``distribute``, joins the job (before any JAX work and any model)."""
    if not config.distribute:
        return None
    from longtail.distribute import setup

    return setup(cluster, batch_size=config.batch_size)


def _data(config: TrainConfig, data, out, resume: bool, val_data):
    """Opens the training and validation data; a cache fixes the image size."""
    if resume:
        val_data = config.val
        if val_data is not None and not os.path.exists(val_data):
            # val was an in-memory Dataset (config.json holds its description):
            # the run saved it as val.parquet when it started.
            val_data = os.path.join(out, "val.parquet")
    train_ds, val_ds = _open_data(config, data, val_data)
    fixed = train_ds.source.image_size
    if fixed is not None and tuple(config.image_size) != fixed:
        # A cache holds one image size: train at it rather than fail on the shape.
        warnings.warn(f"{data}: the cache holds {fixed} images; training "
                      f"at that size instead of image_size {config.image_size}", stacklevel=4)
        config = dataclasses.replace(config, image_size=fixed)
    return config, train_ds, val_ds


def _loaders(config: TrainConfig, train_ds, val_ds, strategy, placement):
    """The training loader (the strategy's sampling, this process's shard) and validation's."""
    loader_kw = dict(label_mode=config.label_mode, num_workers=config.num_workers)
    if train_ds.source.is_image:
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
                      f"batch_size {batch_size}; using batches of {len(train_ds)}", stacklevel=4)
        batch_size = len(train_ds)
    train_loader = train_ds.loader(
        batch_size=batch_size, sampling=strategy.sampling,
        class_weight=strategy.class_weight, seed=config.seed,
        shard=placement.shard if placement else (0, 1), **loader_kw)
    val_loader = val_ds.loader(batch_size=config.batch_size, sampling="sequential",
                               **loader_kw)
    if placement is not None:  # the global plan needs the same data everywhere
        placement.check_same("data", train_ds.labels, val_ds.labels)
    return train_loader, val_loader


def _model(config: TrainConfig, out, state, train_ds, strategy, steps_per_epoch: int):
    """A new compiled model, or the checkpoint ``state`` names with its epoch and history.

    Returns ``(model, initial_epoch, history_rows, best_weights)``.
    """
    if state is None:
        return _build(config, train_ds, strategy, steps_per_epoch), 0, [], None
    checkpoint = os.path.join(out, "checkpoints", state["model"])
    if not os.path.exists(checkpoint):
        raise DataError(f"--resume: {checkpoint}: the checkpoint named by state.json is "
                        "missing; start a new run in another folder")
    model = runs.load_model(checkpoint)
    ckpt.set_rng_states(model, state["rng"], checkpoint)
    best_weights = None
    if state.get("early_stopping"):
        best_weights = ckpt.load_weights(os.path.join(out, "checkpoints",
                                                      state["early_stopping"]["weights"]))
    return model, state["epochs_done"], state["history"], best_weights


def _run_config(config: TrainConfig, data, strategy, train_ds, val_ds, steps_per_epoch: int,
                placement) -> dict:
    """What ``config.json`` holds: the options, the data it saw, and the software."""
    import keras

    options = config.to_json()
    if not train_ds.source.is_image:  # feature rows: image options mean nothing
        from longtail.training.config import IMAGE_OPTIONS

        for key in IMAGE_OPTIONS:
            options.pop(key)
    run_config = {
        "options": options, "data": str(data), "strategy": strategy.name,
        "class_names": train_ds.class_names, "train_counts": train_ds.class_counts.tolist(),
        "val_counts": val_ds.class_counts.tolist(), "priors": train_ds.priors.tolist(),
        "keras_backend": keras.backend.backend(), "keras_version": keras.__version__,
        "steps_per_epoch": steps_per_epoch,
        "data_fingerprint": {"train": ckpt.fingerprint(train_ds),
                             "val": ckpt.fingerprint(val_ds)},
    }
    if isinstance(data, (str, os.PathLike)) and os.path.exists(data):
        run_config["data_path"] = os.path.abspath(data)  # --resume without DATA, from anywhere
    from longtail.backbones.schedule import backbone_run_record, is_backbone

    if is_backbone(config.model):
        run_config["backbone"] = backbone_run_record(config)
    run_config.update(train_ds.source.run_record())  # a feature store: its backbone
    if placement is not None:
        run_config["distributed"] = {
            "processes": placement.num_processes, "devices": placement.devices,
            "global_batch_size": placement.global_batch(config.batch_size)}
    return run_config


def _start_folder(out: str, val_ds, run_config: dict) -> None:
    """Creates the run folder with ``val.parquet`` and, last, ``config.json``."""
    from longtail._io import write_json

    os.makedirs(out, exist_ok=True)
    val_ds.save(os.path.join(out, "val.parquet"))  # for evaluate --tune-tau
    write_json(os.path.join(out, "config.json"), run_config)


def _callbacks(config: TrainConfig, out, strategy, train_ds, val_loader, placement, early,
               history_rows: list[dict]) -> list:
    """longtail's callbacks in order: divergence, metrics, strategy, early stopping, checkpoint."""
    from longtail.callbacks import PerClassMetrics

    callbacks = [ckpt.stop_on_divergence(config.learning_rate),
                 PerClassMetrics(val_loader, class_names=train_ds.class_names)]
    if placement is not None:  # validation on this process's undistributed copy
        callbacks = [placement.validation(callbacks, val_loader)]
    if strategy.callbacks is not None:
        callbacks += strategy.callbacks(train_ds.class_counts, config.epochs,
                                        config.strategy_params)
    if early is not None:
        callbacks.append(early)
    if out is not None:
        checkpoint = ckpt.checkpoint_callback(out, history_rows, early)
        callbacks.append(checkpoint if placement is None else placement.on_one_device(checkpoint))
    return callbacks


def _fit(model, config: TrainConfig, train_loader, val_loader, callbacks, state,
         initial_epoch: int, best_weights, placement, verbose) -> dict:
    """Runs the remaining epochs; returns Keras' history of this call."""
    if hasattr(train_loader, "set_epoch"):
        train_loader.set_epoch(initial_epoch)
    if state is not None and (state.get("stopped") or initial_epoch >= config.first_epochs):
        if best_weights is not None:  # as EarlyStopping did when training ended
            model.set_weights(best_weights)
        return {}
    from longtail.backbones.schedule import fit_in_stages, is_backbone

    if is_backbone(config.model):  # head stage, then fine-tuning (resumable in either)
        return fit_in_stages(model, config, train_loader, initial_epoch, callbacks=callbacks,
                             validation_data=val_loader if placement is None else None,
                             verbose=verbose)
    return model.fit(train_loader, epochs=config.first_epochs,
                     validation_data=val_loader if placement is None else None,
                     initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose).history


def _evaluate(model, train_ds, val_loader, history_rows: list[dict], seconds: float,
              run_config: dict):
    """The validation report and its metrics dict, with the training time."""
    from longtail.evaluation import evaluate

    report = evaluate(model, val_loader, class_names=train_ds.class_names,
                      train_counts=train_ds.class_counts.tolist(),
                      shot_thresholds=tuple(run_config["options"].get("shot_thresholds",
                                                                      (100, 20))))
    metrics = report.to_dict()
    if "second_stage" in run_config:
        metrics["second_stage"] = run_config["second_stage"]
    metrics["train_seconds"] = seconds if not history_rows else float(
        sum(row.get("epoch_seconds", 0.0) for row in history_rows))  # resumed runs included
    return report, metrics


def _warn_unreadable(train_loader, val_loader) -> None:
    """One warning that counts and lists the files the loaders skipped."""
    unreadable = {e.path: e for loader in (train_loader, val_loader)
                  for e in getattr(loader, "errors", ())}
    if unreadable:
        shown = "; ".join(str(e) for e in list(unreadable.values())[:5])
        warnings.warn(f"{len(unreadable)} unreadable files were skipped (training drew "
                      "another sample of the same class; validation metrics leave them "
                      f"out): {shown}{' ...' if len(unreadable) > 5 else ''}", stacklevel=4)


def _history_dict(history_rows: list[dict]) -> dict:
    """history.csv's rows as Keras' ``History.history``: one list per column."""
    history = {}
    for row in history_rows:
        for key, value in row.items():
            history.setdefault(key, []).append(value)
    return history


def _finish_run(out: str, model, report, run_config: dict, history_rows: list[dict],
                source=None) -> None:
    """Commits model, metrics, history, report and the ``finished`` state as one set.

    ``model.keras`` is what ``source`` hands over for the trained model
    (:meth:`longtail.sources.Source.take_away`: backbone + head for embeddings).
    """
    from longtail._io import atomic_path, remove_stale_temps, write_json, write_text
    from longtail.report import write_report

    with runs.commit_set(out) as staged:
        stage = staged.dir
        from longtail._seed import tensorflow_left_unloaded
        from longtail.evaluation import rounded
        from longtail.training.inference import inference_model

        with atomic_path(os.path.join(stage, "model.keras"), suffix=".keras") as tmp, \
                tensorflow_left_unloaded():
            take_away = inference_model(model)  # loads with plain Keras (no longtail classes)
            if source is not None:
                take_away = source.take_away(take_away)
            take_away.save(tmp)
        metrics = report.to_dict()
        if "second_stage" in run_config:  # what a classifier-level method chose
            metrics["second_stage"] = run_config["second_stage"]
            write_json(os.path.join(stage, "config.json"), run_config)
        write_json(os.path.join(stage, "metrics.json"), rounded(metrics))
        history_csv = os.path.join(stage, "history.csv")
        if history_rows:
            write_text(history_csv, ckpt.csv_text(history_rows))
        write_report(stage, report.to_dict(),
                     history_csv=history_csv if history_rows else None,
                     config=run_config, train_counts=run_config["train_counts"],
                     title=f"longtail run: {run_config['strategy']}")
        write_json(os.path.join(stage, runs.STATE),
                   {"finished": True, "epochs_done": len(history_rows),
                    "history": history_rows})
    ckpt.remove_stale_checkpoints(os.path.join(out, "checkpoints"))
    remove_stale_temps(out)


def _finished_run(out: str, run_config: dict, state: dict) -> TrainResult:
    """``--resume`` of a finished run: nothing to do; the result as written."""
    from longtail.models import load_model

    warnings.warn(f"{out}: the run is already finished ({state['epochs_done']} epochs); "
                  "nothing to resume", stacklevel=4)
    metrics = runs.read_json(os.path.join(out, "metrics.json"), "metrics file")
    return TrainResult(load_model(os.path.join(out, "model.keras")),
                       _history_dict(state["history"]), metrics, out, run_config)
