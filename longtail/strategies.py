"""Balancing strategies: each one maps onto loader sampling, loss and callbacks.

A strategy is one entry in :data:`STRATEGIES`. Adding one is adding an entry:
training, ``compare`` and the contract tests pick it up from the registry.

The output bias starts at the log of the class distribution the strategy
trains towards (the advice of TensorFlow's imbalanced-data tutorial,
generalised): the priors for plain and focal loss, uniform (zero) for
class-balanced weights or sampling, ``sqrt(n_c)`` shares for square-root
sampling, and zero where the loss adds the priors itself (logit adjustment,
Balanced Softmax, LDAM).

An entry may carry ``params``, a typed frozen record (a frozen dataclass)
of its hyper-parameters with their defaults, which
:meth:`Strategy.resolve_params` overrides from ``strategy_options``; and a
``second_stage`` that runs after ``fit`` (the classifier-level methods of
:mod:`longtail.decoupled`). A record may define ``stages(epochs)`` (the
epochs of stage 1 and 2) and ``first_weight_decay(default)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from longtail.errors import ConfigError

__all__ = ["Strategy", "STRATEGIES", "resolve_strategy", "resolve_strategy_options",
           "parse_strategy_option"]


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
        params: Typed frozen record of the hyper-parameters and their
            defaults (a frozen dataclass), or None.
        second_stage: Runs after ``fit`` as ``(model, context, params) ->
            (info, history_rows)`` (see :class:`longtail.decoupled.StageContext`);
            ``info`` goes to ``config.json`` and ``metrics.json``.
    """

    name: str
    description: str
    sampling: str = "shuffle"
    class_weight: str | None = None
    loss: Callable[[np.ndarray, dict], Any] = field(default=None, repr=False)
    bias: str = "trained"
    callbacks: Callable[[np.ndarray, int, dict], list] | None = field(default=None, repr=False)
    params: Any = None
    second_stage: Callable | None = field(default=None, repr=False)

    def resolve_params(self, options: Mapping | None = None):
        """The parameter record, with ``options`` (field name -> value) replacing defaults.

        Raises:
            ConfigError: An option this strategy does not have.
        """
        options = dict(options or {})
        if self.params is None:
            if options:
                raise ConfigError(f"`strategy_options`: {self.name} takes no options; got "
                                  f"{', '.join(sorted(options))}")
            return None
        known = [f.name for f in dataclasses.fields(self.params)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"`strategy_options` for {self.name} must be among "
                              f"{', '.join(known)}; got {', '.join(unknown)}")
        return dataclasses.replace(self.params, **options)

    def stages(self, epochs: int, params=None) -> tuple[int, int]:
        """Epochs of the first (``fit``) and second stage."""
        params = self.params if params is None else params
        if self.second_stage is None or not hasattr(params, "stages"):
            return epochs, 0
        return params.stages(epochs)

    def first_weight_decay(self, default: float, params=None) -> float:
        """Weight decay of the first stage: the run's unless the record sets one."""
        params = self.params if params is None else params
        if hasattr(params, "first_weight_decay"):
            return params.first_weight_decay(default)
        return default

    def trained_distribution(self, counts: np.ndarray, params: dict) -> np.ndarray:
        """The class distribution the training objective is balanced towards."""
        from longtail.sampling import resolve_sampling
        from longtail.weights import class_weights

        counts = np.asarray(counts, dtype=np.float64)
        share = resolve_sampling(self.sampling).class_shares(counts)
        if self.class_weight is not None:
            weights = class_weights(counts=counts, strategy=self.class_weight,
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


def _decoupled_entries() -> tuple[Strategy, ...]:
    from longtail import decoupled

    return (
        Strategy("crt", "classifier re-training: instance sampling, then the classifier "
                 "re-initialised and re-trained on class-balanced batches over the frozen "
                 "representation (Kang et al. 2020)", loss=_ones, params=decoupled.CRTParams(),
                 second_stage=decoupled.retrain_classifier),
        Strategy("tau-norm", "class vectors of the classifier scaled by 1/norm**tau, tau tuned "
                 "on validation balanced accuracy (Kang et al. 2020)", loss=_ones,
                 params=decoupled.TauNormParams(), second_stage=decoupled.tau_normalise),
        Strategy("weight-balancing", "larger weight decay, then the classifier under MaxNorm "
                 "with class-balanced weights (Alshammari et al. 2022)", loss=_ones,
                 params=decoupled.WeightBalancingParams(),
                 second_stage=decoupled.balance_weights),
    )


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
    *_decoupled_entries(),
)}


def resolve_strategy(name: str | Strategy) -> Strategy:
    """Returns the registered strategy for a ``--balance`` name."""
    if isinstance(name, Strategy):
        return name
    if name not in STRATEGIES:
        raise ConfigError(f"`balance` must be one of {', '.join(STRATEGIES)}; got {name!r}")
    return STRATEGIES[name]


def resolve_strategy_options(options: Mapping | None) -> dict:
    """Checks ``{strategy: {field: value}}`` against the parameter records.

    Returns:
        ``{strategy: record}`` for every strategy named.

    Raises:
        ConfigError: An unknown strategy or field, or a bad value.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(v, Mapping)
                                                   for v in options.values()):
        raise ConfigError("`strategy_options` must map strategy names to {field: value} "
                          f"dicts; got {options!r}")
    return {name: resolve_strategy(name).resolve_params(values)
            for name, values in options.items()}


def parse_strategy_option(text: str) -> tuple[str, str, Any]:
    """``"crt.stage2_share=0.5"`` -> ``("crt", "stage2_share", 0.5)``.

    The value is read as JSON when it parses (numbers, lists, null), else
    kept as a string; strategy and field are checked against the registry.

    Raises:
        ValueError: Not ``NAME.FIELD=VALUE``, or an unknown name or field.
    """
    import json

    head, sep, raw = text.partition("=")
    name, dot, key = head.strip().rpartition(".")
    if not sep or not dot or not name or not key:
        raise ValueError(f"expected NAME.FIELD=VALUE (e.g. crt.stage2_share=0.5); got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw.strip()
    try:
        resolve_strategy(name).resolve_params({key: value})
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return name, key, value
