"""One seeding function that seeds the Keras backend in use, and only that one.

``keras.utils.set_random_seed`` also seeds TensorFlow whenever TensorFlow is
installed, whatever the backend, and to do so it imports TensorFlow: on a
JAX run that costs about 6.6 CPU-seconds and 428 MiB and prints TensorFlow's
start-up log lines (``docs/performance.md``). :func:`seed_everything` does
what that function does for Python, NumPy, Keras' global seed and the torch
backend, and seeds TensorFlow only when TensorFlow is the backend or is
already imported (a ``tf.data`` pipeline in the same process).

Saving a model has the same import inside Keras;
:func:`tensorflow_left_unloaded` scopes it away.
"""

from __future__ import annotations

import contextlib
import random
import sys

import numpy as np

__all__ = ["seed_everything", "tensorflow_left_unloaded"]


def seed_everything(seed: int) -> None:
    """Seeds Python ``random``, NumPy, Keras' global seed and the backend in use.

    After it, Keras initialisers and ``keras.random`` calls without a seed
    draw from a generator rebuilt from ``seed``, so two runs build the same
    initial weights, exactly as after ``keras.utils.set_random_seed(seed)``.

    Args:
        seed: A non-negative integer.

    Raises:
        TypeError: ``seed`` is not an integer.
        ValueError: ``seed`` is negative.

    Example:
        >>> seed_everything(0)
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an int; got {seed!r}")
    if seed < 0:
        raise ValueError(f"`seed` must be >= 0; got {seed}")
    seed = int(seed)
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)  # TensorFlow is loaded anyway: seed it too
        return
    from longtail._keras import reset_global_seed

    # What keras.utils.set_random_seed does, less the TensorFlow import: store
    # the seed, drop the global SeedGenerator (it is rebuilt from the seed).
    if not reset_global_seed(seed):  # Keras moved its internals: seed as it does
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)
    if backend == "torch":
        import torch

        torch.manual_seed(seed)


@contextlib.contextmanager
def tensorflow_left_unloaded():
    """Keeps Keras from importing TensorFlow only to rule out TensorFlow objects.

    Keras' model saving asks ``isinstance(obj, tf.TensorShape)`` (and
    ``tf.DType``, ``tf.TypeSpec``) of every value it serialises, through a
    lazy module that imports TensorFlow on first use when it is installed.
    While TensorFlow is not imported no value can be one of its objects, so
    inside this block Keras is told TensorFlow is unavailable: the saved file
    is the same, without the import. Nothing changes when TensorFlow is the
    backend or already imported.

    Example:
        >>> with tensorflow_left_unloaded():  # doctest: +SKIP
        ...     model.save("model.keras")
    """
    import keras

    if "tensorflow" in sys.modules or keras.backend.backend() == "tensorflow":
        yield
        return
    from longtail._keras import tensorflow_lazy_module

    lazy = tensorflow_lazy_module()
    if lazy is None:  # Keras moved it: let it import TensorFlow
        yield
        return
    previous = lazy._available
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = previous
