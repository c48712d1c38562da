"""Shared machinery of the long-tail losses.

* argument checks that turn priors, counts and class weights into one
  canonical NumPy vector, with errors that name the argument;
* the floor for zero priors and zero counts;
* target handling: sparse and one-hot (or soft) targets become one dense
  target tensor, so every loss has a single code path;
* :class:`ClassWeightedLoss`, the base of every loss with per-class weights,
  which keeps them in a non-trainable variable that can be reassigned during
  training (see :func:`longtail.callbacks.track_loss_state`).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping

import keras
import numpy as np
from keras import ops

from longtail.errors import ConfigError

__all__ = ["LongtailLoss", "ClassWeightedLoss"]


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def _to_vector(value, name: str) -> np.ndarray:
    """A per-class argument as a 1-D float64 array; dicts must be {index: v}."""
    if value is None or isinstance(value, (str, bytes)):
        raise ConfigError(
            f"`{name}` must be a list of one number per class; got {value!r}"
        )
    if isinstance(value, Mapping):
        keys = list(value)
        if not all(isinstance(key, numbers.Integral) and not isinstance(key, bool)
                   for key in keys):
            raise ConfigError(
                f"`{name}` as a dict must be keyed by class index (0, 1, ...); "
                f"got keys {keys!r}. Resolve class names first, e.g. with "
                "longtail.class_weights()."
            )
        k = max(keys) + 1 if keys else 0
        missing = sorted(set(range(k)) - {int(key) for key in keys})
        if min(keys, default=0) < 0 or missing:
            raise ConfigError(
                f"`{name}` as a dict needs one entry for every class index "
                f"0..{k - 1}; missing {missing}" if missing else
                f"`{name}` keys must be class indices >= 0; got {keys!r}"
            )
        value = [value[i] for i in range(k)]
    if not isinstance(value, np.ndarray) and hasattr(value, "shape"):
        value = ops.convert_to_numpy(value)  # a backend tensor
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"`{name}` must be a list of one number per class; got {value!r}"
        ) from e
    if array.ndim != 1 or array.size < 2:
        raise ConfigError(
            f"`{name}` must be a flat list with one number per class (at least "
            f"2 classes); got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"`{name}` must be finite; got {array.tolist()}")
    if np.any(array < 0):
        raise ConfigError(
            f"`{name}` must be >= 0 for every class; got {array.tolist()}"
        )
    if not np.any(array > 0):
        raise ConfigError(f"`{name}` must not be all zero; got {array.tolist()}")
    return array


def _raise_zeros(array: np.ndarray, name: str, floor: float, what: str) -> np.ndarray:
    """Replaces zero entries by `floor`, with a loud warning."""
    zeros = np.flatnonzero(array == 0)
    if zeros.size:
        warnings.warn(
            f"`{name}` is zero for class(es) {zeros.tolist()}; {what} "
            f"({floor:g}) so that the log, margin or weight stays finite. A "
            "class with no training samples cannot be learned.",
            UserWarning,
            stacklevel=4,
        )
        array = np.where(array == 0, floor, array)
    return array


def as_counts(value, name: str = "class_counts") -> np.ndarray:
    """Class counts as float64, zeros raised to ``min(1, smallest positive)``.

    A class with no samples is treated as a class with one sample (or, when
    the counts are fractions, as the rarest class), so that ``log(n_c)``,
    ``n_c ** -1/4`` and ``1 - beta ** n_c`` stay finite. A tiny floor would
    not do: LDAM margins and effective-number weights are normalised by their
    maximum or sum, and one near-infinite entry would flatten every other one.
    """
    array = _to_vector(value, name)
    floor = min(1.0, float(array[array > 0].min()))
    return _raise_zeros(array, name, floor, "such classes are counted as")


def as_priors(value, name: str = "priors") -> np.ndarray:
    """Class priors as float64, zeros raised to the smallest positive prior.

    Priors are not renormalised: only their ratios matter (``log`` of a
    rescaled vector shifts every logit by the same amount), so class counts
    work too, and the stored list survives a config round trip bit for bit.

    A zero prior is raised to the smallest positive prior (the rarest
    observed class) before ``log``. A tiny floor such as 1e-12 would give the
    class a correction of ``-tau * log(1e-12) = +27.6 * tau`` at post-hoc
    time, so that a class never seen in training would win almost every
    prediction.
    """
    array = _to_vector(value, name)
    floor = float(array[array > 0].min())
    return _raise_zeros(array, name, floor, "such classes get the smallest prior")


def as_class_weight(value, name: str = "class_weight") -> np.ndarray:
    """Per-class weights (list, array or {index: weight}) as float64."""
    return _to_vector(value, name)


def check_number(value, name: str, low=None, high=None, *, low_open=False,
                 high_open=False) -> float:
    """A finite real number in the given range, else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"`{name}` must be a number; got {value!r}")
    value = float(value)
    bad = not np.isfinite(value)
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        if low is not None and high is not None:
            accepted = (f"in {'(' if low_open else '['}{low:g}, {high:g}"
                        f"{')' if high_open else ']'}")
        elif low is not None:
            accepted = f"{'>' if low_open else '>='} {low:g}"
        else:
            accepted = f"{'<' if high_open else '<='} {high:g}"
        raise ConfigError(f"`{name}` must be {accepted}; got {value:g}")
    return value


def to_list(array) -> list[float]:
    return [float(v) for v in np.asarray(array).ravel()]


# --------------------------------------------------------------------------
# Targets and log-probabilities
# --------------------------------------------------------------------------


def dense_targets(y_true, y_pred):
    """Sparse or one-hot/soft targets as a dense tensor shaped like y_pred.

    Sparse: ``y_true`` has one dimension fewer than ``y_pred`` ((n,) vs
    (n, k)), or the same rank with a last dimension of 1 ((n, 1)) while
    k > 1. Dense: same shape as ``y_pred``.
    """
    k = y_pred.shape[-1]
    if k is None:
        raise ValueError(
            "the number of classes (last dimension of y_pred) must be known; "
            f"got y_pred shape {tuple(y_pred.shape)}"
        )
    rank_true, rank_pred = len(y_true.shape), len(y_pred.shape)
    if rank_true == rank_pred and y_true.shape[-1] == 1 and k != 1:
        y_true = ops.squeeze(y_true, axis=-1)
        rank_true -= 1
    if rank_true == rank_pred - 1:
        labels = ops.cast(y_true, "int32")
        return ops.one_hot(labels, k, dtype=y_pred.dtype)
    if rank_true == rank_pred and y_true.shape[-1] in (k, None):
        return ops.cast(y_true, y_pred.dtype)
    raise ValueError(
        f"y_true of shape {tuple(y_true.shape)} fits neither sparse labels "
        f"(shape {tuple(y_pred.shape[:-1])} or {tuple(y_pred.shape[:-1]) + (1,)}) "
        f"nor one-hot/soft labels (shape {tuple(y_pred.shape)})"
    )


def as_logits(y_pred, from_logits: bool):
    """Logits, or ``log(clip(p))`` when y_pred holds probabilities."""
    if from_logits:
        return y_pred
    epsilon = keras.config.epsilon()
    return ops.log(ops.clip(y_pred, epsilon, 1.0))


def per_class_constant(values: np.ndarray, like):
    """A per-class NumPy vector as a tensor of ``like``'s dtype."""
    return ops.convert_to_tensor(np.asarray(values), dtype=like.dtype)


def check_num_classes(expected: int, y_pred, name: str, what: str) -> None:
    k = y_pred.shape[-1]
    if k is not None and k != expected:
        raise ValueError(
            f"{name}: `{what}` has {expected} entries but the model outputs "
            f"{k} classes (y_pred shape {tuple(y_pred.shape)})"
        )


def crossentropy_terms(targets, log_probs, weights=None):
    """Per-sample ``sum_c y_c * w_c * (-log p_c)``."""
    terms = -targets * log_probs
    if weights is not None:
        terms = terms * weights
    return ops.sum(terms, axis=-1)


def focal_terms(targets, log_probs, gamma: float, weights=None):
    """Per-sample ``sum_c y_c * w_c * (1 - p_c) ** gamma * (-log p_c)``.

    ``1 - p`` is computed as ``-expm1(log p)`` (exact near p = 1) and floored
    at ``keras.config.epsilon()``, as Keras' focal loss clips p at
    ``1 - epsilon``; the floor keeps the gradient finite for gamma < 1 when
    p rounds to 1.
    """
    one_minus_p = ops.maximum(-ops.expm1(log_probs), keras.config.epsilon())
    modulating = one_minus_p if gamma == 1.0 else ops.power(one_minus_p, gamma)
    terms = -targets * modulating * log_probs
    if weights is not None:
        terms = terms * weights
    return ops.sum(terms, axis=-1)


# --------------------------------------------------------------------------
# Class weights that can change during training
# --------------------------------------------------------------------------


class ClassWeightState(keras.metrics.Metric):
    """Holds a loss' per-class weights in a non-trainable variable.

    It is a Metric only so that a model can track it: a model's compiled
    train step (under JAX, a pure function of its state) reads the variables
    of ``model.metrics`` as state, while a variable held by a loss is baked
    into the compiled step as a constant. :func:`longtail.callbacks.
    track_loss_state` attaches it to the model. It never updates, resets or
    reports anything.
    """

    def __init__(self, values, name: str):
        super().__init__(name=name, dtype="float32")
        values = np.asarray(values, dtype="float32")
        self.class_weight = self.add_variable(
            shape=values.shape,
            initializer="ones",
            dtype="float32",
            aggregation="mean",
            name="class_weight",
        )
        self.class_weight.assign(values)

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass  # Keras resets metrics every epoch; the weights must survive.

    def result(self):
        return {}

    def get_config(self):  # pragma: no cover - never serialised
        return {"name": self.name}


class LongtailLoss(keras.losses.Loss):
    """Base of every longtail loss: adds ``dtype`` to Keras' config."""

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if dtype is None or isinstance(dtype, str):
            self._dtype_config = dtype
        else:
            self._dtype_config = keras.dtype_policies.serialize(dtype)

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self._dtype_config
        return config


class ClassWeightedLoss(LongtailLoss):
    """Base of the losses that scale each class' term by a weight.

    The weights live in a non-trainable ``keras.Variable`` (created when the
    number of classes is known) so that a callback can change them between
    epochs without recompiling; see
    :class:`longtail.callbacks.DeferredReweighting`. ``get_config`` returns
    the constructor's arguments, not weights assigned later.
    """

    def _init_class_weight(self, values, scalar: float | None = None) -> None:
        """Per-class ``values`` (or None and an optional scalar multiplier)."""
        self._scalar_weight = scalar
        self._state = None
        if values is not None:
            self._state = ClassWeightState(values, name=f"{self.name}_class_weight")

    @property
    def num_classes(self) -> int | None:
        """Number of classes the weights cover, or None while unknown."""
        return None if self._state is None else int(self._state.class_weight.shape[0])

    def get_class_weight(self) -> np.ndarray | None:
        """The current per-class weights, or None if the loss has none yet."""
        if self._state is None:
            return None
        return np.asarray(ops.convert_to_numpy(self._state.class_weight.value),
                          dtype=np.float64)

    def set_class_weight(self, class_weight) -> None:
        """Assigns new per-class weights (eagerly, e.g. from a callback).

        Under JAX the new values reach a compiled train step only when the
        model tracks this loss' state; see
        :func:`longtail.callbacks.track_loss_state`.

        Args:
            class_weight: One weight per class (list, array or {index: w}).
        """
        values = as_class_weight(class_weight)
        if self._state is None:
            self._state = ClassWeightState(values, name=f"{self.name}_class_weight")
            return
        if values.shape[0] != self.num_classes:
            raise ConfigError(
                f"`class_weight` must have {self.num_classes} entries for "
                f"{self.name}; got {values.shape[0]}"
            )
        self._state.class_weight.assign(values.astype("float32"))

    def _renew_state(self) -> None:
        """Recreates the weight variable with its current values."""
        self._state = ClassWeightState(self.get_class_weight(),
                                       name=f"{self.name}_class_weight")

    def _class_weight_tensor(self, y_pred):
        """The weights as a tensor broadcastable against y_pred, or None."""
        if self._state is not None:
            check_num_classes(self.num_classes, y_pred, self.name, "class_weight")
            return ops.cast(self._state.class_weight, y_pred.dtype)
        if self._scalar_weight is not None:
            return ops.cast(self._scalar_weight, y_pred.dtype)
        return None
