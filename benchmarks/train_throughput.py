"""Training throughput: is the loader ever the bottleneck of a training step?

Run on a GPU machine: ``python -m benchmarks.train_throughput``
Smoke run on a CPU (what the test suite runs): ``python -m benchmarks.train_throughput --smoke``

For each model and size it measures training images per second on the JAX
backend with bf16 mixed precision, in three configurations in one run:

- ``synthetic``: uint8 batches already in memory (the ceiling);
- ``cache``: longtail's loader over a raw cache of the same tree;
- ``jpeg``: longtail's loader decoding the JPEG tree;

and prints images/s with the ratio to the ceiling. Configurations (GPU):
the built-in ``resnet`` at 64 and 128 px and a Keras ResNet-50
(``keras.applications``, ``weights=None``) at 224 px. The issue's target:
from a cache at least 95% of the ceiling; reference ~2,500 images/s for
ResNet-50 mixed-precision training on one A100 with NVIDIA DALI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402


def _model(name: str, size: int, classes: int):
    import keras

    from longtail.models import build_model

    if name == "resnet50":
        inputs = keras.Input((size, size, 3))
        x = keras.layers.Rescaling(1 / 255)(inputs)
        base = keras.applications.ResNet50(weights=None, include_top=False, input_tensor=x,
                                           pooling="avg")
        outputs = keras.layers.Dense(classes, dtype="float32")(base.output)
        return keras.Model(inputs, outputs)
    return build_model(name, (size, size, 3), classes)


def _images_per_second(model, batches, steps: int, warmup: int) -> float:
    """Trains ``warmup`` then ``steps`` batches; images/s over the timed steps."""
    iterator = iter(batches)
    for _ in range(warmup):
        x, y = next(iterator)[:2]
        model.train_on_batch(x, y)
    start = time.perf_counter()
    seen = 0
    for _ in range(steps):
        x, y = next(iterator)[:2]
        logs = model.train_on_batch(x, y, return_dict=True)
        seen += len(x)
    float(logs["loss"])  # wait for the device
    return seen / (time.perf_counter() - start)


def _repeat(loader):
    while True:
        yield from loader


def measure(name: str, size: int, batch: int, steps: int, warmup: int, root: str,
            images: int, classes: int) -> dict:
    import keras

    import longtail as lt
    from benchmarks.loader import make_tree
    from longtail.cache import build_cache

    tree = os.path.join(root, f"tree{size}")
    if not os.path.isdir(tree):
        make_tree(tree, images, classes)
    cache = os.path.join(root, f"cache{size}")
    if not os.path.exists(os.path.join(cache, "cache.json")):
        build_cache(tree, cache, image_size=(size, size), format="raw", progress=False)
    results = {}
    for config in ("synthetic", "cache", "jpeg"):
        from longtail._seed import seed_everything

        seed_everything(0)
        model = _model(name, size, classes)
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if config == "synthetic":
            rng = np.random.default_rng(0)
            x = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
            y = rng.integers(0, classes, batch).astype(np.int32)
            batches = iter(lambda: (x, y), None)
        else:
            ds = lt.Dataset.open(cache if config == "cache" else tree)
            batches = _repeat(ds.loader(batch_size=batch, image_size=(size, size),
                                        sampling="shuffle", seed=0))
        results[config] = _images_per_second(model, batches, steps, warmup)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU configuration")
    parser.add_argument("--root", default=None, help="folder for the generated trees")
    args = parser.parse_args(argv)

    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if args.smoke:
        plan = [("resnet", 32, 16, 3, 1, 64, 4)]
    else:
        plan = [("resnet", 64, 256, 50, 10, 6000, 32), ("resnet", 128, 256, 50, 10, 6000, 32),
                ("resnet50", 224, 256, 30, 10, 4000, 32)]
    root = args.root or tempfile.mkdtemp(prefix="lt-throughput-")
    import jax

    print(f"devices: {jax.devices()}  policy: mixed_bfloat16")
    print(f"{'model':<10}{'px':>5}{'synthetic':>12}{'cache':>12}{'jpeg':>12}"
          f"{'cache/ceil':>12}{'jpeg/ceil':>11}")
    try:
        for name, size, batch, steps, warmup, images, classes in plan:
            r = measure(name, size, batch, steps, warmup, root, images, classes)
            print(f"{name:<10}{size:>5}{r['synthetic']:>12,.0f}{r['cache']:>12,.0f}"
                  f"{r['jpeg']:>12,.0f}{r['cache'] / r['synthetic']:>11.0%}"
                  f"{r['jpeg'] / r['synthetic']:>11.0%}", flush=True)
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    print("reference: ~2,500 images/s, ResNet-50 mixed precision, one A100, NVIDIA DALI")


if __name__ == "__main__":
    main()
