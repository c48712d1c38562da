"""Which ``--balance`` should be the default: ``compare`` on four long-tailed sets.

Run: ``python -m benchmarks.defaults [--seeds 0,1,2] [--strategies none,...]
[--epochs auto] [--batch-size 64] [--image-size 16] [--sets generated,digits-lt,table,tree-32]
[--root DIR] [--jobs 4]``

Every set has a long-tailed training part, a small balanced validation part
(model selection, early stopping) and a balanced test part (the figures):

- ``generated``: 10 classes of 16x16 colour images (class = a colour on a
  circle, blurred by a per-image colour offset as wide as the gap between
  neighbouring classes, so classes overlap and the prior matters); training
  counts ``round(100 * 100^(-c/9))`` (100 .. 1, imbalance ratio 100);
- ``digits-lt``: :func:`longtail.demo.make_digits_lt` (scikit-learn's bundled
  digits, 250 training images, 100 .. 1; val 20, test 50 per class);
- ``table``: 12 classes of ``sklearn.datasets.make_classification`` rows
  (20 features, 8 informative, class separation 1.0), training counts
  ``round(300 * 100^(-c/11))`` (300 .. 3), val 20, test 60 per class;
- ``tree-32``: 32 classes of generated colour images, training counts
  ``round(60 * 30^(-c/31))`` (60 .. 2, imbalance ratio 30), val 5, test 20
  per class.

Each strategy trains once per seed through :func:`longtail.compare` with the
default options except ``image_size`` (small, so the whole measurement fits
in about half an hour of two CPU cores) and ``--epochs``; it prints one table
of test balanced accuracy (mean and sample standard deviation over the seeds,
and the worst seed) per strategy per set, and which strategies beat ``none``
on the mean of every set. docs/guide.md ("The default --balance") records it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

SETS = ("generated", "digits-lt", "table", "tree-32")
# balanced-softmax is left out: with the log-prior bias it is logit-adjust at tau 1
# (the same objective; compare says so), so it would only repeat a row.
STRATEGIES = ("none", "logit-adjust", "class-weight", "resample")


def _colour_images(root, parts: dict[str, list[int]], size: int, seed: int) -> dict:
    """Colour-class PNG images in ``root/<part>/class_<c>/`` for each part's counts."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    k = len(next(iter(parts.values())))
    angles = 2 * np.pi * np.arange(k) / k
    means = np.stack([128 + 70 * np.cos(angles), 128 + 70 * np.sin(angles),
                      np.full(k, 128.0)], axis=1)
    step = 70 * 2 * np.sin(np.pi / k)
    out = {}
    for part, counts in parts.items():
        out[part] = os.path.join(root, part)
        for c, n in enumerate(counts):
            folder = os.path.join(root, part, f"class_{c:02d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                colour = means[c] + rng.normal(0, step / 2, 3)
                pixels = colour + rng.normal(0, 8, (size, size, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    os.path.join(folder, f"{i:04d}.png"))
    return out


def _long_tail(head: int, ratio: float, k: int) -> list[int]:
    return [max(1, int(round(head * ratio ** (-c / (k - 1))))) for c in range(k)]


def _table(root, seed: int) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from sklearn.datasets import make_classification

    k = 12
    parts = {"train": _long_tail(300, 100, k), "val": [20] * k, "test": [60] * k}
    x, y = make_classification(n_samples=12000, n_features=20, n_informative=8,
                               n_redundant=4, n_classes=k, n_clusters_per_class=1,
                               class_sep=1.0, random_state=seed)
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(np.flatnonzero(y == c))) for c in range(k)}
    out = {}
    for part, counts in parts.items():
        rows = np.concatenate([[pools[c].pop() for _ in range(n)] for c, n in enumerate(counts)])
        columns = {f"f{j}": x[rows, j] for j in range(x.shape[1])}
        columns["label"] = [f"c{int(c):02d}" for c in y[rows]]
        out[part] = os.path.join(root, f"{part}.csv")
        pacsv.write_csv(pa.table(columns), out[part])
    return out


def make_set(name: str, root: str, seed: int = 0) -> dict:
    """Writes set ``name`` under ``root``; returns ``{"train", "val", "test"}`` paths."""
    os.makedirs(root, exist_ok=True)
    if name == "digits-lt":
        from longtail.demo import make_digits_lt

        return make_digits_lt(root, seed=seed)
    if name == "table":
        return _table(root, seed)
    if name == "generated":
        return _colour_images(root, {"train": _long_tail(100, 100, 10), "val": [20] * 10,
                                     "test": [50] * 10}, size=16, seed=seed)
    if name == "tree-32":
        return _colour_images(root, {"train": _long_tail(60, 30, 32), "val": [5] * 32,
                                     "test": [20] * 32}, size=16, seed=seed)
    raise ValueError(f"`set` must be one of {', '.join(SETS)}; got {name!r}")


def measure(name, parts, out, strategies, seeds, epochs, image_size, batch_size) -> dict:
    """Runs ``compare`` on one set; returns ``{strategy: [test balanced accuracy per seed]}``."""
    import longtail as lt

    options = {"epochs": epochs, "val": parts["val"], "batch_size": batch_size}
    if name != "table":
        options["image_size"] = image_size
    summaries = lt.compare(parts["train"], strategies, out, test=parts["test"], seeds=seeds,
                           verbose=0, resamples=200, **options)
    found = {}
    for s in summaries:
        rows = s.get("seeds") or [{"balanced_accuracy": s["metrics"]["balanced_accuracy"]}]
        found[s["strategy"]] = [r["balanced_accuracy"] for r in rows]
    return found


def table_markdown(results: dict, strategies) -> str:
    """Strategy rows, set columns: mean +- sd (worst seed) of test balanced accuracy."""
    sets = list(results)
    lines = ["| strategy | " + " | ".join(sets) + " | beats `none` on every set |",
             "|---" * (len(sets) + 2) + "|"]
    for name in strategies:
        cells, beats = [], True
        for s in sets:
            v = np.asarray(results[s][name])
            sd = v.std(ddof=1) if len(v) > 1 else 0.0
            cells.append(f"{v.mean():.3f} \u00b1 {sd:.3f} (min {v.min():.3f})")
            beats &= name != "none" and v.mean() > np.mean(results[s]["none"])
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {'yes' if beats else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.defaults", description=__doc__.split(
        "\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--epochs", default="auto")
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--root", default=None, help="keep the sets and runs here")
    p.add_argument("--jobs", type=int, default=1,
                   help="above 1: every set in its own process, all at once")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    strategies = args.strategies.split(",")
    epochs = args.epochs if args.epochs == "auto" else int(args.epochs)
    root = args.root or tempfile.mkdtemp(prefix="longtail-defaults-")
    results, cpu_total = {}, 0.0
    started = time.perf_counter()
    sets = args.sets.split(",")
    if args.jobs > 1 and len(sets) > 1:
        import subprocess

        children = [subprocess.Popen([sys.executable, "-m", "benchmarks.defaults", "--sets",
                                      name, "--seeds", args.seeds, "--strategies",
                                      args.strategies, "--epochs", args.epochs,
                                      "--image-size", str(args.image_size), "--batch-size",
                                      str(args.batch_size), "--root", root])
                    for name in sets]
        if any(child.wait() for child in children):
            return 1
    for name in sets:
        found = os.path.join(root, f"results-{name}.json")
        if not (args.jobs > 1 and len(sets) > 1):
            parts = make_set(name, os.path.join(root, "data", name))
            t, cpu = time.perf_counter(), time.process_time()
            result = measure(name, parts, os.path.join(root, "runs", name), strategies,
                             seeds, epochs, args.image_size, args.batch_size)
            cpu_s = time.process_time() - cpu
            with open(found, "w") as f:
                json.dump({"results": result, "cpu_seconds": cpu_s}, f)
            print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        with open(found) as f:
            saved = json.load(f)
        results[name] = saved["results"]
        cpu_total += saved["cpu_seconds"]
        for strategy, values in results[name].items():
            print(f"  {name} {strategy}: " + ", ".join(f"{v:.3f}" for v in values), flush=True)
    print(f"\nTest balanced accuracy, seeds {args.seeds}, epochs {args.epochs}, image size "
          f"{args.image_size}, batch size {args.batch_size} (mean \u00b1 sd over seeds, "
          "worst seed); "
          f"{cpu_total:.0f} CPU-s, "
          f"{time.perf_counter() - started:.0f} s wall, load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print(table_markdown(results, strategies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
