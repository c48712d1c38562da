"""Training time of the built-in small CNN: longtail's RandomShift vs Keras' RandomTranslation.

Run: ``python -m benchmarks.augment [--images-per-class 8] [--size 32] [--epochs 3]``

Keras marks ``RandomTranslation`` as not JIT-compilable, so a model holding
it makes ``fit`` run the whole train step uncompiled on JAX; longtail's
:class:`longtail.layers.RandomShift` does the same pad-and-crop with two
gathers and compiles. This script trains ``lt.train``'s default model and
augmentation (flip + crop) on a generated long-tailed folder of PNGs (the
test suite's 8 classes, imbalance ratio 50, times ``--images-per-class``),
once with each layer as the crop, alternating, twice each, and prints the
wall time of the faster run of each and the ratio. JAX backend, CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))


def _train(train, size, epochs, crop: str) -> tuple[float, bool]:
    import keras

    import longtail as lt
    import longtail.layers

    original = longtail.layers.RandomShift
    if crop == "RandomTranslation":  # what models.py used before RandomShift
        def translation(factor, seed=None, name=None):
            return keras.layers.RandomTranslation(factor, factor, fill_mode="constant",
                                                  seed=seed, name=name)
        longtail.layers.RandomShift = translation
    try:
        started = time.perf_counter()
        result = lt.train(train, None, epochs=epochs, image_size=size, batch_size=32,
                          verbose=0, num_workers=0, val_split=0.2)
        return time.perf_counter() - started, bool(result.model.jit_compile)
    finally:
        longtail.layers.RandomShift = original


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images-per-class", type=int, default=8,
                        help="multiplier of the 200..4 long-tailed counts")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    from conftest import LT_COUNTS, make_images

    with tempfile.TemporaryDirectory() as tmp:
        counts = [c * args.images_per_class for c in LT_COUNTS]
        train = make_images(os.path.join(tmp, "train"), counts, size=args.size, seed=1)
        print(f"{sum(counts)} images of {args.size}x{args.size}, {args.epochs} epochs, "
              f"small-cnn with flip + crop, JAX on CPU, {os.cpu_count()} cores", flush=True)
        best = {}
        for _ in range(2):
            for crop in ("RandomShift", "RandomTranslation"):
                seconds, jit = _train(train, args.size, args.epochs, crop)
                print(f"  {crop:<18} {seconds:6.1f} s  (jit_compile={jit})", flush=True)
                best[crop] = min(best.get(crop, float("inf")), seconds)
        print(f"best: RandomShift {best['RandomShift']:.1f} s, RandomTranslation "
              f"{best['RandomTranslation']:.1f} s: "
              f"{best['RandomTranslation'] / best['RandomShift']:.2f}x faster with RandomShift")


if __name__ == "__main__":
    main()
