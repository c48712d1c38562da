"""Stratified train/val/test splits that keep every class in every split.

scikit-learn's ``train_test_split(..., stratify=y)`` matches the fractions
overall but can leave a rare class out of a split entirely (it allocates by
the largest remainders across all classes, and it refuses classes with one
sample). Here each class is split on its own: a class of ``n`` samples gives
``round(f * n)`` to a split of fraction ``f``, raised to one sample when that
rounds to zero and the class is big enough for every split to get one. So the
per-class counts are within one sample of the fractions, and a rare class
still reaches validation. Tests cross-check the counts against scikit-learn.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from longtail import _validation as v
from longtail.errors import ConfigError

__all__ = ["stratified_split", "split_counts", "write_split"]

SPLIT_NAMES = ("train", "val", "test")


def split_counts(counts: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Samples per class for each held-out split.

    Args:
        counts: Samples per class, shape ``(k,)``.
        fractions: Fraction of each held-out split (e.g. ``(val, test)``).

    Returns:
        int64 array of shape ``(len(fractions), k)``; the training split gets
        the rest of each class.
    """
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros((len(fractions), len(counts)), dtype=np.int64)
    needed = 1 + sum(f > 0 for f in fractions)  # samples for one in each split
    for j, f in enumerate(fractions):
        if f <= 0:
            continue
        n = np.floor(f * counts + 0.5).astype(np.int64)  # round half up, per class
        n[(n == 0) & (counts >= needed)] = 1
        out[j] = n
    # Never leave the training split empty for a class that has samples.
    over = out.sum(axis=0) - (counts - 1)
    for j in range(len(fractions) - 1, -1, -1):
        take = np.clip(over, 0, out[j])
        out[j] -= take
        over -= take
    return out


def stratified_split(
    labels: np.ndarray,
    *,
    val: float = 0.2,
    test: float = 0.0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, ...]:
    """Splits sample indices by class, reproducibly.

    Args:
        labels: Class index per sample.
        val: Fraction of each class for validation, in [0, 1).
        test: Fraction of each class for test, in [0, 1).
        seed: Seed; the same seed gives the same split.
        class_names: Names used in the warning about classes too small to split.

    Returns:
        Sorted index arrays ``(train, val)``, ``(train, val, test)`` when
        ``test > 0``, or ``(train, test)`` when ``val == 0``.

    Warns:
        When some classes have too few samples to give one to every split;
        their samples go to training first.

    Example:
        >>> train, val = stratified_split(np.array([0, 0, 0, 0, 1, 1]), val=0.5)
        >>> len(train), len(val)
        (3, 3)
    """
    val = v.fraction("val", val)
    test = v.fraction("test", test)
    if val + test >= 1.0:
        raise ConfigError(f"`val` + `test` must be below 1; got {val} + {test}")
    if val == 0 and test == 0:
        raise ConfigError("at least one of `val` and `test` must be above 0")
    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1 if labels.size else 0
    if class_names is not None:
        k = max(k, len(class_names))
    counts = np.bincount(labels, minlength=k)
    fractions = [f for f in (val, test) if f > 0]
    held = split_counts(counts, fractions)

    small = np.flatnonzero((counts > 0) & (counts < 1 + len(fractions)))
    if small.size:
        names = [class_names[i] if class_names else str(i) for i in small]
        warnings.warn(
            f"classes too small to appear in every split (fewer than {1 + len(fractions)} "
            f"samples; kept in training): {', '.join(names)}",
            stacklevel=2,
        )

    # Shuffle once, group by class keeping the shuffled order, rank within class.
    order = np.random.default_rng(seed).permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(labels)) - starts[labels[order]]
    cls = labels[order]
    parts = []
    lower = np.zeros(len(labels), dtype=np.int64)
    for j in range(len(fractions)):
        upper = lower + held[j][cls]
        parts.append(np.sort(order[(rank >= lower) & (rank < upper)]))
        lower = upper
    train = np.sort(order[rank >= lower])
    return (train, *parts)


def write_split(ds, out, *, val: float = 0.2, test: float = 0.0, seed: int = 0) -> dict:
    """Splits a Dataset and writes ``train/val/test.parquet`` into ``out`` as one set.

    The folder is locked while it is written, and the parquet files of the
    new split replace those of an old one all at once (a split file the new
    split does not have is removed), so ``out`` never mixes two splits.

    Returns:
        ``{"train": Dataset, "val": ..., "test": ...}`` for the splits made.
    """
    import os

    from longtail import runs

    parts = ds.split(val=val, test=test, seed=seed)
    names = ["train"] + [n for n, f in (("val", val), ("test", test)) if f > 0]
    with runs.locked(out, "split"):
        with runs.commit_set(out, remove=[f"{n}.parquet" for n in SPLIT_NAMES]) as stage:
            for name, part in zip(names, parts):
                part.save(stage.path(f"{name}.parquet"))
    return dict(zip(names, parts))
