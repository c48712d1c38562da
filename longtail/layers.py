"""Keras layers the built-in models use, written with ``keras.ops`` only.

:class:`RandomShift` replaces ``keras.layers.RandomTranslation`` for the
pad-and-crop augmentation: Keras marks ``RandomTranslation`` (and
``RandomCrop``, ``RandomZoom``) as not JIT-compilable, and one such layer
makes ``fit`` run the whole train step uncompiled on JAX.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["RandomShift", "PriorShift"]


@keras.saving.register_keras_serializable(package="longtail")
class RandomShift(keras.layers.Layer):
    """Shifts each image by a random whole number of pixels, zero-filled.

    The CIFAR-style pad-and-crop augmentation: every image of a training
    batch moves by its own offsets, drawn uniformly from
    ``-m..m`` pixels with ``m = int(factor * side)``, along the height and
    the width; pixels shifted in are 0. The identity at inference. Two
    gathers, so the layer compiles with the rest of the train step on every
    backend.

    Args:
        factor: Largest shift as a fraction of the side, in ``[0, 1)``.
        seed: Seed of the layer's random generator.
        **kwargs: Keras layer arguments (``name``, ``dtype``).
    """

    def __init__(self, factor=0.125, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(factor) < 1.0:
            raise ValueError(f"`factor` must be in [0, 1); got {factor!r}")
        self.factor = float(factor)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training:
            return inputs
        x = inputs
        for axis in (1, 2):
            side = inputs.shape[axis]
            most = int(self.factor * side) if side is not None else 0
            if most:
                x = self._shift(x, axis, side, most)
        return x

    def _shift(self, x, axis, side, most):
        offset = keras.random.randint((ops.shape(x)[0], 1), -most, most + 1,
                                      seed=self.seed_generator, dtype="int32")
        source = ops.arange(side, dtype="int32")[None, :] - offset  # (batch, side)
        inside = ops.cast(ops.logical_and(source >= 0, source < side), x.dtype)
        shape = (-1, side, 1, 1) if axis == 1 else (-1, 1, side, 1)
        index = ops.broadcast_to(ops.reshape(ops.clip(source, 0, side - 1), shape),
                                 ops.shape(x))
        return ops.take_along_axis(x, index, axis=axis) * ops.reshape(inside, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="longtail")
class PriorShift(keras.layers.Layer):
    """Label-shift adaptation built into a model: ``log p / T + shift``.

    ``longtail adapt`` puts it on top of a trained model's output: the
    scores become ``scores / temperature + log(target prior) - log(train
    prior)`` (logits in, logits out); with ``from_probabilities`` the
    outputs are probabilities whose log is taken first. Plain numbers in its
    config, so the adapted model loads in Keras safe mode.

    Args:
        shift: One offset per class.
        temperature: Positive temperature dividing the logits.
        from_probabilities: Whether the wrapped model outputs probabilities.
    """

    def __init__(self, shift, temperature=1.0, from_probabilities=False, **kwargs):
        super().__init__(**kwargs)
        self.shift = [float(v) for v in shift]
        self.temperature = float(temperature)
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be positive; got {temperature!r}")
        self.from_probabilities = bool(from_probabilities)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.from_probabilities:
            x = ops.log(ops.maximum(x, 1e-12))
        return x / self.temperature + ops.convert_to_tensor(self.shift, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "shift": self.shift, "temperature": self.temperature,
                "from_probabilities": self.from_probabilities}
