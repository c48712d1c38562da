"""``lt.train`` and ``longtail train``: from DATA to a trained model and a run folder.

The run folder holds ``config.json`` (every resolved option), ``history.csv``,
``model.keras``, ``metrics.json`` (validation split, DESIGN.md schema),
``report.html`` with its PNG plots, and ``checkpoints/`` (for ``--resume``, see
:mod:`longtail.training.checkpoint`). Every file is written atomically, so a
run killed at any point leaves either the previous complete file or the new
one, never half of one. A resumed run repeats the uninterrupted run exactly
(same seed, same data, same machine and backend); ``--resume`` refuses data
whose index changed, and does nothing for a finished run (``state.json`` says
``finished``). See docs/reliability.md, "Kill tests".

Modules: :mod:`~longtail.training.config` (the options),
:mod:`~longtail.training.checkpoint` (saving and resuming),
:mod:`~longtail.training.run` (the run itself).
"""

from longtail.training.config import TrainConfig, TrainResult, parse_image_size
from longtail.training.run import train

__all__ = ["TrainConfig", "TrainResult", "train", "parse_image_size"]
