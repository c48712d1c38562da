"""Keras callbacks for long-tailed training.

* :class:`DeferredReweighting` - LDAM-DRW: plain loss first, class-balanced
  weights from a given epoch on.
* :class:`PerClassMetrics` - balanced accuracy and macro F1 on validation
  data, in ``logs`` for EarlyStopping, ModelCheckpoint and CSVLogger.
* :func:`track_loss_state` - makes a compiled model see class weights that
  a callback assigns to its loss.

Why :func:`track_loss_state` exists: under JAX, Keras compiles the train
step as a pure function of the model's state (its variables and those of
``model.metrics``). A variable held by a loss is not part of that state, so
its value is baked into the compiled step as a constant and a later
``assign`` has no effect (PyTorch and TensorFlow read it on every step).
Each class-weighted loss therefore keeps its weights in a small
:class:`keras.metrics.Metric` that never updates, resets or reports
anything; attaching it to the model makes the weights part of the state on
every backend, so new values take effect from the next epoch without
recompiling.
"""

from __future__ import annotations

from types import GeneratorType

import keras
import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

from longtail import _validation as v
from longtail.errors import ConfigError
from longtail.evaluation import _to_numpy, predict_batches
from longtail.losses._base import ClassWeightedLoss, ClassWeightState, _to_vector, check_number
from longtail.weights import class_weights

__all__ = ["DeferredReweighting", "PerClassMetrics", "track_loss_state"]


def _class_weighted_losses(model) -> list[ClassWeightedLoss]:
    losses = keras.tree.flatten(getattr(model, "loss", None))
    return [loss for loss in losses if isinstance(loss, ClassWeightedLoss)]


def track_loss_state(model) -> list[ClassWeightedLoss]:
    """Makes ``model`` track the class-weight variables of its losses.

    Call it once after ``compile`` (and before ``fit``) when your own
    callback calls ``loss.set_class_weight(...)`` during training;
    :class:`DeferredReweighting` calls it for you. Needed under JAX,
    harmless elsewhere. Under JAX, new weights take effect at the next
    epoch, so assign them in ``on_epoch_begin``. The tracked state is not
    saved with the model. Calling it again (or after a new ``compile``) is
    safe: the model tracks the state of its current losses only.

    Args:
        model: A compiled Keras model whose ``loss`` is (or contains)
            longtail class-weighted losses.

    Returns:
        The class-weighted losses found in ``model.loss``.

    Example:
        >>> import keras
        >>> import longtail as lt
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model.compile("sgd", loss=lt.losses.WeightedCrossentropy([1, 2, 3]))
        >>> [loss.name for loss in track_loss_state(model)]
        ['weighted_crossentropy']
    """
    losses = _class_weighted_losses(model)
    if _attach_states(model, losses):
        # Compiled steps were traced for the old state; fit/evaluate rebuild
        # them (a callback's set_model runs before they are made).
        for attr in ("train_function", "test_function"):
            if hasattr(model, attr):
                setattr(model, attr, None)
    return losses


def _attach_states(model, losses) -> bool:
    """Puts the losses' weight states among the model's own metrics.

    Returns:
        Whether the tracked states changed.
    """
    own = getattr(model, "_metrics", None)
    if not isinstance(own, list):
        raise RuntimeError(
            "this Keras version keeps a model's own metrics in no `_metrics` "
            "list, so longtail cannot track its loss weights; please report it"
        )
    tracked = [m for m in own if isinstance(m, ClassWeightState)]
    if [id(m) for m in tracked] == [id(loss._state) for loss in losses
                                    if loss._state is not None]:
        return False
    for loss in losses:
        if loss._state is not None and all(loss._state is not m for m in tracked):
            # A fresh variable, so that it gets the layout of the current
            # keras.distribution (the loss may predate it).
            loss._renew_state()
    states = [loss._state for loss in losses if loss._state is not None]
    own[:] = [m for m in own if not isinstance(m, ClassWeightState)] + states
    return True


class DeferredReweighting(keras.callbacks.Callback):
    """Deferred re-weighting (DRW) of Cao et al. (2019), as in LDAM-DRW.

    Before ``start_epoch`` the loss is unweighted (all class weights 1);
    from ``start_epoch`` on, each class is weighted by its effective-number
    weight ``(1 - beta) / (1 - beta ** n_c)``, normalised to sum to k: the
    weights of ``longtail.class_weights(counts=..., strategy="effective")``
    (:func:`longtail.weights.effective_number_weights`). The
    weights are assigned to the loss' class-weight variable at the start of
    every epoch, so resuming with ``initial_epoch`` gives the right weights.
    Any class-weighted longtail loss works (:class:`longtail.losses.LDAM`,
    ``WeightedCrossentropy``, ``Focal`` - whose alpha it replaces -,
    ``ClassBalanced``); the loss is found through ``model.loss``.

    Args:
        class_counts: Training samples per class, in class index order. A
            class with no samples gets weight 0.0, with a warning (as in
            :func:`longtail.class_weights`); the others keep their weights.
        start_epoch: First epoch (0-based, as Keras counts) with weights;
            the paper uses 160 of 200.
        beta: Effective-number beta in [0, 1); the paper uses 0.9999.

    Example:
        >>> import keras
        >>> import longtail as lt
        >>> counts = [500, 50, 5]
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model.compile("sgd", loss=lt.losses.LDAM(counts))
        >>> drw = DeferredReweighting(counts, start_epoch=160)
        >>> # model.fit(data, epochs=200, callbacks=[drw])
    """

    def __init__(self, class_counts, start_epoch, beta=0.999):
        super().__init__()
        v.integer("start_epoch", start_epoch, min=0)
        self.class_counts = [float(c) for c in _to_vector(class_counts, "class_counts")]
        self.start_epoch = int(start_epoch)
        self.beta = check_number(beta, "beta", 0.0, 1.0, high_open=True)
        weights = class_weights(counts=self.class_counts, strategy="effective", beta=self.beta)
        self.weights_ = np.array([weights[i] for i in range(len(weights))])
        self._losses: list[ClassWeightedLoss] = []

    def set_model(self, model):
        super().set_model(model)
        if getattr(model, "loss", None) is None:
            return  # not compiled (predict): nothing to re-weight
        self._losses = self._find_losses(model)
        track_loss_state(model)

    def _find_losses(self, model) -> list[ClassWeightedLoss]:
        losses = _class_weighted_losses(model)
        if not losses:
            raise ConfigError(
                "DeferredReweighting needs a model compiled with a class-weighted "
                "longtail loss (LDAM, WeightedCrossentropy, Focal, ClassBalanced); "
                f"model.loss is {model.loss!r}"
            )
        k = len(self.class_counts)
        for loss in losses:
            if loss.num_classes is None:  # e.g. Focal(alpha=None): create now
                loss.set_class_weight(np.ones(k))
            elif loss.num_classes != k:
                raise ConfigError(
                    f"`class_counts` has {k} classes but loss {loss.name!r} "
                    f"has {loss.num_classes}"
                )
        return losses

    def weights_for_epoch(self, epoch: int) -> np.ndarray:
        """The class weights used during ``epoch`` (0-based)."""
        if epoch < self.start_epoch:
            return np.ones(len(self.class_counts))
        return self.weights_

    def on_train_begin(self, logs=None):
        if self._losses:
            return
        # set_model saw no compiled loss (it was called by hand, before
        # compile): the train step already exists, so rebuild it now.
        self._losses = self._find_losses(self.model)
        if _attach_states(self.model, self._losses):
            self.model.make_train_function(force=True)
            if hasattr(self.model, "test_function"):
                self.model.test_function = None

    def on_epoch_begin(self, epoch, logs=None):
        weights = self.weights_for_epoch(epoch)
        for loss in self._losses:
            loss.set_class_weight(weights)


def _class_indices(y: np.ndarray, what: str) -> np.ndarray:
    """Sparse labels, one-hot/soft rows or output rows as class indices."""
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1).reshape(-1)
    if what == "predictions":
        raise ConfigError(
            "PerClassMetrics needs one output unit per class; the model "
            f"outputs shape {y.shape}"
        )
    return y.reshape(-1).astype(np.int64)


class PerClassMetrics(keras.callbacks.Callback):
    """Adds ``val_balanced_accuracy`` and ``val_macro_f1`` to the epoch logs.

    At the end of every epoch the model predicts ``validation_data`` and the
    metrics are computed with ``sklearn.metrics`` (balanced accuracy is the
    mean per-class recall; macro F1 averages the classes present in the
    labels or predictions, with 0 for undefined ratios). Sample weights in
    the data are ignored: these metrics already weigh classes equally.
    Per-class precision, recall, F1 and support of the last epoch are kept
    in ``per_class_``.

    Put this callback before EarlyStopping, ModelCheckpoint or CSVLogger in
    the ``callbacks`` list so that they see the new keys (Keras' History
    always does).

    Args:
        validation_data: ``(x, y)`` or ``(x, y, sample_weight)`` arrays, or a
            re-iterable source of such batches (a list, ``tf.data.Dataset``,
            ``torch.utils.data.DataLoader``, ``keras.utils.PyDataset``, a
            Grain loader). ``y`` may be sparse or one-hot. A generator is
            refused: it would be empty from the second epoch.
        class_names: Names of the classes in index order, for ``per_class_``;
            defaults to the indices as strings.
        batch_size: Batch size for array inputs (Keras' default if None).
        steps: Batches to take from an iterable per epoch (all if None);
            needed for endless sources.

    Example:
        >>> import numpy as np
        >>> x, y = np.random.rand(20, 4), np.arange(20) % 3
        >>> callback = PerClassMetrics((x, y), class_names=["a", "b", "c"])
        >>> # model.fit(..., callbacks=[callback, keras.callbacks.EarlyStopping(
        >>> #     "val_balanced_accuracy", mode="max", patience=5)])
    """

    def __init__(self, validation_data, class_names=None, batch_size=None, steps=None):
        super().__init__()
        if validation_data is None:
            raise ConfigError("`validation_data` must be (x, y) arrays or batches; got None")
        if isinstance(validation_data, tuple):
            if len(validation_data) not in (2, 3):
                raise ConfigError(
                    "`validation_data` as a tuple must be (x, y) or (x, y, "
                    f"sample_weight); got a tuple of {len(validation_data)}"
                )
        elif not hasattr(validation_data, "__iter__") and not isinstance(
            validation_data, keras.utils.PyDataset
        ):
            raise ConfigError(
                "`validation_data` must be (x, y) arrays or an iterable of "
                f"(x, y) batches; got {type(validation_data).__name__}"
            )
        elif isinstance(validation_data, np.ndarray):
            raise ConfigError(
                "`validation_data` must be (x, y) or an iterable of (x, y) "
                "batches; got one array. Pass the labels too: (x, y)"
            )
        elif isinstance(validation_data, GeneratorType):
            raise ConfigError(
                "`validation_data` must be re-iterable (a list, tf.data.Dataset, "
                "DataLoader, PyDataset or arrays); a generator or iterator would "
                "be exhausted after the first epoch"
            )
        v.integer("steps", steps, min=1, allow_none=True)
        self.validation_data = validation_data
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.batch_size = batch_size
        self.steps = steps
        self.per_class_: dict | None = None

    def predict(self) -> tuple[np.ndarray, np.ndarray, int]:
        """True and predicted class indices over the validation data.

        Returns:
            ``(y_true, y_pred, k)`` with k the number of model outputs.
        """
        data = self.validation_data
        if isinstance(data, tuple):
            x, y = data[:2]
            out = _to_numpy(self.model.predict(x, batch_size=self.batch_size, verbose=0))
            return (_class_indices(_to_numpy(y), "labels"),
                    _class_indices(out, "predictions"), out.shape[-1])
        batches = data
        if isinstance(data, keras.utils.PyDataset):
            batches = (data[i] for i in range(len(data)))
        units = []

        def predicted(out):  # only the argmax is kept: memory linear in n, not n x k
            units.append(out.shape[-1])
            return _class_indices(out, "predictions")

        y_true, y_pred = predict_batches(self.model, batches, self.steps,
                                         name="validation_data", error=ConfigError,
                                         reduce=predicted)
        if not len(y_true):
            raise ConfigError(
                "`validation_data` yielded no batches (an iterator that was "
                "exhausted by an earlier epoch?); pass a re-iterable source"
            )
        return y_true, y_pred.astype(np.int64), units[0]

    def on_epoch_end(self, epoch, logs=None):
        y_true, y_pred, k = self.predict()
        macro_f1 = f1_score(y_true, y_pred, average="macro", zero_division=0)
        k = max(k, int(y_true.max()) + 1, len(self.class_names or ()))
        names = self.class_names or [str(i) for i in range(k)]
        names = names + [str(i) for i in range(len(names), k)]
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=np.arange(k), zero_division=0
        )
        # sklearn's balanced_accuracy_score (the mean recall of the classes in
        # y_true) without its dense k x k confusion matrix: 800 MB at 10,000 classes
        balanced = recall[support > 0].mean()
        self.per_class_ = {
            "class": names,
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.tolist(),
        }
        if logs is not None:
            logs["val_balanced_accuracy"] = float(balanced)
            logs["val_macro_f1"] = float(macro_f1)
