"""Losses that shift the logits by a per-class offset before cross-entropy.

Logit-adjusted loss (Menon et al. 2021), Balanced Softmax (Ren et al. 2020)
and LDAM (Cao et al. 2019). All three train the model's raw logits to be
balanced: at inference, use the logits as they are.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from longtail.errors import ConfigError
from longtail.losses import _base
from longtail.losses._base import ClassWeightedLoss, LongtailLoss

__all__ = ["LogitAdjusted", "BalancedSoftmax", "LDAM"]


class _OffsetCrossentropy(LongtailLoss):
    """Cross-entropy of ``logits + offset`` for a fixed per-class offset."""

    def _offset(self) -> np.ndarray:
        raise NotImplementedError

    def call(self, y_true, y_pred):
        targets = _base.dense_targets(y_true, y_pred)
        offset = self._offset()
        _base.check_num_classes(len(offset), y_pred, self.name, self._offset_arg)
        logits = _base.as_logits(y_pred, self.from_logits)
        logits = logits + _base.per_class_constant(offset, logits)
        log_probs = ops.log_softmax(logits, axis=-1)
        return _base.crossentropy_terms(targets, log_probs)


@keras.saving.register_keras_serializable(package="longtail")
class LogitAdjusted(_OffsetCrossentropy):
    """Logit-adjusted cross-entropy (Menon et al. 2021).

    Per sample: cross-entropy of ``logits + tau * log(priors)``. The model's
    raw logits then estimate the balanced (uniform-prior) posterior.

    A zero prior is raised to the smallest positive prior, with a warning.
    Only the priors' ratios matter, so class counts work too.

    Args:
        priors: Training class frequencies (or counts), one per class.
        tau: Scale of the adjustment, >= 0; 1 is the paper's default and 0
            gives plain cross-entropy.
        from_logits: Whether ``y_pred`` holds logits (default) or
            probabilities (then ``log(p)`` serves as the logits).
        reduction: Keras reduction: ``"sum_over_batch_size"`` (default),
            ``"sum"``, ``"mean"``, ``"mean_with_sample_weight"``, ``"none"``
            or None.
        name: Name of the loss.
        dtype: Dtype of the loss computation; defaults to ``floatx``.

    Example:
        >>> import numpy as np
        >>> loss = LogitAdjusted([0.9, 0.1], tau=1.0)
        >>> value = loss(np.array([1]), np.array([[0.0, 0.0]]))
        >>> round(float(value), 4)  # -log(0.1 / (0.9 + 0.1))
        2.3026
    """

    _offset_arg = "priors"

    def __init__(
        self,
        priors,
        tau=1.0,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="logit_adjusted",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.priors = _base.to_list(_base.as_priors(priors, "priors"))
        self.tau = _base.check_number(tau, "tau", 0.0)
        self.from_logits = bool(from_logits)

    def _offset(self):
        return self.tau * np.log(np.asarray(self.priors))

    def get_config(self):
        config = super().get_config()
        config.update(priors=self.priors, tau=self.tau, from_logits=self.from_logits)
        return config


@keras.saving.register_keras_serializable(package="longtail")
class BalancedSoftmax(_OffsetCrossentropy):
    """Balanced Softmax cross-entropy (Ren et al. 2020).

    Per sample: cross-entropy of ``logits + log(n_c)``, i.e. the softmax with
    each class' exponential scaled by its count. Equal to
    :class:`LogitAdjusted` with ``tau=1`` and priors proportional to the
    counts.

    A zero count is counted as one sample (or as the rarest class if the
    counts are fractions), with a warning.

    Args:
        class_counts: Training samples per class, in class index order.
        from_logits: Whether ``y_pred`` holds logits (default) or
            probabilities.
        reduction: Keras reduction, as for :class:`LogitAdjusted`.
        name: Name of the loss.
        dtype: Dtype of the loss computation; defaults to ``floatx``.

    Example:
        >>> import numpy as np
        >>> loss = BalancedSoftmax([90, 10])
        >>> value = loss(np.array([1]), np.array([[0.0, 0.0]]))
        >>> round(float(value), 4)  # -log(10 / (90 + 10))
        2.3026
    """

    _offset_arg = "class_counts"

    def __init__(
        self,
        class_counts,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="balanced_softmax",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.class_counts = _base.to_list(_base.as_counts(class_counts))
        self.from_logits = bool(from_logits)

    def _offset(self):
        return np.log(np.asarray(self.class_counts))

    def get_config(self):
        config = super().get_config()
        config.update(class_counts=self.class_counts, from_logits=self.from_logits)
        return config


def ldam_margins(class_counts, max_margin: float) -> np.ndarray:
    """LDAM margins ``m_c = C / n_c ** (1/4)``, with C so that max m = max_margin."""
    inv = np.power(_base.as_counts(class_counts), -0.25)
    return inv * (max_margin / inv.max())


@keras.saving.register_keras_serializable(package="longtail")
class LDAM(ClassWeightedLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019).

    Each class gets a margin ``m_c = C / n_c ** (1/4)``, with C chosen so
    that the largest margin is ``max_margin``. The true class' logit is
    lowered by its margin, all logits are multiplied by ``scale``, and the
    result goes through (optionally class-weighted) cross-entropy:
    ``sum_c y_c * w_c * -log_softmax(scale * (z - m_y * y))_c``. For one-hot
    or soft targets the margin applied is ``sum_c y_c m_c``, on the target
    entries in proportion to ``y`` (for one-hot rows this is the sparse
    case exactly).

    The per-class weights (default: none) can be set during training;
    :class:`longtail.callbacks.DeferredReweighting` does so for LDAM-DRW.
    Batch reduction follows Keras (``sum_over_batch_size`` divides by the
    batch size), not PyTorch's weighted mean (divides by the sum of weights).

    A zero count is counted as one sample (or as the rarest class if the
    counts are fractions), with a warning.

    Args:
        class_counts: Training samples per class, in class index order.
        max_margin: Largest margin (of the rarest class), > 0; the paper
            uses 0.5.
        scale: Logit scale s, > 0; the paper uses 30 (with normalised
            features) or 1 (with plain logits).
        class_weight: None (unweighted) or one weight >= 0 per class.
        from_logits: Whether ``y_pred`` holds logits (default) or
            probabilities.
        reduction: Keras reduction: ``"sum_over_batch_size"`` (default),
            ``"sum"``, ``"mean"``, ``"mean_with_sample_weight"``, ``"none"``
            or None.
        name: Name of the loss.
        dtype: Dtype of the loss computation; defaults to ``floatx``.

    Example:
        >>> loss = LDAM([1000, 100, 10], max_margin=0.5, scale=30.0)
        >>> [round(m, 3) for m in loss.margins]
        [0.158, 0.281, 0.5]
    """

    def __init__(
        self,
        class_counts,
        max_margin=0.5,
        scale=30.0,
        class_weight=None,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="ldam",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.class_counts = _base.to_list(_base.as_counts(class_counts))
        self.max_margin = _base.check_number(max_margin, "max_margin", 0.0, low_open=True)
        self.scale = _base.check_number(scale, "scale", 0.0, low_open=True)
        self.from_logits = bool(from_logits)
        self.margins = _base.to_list(ldam_margins(self.class_counts, self.max_margin))
        k = len(self.class_counts)
        if class_weight is None:
            self.class_weight = None
            values = np.ones(k)
        else:
            values = _base.as_class_weight(class_weight, "class_weight")
            if len(values) != k:
                raise ConfigError(
                    f"`class_weight` must have one entry per class ({k}, as "
                    f"`class_counts`); got {len(values)}"
                )
            self.class_weight = _base.to_list(values)
        # Always a variable, so that DRW can switch weights on mid-training.
        self._init_class_weight(values)

    def call(self, y_true, y_pred):
        targets = _base.dense_targets(y_true, y_pred)
        _base.check_num_classes(len(self.margins), y_pred, self.name, "class_counts")
        logits = _base.as_logits(y_pred, self.from_logits)
        margins = _base.per_class_constant(self.margins, logits)
        margin = ops.sum(targets * margins, axis=-1, keepdims=True) * targets
        log_probs = ops.log_softmax(self.scale * (logits - margin), axis=-1)
        return _base.crossentropy_terms(targets, log_probs,
                                        self._class_weight_tensor(y_pred))

    def get_config(self):
        config = super().get_config()
        config.update(
            class_counts=self.class_counts,
            max_margin=self.max_margin,
            scale=self.scale,
            class_weight=self.class_weight,
            from_logits=self.from_logits,
        )
        return config
