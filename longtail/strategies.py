"""Balancing strategies: each one maps onto loader sampling, loss and callbacks.

A strategy is one entry in :data:`STRATEGIES`. Adding one is adding an entry:
training, ``compare`` and the contract tests pick it up from the registry.

The output bias starts at the log of the class distribution the strategy
trains towards (the advice of TensorFlow's imbalanced-data tutorial,
generalised): the priors for plain and focal loss, uniform (zero) for
class-balanced weights or sampling, ``sqrt(n_c)`` shares for square-root
sampling, and zero where the loss adds the priors itself (logit adjustment,
Balanced Softmax, LDAM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from longtail.errors import ConfigError

__all__ = ["Strategy", "STRATEGIES", "resolve_strategy"]


@dataclass(frozen=True)
class Strategy:
    """How one balancing strategy trains.

    Attributes:
        name: The ``--balance`` name.
        description: One line for ``--help`` and the docs.
        sampling: Loader sampling plan (see :mod:`longtail.sampling`).
        class_weight: Class-weight strategy for per-sample weights, or None.
        loss: Builds the loss from ``(counts, params)``.
        bias: ``"trained"`` (log of the distribution the objective trains
            towards) or ``"zero"`` (the loss adds the priors itself).
        callbacks: Builds extra callbacks from ``(counts, epochs, params)``.
    """

    name: str
    description: str
    sampling: str = "shuffle"
    class_weight: str | None = None
    loss: Callable[[np.ndarray, dict], Any] = field(default=None, repr=False)
    bias: str = "trained"
    callbacks: Callable[[np.ndarray, int, dict], list] | None = field(default=None, repr=False)

    def trained_distribution(self, counts: np.ndarray, params: dict) -> np.ndarray:
        """The class distribution the training objective is balanced towards."""
        from longtail.sampling import resolve_sampling
        from longtail.weights import class_weights

        counts = np.asarray(counts, dtype=np.float64)
        share = resolve_sampling(self.sampling).class_shares(counts)
        if self.class_weight is not None:
            weights = class_weights(_Counts(counts), self.class_weight,
                                    beta=params.get("beta", 0.999))
            share = share * np.array([weights[i] for i in range(len(counts))])
        return share / share.sum()

    def output_bias(self, counts: np.ndarray, params: dict) -> np.ndarray:
        """Initial bias of the logits layer."""
        if self.bias == "zero":
            return np.zeros(len(counts), dtype=np.float32)
        share = self.trained_distribution(counts, params)
        floor = share[share > 0].min() if (share > 0).any() else 1.0
        return np.log(np.maximum(share, floor)).astype(np.float32)


class _Counts:
    """Class counts in the form :func:`class_weights` reads from a Dataset."""

    def __init__(self, counts):
        self.class_counts = np.asarray(counts)
        self.class_names = [str(i) for i in range(len(counts))]


def _ones(counts, params):
    from longtail.losses import WeightedCrossentropy

    return WeightedCrossentropy(np.ones(len(counts)).tolist())


def _focal(counts, params):
    from longtail.losses import Focal

    return Focal(gamma=params.get("gamma", 2.0), alpha=params.get("alpha"))


def _logit_adjusted(counts, params):
    from longtail.losses import LogitAdjusted

    priors = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    return LogitAdjusted(priors.tolist(), tau=params.get("tau", 1.0))


def _balanced_softmax(counts, params):
    from longtail.losses import BalancedSoftmax

    return BalancedSoftmax(np.asarray(counts, dtype=np.float64).tolist())


def _ldam(counts, params):
    from longtail.losses import LDAM

    return LDAM(np.asarray(counts, dtype=np.float64).tolist(),
                max_margin=params.get("max_margin", 0.5), scale=params.get("scale", 30.0))


def _drw(counts, epochs, params):
    from longtail.callbacks import DeferredReweighting

    start = params.get("drw_epoch")
    if start is None:
        start = max(1, int(round(0.8 * epochs)))  # as in LDAM-DRW: 160 of 200 epochs
    return [DeferredReweighting(np.asarray(counts).tolist(), start_epoch=int(start),
                                beta=params.get("beta", 0.999))]


#: Every strategy by ``--balance`` name.
STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("none", "plain cross-entropy on the data as it is", loss=_ones),
    Strategy("class-weight", "per-sample weights n / (k n_c) (scikit-learn's 'balanced')",
             class_weight="balanced", loss=_ones),
    Strategy("effective-weight", "per-sample weights from effective numbers (Cui et al. 2019)",
             class_weight="effective", loss=_ones),
    Strategy("resample", "class-balanced sampling, minority classes drawn with replacement",
             sampling="balanced", loss=_ones),
    Strategy("sqrt-resample", "sampling with class shares proportional to sqrt(n_c)",
             sampling="sqrt", loss=_ones),
    Strategy("focal", "focal loss, gamma 2 (Lin et al. 2017)", loss=_focal),
    Strategy("logit-adjust", "logit-adjusted loss, tau 1 (Menon et al. 2021)",
             loss=_logit_adjusted, bias="zero"),
    Strategy("balanced-softmax", "Balanced Softmax (Ren et al. 2020)",
             loss=_balanced_softmax, bias="zero"),
    Strategy("ldam-drw", "LDAM margins, class-balanced weights from 80% of the epochs "
             "(Cao et al. 2019)", loss=_ldam, bias="zero", callbacks=_drw),
)}


def resolve_strategy(name: str | Strategy) -> Strategy:
    """Returns the registered strategy for a ``--balance`` name."""
    if isinstance(name, Strategy):
        return name
    if name not in STRATEGIES:
        raise ConfigError(f"`balance` must be one of {', '.join(STRATEGIES)}; got {name!r}")
    return STRATEGIES[name]
