"""EfficientNet-Lite0 (Tan and Le, 2019; the "lite" variant for mobile
accelerators) as a Keras functional model.

Lite differs from EfficientNet-B0 in three ways: no squeeze-and-excite,
ReLU6 instead of swish, and a stem and head that are not scaled (fixed at 32
and 1280 channels). Convolutions use TensorFlow's ``"same"`` padding, as the
official checkpoints were trained with, and batch normalisation uses
epsilon 1e-3, as in the reference.

Layer names follow the reference checkpoint (``_conv_stem``, ``_blocks.N``,
``_conv_head``, ``_fc``) with dots replaced by underscores, so a converter can
map a state dict onto the model by name: see
``tools/convert_efficientnet_lite0.py``.

The model takes uint8 (or float 0..255) RGB images; the scaling the official
checkpoints expect, ``(x - 127) / 128``, is its first layer.
"""

from __future__ import annotations

__all__ = ["BLOCKS", "efficientnet_lite0", "lite0_block_prefixes"]

#: Stages as (kernel, stride, expand ratio, input channels, output channels, repeats).
BLOCKS = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)

_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99


def _block_specs():
    """Yields (index, kernel, stride, expand, in_channels, out_channels) per block."""
    index = 0
    for kernel, stride, expand, cin, cout, repeats in BLOCKS:
        for r in range(repeats):
            yield index, kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout
            index += 1


def lite0_block_prefixes() -> list[str]:
    """Layer-name prefixes of the 16 blocks, input side first (for fine-tuning)."""
    return [f"_blocks_{i}_" for i, *_ in _block_specs()]


def _bn(keras, name):
    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name)


def _mbconv(keras, x, index, kernel, stride, expand, cin, cout):
    layers = keras.layers
    p = f"_blocks_{index}_"
    inputs = x
    if expand != 1:
        x = layers.Conv2D(cin * expand, 1, use_bias=False, name=p + "_expand_conv")(x)
        x = layers.ReLU(6.0, name=p + "expand_relu6")(_bn(keras, p + "_bn0")(x))
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=p + "_depthwise_conv")(x)
    x = layers.ReLU(6.0, name=p + "depthwise_relu6")(_bn(keras, p + "_bn1")(x))
    x = layers.Conv2D(cout, 1, use_bias=False, name=p + "_project_conv")(x)
    x = _bn(keras, p + "_bn2")(x)
    if stride == 1 and cin == cout:
        x = layers.Add(name=p + "add")([inputs, x])
    return x


def efficientnet_lite0(input_shape=(224, 224, 3), *, include_top: bool = True,
                       pooling: str | None = "avg", classes: int = 1000,
                       dropout: float = 0.2, weights: str | None = None,
                       name: str = "efficientnet_lite0"):
    """Builds EfficientNet-Lite0.

    Args:
        input_shape: ``(height, width, 3)``; 224x224 is the trained size, any
            size of at least 32 works.
        include_top: Whether to end with dropout and the 1000-class ``_fc``
            logits layer (no softmax). Without it the model ends at the head
            features.
        pooling: Without the top: ``"avg"`` (1280 features per image),
            ``"max"`` or ``None`` (the 1280-channel feature map).
        classes: Size of the ``_fc`` layer when ``include_top``.
        dropout: Dropout rate before ``_fc``.
        weights: ``None`` or the path of the Keras ``.weights.h5`` file that
            ``tools/convert_efficientnet_lite0.py`` writes (the 1000-class
            model; it loads into a model with or without the top).
        name: The model's name.

    Returns:
        A ``keras.Model`` taking 0..255 RGB images.

    Example:
        >>> model = efficientnet_lite0((96, 96, 3), include_top=False)
        >>> model.output_shape
        (None, 1280)
    """
    import keras

    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"EfficientNet-Lite0 takes RGB images (height, width, 3); "
                         f"got input_shape={tuple(input_shape)}")
    if pooling not in ("avg", "max", None):
        raise ValueError(f"`pooling` must be one of avg, max or None; got {pooling!r}")
    if weights is None:
        return _build(keras, input_shape, include_top, pooling, classes, dropout, name)
    # Keras' .weights.h5 loads into the same architecture only: build the
    # 1000-class model, load, then cut it where the caller asked.
    full = _build(keras, input_shape, True, None, 1000, dropout, name)
    try:
        full.load_weights(weights)
    except (OSError, ValueError) as e:
        raise ValueError(f"{weights}: not an EfficientNet-Lite0 .weights.h5 (write one with "
                         f"tools/convert_efficientnet_lite0.py): {e}") from e
    if include_top and classes == 1000:
        return full
    x = full.get_layer("head_relu6").output
    if include_top:
        x = full.get_layer("avg_pool")(x)
        x = keras.layers.Dropout(dropout, name="new_dropout")(x)
        x = keras.layers.Dense(classes, name="new_fc")(x)
    else:
        x = _pool(keras, x, pooling)
    return keras.Model(full.input, x, name=name)


def _pool(keras, x, pooling):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def _build(keras, input_shape, include_top, pooling, classes, dropout, name):
    layers = keras.layers
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="_conv_stem")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(_bn(keras, "_bn0")(x))
    for spec in _block_specs():
        x = _mbconv(keras, x, *spec)
    x = layers.Conv2D(1280, 1, use_bias=False, name="_conv_head")(x)
    x = layers.ReLU(6.0, name="head_relu6")(_bn(keras, "_bn1")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Dense(classes, name="_fc")(x)
    else:
        x = _pool(keras, x, pooling)
    return keras.Model(inputs, x, name=name)
