"""Keras 3 losses for long-tailed (class-imbalanced) classification.

Every loss here:

* is written with ``keras.ops`` only, so it runs on JAX, PyTorch and
  TensorFlow;
* takes sparse targets (shape ``(n,)`` or ``(n, 1)``) and one-hot or soft
  targets (shape ``(n, k)``) alike, and expects logits by default
  (``from_logits=True``);
* works from ``log_softmax``, never ``log(softmax)``, so logits of +-1e4
  give finite values and gradients;
* is registered as ``longtail>ClassName`` for ``.keras`` saving and loading
  in safe mode.

Losses:

* :class:`WeightedCrossentropy` - fixed per-class weights.
* :class:`Focal` - focal loss, with optional per-class alpha.
* :class:`ClassBalanced` - effective-number weights (Cui et al. 2019) over
  cross-entropy or focal.
* :class:`LogitAdjusted` - logit-adjusted loss (Menon et al. 2021).
* :class:`BalancedSoftmax` - Balanced Softmax (Ren et al. 2020).
* :class:`LDAM` - label-distribution-aware margins (Cao et al. 2019).

The class-weighted ones (:class:`ClassWeightedLoss` subclasses: all but
LogitAdjusted and BalancedSoftmax) keep their weights in a variable that
:class:`longtail.callbacks.DeferredReweighting` reassigns mid-training.

Zero counts and priors: a class with a count of zero is counted as one
sample (or as the rarest class when the counts are fractions); a zero prior
is raised to the smallest positive prior. Both warn.

Example:
    >>> import keras
    >>> import longtail as lt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile("adam", loss=lt.losses.LogitAdjusted([0.7, 0.2, 0.1]))
"""

from longtail.losses._base import ClassWeightedLoss
from longtail.losses.adjusted import LDAM, BalancedSoftmax, LogitAdjusted
from longtail.losses.crossentropy import ClassBalanced, WeightedCrossentropy
from longtail.losses.focal import Focal

#: Every loss of this package by class name (for contract tests and the CLI).
LOSSES = {
    cls.__name__: cls
    for cls in (
        WeightedCrossentropy,
        Focal,
        ClassBalanced,
        LogitAdjusted,
        BalancedSoftmax,
        LDAM,
    )
}

__all__ = [
    "WeightedCrossentropy",
    "Focal",
    "ClassBalanced",
    "LogitAdjusted",
    "BalancedSoftmax",
    "LDAM",
    "ClassWeightedLoss",
    "LOSSES",
]
