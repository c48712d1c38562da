"""Pretrained backbones by name: keras.applications families and EfficientNet-Lite0.

One table, :data:`BACKBONES`, names every backbone with what longtail needs
to build it offline: the keras.applications constructor, the weights file
Keras keeps in its cache (``$KERAS_HOME/models``, default ``~/.keras/models``),
the preprocessing and how its layers group into blocks (for ``top:N``
fine-tuning). Nothing here downloads: ``weights="imagenet"`` loads the cached
file or raises a one-line error naming the file and where to put it.

Every backbone takes uint8 (or float 0..255) RGB batches as the loader yields
them; its own preprocessing is inside the model. A classifier is
``input -> [augment] -> backbone(training=False) -> Dense logits``: the
backbone's BatchNormalization layers stay in inference mode in every stage,
frozen or not (the pitfall of the Keras transfer-learning guide).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from longtail.errors import ConfigError

__all__ = ["BACKBONES", "Backbone", "FINETUNE_HELP", "build_backbone", "build_classifier",
           "keras_cache_dir", "parse_finetune", "resolve_weights", "set_trainable_blocks"]


@dataclass(frozen=True)
class Backbone:
    """How to build one backbone offline.

    Attributes:
        name: The ``--model`` name.
        constructor: A ``keras.applications`` function name, ``"lite0"``, or a
            callable ``(input_shape, weights_path_or_None, name) -> keras.Model``
            mapping 0..255 images to pooled features (for a backbone of your own).
        size: The input side the weights were trained at.
        weights_file: File name of the ImageNet weights without the top in
            Keras' cache folder.
        blocks: Regular expression whose first group names a layer's block.
        preprocessing: ``"builtin"`` (the constructor's own layers),
            ``"caffe"`` (ResNet: RGB to BGR minus the ImageNet mean, added
            here as a fixed 1x1 convolution) or ``"efficientnet"`` (built in,
            with Keras' variance correction applied after loading).
    """

    name: str
    constructor: object
    size: int
    weights_file: str
    blocks: str
    preprocessing: str = "builtin"


def _table(*rows: Backbone) -> dict[str, Backbone]:
    return {b.name: b for b in rows}


_EFF = r"^(block\d+[a-z])_"
#: Every backbone ``--model`` accepts, by name.
BACKBONES: dict[str, Backbone] = _table(
    Backbone("mobilenet-v3-small", "MobileNetV3Small", 224,
             "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", r"^(expanded_conv(?:_\d+)?)_"),
    Backbone("mobilenet-v3-large", "MobileNetV3Large", 224,
             "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", r"^(expanded_conv(?:_\d+)?)_"),
    *(Backbone(f"efficientnet-b{i}", f"EfficientNetB{i}", size, f"efficientnetb{i}_notop.h5",
               _EFF, "efficientnet") for i, size in enumerate((224, 240, 260, 300))),
    *(Backbone(f"efficientnet-v2-{v}", f"EfficientNetV2{v.upper()}", size,
               f"efficientnetv2-{v}_notop.h5", _EFF)
      for v, size in (("b0", 224), ("b1", 240), ("b2", 260), ("b3", 300), ("s", 384))),
    Backbone("resnet50", "ResNet50", 224,
             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", r"^(conv\d_block\d+)_", "caffe"),
    Backbone("convnext-tiny", "ConvNeXtTiny", 224, "convnext_tiny_notop.h5",
             r"_(stage_\d+_block_\d+)_"),
    Backbone("efficientnet-lite0", "lite0", 224, "efficientnet_lite0.weights.h5",
             r"^(_blocks_\d+)_"),
)

FINETUNE_HELP = "head (train the new head only), top:N (then the top N blocks too) or all"


def keras_cache_dir() -> str:
    """Keras' model cache: ``$KERAS_HOME/models`` (``~/.keras/models`` by default)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(backbone: Backbone, weights: str | None) -> tuple[str | None, dict]:
    """Finds the weights file of ``backbone`` without downloading anything.

    Args:
        backbone: A :data:`BACKBONES` entry.
        weights: ``"imagenet"`` (the file in Keras' cache), ``"none"``/None
            (random initialisation) or the path of a weights file.

    Returns:
        ``(path or None, record)``; ``record`` is what the run folder keeps:
        ``{"weights": ..., "weights_file": ..., "weights_sha256": ...}``.

    Raises:
        ConfigError: The file is missing: names it and where to put it.
    """
    if weights is None or weights == "none":
        return None, {"weights": "none"}
    if weights == "imagenet":
        path = os.path.join(keras_cache_dir(), backbone.weights_file)
        if not os.path.isfile(path):
            how = ("write it with tools/convert_efficientnet_lite0.py --out " + path
                   if backbone.constructor == "lite0" else
                   f"copy Keras' {backbone.weights_file} there")
            raise ConfigError(
                f"--weights imagenet: {path} not found (no download is attempted); {how}, "
                f"or pass --weights PATH, or --weights none")
    else:
        path = os.path.abspath(os.path.expanduser(weights))
        if not os.path.isfile(path):
            raise ConfigError(f"--weights {weights}: no such file; expected imagenet, none or "
                              f"the path of a {backbone.name} weights file")
    return path, {"weights": weights, "weights_file": path, "weights_sha256": _sha256(path)}


def _caffe_preprocessing(keras):
    """RGB 0..255 to BGR minus the ImageNet mean, as a fixed 1x1 convolution
    (a Lambda would be refused by safe-mode loading)."""
    import numpy as np

    kernel = np.zeros((1, 1, 3, 3), "float32")
    for out_channel, in_channel in enumerate((2, 1, 0)):
        kernel[0, 0, in_channel, out_channel] = 1.0
    bias = -np.array([103.939, 116.779, 123.68], "float32")
    return keras.layers.Conv2D(
        3, 1, name="caffe_preprocess", trainable=False,
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(bias))


def build_backbone(name: str, input_shape, weights: str | None = "imagenet", *,
                   model_name: str | None = None):
    """Builds a backbone that maps 0..255 images to pooled features.

    Args:
        name: A key of :data:`BACKBONES`.
        input_shape: ``(height, width, 3)``.
        weights: ``"imagenet"``, ``"none"`` or a weights file path.
        model_name: Name of the returned model (default: ``name``).

    Returns:
        ``(model, record)``: a ``keras.Model`` with one feature vector per
        image, and the weights record of :func:`resolve_weights`.

    Raises:
        ConfigError: Unknown name, non-RGB input or a missing weights file.
    """
    import keras

    backbone = BACKBONES.get(name)
    if backbone is None:
        raise ConfigError(f"`model` must be one of {', '.join(BACKBONES)}; got {name!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3 or min(input_shape[:2]) < 32:
        raise ConfigError(f"--model {name} takes RGB images of at least 32x32 "
                          f"(--color-mode rgb); got input shape {input_shape}")
    path, record = resolve_weights(backbone, weights)
    record = {"backbone": name, **record}
    model_name = model_name or name.replace("-", "_")
    if callable(backbone.constructor):
        return backbone.constructor(input_shape, path, model_name), record
    if backbone.constructor == "lite0":
        from longtail.backbones.lite0 import efficientnet_lite0

        try:
            model = efficientnet_lite0(input_shape, include_top=False, pooling="avg",
                                       weights=path, name=model_name)
        except ValueError as e:
            raise ConfigError(f"--weights {e}") from e
        return model, record
    constructor = getattr(keras.applications, backbone.constructor)
    # Built under its own name (EfficientNetV2 looks its layout up by it) and
    # wrapped, so the backbone has the name the caller asked for.
    core = constructor(include_top=False, weights=None, pooling="avg", input_shape=input_shape)
    inputs = keras.Input(input_shape, name="image")
    x = _caffe_preprocessing(keras)(inputs) if backbone.preprocessing == "caffe" else inputs
    model = keras.Model(inputs, core(x), name=model_name)
    if path is not None:
        try:
            core.load_weights(path)
        except Exception as e:  # h5py and Keras raise many kinds for a wrong file
            raise ConfigError(f"--weights {path}: cannot load into {name}: {e}") from e
        if backbone.preprocessing == "efficientnet":
            _correct_efficientnet_variance(core)
    return model, record


def _correct_efficientnet_variance(model) -> None:
    """keras.applications' EfficientNet B divides by the ImageNet std instead
    of its square root and corrects it with an extra layer only when built
    with ``weights="imagenet"``; the same correction, folded into the
    Normalization layer's variance, after loading the file ourselves."""
    import numpy as np

    norm = next(layer for layer in model.layers if type(layer).__name__ == "Normalization")
    values = norm.get_weights()  # mean, variance, count
    values[1] = values[1] * np.array([0.229, 0.224, 0.225], dtype=values[1].dtype)
    norm.set_weights(values)
    norm.finalize_state()  # the layer computes with tensors made from its variables


def parse_finetune(finetune: str | None) -> tuple[str, int | None]:
    """``"head"`` -> ("head", None); ``"top:3"`` -> ("top", 3); ``"all"`` -> ("all", None)."""
    text = (finetune or "head").strip()
    if text in ("head", "all"):
        return text, None
    match = re.fullmatch(r"top:(\d+)", text)
    if match and int(match.group(1)) > 0:
        return "top", int(match.group(1))
    raise ConfigError(f"--finetune must be {FINETUNE_HELP}; got {finetune!r}")


def set_trainable_blocks(backbone_model, name: str, finetune: str | None) -> int:
    """Freezes ``backbone_model`` except what ``finetune`` opens.

    ``head`` freezes every backbone layer; ``top:N`` opens the last N blocks
    and every layer after them; ``all`` opens everything.

    Returns:
        The number of trainable backbone layers with weights.
    """
    mode, n = parse_finetune(finetune)
    layers = _flat_layers(backbone_model)
    if mode == "head":
        start = len(layers)
    elif mode == "all":
        start = 0
    else:
        pattern = re.compile(BACKBONES[name].blocks)
        firsts: dict[str, int] = {}
        for i, layer in enumerate(layers):
            match = pattern.search(layer.name)
            if match:
                firsts.setdefault(match.group(1), i)
        if n > len(firsts):
            raise ConfigError(f"--finetune top:{n}: {name} has {len(firsts)} blocks")
        start = sorted(firsts.values())[-n]
    backbone_model.trainable = True
    for i, layer in enumerate(layers):
        layer.trainable = i >= start and layer.name != "caffe_preprocess"
    if mode == "head":
        backbone_model.trainable = False
    return sum(1 for layer in layers[start:] if layer.weights and layer.trainable)


def _flat_layers(model) -> list:
    """The layers of ``model`` in order, nested functional models expanded."""
    out = []
    for layer in model.layers:
        out.extend(_flat_layers(layer) if hasattr(layer, "layers") else [layer])
    return out


def build_classifier(name: str, input_shape, num_classes: int, *, weights: str | None = "imagenet",
                     finetune: str | None = "head", augment=(), output_bias=None, seed: int = 0,
                     dropout: float = 0.0):
    """A backbone with a new Dense logits head, ready to train.

    Args:
        name: A key of :data:`BACKBONES`.
        input_shape: ``(height, width, 3)``.
        num_classes: Size of the ``logits`` layer (no softmax: every
            strategy's loss takes logits).
        weights: ``"imagenet"``, ``"none"`` or a weights file path.
        finetune: What is trainable at the start (see :func:`set_trainable_blocks`).
        augment: Augmentations from :data:`longtail.models.AUGMENTATIONS`.
        output_bias: Initial logits bias (for example the log priors).
        seed: Seed of the augmentation layers.
        dropout: Dropout rate before the logits.

    Returns:
        ``(model, record)``; the backbone is the layer named ``"backbone"``.
    """
    import keras
    import numpy as np

    backbone, record = build_backbone(name, input_shape, weights, model_name="backbone")
    set_trainable_blocks(backbone, name, finetune)
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    if "flip" in augment:
        x = keras.layers.RandomFlip("horizontal", seed=seed, name="flip")(x)
    if "crop" in augment:
        from longtail.layers import RandomShift

        x = RandomShift(0.125, seed=seed, name="crop")(x)
    x = backbone(x, training=False)  # BatchNorm in inference mode, frozen or not
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
    init = "zeros" if output_bias is None else keras.initializers.Constant(
        np.asarray(output_bias, dtype="float32"))
    logits = keras.layers.Dense(num_classes, bias_initializer=init, name="logits")(x)
    return keras.Model(inputs, logits, name=f"{name}_classifier"), record
