"""Classifier-level long-tail methods: learn the representation, then re-balance the classifier.

Decoupling (Kang et al., ICLR 2020) found that instance-sampled cross-entropy
learns the best representation and that the long-tail bias sits mostly in the
final classifier layer, so balancing that layer alone after training is enough:

* ``crt`` (classifier re-training): stage 1 trains the whole model with
  plain shuffling and cross-entropy; stage 2 re-initialises the classifier
  and re-trains only it, with class-balanced sampling, on the frozen
  representation (BatchNorm in inference mode).
* ``tau-norm``: after stage 1, each class vector ``w_c`` of the classifier
  becomes ``w_c / ||w_c||**tau``, tau picked on validation balanced accuracy
  over ``0, 0.1, ..., 2``; the bias is dropped, as in the paper's code.
* ``weight-balancing`` (Alshammari et al., CVPR 2022): stage 1 with a
  larger weight decay on the whole net; stage 2 fine-tunes the classifier
  with class-balanced weights, weight decay and a MaxNorm constraint that
  caps every class vector's norm (a projected gradient step).

Each is one entry of :data:`longtail.strategies.STRATEGIES` whose parameter
record (below) carries the defaults and whose ``second_stage`` runs after
``fit``. The second stage is not checkpointed: a run killed during it
resumes from the last stage-1 checkpoint and runs stage 2 again, with the
same seed, so the result is the uninterrupted run's.

**The classifier** is the ``Dense`` layer whose output is the model's output,
possibly through parameter-free layers (an ``Activation``). It must sit at
the top level of a functional model, not inside a nested model; every
longtail model (``small-cnn``, ``resnet``, ``mlp``, backbones) has it as its
``logits`` layer. Everything before it is "the representation".
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from longtail.errors import ConfigError

__all__ = ["CRTParams", "TauNormParams", "WeightBalancingParams", "StageContext",
           "find_classifier", "retrain_classifier", "tau_normalise", "balance_weights",
           "run_second_stage"]


def _share(value, name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value < 1.0:
        raise ConfigError(f"`{name}` must be a number in (0, 1); got {value!r}")


def _positive(value, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ConfigError(f"`{name}` must be a number >= 0; got {value!r}")


@dataclass(frozen=True)
class _TwoStageParams:
    """Shared by the methods that train a second stage."""

    stage2_share: float = 0.25

    def stages(self, epochs: int) -> tuple[int, int]:
        """Stage 2 takes ``stage2_share`` of the epochs (at least 1), stage 1 the rest.

        Stage 1 also gets at least one epoch, so ``epochs=1`` trains 1 + 1.
        """
        second = max(1, int(round(self.stage2_share * epochs)))
        return max(1, epochs - second), second


@dataclass(frozen=True)
class CRTParams(_TwoStageParams):
    """Classifier re-training (cRT).

    Attributes:
        stage2_share: Share of ``epochs`` for stage 2 (Kang et al.: 10 of 100).
        learning_rate: Stage-2 learning rate; None takes 10 times the run's:
            the fresh classifier must converge in a few epochs (on Digits-LT
            features, 30 epochs: test balanced accuracy 0.525 at the run's
            rate, 0.721 at 10 times; see benchmarks/decoupled.py).
    """

    learning_rate: float | None = None

    def __post_init__(self):
        _share(self.stage2_share, "stage2_share")
        if self.learning_rate is not None and not (
                isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ConfigError(f"`learning_rate` must be > 0; got {self.learning_rate!r}")


def _default_taus() -> tuple[float, ...]:
    return tuple(float(t) for t in np.round(np.linspace(0.0, 2.0, 21), 10))


@dataclass(frozen=True)
class TauNormParams:
    """tau-normalisation.

    Attributes:
        taus: Candidate exponents, each >= 0 (the paper's grid 0..2 by 0.1).
        bias: ``"drop"`` (as the paper's code: logits ``x . w_c``) or
            ``"keep"`` (the trained bias stays, so tau 0 is the stage-1 model).
    """

    taus: tuple = dataclasses.field(default_factory=_default_taus)
    bias: str = "drop"

    def __post_init__(self):
        taus = tuple(float(t) for t in np.asarray(self.taus, dtype=float).reshape(-1))
        if not taus or not all(np.isfinite(t) and t >= 0 for t in taus):
            raise ConfigError(f"`taus` must be non-empty numbers >= 0; got {self.taus!r}")
        object.__setattr__(self, "taus", taus)
        if self.bias not in ("drop", "keep"):
            raise ConfigError(f"`bias` must be drop or keep; got {self.bias!r}")


@dataclass(frozen=True)
class WeightBalancingParams(_TwoStageParams):
    """Weight balancing: weight decay, then MaxNorm and class-balanced weights.

    Attributes:
        weight_decay: AdamW (decoupled) weight decay of stage 1, for the
            whole net; 5e-2 at learning rate 1e-3 shrinks weights per step as
            the paper's SGD weight decay 5e-3 at learning rate 1e-2.
        stage2_share: Share of ``epochs`` for stage 2.
        stage2_weight_decay: Weight decay of stage 2 (the classifier); None
            uses ``weight_decay``.
        max_norm: Radius of the MaxNorm ball for each class vector; None
            takes the median class-vector norm at the end of stage 1, which
            shrinks the head classes' vectors and lets the tail's grow.
    """

    weight_decay: float = 5e-2
    stage2_weight_decay: float | None = None
    max_norm: float | None = None

    def __post_init__(self):
        _share(self.stage2_share, "stage2_share")
        _positive(self.weight_decay, "weight_decay")
        _positive(self.stage2_weight_decay, "stage2_weight_decay", allow_none=True)
        if self.max_norm is not None and not (
                isinstance(self.max_norm, (int, float)) and self.max_norm > 0):
            raise ConfigError(f"`max_norm` must be > 0 or None; got {self.max_norm!r}")

    def first_weight_decay(self, default: float) -> float:
        return float(self.weight_decay)


@dataclass
class StageContext:
    """What a second stage needs from the run that trained stage 1.

    Attributes:
        make_loader: ``(sampling, class_weight) -> loader`` over the training
            data, with the run's batch size, seed, shard and image options.
        val_loader: Sequential loader over the validation data.
        make_loss: Builds a fresh loss of the strategy.
        first_epochs: Epochs of stage 1 (stage 2 numbers its epochs on).
        second_epochs: Epochs of stage 2.
        learning_rate: The run's learning rate.
        weight_decay: The run's weight decay (cRT's stage 2 keeps it).
        seed: The run's seed (stage 2 draws its initial weights from it).
        callbacks: Callbacks for stage 2 (validation metrics, the user's).
        verbose: Keras verbosity.
    """

    make_loader: Callable[[str, Any], Any]
    val_loader: Any
    make_loss: Callable[[], Any]
    first_epochs: int
    second_epochs: int
    learning_rate: float
    weight_decay: float = 0.0
    seed: int = 0
    callbacks: list = dataclasses.field(default_factory=list)
    verbose: Any = 0


def run_second_stage(strategy, config, model, train_ds, train_loader, val_loader, *,
                     callbacks=(), verbose=0) -> tuple[dict, list]:
    """Runs ``strategy``'s second stage on a model that finished stage 1.

    Called by :func:`longtail.training.train` after ``fit``. Stage-2 loaders
    take the stage-1 loader's batch size, seed, label mode, workers and
    decoding options; under ``distribute`` every process runs stage 2 on one
    device, over all the data (the same computation everywhere).

    Returns:
        ``(info, history_rows)``: what the method chose (for ``config.json``
        and ``metrics.json``) and one history row per stage-2 epoch.
    """
    from longtail.callbacks import PerClassMetrics

    params = config.strategy_record
    first, second = strategy.stages(config.epochs, params)

    def make_loader(sampling, class_weight):
        options = train_loader.options
        return train_ds.loader(
            batch_size=train_loader.batch_size, sampling=sampling, class_weight=class_weight,
            seed=train_loader.seed, label_mode=train_loader.label_mode,
            num_workers=train_loader.num_workers, image_size=options.image_size,
            color_mode=options.color_mode, resize=options.resize, dtype=options.dtype,
            max_pixels=options.max_pixels)

    ctx = StageContext(
        make_loader=make_loader, val_loader=val_loader,
        make_loss=lambda: strategy.loss(train_ds.class_counts, config.strategy_params),
        first_epochs=first, second_epochs=second, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, seed=config.seed, verbose=verbose,
        callbacks=[PerClassMetrics(val_loader, class_names=train_ds.class_names),
                   *callbacks])
    info, rows = strategy.second_stage(model, ctx, params)
    info["params"] = dataclasses.asdict(params)
    return info, rows


def find_classifier(model):
    """The model's classifier: the ``Dense`` layer whose output is the model's.

    Walks back from the output through parameter-free single-input layers
    (an ``Activation``, say) to the first ``Dense``.

    Raises:
        ConfigError: No such layer at the model's top level.
    """
    import keras

    need = ("the classifier methods need a model whose output comes from a Dense layer "
            "at its top level (through parameter-free layers only)")
    if len(getattr(model, "outputs", None) or ()) != 1:
        raise ConfigError(f"{need}; got a model without one functional output")
    top = {id(layer) for layer in model.layers}
    tensor = model.outputs[0]
    while True:
        history = getattr(tensor, "_keras_history", None)
        layer = history.operation if history is not None else None
        if layer is None or id(layer) not in top or isinstance(layer, keras.Model):
            raise ConfigError(f"{need}; got the output of a nested model")
        if isinstance(layer, keras.layers.Dense):
            return layer
        if layer.weights:
            raise ConfigError(f"{need}; got the {type(layer).__name__} layer {layer.name!r}, "
                              "which has weights, after the last Dense")
        inputs = keras.tree.flatten(layer._inbound_nodes[history.node_index].input_tensors)
        if len(inputs) != 1:
            raise ConfigError(f"{need}; the layer {layer.name!r} has {len(inputs)} inputs")
        tensor = inputs[0]


def _features(model, classifier, loader):
    """The classifier's inputs (the representation) and labels, one batch at a time."""
    import keras

    from longtail.evaluation import _labels_of

    extractor = keras.Model(model.inputs, classifier.input)
    for batch in loader:
        yield (np.asarray(extractor.predict_on_batch(batch[0]), dtype=np.float64),
               _labels_of(batch[1]))


def tau_normalise(model, ctx: StageContext, params: TauNormParams) -> tuple[dict, list]:
    """Scales the classifier's class vectors by ``||w_c||**-tau``, tau tuned on validation."""
    from longtail.posthoc import tau_normalize, tune_tau_norm_batches

    classifier = find_classifier(model)
    kernel = np.asarray(classifier.kernel.numpy(), dtype=np.float64)
    bias = np.asarray(classifier.bias.numpy(), dtype=np.float64) if (
        classifier.use_bias and params.bias == "keep") else None
    tau, scores = tune_tau_norm_batches(_features(model, classifier, ctx.val_loader),
                                        kernel, bias, params.taus)
    classifier.kernel.assign(tau_normalize(kernel, tau).astype(classifier.kernel.dtype))
    if classifier.use_bias and params.bias == "drop":
        classifier.bias.assign(np.zeros(classifier.bias.shape, classifier.bias.dtype))
    info = {"method": "tau-norm", "tau": tau, "bias": params.bias,
            "taus": list(params.taus),
            "val_balanced_accuracy": [float(s) for s in scores]}
    return info, []


def retrain_classifier(model, ctx: StageContext, params: CRTParams) -> tuple[dict, list]:
    """cRT: re-initialises the classifier and trains only it on class-balanced batches."""
    import keras

    classifier = find_classifier(model)
    init = keras.initializers.GlorotUniform(seed=ctx.seed)
    classifier.kernel.assign(init(classifier.kernel.shape, classifier.kernel.dtype))
    if classifier.use_bias:
        classifier.bias.assign(np.zeros(classifier.bias.shape, classifier.bias.dtype))
    loader = ctx.make_loader("balanced", None)
    rows = _fit_classifier(model, classifier, ctx, loader,
                           learning_rate=params.learning_rate or 10 * ctx.learning_rate,
                           weight_decay=ctx.weight_decay)
    info = {"method": "crt", "stage1_epochs": ctx.first_epochs,
            "stage2_epochs": ctx.second_epochs, "stage2_sampling": "balanced"}
    return info, rows


def balance_weights(model, ctx: StageContext, params: WeightBalancingParams) -> tuple[dict, list]:
    """Weight balancing stage 2: MaxNorm-capped classifier, class-balanced weights."""
    import keras

    classifier = find_classifier(model)
    norms = np.linalg.norm(np.asarray(classifier.kernel.numpy(), np.float64), axis=0)
    radius = float(np.median(norms)) if params.max_norm is None else float(params.max_norm)
    constraint = keras.constraints.MaxNorm(max_value=radius, axis=0)  # axis 0: per class
    classifier.kernel_constraint = constraint
    classifier.kernel.constraint = constraint
    classifier.kernel.assign(constraint(classifier.kernel))  # start inside the ball
    decay = params.weight_decay if params.stage2_weight_decay is None \
        else params.stage2_weight_decay
    loader = ctx.make_loader("shuffle", "balanced")
    rows = _fit_classifier(model, classifier, ctx, loader, learning_rate=ctx.learning_rate,
                           weight_decay=float(decay))
    info = {"method": "weight-balancing", "stage1_epochs": ctx.first_epochs,
            "stage2_epochs": ctx.second_epochs, "stage1_weight_decay": params.weight_decay,
            "stage2_weight_decay": float(decay), "max_norm": radius,
            "stage1_class_norms": norms.tolist()}
    return info, rows


def _all_layers(container):
    """Every layer inside ``container``, nested ones included, parents first."""
    for layer in container.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _set_trainable(container, keep) -> dict:
    """Freezes every layer but ``keep``; returns every nested layer's flag to restore.

    Restored parents first, so a backbone's partly frozen blocks come back as
    they were (setting a nested model's flag sets its layers' flags too).
    """
    before = {id(layer): (layer, layer.trainable) for layer in _all_layers(container)}
    for layer in container.layers:
        layer.trainable = layer is keep
    return before


def _fit_classifier(model, classifier, ctx: StageContext, loader, *, learning_rate: float,
                    weight_decay: float) -> list[dict]:
    """Trains only ``classifier`` for the stage-2 epochs; the rest stays frozen.

    Frozen layers run in inference mode (Keras: a BatchNormalization with
    ``trainable=False`` uses its moving statistics and does not update them).
    """
    import keras

    before = _set_trainable(model, classifier)
    first, total = ctx.first_epochs, ctx.first_epochs + ctx.second_epochs
    rows: list[dict] = []

    class StageHistory(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch, "stage": 2}
            row.update({k: float(v) for k, v in (logs or {}).items()})
            row["epoch_seconds"] = time.perf_counter() - self._started
            rows.append(row)

    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, ctx.second_epochs * len(loader)))
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule,
                                                   weight_decay=weight_decay),
                  loss=ctx.make_loss(), metrics=["accuracy"])
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(first)  # stage 2's plans continue the epoch count
    try:
        model.fit(loader, epochs=total, initial_epoch=first, validation_data=ctx.val_loader,
                  callbacks=[*ctx.callbacks, StageHistory()], verbose=ctx.verbose)
    finally:
        for layer, flag in before.values():
            layer.trainable = flag
    return rows
