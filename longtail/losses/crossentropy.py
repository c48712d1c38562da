"""Re-weighted cross-entropy: fixed class weights and class-balanced weights."""

from __future__ import annotations

import keras
from keras import ops

from longtail.errors import ConfigError
from longtail.losses import _base
from longtail.losses._base import ClassWeightedLoss
from longtail.weights import effective_number_weights

__all__ = ["WeightedCrossentropy", "ClassBalanced"]


@keras.saving.register_keras_serializable(package="longtail")
class WeightedCrossentropy(ClassWeightedLoss):
    """Cross-entropy with one weight per class.

    Per sample: ``w[y] * -log p_y`` for sparse targets and
    ``sum_c y_c * w_c * -log p_c`` for one-hot or soft targets, with
    ``log p = log_softmax(logits)``. Unlike ``fit(class_weight=...)``, this
    works with every input pipeline and every backend, and the weights can be
    changed during training (:class:`longtail.callbacks.DeferredReweighting`).

    Args:
        class_weight: One weight >= 0 per class, in class index order: a
            list, a NumPy array or a dict ``{class_index: weight}`` covering
            every index from 0 to k-1.
        from_logits: Whether ``y_pred`` holds logits (default) or
            probabilities.
        reduction: Keras reduction: ``"sum_over_batch_size"`` (default),
            ``"sum"``, ``"mean"``, ``"mean_with_sample_weight"``, ``"none"``
            or None.
        name: Name of the loss.
        dtype: Dtype of the loss computation; defaults to ``floatx``.

    Example:
        >>> import numpy as np
        >>> loss = WeightedCrossentropy([1.0, 4.0])
        >>> value = loss(np.array([0, 1]), np.array([[2.0, 0.0], [0.0, 2.0]]))
        >>> round(float(value), 4)  # mean of 1 * 0.1269 and 4 * 0.1269
        0.3173
    """

    def __init__(
        self,
        class_weight,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="weighted_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        weights = _base.as_class_weight(class_weight, "class_weight")
        self.class_weight = _base.to_list(weights)
        self.from_logits = bool(from_logits)
        self._init_class_weight(weights)

    def call(self, y_true, y_pred):
        targets = _base.dense_targets(y_true, y_pred)
        log_probs = ops.log_softmax(_base.as_logits(y_pred, self.from_logits), axis=-1)
        return _base.crossentropy_terms(targets, log_probs,
                                        self._class_weight_tensor(y_pred))

    def get_config(self):
        config = super().get_config()
        config.update(class_weight=self.class_weight, from_logits=self.from_logits)
        return config


_BASES = ("crossentropy", "focal")


@keras.saving.register_keras_serializable(package="longtail")
class ClassBalanced(ClassWeightedLoss):
    """Class-balanced loss of Cui et al. (2019), over cross-entropy or focal.

    Each class is weighted by the inverse of its effective number of samples,
    ``w_c = (1 - beta) / (1 - beta ** n_c)``, normalised so that
    ``sum_c w_c = k``. Per sample: ``sum_c y_c * w_c * -log p_c``
    (``base="crossentropy"``) or ``sum_c y_c * w_c * (1 - p_c) ** gamma *
    -log p_c`` (``base="focal"``).

    A class with a count of zero is counted as one sample (or as the rarest
    class if the counts are fractions), with a warning.

    Args:
        class_counts: Training samples per class, in class index order.
        beta: In [0, 1). 0 weighs all classes equally; 0.999 or 0.9999 are
            the paper's choices; towards 1 the weights tend to inverse
            class frequency.
        base: ``"crossentropy"`` (default) or ``"focal"``.
        gamma: Focusing parameter of the focal base, >= 0; ignored for
            ``"crossentropy"``.
        from_logits: Whether ``y_pred`` holds logits (default) or
            probabilities.
        reduction: Keras reduction, as for :class:`WeightedCrossentropy`.
        name: Name of the loss.
        dtype: Dtype of the loss computation; defaults to ``floatx``.

    Example:
        >>> loss = ClassBalanced([900, 90, 10], beta=0.999, base="focal")
        >>> loss.get_class_weight().round(3).tolist()
        [0.044, 0.306, 2.649]
    """

    def __init__(
        self,
        class_counts,
        beta=0.999,
        base="crossentropy",
        gamma=2.0,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="class_balanced",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if base not in _BASES:
            raise ConfigError(
                f"`base` must be one of {', '.join(_BASES)}; got {base!r}"
            )
        self.class_counts = _base.to_list(_base.as_counts(class_counts))
        self.beta = _base.check_number(beta, "beta", 0.0, 1.0, high_open=True)
        self.base = base
        self.gamma = _base.check_number(gamma, "gamma", 0.0)
        self.from_logits = bool(from_logits)
        # Zero counts were raised above, as every count-based loss does.
        self._init_class_weight(effective_number_weights(self.class_counts, self.beta))

    def call(self, y_true, y_pred):
        targets = _base.dense_targets(y_true, y_pred)
        log_probs = ops.log_softmax(_base.as_logits(y_pred, self.from_logits), axis=-1)
        weights = self._class_weight_tensor(y_pred)
        if self.base == "focal":
            return _base.focal_terms(targets, log_probs, self.gamma, weights)
        return _base.crossentropy_terms(targets, log_probs, weights)

    def get_config(self):
        config = super().get_config()
        config.update(
            class_counts=self.class_counts,
            beta=self.beta,
            base=self.base,
            gamma=self.gamma,
            from_logits=self.from_logits,
        )
        return config
