"""The options of a training run (:class:`TrainConfig`) and what it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from longtail.errors import ConfigError

__all__ = ["TrainConfig", "TrainResult", "parse_image_size"]


def parse_image_size(value) -> tuple[int, int] | None:
    """``64`` -> (64, 64); ``"64x48"`` -> (64, 48) as (height, width); a pair as is."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().split("x")
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            sizes = []
        if len(sizes) not in (1, 2):
            raise ConfigError(f"`image_size` must be N or HxW (e.g. 64 or 64x48); got {value!r}")
        value = sizes
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        value = value * 2
    if len(value) != 2 or min(value) < 1 or max(value) > 8192:
        raise ConfigError(f"`image_size` must be 1..8192 pixels per side; got {value}")
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; ``config.json`` is this, resolved.

    See :func:`train` for the meaning of each field.
    """

    balance: str = "none"
    epochs: int = 10
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
    strategy_options: dict = field(default_factory=dict)

    def __post_init__(self):
        from longtail.strategies import resolve_strategy, resolve_strategy_options

        resolve_strategy(self.balance)
        resolve_strategy_options(self.strategy_options)
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer; got {value!r}")
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
        from longtail.models import resolve_augment

        resolve_augment(self.augment)

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
