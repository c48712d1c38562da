"""Built-in models, and the checks for a user's own model.

Every image model takes uint8 (or float 0..255) batches as they come from the
loader: scaling to [0, 1] and light augmentation are layers inside the model,
so they run on the accelerator and are switched off in ``predict``/``evaluate``.
The last layer is a ``Dense`` of logits whose bias can start at chosen values
(for example the log class priors).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from longtail.errors import ConfigError

__all__ = ["MODELS", "AUGMENTATIONS", "build_model", "load_model", "load_user_model",
           "resolve_augment"]

#: Augmentations that ``augment`` accepts, comma-separated.
AUGMENTATIONS = ("flip", "crop", "none")


def resolve_augment(augment: str | Sequence[str] | None) -> tuple[str, ...]:
    """Normalises ``augment`` ("flip,crop", a list, "none" or None) to a tuple."""
    if augment is None:
        return ()
    items = augment.split(",") if isinstance(augment, str) else list(augment)
    items = [a.strip() for a in items if a.strip()]
    bad = [a for a in items if a not in AUGMENTATIONS]
    if bad:
        raise ConfigError(
            f"`augment` must be a comma-separated subset of flip, crop (or none); got {bad[0]!r}")
    return tuple(a for a in items if a != "none")


def _head(keras, x, num_classes: int, output_bias):
    init = "zeros" if output_bias is None else keras.initializers.Constant(
        np.asarray(output_bias, dtype="float32"))
    return keras.layers.Dense(num_classes, bias_initializer=init, name="logits")(x)


def _image_input(keras, input_shape, augment: tuple[str, ...], seed: int):
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    if "flip" in augment:
        x = keras.layers.RandomFlip("horizontal", seed=seed, name="flip")(x)
    if "crop" in augment:
        # Pad-and-crop as a translation of up to 1/8 of the side (CIFAR-style).
        from longtail.layers import RandomShift  # jit-compilable, unlike RandomTranslation

        x = RandomShift(0.125, seed=seed, name="crop")(x)
    return inputs, x


def small_cnn(input_shape, num_classes, *, augment=(), output_bias=None, seed=0, width=32):
    """Three conv blocks and global pooling: fast on a CPU, the default for images.

    Batch normalisation uses momentum 0.9 (Keras' default is 0.99): with the
    few hundred steps of a small or heavily re-sampled dataset, 0.99 leaves
    the moving statistics near their initial values and inference collapses.
    """
    import keras

    inputs, x = _image_input(keras, input_shape, augment, seed)
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
        if min(x.shape[1], x.shape[2]) >= 4:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(keras, x, num_classes, output_bias), name="small_cnn")


def resnet(input_shape, num_classes, *, augment=(), output_bias=None, seed=0, width=32,
           blocks=(2, 2, 2)):
    """A ResNet-style CNN (basic residual blocks) sized for 32-128 px images."""
    import keras

    layers = keras.layers
    inputs, x = _image_input(keras, input_shape, augment, seed)
    stem_stride = 2 if min(input_shape[0], input_shape[1]) >= 96 else 1
    x = layers.Conv2D(width, 3, strides=stem_stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.ReLU()(x)
    for stage, count in enumerate(blocks):
        filters = width * 2 ** stage
        for b in range(count):
            stride = 2 if stage > 0 and b == 0 else 1
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
            y = layers.BatchNormalization(momentum=0.9)(y)
            y = layers.ReLU()(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization(momentum=0.9, gamma_initializer="zeros")(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
                shortcut = layers.BatchNormalization(momentum=0.9)(shortcut)
            x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(keras, x, num_classes, output_bias), name="resnet")


def mlp(input_shape, num_classes, *, augment=(), output_bias=None, seed=0, hidden=(128, 64),
        mean=None, variance=None):
    """An MLP for tabular rows; features are standardised by a first layer."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(inputs) \
        if mean is not None else inputs
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"dense{i}")(x)
    return keras.Model(inputs, _head(keras, x, num_classes, output_bias), name="mlp")


#: Built-in models by name; each builder takes (input_shape, num_classes, **options).
MODELS: dict[str, Callable] = {"small-cnn": small_cnn, "resnet": resnet, "mlp": mlp}


def build_model(name: str, input_shape, num_classes: int, **options):
    """Builds a built-in model by name (small-cnn, resnet or mlp).

    Args:
        name: ``"small-cnn"`` (default for images), ``"resnet"`` or ``"mlp"``
            (tabular data).
        input_shape: ``(height, width, channels)`` or ``(features,)``.
        num_classes: Size of the logits layer.
        **options: ``augment``, ``output_bias``, ``seed`` and builder options.
    """
    if name not in MODELS:
        raise ConfigError(f"`model` must be one of {', '.join(MODELS)} or a .keras file; "
                          f"got {name!r}")
    return MODELS[name](input_shape, num_classes, **options)


def load_model(path: str, compile: bool = True):
    """Loads a ``.keras`` model in safe mode, with longtail's losses registered.

    Safe mode runs no Python code stored in the file: a model with a
    ``Lambda`` layer (or another serialised Python function) is refused.

    Raises:
        ConfigError: The model needs unsafe deserialisation (names the file).
    """
    import keras

    import longtail.layers  # noqa: F401  (registers the layers and the losses
    import longtail.losses  # noqa: F401   for deserialisation)

    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except ValueError as e:
        if "safe_mode" not in str(e):
            raise
        what = str(e).split(". ")[0].strip()
        raise ConfigError(
            f"{path}: refused: {what}. longtail loads models in Keras safe mode only, so no "
            "Python code from a model file runs; replace the Lambda layer with a layer class "
            "registered with keras.saving.register_keras_serializable") from e


def load_user_model(path: str, num_classes: int):
    """Loads a user's ``.keras`` model in safe mode and checks its output size."""
    import os

    import keras

    if not os.path.isfile(path):
        raise ConfigError(f"--model {path}: no such file")
    try:
        model = load_model(path, compile=False)
    except ConfigError as e:
        raise ConfigError(f"--model {e}") from e
    except Exception as e:  # Keras raises many kinds for a bad file
        raise ConfigError(f"--model {path}: cannot load a Keras model: {e}") from e
    outputs = model.outputs[0].shape[-1] if model.outputs else None
    if outputs != num_classes:
        raise ConfigError(
            f"--model {path}: the model outputs {outputs} values but the data has "
            f"{num_classes} classes; its last layer must have {num_classes} units (logits)")
    return model
