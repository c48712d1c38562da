"""Classifier-level methods on a long-tailed feature table, side by side.

Digits-LT as a table of its 64 pixel values (scikit-learn's bundled digits,
nothing downloaded): a long-tailed training part (100 down to 1 per class),
a balanced validation part (20 per class; tau-norm tunes tau on it) and a
balanced test part (50 per class). Every strategy trains the same ``mlp`` for
the same epochs over several seeds; the table gives the test balanced
accuracy (mean and spread) and the training time.

Run: ``python -m benchmarks.decoupled [--epochs 30] [--seeds 0,1,2]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from benchmarks._digits import digits_lt_tables

STRATEGIES = ("none", "class-weight", "logit-adjust", "crt", "tau-norm", "tau-norm:bias=keep",
              "weight-balancing")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated; NAME:FIELD=VALUE sets a strategy option")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import longtail as lt
    from longtail.strategies import parse_strategy_option

    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        paths = digits_lt_tables(tmp)
        test = lt.Dataset.open(paths["test"])
        rows = []
        for entry in args.strategies.split(","):
            name, _, option = entry.partition(":")  # e.g. tau-norm:bias=keep
            _, key, value = parse_strategy_option(f"{name}.{option}") if option else (0, 0, 0)
            options = {name: {key: value}} if option else {}
            scores, seconds = [], []
            for seed in seeds:
                started = time.perf_counter()
                result = lt.train(paths["train"], None, balance=name, epochs=args.epochs,
                                  val=paths["val"], seed=seed, batch_size=32,
                                  learning_rate=3e-3, strategy_options=options, verbose=0)
                seconds.append(time.perf_counter() - started)
                report = lt.evaluate(result.model, test, batch_size=256)
                scores.append(report.to_dict()["balanced_accuracy"])
            rows.append((entry, np.mean(scores), np.std(scores), np.mean(seconds)))
            print(f"{entry:18s} {np.mean(scores):.3f} +- {np.std(scores):.3f}  "
                  f"{np.mean(seconds):5.1f} s", file=sys.stderr, flush=True)
    base = rows[0][1]  # the first strategy is the reference
    print(f"\nDigits-LT features (imbalance 100), mlp, {args.epochs} epochs, seeds {args.seeds}")
    print("| strategy | test balanced accuracy | vs none | seconds per run |\n|---|---|---|---|")
    for entry, mean, std, sec in rows:
        print(f"| {entry} | {mean:.3f} +- {std:.3f} | {mean - base:+.3f} | {sec:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
