"""Focal loss (Lin et al. 2017) for softmax outputs, sparse or one-hot."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from longtail.losses import _base
from longtail.losses._base import ClassWeightedLoss

__all__ = ["Focal"]


@keras.saving.register_keras_serializable(package="longtail")
class Focal(ClassWeightedLoss):
    """Softmax focal loss with optional per-class alpha; sparse targets too.

    Per sample: ``-sum_c y_c * alpha_c * (1 - p_c) ** gamma * log p_c`` with
    ``log p = log_softmax(logits)``. Keras has no sparse focal loss; this one
    takes sparse labels, one-hot or soft labels alike.

    A scalar ``alpha`` multiplies every class' term, as Keras'
    ``CategoricalFocalCrossentropy(alpha=a)`` does (it is not the binary
    focal loss' ``alpha`` for positives and ``1 - alpha`` for negatives):
    with the same ``alpha`` and ``gamma`` and ``from_logits=True`` both give
    the same values wherever Keras' clipping of p to [1e-7, 1 - 1e-7] does
    not bite. Note Keras' default is ``alpha=0.25``; here it is None (1).

    Args:
        gamma: Focusing parameter, >= 0. 0 gives (alpha-weighted)
            cross-entropy.
        alpha: None (no weighting), a scalar >= 0 applied to every class, or
            one weight >= 0 per class (list, array or {class_index: weight}).
            A per-class alpha is the loss' class weight: it can be reassigned
            during training (:class:`longtail.callbacks.DeferredReweighting`).
        from_logits: Whether ``y_pred`` holds logits (default) or
            probabilities.
        reduction: Keras reduction: ``"sum_over_batch_size"`` (default),
            ``"sum"``, ``"mean"``, ``"mean_with_sample_weight"``, ``"none"``
            or None.
        name: Name of the loss.
        dtype: Dtype of the loss computation; defaults to ``floatx``.

    Example:
        >>> import numpy as np
        >>> loss = Focal(gamma=2.0, alpha=[0.25, 0.75])
        >>> value = loss(np.array([1]), np.array([[0.0, 0.0]]))
        >>> round(float(value), 4)  # 0.75 * 0.5**2 * log 2
        0.13
    """

    def __init__(
        self,
        gamma=2.0,
        alpha=None,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="focal",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = _base.check_number(gamma, "gamma", 0.0)
        self.from_logits = bool(from_logits)
        if alpha is None:
            self.alpha = None
            self._init_class_weight(None)
        elif isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
            self.alpha = _base.check_number(alpha, "alpha", 0.0)
            self._init_class_weight(None, scalar=self.alpha)
        else:
            weights = _base.as_class_weight(alpha, "alpha")
            self.alpha = _base.to_list(weights)
            self._init_class_weight(weights)

    def set_class_weight(self, class_weight) -> None:
        """Assigns a new per-class alpha (replacing a scalar alpha, if any)."""
        super().set_class_weight(class_weight)
        self._scalar_weight = None

    def call(self, y_true, y_pred):
        targets = _base.dense_targets(y_true, y_pred)
        log_probs = ops.log_softmax(_base.as_logits(y_pred, self.from_logits), axis=-1)
        return _base.focal_terms(targets, log_probs, self.gamma,
                                 self._class_weight_tensor(y_pred))

    def get_config(self):
        config = super().get_config()
        config.update(gamma=self.gamma, alpha=self.alpha, from_logits=self.from_logits)
        return config
