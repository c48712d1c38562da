"""One seeding function that seeds the Keras backend in use, and only that one.

``keras.utils.set_random_seed`` also seeds TensorFlow whenever TensorFlow is
installed, whatever the backend, and to do so it imports TensorFlow: on a
JAX run that costs about 6.6 CPU-seconds and 428 MiB and prints TensorFlow's
start-up log lines (``docs/performance.md``). :func:`seed_everything` does
what that function does for Python, NumPy, Keras' global seed and the torch
backend, and seeds TensorFlow only when TensorFlow is the backend or is
already imported (a ``tf.data`` pipeline in the same process).
"""

from __future__ import annotations

import random
import sys

import numpy as np

__all__ = ["seed_everything"]


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
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils

        key, generator = rng_utils.GLOBAL_RANDOM_SEED, seed_generator.GLOBAL_SEED_GENERATOR
    except (ImportError, AttributeError):  # Keras moved its internals: seed as it does
        keras.utils.set_random_seed(seed)
        return
    # What keras.utils.set_random_seed does, less the TensorFlow import: store
    # the seed, drop the global SeedGenerator (it is rebuilt from the seed).
    global_state.set_global_attribute(key, seed)
    global_state.set_global_attribute(generator, None)
    random.seed(seed)
    np.random.seed(seed)
    if backend == "torch":
        import torch

        torch.manual_seed(seed)
