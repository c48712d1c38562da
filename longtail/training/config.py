"""The options of a training run (:class:`TrainConfig`) and what it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from longtail import _validation as v
from longtail.errors import ConfigError
from longtail.options import channels_of, parse_image_size
from longtail.strategies import DEFAULT_BALANCE

__all__ = ["TrainConfig", "TrainResult", "parse_image_size"]


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; ``config.json`` is this, resolved.

    See :func:`train` for the meaning of each field.
    """

    balance: str = DEFAULT_BALANCE
    epochs: int | str = "auto"
    batch_size: int = 64
    image_size: tuple[int, int] | None = (64, 64)
    color_mode: str = "rgb"
    model: str | None = None
    weights: str | None = None  # pretrained backbones: imagenet (default), none or a file
    finetune: str = "head"  # pretrained backbones: head, top:N or all
    head_epochs: int | None = None  # pretrained backbones: epochs before fine-tuning
    augment: str = "flip,crop"
    val_split: float = 0.2
    val: str | None = None
    label_mode: str = "int"
    seed: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    early_stopping: int | None = None
    early_stopping_start: int = 0  # epochs before early stopping counts (epochs auto: 1/4)
    tau: float = 1.0
    gamma: float = 2.0
    beta: float = 0.999
    drw_epoch: int | None = None
    num_workers: int | None = None
    data_options: dict = field(default_factory=dict)
    distribute: bool = False
    strategy_options: dict = field(default_factory=dict)
    shot_thresholds: tuple[int, int] = (100, 20)  # (many, few) of the run's report

    def __post_init__(self):
        from longtail.strategies import resolve_strategy, resolve_strategy_options

        resolve_strategy(self.balance)
        resolve_strategy_options(self.strategy_options)
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        checked = {
            "epochs": self.epochs if self.epochs == "auto" else v.integer(
                "epochs", self.epochs, min=1),
            "batch_size": v.integer("batch_size", self.batch_size, min=1),
            "seed": v.integer("seed", self.seed, min=0),
            "learning_rate": v.number("learning_rate", self.learning_rate, min=0,
                                      min_open=True),
            "weight_decay": v.number("weight_decay", self.weight_decay, min=0),
            "early_stopping": v.integer("early_stopping", self.early_stopping, min=1,
                                        allow_none=True),
            "early_stopping_start": v.integer("early_stopping_start",
                                              self.early_stopping_start, min=0),
            "tau": v.number("tau", self.tau),
            "gamma": v.number("gamma", self.gamma, min=0),
            "beta": v.fraction("beta", self.beta),
            "drw_epoch": v.integer("drw_epoch", self.drw_epoch, min=0, allow_none=True),
            "num_workers": v.integer("num_workers", self.num_workers, min=0, allow_none=True),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "shot_thresholds", _shot_thresholds(self.shot_thresholds))
        v.one_of("label_mode", self.label_mode, ("int", "categorical"))
        channels_of(self.color_mode)  # checks it: one of rgb, grayscale, rgba
        v.one_of("schedule", self.schedule, ("cosine", "constant"))
        if self.val is None:
            v.fraction("val_split", self.val_split, allow_zero=False)
        if self.drw_epoch is not None and self.epochs != "auto" and self.drw_epoch >= self.epochs:
            raise ConfigError(f"`drw_epoch` must be in [0, epochs); got {self.drw_epoch} with "
                              f"epochs {self.epochs}")
        from longtail.models import resolve_augment

        resolve_augment(self.augment)
        from longtail.backbones import parse_finetune

        parse_finetune(self.finetune)

    @property
    def strategy_params(self) -> dict:
        return {"tau": self.tau, "gamma": self.gamma, "beta": self.beta,
                "drw_epoch": self.drw_epoch}

    @property
    def strategy_record(self):
        """The typed parameter record of ``balance``, with ``strategy_options`` applied."""
        from longtail.strategies import resolve_strategy

        return resolve_strategy(self.balance).resolve_params(
            self.strategy_options.get(self.balance))

    @property
    def first_epochs(self) -> int:
        """Epochs of ``fit``: all of them, or stage 1's for a two-stage strategy."""
        from longtail.strategies import resolve_strategy

        return resolve_strategy(self.balance).stages(self.epochs, self.strategy_record)[0]

    @property
    def first_weight_decay(self) -> float:
        """Weight decay of ``fit``: the run's, unless the strategy's record sets its own."""
        from longtail.strategies import resolve_strategy

        return resolve_strategy(self.balance).first_weight_decay(self.weight_decay,
                                                                 self.strategy_record)

    def to_json(self) -> dict:
        out = asdict(self)
        out["image_size"] = None if self.image_size is None else list(self.image_size)
        out["shot_thresholds"] = list(self.shot_thresholds)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


#: TrainConfig fields that apply to image data only (refused on feature rows).
IMAGE_OPTIONS = ("image_size", "color_mode", "augment")


def _shot_thresholds(value) -> tuple[int, int]:
    """``(many, few)`` training counts with ``0 <= few <= many``."""
    try:
        many, few = value
    except (TypeError, ValueError):
        many = few = None
    if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 0
               for t in (many, few)) or few > many:
        raise ConfigError("`shot_thresholds` must be two integers (many, few) with "
                          f"0 <= few <= many; got {value!r}")
    return int(many), int(few)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: object
    history: dict
    metrics: dict | None
    run_dir: str | None
    config: dict
