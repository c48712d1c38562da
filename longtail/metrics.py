"""Classification metrics for long-tailed data, as one JSON-ready dict.

:func:`compute_metrics` takes true labels and either predicted class indices or
scores (probabilities or logits) and returns the ``metrics.json`` schema of
DESIGN.md plus the measures the long-tail literature reports: balanced
accuracy, macro F1, the geometric mean of recalls, top-k accuracy and
many/medium/few-shot accuracy. Every value that scikit-learn computes is taken
from :mod:`sklearn.metrics`; only what it lacks is computed here.

Classes absent from the evaluation labels (support 0) have an undefined
recall. They are reported per class with recall 0 (``zero_division=0``) but are
left out of every mean of recalls (balanced accuracy, geometric mean, shot
accuracy), as ``sklearn.metrics.balanced_accuracy_score`` does; a warning names
them.

Many classes: above :data:`SPARSE_CONFUSION_ABOVE` classes the confusion
matrix is computed and stored sparse (the non-zero cells only, see
:func:`sparse_confusion`), never as a dense ``k x k`` array, so memory and
``metrics.json`` grow with samples plus classes; the scikit-learn calls that
would build a dense matrix (balanced accuracy, top-k) are replaced by their
definitions there.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
from sklearn import metrics as skm

from longtail.errors import ConfigError, DataError

__all__ = ["compute_metrics", "shot_groups", "prior_shift_curve", "group_confusion",
           "confusion_entries", "sparse_confusion", "SPARSE_CONFUSION_ABOVE"]

_GROUPS = ("many", "medium", "few")

#: Past this many classes, ``confusion_matrix`` in ``metrics.json`` is sparse.
#: A dense 1,000 x 1,000 matrix is 8 MB in memory and about 2 MB of JSON, and
#: no longer readable as a picture; at 10,000 classes it would be 800 MB and
#: 200 MB. The one place this limit is set.
SPARSE_CONFUSION_ABOVE = 1000
_TOPK_ROWS = 1024  # rows of scores ranked at a time for top-k above the limit


def sparse_confusion(y_true, y_pred, num_classes: int) -> dict:
    """The confusion matrix as its non-zero cells, computed without a dense array.

    Returns:
        ``{"format": "sparse", "shape": [k, k], "true": [...], "predicted":
        [...], "count": [...]}``: cell ``(true[i], predicted[i])`` holds
        ``count[i]``, cells sorted by true then predicted class; every other
        cell is 0. This is ``confusion_matrix`` in ``metrics.json`` above
        :data:`SPARSE_CONFUSION_ABOVE` classes.
    """
    k = int(num_classes)
    cells, counts = np.unique(np.asarray(y_true, np.int64) * k + np.asarray(y_pred, np.int64),
                              return_counts=True)
    return {"format": "sparse", "shape": [k, k], "true": (cells // k).tolist(),
            "predicted": (cells % k).tolist(), "count": counts.tolist()}


def confusion_entries(confusion_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(true, predicted, count, k)`` of the non-zero cells of either form.

    Args:
        confusion_matrix: A dense ``(k, k)`` matrix (array or nested lists)
            or the sparse dict of :func:`sparse_confusion`, as a
            ``metrics.json`` may hold either.

    Raises:
        DataError: Neither form.
    """
    if isinstance(confusion_matrix, Mapping):
        try:
            k = int(confusion_matrix["shape"][0])
            true, pred, count = (np.asarray(confusion_matrix[key], np.int64)
                                 for key in ("true", "predicted", "count"))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise DataError(f"a sparse confusion matrix needs shape, true, predicted and "
                            f"count; got keys {sorted(confusion_matrix)}") from e
        if not (true.shape == pred.shape == count.shape and true.ndim == 1):
            raise DataError("a sparse confusion matrix needs true, predicted and count "
                            "lists of one length")
        return true, pred, count, k
    cm = np.asarray(confusion_matrix)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise DataError(f"a confusion matrix must be square; got shape {cm.shape}")
    true, pred = np.nonzero(cm)
    return true, pred, cm[true, pred], cm.shape[0]


def _top_k_chunked(y_true, scores, top: int) -> float:
    """Top-k accuracy without a full (n, k) argsort: a sample is a hit when
    fewer than ``top`` classes score strictly higher than its true class."""
    hits = 0
    for lo in range(0, len(y_true), _TOPK_ROWS):
        block = scores[lo:lo + _TOPK_ROWS]
        truth = block[np.arange(len(block)), y_true[lo:lo + _TOPK_ROWS]]
        hits += int(np.count_nonzero((block > truth[:, None]).sum(axis=1) < top))
    return hits / len(y_true)


#: Cells of an ``(n, k)`` score array taken at a time by the passes over
#: scores (finiteness, the probability check, calibration): a few MB of
#: float64 temporaries whatever ``k`` is.
_BLOCK_CELLS = 1 << 20


def _row_blocks(scores: np.ndarray, cells: int = _BLOCK_CELLS):
    """Consecutive row blocks (views) of ``scores``, about ``cells`` cells each."""
    rows = max(1, cells // max(1, scores.shape[1] if scores.ndim == 2 else 1))
    return (scores[lo:lo + rows] for lo in range(0, len(scores), rows))


def _mean_recall(y_true, y_pred, num_classes: int) -> float:
    """Balanced accuracy from two label arrays: the mean recall of the classes in
    ``y_true``, as ``sklearn.metrics.balanced_accuracy_score``, without its dense
    ``k x k`` matrix (memory linear in samples plus classes)."""
    support = np.bincount(y_true, minlength=num_classes)
    hits = np.bincount(y_true[y_true == y_pred], minlength=num_classes)
    present = support > 0
    return float((hits[present] / support[present]).mean())


def _labels(y, name: str, num_classes: int) -> np.ndarray:
    """Sparse int labels from sparse, one-hot or soft labels."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if y.shape[1] != num_classes:
            raise DataError(
                f"`{name}` has {y.shape[1]} columns but there are {num_classes} classes"
            )
        return y.argmax(axis=1)
    if y.ndim != 1:
        raise DataError(f"`{name}` must have shape (n,) or (n, k); got {y.shape}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise DataError(f"`{name}` must hold class indices; got dtype {y.dtype}")
    if y.size and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"`{name}` must hold class indices; got non-integer values")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"`{name}` must hold class indices in 0..{num_classes - 1}; "
            f"got values in {y.min()}..{y.max()}"
        )
    return y


def _resolve_counts(train_counts, class_names: Sequence[str]) -> np.ndarray:
    """Training counts in ``class_names`` order from a sequence or a dict."""
    k = len(class_names)
    if isinstance(train_counts, Mapping):
        counts = np.zeros(k, dtype=np.int64)
        index = {name: i for i, name in enumerate(class_names)}
        for key, value in train_counts.items():
            i = index.get(key, key)
            if not isinstance(i, (int, np.integer)) or not 0 <= i < k:
                raise ConfigError(
                    f"`train_counts` keys must be class names or indices 0..{k - 1}; "
                    f"got {key!r}"
                )
            counts[i] = int(value)
        return counts
    counts = np.asarray(train_counts).reshape(-1)
    if counts.shape != (k,):
        raise ConfigError(
            f"`train_counts` must have one count per class ({k}); got {counts.size}"
        )
    if np.any(counts < 0):
        raise ConfigError("`train_counts` must be non-negative")
    return counts.astype(np.int64)


def shot_groups(train_counts, thresholds: tuple[int, int] = (100, 20)) -> np.ndarray:
    """Names each class's shot group from its training count.

    Args:
        train_counts: Training samples per class, in ``class_names`` order.
        thresholds: ``(many, few)``: more than ``many`` samples is
            ``"many"``, fewer than ``few`` is ``"few"``, the rest (``few`` to
            ``many`` inclusive) ``"medium"``. Default ``(100, 20)``, the usual
            split of the long-tail literature.

    Returns:
        An array of ``"many"``, ``"medium"`` or ``"few"``, one per class.
    """
    many, few = thresholds
    if not few <= many:
        raise ConfigError(
            f"`shot_thresholds` must be (many, few) with few <= many; got {thresholds}"
        )
    counts = np.asarray(train_counts)
    return np.where(counts > many, "many", np.where(counts < few, "few", "medium"))


def _geometric_mean(recalls: np.ndarray) -> float:
    # One zero recall makes the geometric mean 0: the classifier fails a class.
    if recalls.size == 0:
        return 0.0
    if np.any(recalls == 0):
        return 0.0
    return float(np.exp(np.mean(np.log(recalls))))


def compute_metrics(
    y_true,
    y_score_or_pred,
    class_names: Sequence[str],
    train_counts=None,
    shot_thresholds: tuple[int, int] = (100, 20),
    top_k: Sequence[int] = (5,),
) -> dict:
    """Computes the per-class and summary metrics of a classifier.

    Args:
        y_true: True labels: class indices ``(n,)`` or one-hot rows ``(n, k)``.
        y_score_or_pred: Predicted class indices ``(n,)``, or scores
            ``(n, k)`` (probabilities or logits; the prediction is the argmax).
        class_names: One name per class; index ``i`` is ``class_names[i]``.
        train_counts: Training samples per class, as a sequence in
            ``class_names`` order or a dict keyed by class name or index.
            Enables the many/medium/few-shot accuracies.
        shot_thresholds: ``(many, few)`` training-count thresholds; see
            :func:`shot_groups`.
        top_k: The ``k`` of the top-k accuracies; computed only when scores
            are given, for ``k`` below the number of classes and more than two
            classes.

    Returns:
        A JSON-serialisable dict: ``classes``, ``n_samples``, ``accuracy``,
        ``balanced_accuracy`` (mean recall over classes present in
        ``y_true``), ``macro_f1`` (over classes present in ``y_true`` or the
        predictions), ``geometric_mean_recall`` (over classes present in
        ``y_true``; 0 when any of them has recall 0), ``top_k_accuracy``
        (``{"5": ...}``), ``per_class`` (``class``, ``support``,
        ``precision``, ``recall``, ``f1``, ``predicted``, and with
        ``train_counts`` also ``train_count`` and ``shot``),
        ``confusion_matrix`` (rows true, columns predicted),
        ``true_distribution``, ``predicted_distribution``; with
        ``train_counts`` also ``shot_thresholds``, ``many_shot_accuracy``,
        ``medium_shot_accuracy`` and ``few_shot_accuracy`` (mean recall of the
        group's classes present in ``y_true``; ``None`` when there are none).

    Raises:
        DataError: Labels or scores of the wrong shape or out of range.
        ConfigError: ``class_names``, ``train_counts`` or thresholds invalid.

    Example:
        >>> m = compute_metrics([0, 1, 1], [0, 1, 0], ["a", "b"])
        >>> m["balanced_accuracy"]
        0.75
    """
    class_names = [str(c) for c in class_names]
    k = len(class_names)
    if k < 2:
        raise ConfigError(f"`class_names` must name at least 2 classes; got {k}")
    y_true = _labels(y_true, "y_true", k)
    if y_true.size == 0:
        raise DataError("`y_true` is empty: there is nothing to evaluate")
    scores = np.asarray(y_score_or_pred)
    if scores.ndim == 2 and scores.shape[1] > 1:
        if scores.shape[1] != k:
            raise DataError(
                f"`y_score_or_pred` has {scores.shape[1]} columns but there are "
                f"{k} classes"
            )
        if not all(np.isfinite(block).all() for block in _row_blocks(scores)):
            raise DataError("`y_score_or_pred` holds NaN or infinite scores")
        y_pred = scores.argmax(axis=1)
    else:
        y_pred, scores = _labels(scores, "y_score_or_pred", k), None
    if y_pred.shape[0] != y_true.shape[0]:
        raise DataError(
            f"`y_true` has {y_true.shape[0]} samples but `y_score_or_pred` has "
            f"{y_pred.shape[0]}"
        )

    labels = np.arange(k)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    predicted = np.bincount(y_pred, minlength=k)
    present = support > 0
    if not present.all():
        missing = [class_names[i] for i in np.flatnonzero(~present)]
        warnings.warn(
            f"{len(missing)} class(es) have no samples in `y_true` and are left out "
            f"of balanced accuracy and the other means of recall: {missing[:10]}",
            UserWarning,
            stacklevel=2,
        )
    sparse = k > SPARSE_CONFUSION_ABOVE
    if sparse:  # sklearn's balanced accuracy builds a dense k x k matrix
        balanced = recall[present].mean()
    else:
        with warnings.catch_warnings():
            # Already warned above, with the class names.
            warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
            balanced = skm.balanced_accuracy_score(y_true, y_pred)

    out = {
        "classes": class_names,
        "n_samples": int(y_true.size),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "geometric_mean_recall": _geometric_mean(recall[present]),
        "top_k_accuracy": {},
    }
    if scores is not None and k > 2:
        for top in sorted(set(int(t) for t in top_k)):
            if 1 <= top < k:
                out["top_k_accuracy"][str(top)] = float(
                    _top_k_chunked(y_true, scores, top) if sparse else
                    skm.top_k_accuracy_score(y_true, scores, k=top, labels=labels)
                )

    per_class = [
        {
            "class": class_names[i],
            "support": int(support[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "predicted": int(predicted[i]),
        }
        for i in range(k)
    ]
    if train_counts is not None:
        counts = _resolve_counts(train_counts, class_names)
        groups = shot_groups(counts, shot_thresholds)
        out["shot_thresholds"] = [int(t) for t in shot_thresholds]
        for group in _GROUPS:
            chosen = (groups == group) & present
            out[f"{group}_shot_accuracy"] = (
                float(recall[chosen].mean()) if chosen.any() else None
            )
        for row, count, group in zip(per_class, counts, groups):
            row["train_count"] = int(count)
            row["shot"] = str(group)
    cm = (sparse_confusion(y_true, y_pred, k) if sparse
          else skm.confusion_matrix(y_true, y_pred, labels=labels))
    if train_counts is not None:
        out["group_confusion"] = group_confusion(cm, groups)
        if present.all() and np.all(counts > 0):
            out["prior_shift"] = prior_shift_curve(cm, counts)

    out["per_class"] = per_class
    out["confusion_matrix"] = cm if sparse else cm.tolist()
    out["true_distribution"] = [int(c) for c in support]
    out["predicted_distribution"] = [int(c) for c in predicted]
    return out


def group_confusion(confusion_matrix, groups) -> dict:
    """Samples of each shot group predicted as each group (head-to-tail confusion).

    Returns:
        ``{"groups": [...], "matrix": [[...]]}``: rows the true group,
        columns the predicted class's group, over the groups that have
        classes, in many, medium, few order.
    """
    true, pred, count, _ = confusion_entries(confusion_matrix)
    groups = np.asarray(groups)
    names = [g for g in _GROUPS if np.any(groups == g)]
    index = np.full(len(groups), -1)
    for i, g in enumerate(names):
        index[groups == g] = i
    matrix = np.zeros((len(names), len(names)), np.int64)
    np.add.at(matrix, (index[true], index[pred]), count)
    return {"groups": names, "matrix": matrix.tolist()}


def prior_shift_curve(confusion_matrix, train_counts, steps: int = 11) -> dict:
    """Metrics as the test class prior moves from the training prior to its reverse.

    No re-training and no resampling: each test sample of class ``c`` is
    weighted by ``q_c / (n_c / n)`` for a target prior ``q``, so each row of
    the confusion matrix is scaled to ``q_c``. ``q`` moves linearly from the
    training prior (``t = -1``) to uniform (``t = 0``) and on to the reversed
    prior (``t = 1``: the class with the most training samples gets the
    smallest share). Balanced accuracy does not change under such a shift
    (it weights classes equally whatever their share); accuracy and macro F1
    do.

    Args:
        confusion_matrix: ``(k, k)`` counts, rows true, every class present
            (dense, or sparse as :func:`sparse_confusion`).
        train_counts: Training samples per class.
        steps: Points on each half of the path.

    Returns:
        ``{"t", "accuracy", "balanced_accuracy", "macro_f1"}``, lists of equal
        length, and ``"priors"``, the target prior at each point.
    """
    true, pred, count, k = confusion_entries(confusion_matrix)
    count = count.astype(np.float64)
    support = np.bincount(true, weights=count, minlength=k)
    diagonal = true == pred
    hits = np.bincount(true[diagonal], weights=count[diagonal], minlength=k)
    if np.any(support == 0):
        raise DataError("a prior-shift curve needs every class in the test data")
    train = np.asarray(train_counts, dtype=np.float64)
    train = train / train.sum()
    reverse = np.empty_like(train)
    order = np.argsort(train, kind="stable")
    reverse[order] = train[order[::-1]]
    uniform = np.full_like(train, 1 / train.size)
    ts = np.concatenate([np.linspace(-1, 0, steps), np.linspace(0, 1, steps)[1:]])
    out = {"t": ts.tolist(), "priors": [], "accuracy": [], "balanced_accuracy": [],
           "macro_f1": []}
    for t in ts:
        q = uniform + t * (uniform - train) if t < 0 else uniform + t * (reverse - uniform)
        scale = q / support  # each row of the matrix scaled to sum to q
        tp = hits * scale
        predicted = np.bincount(pred, weights=count * scale[true], minlength=k)
        recall = tp / q
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        f1 = np.divide(2 * precision * recall, precision + recall,
                       out=np.zeros_like(tp), where=precision + recall > 0)
        out["priors"].append(q.tolist())
        out["accuracy"].append(float(tp.sum()))
        out["balanced_accuracy"].append(float(recall.mean()))
        out["macro_f1"].append(float(f1.mean()))
    return out
