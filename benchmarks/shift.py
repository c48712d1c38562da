"""Label shift on Digits-LT features: does adaptation hold up, and how well is the prior found?

    python -m benchmarks.shift [--epochs 40] [--out /tmp/longtail-shift]

Digits (scikit-learn's bundled 8x8 digits, nothing downloaded) as a table of
64 pixel columns, split like Digits-LT: a long-tailed training set (imbalance
ratio 100), a balanced validation split (20 a class) and a balanced test pool
(50 a class). Each strategy trains the default MLP. The test pool is then
re-sampled (2,000 draws, with replacement) to three deployment mixes: the
training prior, uniform, and the reversed prior. For each, the accuracy and
balanced accuracy of the model as it is, adapted with the true prior, with
the EM estimate and with the BBSE estimate (all after bias-corrected
temperature scaling on validation), and the L1 error of each estimate.

A second part times the bootstrap of :mod:`longtail.intervals` (2,000
resamples of 10,000 samples) against a loop over resamples with scikit-learn.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks._digits import digits_lt_tables


def _logits(model, path, names):
    from longtail.dataset import Dataset
    from longtail.evaluation import evaluate

    ds = Dataset.open(path, class_names=names)
    r = evaluate(model, ds.loader(batch_size=256, sampling="sequential", label_mode="int"),
                 class_names=names, bootstrap=False)
    return r.logits, r.y_true


def _draw(y, prior, n, rng):
    counts = rng.multinomial(n, prior)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), size=m)
                           for c, m in enumerate(counts) if m])


def shift_table(epochs: int, out: str, strategies=("none", "class-weight", "logit-adjust")):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from longtail.adapt import estimate
    from longtail.demo import DIGITS_LT_TRAIN_COUNTS
    from longtail.training import train

    paths = digits_lt_tables(out, drop_constant=True)
    train_prior = np.asarray(DIGITS_LT_TRAIN_COUNTS, float) / sum(DIGITS_LT_TRAIN_COUNTS)
    order = np.argsort(train_prior, kind="stable")
    reverse = np.empty_like(train_prior)
    reverse[order] = train_prior[order[::-1]]
    mixes = {"training prior": train_prior, "uniform": np.full(10, 0.1), "reversed": reverse}
    names = [str(c) for c in range(10)]
    print(f"{'strategy':<13} {'test mix':<15} {'as trained':>17} {'true prior':>17} "
          f"{'EM':>17} {'BBSE':>17} {'L1 EM':>6} {'L1 BBSE':>7}")
    print(f"{'':<13} {'':<15}" + "  acc / bal.acc  " * 4)
    for strategy in strategies:
        result = train(paths["train"], os.path.join(out, strategy), balance=strategy,
                       val=paths["val"], epochs=epochs, verbose=0, seed=0)
        zv, yv = _logits(result.model, paths["val"], names)
        zt, yt = _logits(result.model, paths["test"], names)
        for mix, q in mixes.items():
            rows = _draw(yt, q, 2000, np.random.default_rng(1))
            z, y = zt[rows], yt[rows]
            est = estimate(z, zv, yv, resamples=2)
            cal = z / est["temperature"] + np.asarray(est["bias"])
            src = np.log(est["source_prior"])
            cells, errors = [], []
            for prior in (None, q, est["em"]["estimate"], est["bbse"]["estimate"]):
                pred = z.argmax(1) if prior is None else (
                    cal + np.log(np.maximum(prior, 1e-12)) - src).argmax(1)
                cells.append(f"{accuracy_score(y, pred):.3f} / "
                             f"{balanced_accuracy_score(y, pred):.3f}")
            for method in ("em", "bbse"):
                errors.append(np.abs(np.asarray(est[method]["estimate"]) - q).sum())
            print(f"{strategy:<13} {mix:<15} " + " ".join(f"{c:>17}" for c in cells)
                  + f" {errors[0]:>6.3f} {errors[1]:>7.3f}", flush=True)


def bootstrap_speed(n=10_000, k=10, resamples=2000):
    from sklearn.metrics import balanced_accuracy_score

    from longtail.intervals import BootstrapOptions, bootstrap_intervals, stratified_indices

    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n)
    a = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    b = np.where(rng.random(n) < 0.72, y, rng.integers(0, k, n))
    opts = BootstrapOptions(resamples=resamples)
    bootstrap_intervals(y, {"a": a, "b": b}, k, baseline="a", options=opts)  # warm-up
    started = time.perf_counter()
    bootstrap_intervals(y, {"a": a, "b": b}, k, baseline="a", options=opts)
    ours = time.perf_counter() - started
    loop_n = 100
    idx = stratified_indices(y, loop_n, 0)
    started = time.perf_counter()
    for row in idx:
        balanced_accuracy_score(y[row], a[row])
        balanced_accuracy_score(y[row], b[row])
    loop = (time.perf_counter() - started) / loop_n * resamples
    print(f"\nbootstrap, {resamples} resamples x {n} samples, 2 strategies + difference, "
          f"every metric: longtail.intervals {ours:.2f} s; a loop of "
          f"sklearn.balanced_accuracy_score alone (timed on {loop_n} resamples, scaled) "
          f"{loop:.1f} s: {loop / ours:.0f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", default="/tmp/longtail-shift")
    parser.add_argument("--skip-training", action="store_true",
                        help="only the bootstrap timing")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    if not args.skip_training:
        shift_table(args.epochs, args.out)
    bootstrap_speed()


if __name__ == "__main__":
    main()
