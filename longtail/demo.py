"""Digits-LT: a long-tailed image folder built from scikit-learn's bundled digits.

Nothing is downloaded: ``sklearn.datasets.load_digits`` ships inside
scikit-learn. The 1,797 8x8 digit images are written as PNG files, one folder
per class, in three parts:

- ``train/``: long-tailed, class ``c`` keeps ``round(100 * 100^(-c/9))``
  images (100, 60, 36, 22, 13, 8, 5, 3, 2, 1): imbalance ratio 100;
- ``val/``: balanced, 20 images per class (for model selection and tau tuning);
- ``test/``: balanced, 50 images per class (for the reported figures).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["make_digits_lt", "DIGITS_LT_TRAIN_COUNTS", "DEMO_STRATEGIES", "DEMO_OPTIONS"]

#: What ``longtail demo`` compares, and the shared training options.
DEMO_STRATEGIES = ("none", "class-weight", "resample", "logit-adjust")
DEMO_OPTIONS = dict(image_size=16, color_mode="grayscale", augment="none", batch_size=32,
                    learning_rate=3e-3, seed=0)

DIGITS_LT_TRAIN_COUNTS = tuple(int(round(100 * 100 ** (-c / 9))) for c in range(10))
_VAL, _TEST = 20, 50


def make_digits_lt(out: str, seed: int = 0) -> dict[str, str]:
    """Writes Digits-LT under ``out`` (skipped when it is already complete).

    Args:
        out: Folder that receives ``train/``, ``val/`` and ``test/``.
        seed: Which images go to which part.

    Returns:
        ``{"train": path, "val": path, "test": path}``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    parts = {name: os.path.join(out, name) for name in ("train", "val", "test")}
    done = os.path.join(out, ".complete")
    if os.path.exists(done):
        return parts
    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        take = {"test": idx[:_TEST], "val": idx[_TEST:_TEST + _VAL],
                "train": idx[_TEST + _VAL:_TEST + _VAL + DIGITS_LT_TRAIN_COUNTS[c]]}
        for name, rows in take.items():
            folder = os.path.join(parts[name], str(c))
            os.makedirs(folder, exist_ok=True)
            for i in rows:
                Image.fromarray(images[i]).save(os.path.join(folder, f"{i:04d}.png"))
    open(done, "w").close()
    return parts
