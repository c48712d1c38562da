"""Digits-LT as CSV tables: the data of the feature-table benchmarks.

scikit-learn's bundled 8x8 digits (nothing downloaded) as 64 pixel columns and
a label, split like Digits-LT: a long-tailed training part
(``longtail.demo.DIGITS_LT_TRAIN_COUNTS``, 100 down to 1 a class), a balanced
validation part (20 a class) and a balanced test part (50 a class), drawn with
seed 0. Used by ``benchmarks.decoupled`` and ``benchmarks.shift``.
"""

from __future__ import annotations

import csv
import os

import numpy as np


def digits_lt_tables(out: str, drop_constant: bool = False) -> dict[str, str]:
    """Writes ``train.csv``, ``val.csv`` and ``test.csv`` into ``out``; returns their paths.

    Args:
        out: The folder (made if missing).
        drop_constant: Leave out the pixels constant over the training rows
            (the MLP standardises by the training variance, and a zero
            variance would blow up any other value).
    """
    from sklearn.datasets import load_digits

    from longtail.demo import DIGITS_LT_TRAIN_COUNTS

    digits = load_digits()
    rng = np.random.default_rng(0)
    parts = {"train": [], "val": [], "test": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        parts["test"] += idx[:50].tolist()
        parts["val"] += idx[50:70].tolist()
        parts["train"] += idx[70:70 + DIGITS_LT_TRAIN_COUNTS[c]].tolist()
    keep = np.arange(digits.data.shape[1])
    if drop_constant:
        keep = np.flatnonzero(digits.data[parts["train"]].std(axis=0) > 0)
    paths = {}
    os.makedirs(out, exist_ok=True)
    for name, rows in parts.items():
        paths[name] = os.path.join(out, f"{name}.csv")
        with open(paths[name], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([f"p{i}" for i in keep] + ["label"])
            for i in rows:
                writer.writerow([f"{v:g}" for v in digits.data[i, keep]] + [digits.target[i]])
    return paths
