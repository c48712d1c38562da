"""``epochs="auto"``: a step budget that grows with the dataset, and its early stopping.

The rule (also in docs/guide.md, "How long training runs"):

- the budget is ``steps = clip(40 * sqrt(N), 600, 100_000)`` optimizer steps
  for ``N`` training samples: the steps a model needs grow with the data, but
  more slowly than the data, so a small set is seen for many epochs (300
  images: about 200 epochs of 3 batches) and a large one for few (1,000,000
  images: 40,000 steps, 3 epochs of batch 64);
- ``epochs = clip(ceil(steps / steps_per_epoch), 1, 500)``;
- early stopping on validation balanced accuracy with patience
  ``clip(epochs // 10, 5, 30)`` epochs, ending on the best epoch's weights
  (an explicit ``early_stopping`` patience is kept);
- early stopping starts counting after a warm-up of ``ceil(epochs / 4)``
  epochs (a quarter of the budget). A from-scratch model on long-tailed
  data first predicts the head class for every input: validation balanced
  accuracy sits at exactly ``1 / k`` until the features overcome the prior,
  and on Digits-LT (250 images, 64 px) that plateau lasted 15 epochs, as
  long as the patience. Without the warm-up such a run stopped on its
  plateau and ended on epoch 1's weights (balanced accuracy 0.100).

The learning-rate schedule (cosine) decays over the whole budget, so a run
that stops early stopped because validation stopped improving, not because
the learning rate reached zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EpochPlan", "plan_epochs", "AUTO"]

AUTO = "auto"
_STEPS_PER_ROOT_SAMPLE = 40
_MIN_STEPS, _MAX_STEPS = 600, 100_000
_MIN_EPOCHS, _MAX_EPOCHS = 1, 500


@dataclass(frozen=True)
class EpochPlan:
    """What ``epochs="auto"`` chose for a dataset, and why (``config.json``'s ``epoch_plan``)."""

    epochs: int
    patience: int
    steps: int
    warmup: int
    steps_per_epoch: int
    train_samples: int

    @property
    def rule(self) -> str:
        return (f"steps = clip({_STEPS_PER_ROOT_SAMPLE} * sqrt({self.train_samples}), "
                f"{_MIN_STEPS}, {_MAX_STEPS}) = {self.steps}; epochs = ceil(steps / "
                f"{self.steps_per_epoch} steps per epoch), {_MIN_EPOCHS} to {_MAX_EPOCHS}; early "
                f"stopping patience {self.patience} epochs on validation balanced accuracy, "
                f"counted from epoch {self.warmup + 1} (warm-up ceil(epochs / 4) = "
                f"{self.warmup})")

    def to_json(self) -> dict:
        return {"epochs": self.epochs, "patience": self.patience, "steps": self.steps,
                "warmup": self.warmup,
                "steps_per_epoch": self.steps_per_epoch,
                "train_samples": self.train_samples, "rule": self.rule}


def plan_epochs(train_samples: int, steps_per_epoch: int,
                patience: int | None = None) -> EpochPlan:
    """The epoch count and early-stopping patience of ``epochs="auto"``.

    Args:
        train_samples: Training samples ``N`` (after the validation split).
        steps_per_epoch: Batches in one epoch of the training loader.
        patience: An explicit early-stopping patience, kept as given.

    Returns:
        An :class:`EpochPlan`; see the module docstring for the rule.
    """
    if train_samples < 1 or steps_per_epoch < 1:
        raise ValueError(f"plan_epochs needs >= 1 sample and step per epoch; got "
                         f"{train_samples} samples, {steps_per_epoch} steps per epoch")
    steps = int(round(_STEPS_PER_ROOT_SAMPLE * math.sqrt(train_samples)))
    steps = min(max(steps, _MIN_STEPS), _MAX_STEPS)
    epochs = min(max(math.ceil(steps / steps_per_epoch), _MIN_EPOCHS), _MAX_EPOCHS)
    if patience is None:
        patience = min(max(epochs // 10, 5), 30)
    warmup = math.ceil(epochs / 4) if epochs > 1 else 0
    return EpochPlan(epochs=epochs, patience=patience, steps=steps, warmup=warmup,
                     steps_per_epoch=steps_per_epoch, train_samples=train_samples)
