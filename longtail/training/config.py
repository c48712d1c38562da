"""The options of a training run (:class:`TrainConfig`) and what it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from longtail.errors import ConfigError
from longtail.options import parse_image_size

__all__ = ["TrainConfig", "TrainResult", "parse_image_size"]


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; ``config.json`` is this, resolved.

    See :func:`train` for the meaning of each field.
    """

    balance: str = "none"
    epochs: int | str = "auto"
    batch_size: int = 64
    image_size: tuple[int, int] | None = (64, 64)
    color_mode: str = "rgb"
    model: str | None = None
    augment: str = "flip,crop"
    val_split: float = 0.2
    val: str | None = None
    label_mode: str = "int"
    seed: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    early_stopping: int | None = None
    tau: float = 1.0
    gamma: float = 2.0
    beta: float = 0.999
    drw_epoch: int | None = None
    num_workers: int | None = None
    data_options: dict = field(default_factory=dict)
    distribute: bool = False

    def __post_init__(self):
        from longtail.strategies import resolve_strategy

        resolve_strategy(self.balance)
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if name == "epochs" and value == "auto":
                continue
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer"
                                  f"{' or auto' if name == 'epochs' else ''}; got {value!r}")
        if self.label_mode not in ("int", "categorical"):
            raise ConfigError(f"`label_mode` must be int or categorical; got {self.label_mode!r}")
        if self.color_mode not in ("rgb", "grayscale", "rgba"):
            raise ConfigError(
                f"`color_mode` must be rgb, grayscale or rgba; got {self.color_mode!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"`schedule` must be cosine or constant; got {self.schedule!r}")
        if self.val is None and not 0.0 < self.val_split < 1.0:
            raise ConfigError(
                f"`val_split` must be in (0, 1) when no `val` data is given; got {self.val_split}")
        if not self.learning_rate > 0:
            raise ConfigError(f"`learning_rate` must be > 0; got {self.learning_rate}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ConfigError(f"`early_stopping` must be >= 1 epochs; got {self.early_stopping}")
        if self.drw_epoch is not None and (
                self.drw_epoch < 0 or (self.epochs != "auto" and self.drw_epoch >= self.epochs)):
            raise ConfigError(f"`drw_epoch` must be in [0, epochs); got {self.drw_epoch} with "
                              f"epochs {self.epochs}")
        from longtail.models import resolve_augment

        resolve_augment(self.augment)

    @property
    def strategy_params(self) -> dict:
        return {"tau": self.tau, "gamma": self.gamma, "beta": self.beta,
                "drw_epoch": self.drw_epoch}

    def to_json(self) -> dict:
        out = asdict(self)
        out["image_size"] = None if self.image_size is None else list(self.image_size)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: object
    history: dict
    metrics: dict | None
    run_dir: str | None
    config: dict
