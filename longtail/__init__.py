"""longtail: train Keras classifiers on large, class-imbalanced datasets.

Example:
    >>> import longtail as lt
    >>> ds = lt.Dataset.from_directory("data/")          # doctest: +SKIP
    >>> train, val = ds.split(val=0.2, seed=0)            # doctest: +SKIP
    >>> loader = train.loader(batch_size=64, image_size=(64, 64),
    ...                       sampling="balanced")        # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
import json as _json
import os as _os


def _default_backend() -> None:
    """JAX unless the user chose a backend (KERAS_BACKEND or keras.json).

    Keras itself falls back to TensorFlow, and writes that into a new
    ``~/.keras/keras.json`` on first import; a keras.json naming TensorFlow
    when TensorFlow is not installed is treated as no choice.
    """
    if "KERAS_BACKEND" in _os.environ:
        return
    home = _os.environ.get("KERAS_HOME", _os.path.join(_os.path.expanduser("~"), ".keras"))
    try:
        with open(_os.path.join(home, "keras.json"), encoding="utf-8") as f:
            chosen = _json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        chosen = None
    if not isinstance(chosen, str) or importlib.util.find_spec(chosen) is None:
        _os.environ["KERAS_BACKEND"] = "jax"


_default_backend()

from longtail.dataset import Dataset
from longtail.errors import ConfigError, DataError, DecodeError, LongtailError
from longtail.split import stratified_split
from longtail.weights import class_weights, sample_weights

__version__ = "0.1.0"

# Names whose modules import Keras (and so a backend) are loaded on first use,
# so that `longtail stats` and `import longtail` stay fast.
_LAZY = {
    "losses": ("longtail.losses", None),
    "callbacks": ("longtail.callbacks", None),
    "adjust_logits": ("longtail.posthoc", "adjust_logits"),
    "tune_tau": ("longtail.posthoc", "tune_tau"),
    "evaluate": ("longtail.evaluation", "evaluate"),
    "train": ("longtail.training", "train"),
    "compare": ("longtail.comparison", "compare"),
    "sampling": ("longtail.sampling", None),
    "make_loader": ("longtail.loader", "make_loader"),
    "compute_metrics": ("longtail.metrics", "compute_metrics"),
    "write_report": ("longtail.report", "write_report"),
    "write_compare_report": ("longtail.report", "write_compare_report"),
    "models": ("longtail.models", None),
    "strategies": ("longtail.strategies", None),
    "cache": ("longtail.cache", None),
    "sources": ("longtail.sources", None),
    "options": ("longtail.options", None),
    "tf": ("longtail.tf", None),
    "torch": ("longtail.torch", None),
}

__all__ = [
    "Dataset",
    "class_weights",
    "sample_weights",
    "stratified_split",
    "LongtailError",
    "DataError",
    "DecodeError",
    "ConfigError",
    # The torch and tf adapters need their framework: `from longtail import *`
    # leaves them out (it must work without torch, and must not rebind a
    # user's `torch` or `tf`); `longtail.torch` and `longtail.tf` still work.
    *(name for name in _LAZY if name not in ("tf", "torch")),
]


def __getattr__(name: str):
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'longtail' has no attribute {name!r}")


def __dir__():
    return sorted({*__all__, *_LAZY})
