"""Class weights and per-sample weights.

A class weight is a number per class, in ``class_names`` order, that scales the
loss of every sample of that class. :func:`class_weights` computes them from
class counts under a named strategy; :func:`sample_weights` turns them into
one weight per sample for sparse, one-hot or soft labels alike.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from longtail import _validation as v
from longtail.errors import ConfigError

__all__ = ["class_weights", "sample_weights", "resolve_class_weight", "effective_number_weights",
           "STRATEGIES"]


def _balanced(counts: np.ndarray, beta: float) -> np.ndarray:
    return counts.sum() / (np.count_nonzero(counts) * counts)


def _inverse(counts: np.ndarray, beta: float) -> np.ndarray:
    return counts.max() / counts


def _sqrt(counts: np.ndarray, beta: float) -> np.ndarray:
    return np.sqrt(counts.max() / counts)


def effective_number_weights(counts, beta: float = 0.999) -> np.ndarray:
    """Class-balanced weights of Cui et al. (2019): the inverse effective number.

    ``w_c = (1 - beta) / (1 - beta ** n_c)``, scaled so that the weights of
    the classes with samples sum to their number. A class with no samples
    gets 0.0 and leaves the others as they would be without it. The one
    formula behind the ``effective`` class weights (and so the
    ``effective-weight`` strategy), :class:`longtail.losses.ClassBalanced`
    and :class:`longtail.callbacks.DeferredReweighting`.

    Args:
        counts: Samples per class (>= 0; soft-label column sums may be fractions).
        beta: In [0, 1). 0 gives equal weights; towards 1, inverse frequency.

    Returns:
        A float64 array with one weight per class.

    Example:
        >>> effective_number_weights([3, 1, 0], beta=0.5).round(4).tolist()
        [0.7273, 1.2727, 0.0]
    """
    counts = np.asarray(counts, dtype=np.float64)
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"`beta` must be in [0, 1); got {beta:g}")
    weights = np.zeros(len(counts))
    present = counts > 0
    raw = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
    weights[present] = raw * (np.count_nonzero(present) / raw.sum())
    return weights


#: Named strategies: each maps class counts (all > 0) to one weight per class.
STRATEGIES: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "balanced": _balanced,
    "inverse": _inverse,
    "sqrt": _sqrt,
    "effective": effective_number_weights,
}


def _counts_of(data, num_classes: int | None) -> tuple[np.ndarray, list[str] | None]:
    """Class counts and (when known) class names of a dataset or a label array."""
    if hasattr(data, "class_counts") and hasattr(data, "class_names"):
        return np.asarray(data.class_counts, dtype=np.float64), list(data.class_names)
    y = np.asarray(data)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot or soft labels: column sums
        return y.sum(axis=0).astype(np.float64), None
    y = y.reshape(-1)
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
        raise ConfigError(
            "labels must be non-negative class indices (or one-hot rows); "
            f"got dtype {y.dtype} with minimum {y.min() if y.size else 'n/a'}"
        )
    k = num_classes if num_classes is not None else (int(y.max()) + 1 if y.size else 0)
    return np.bincount(y, minlength=k).astype(np.float64), None


def class_weights(
    data=None,
    strategy: str | Mapping | Callable = "balanced",
    *,
    beta: float = 0.999,
    num_classes: int | None = None,
    counts=None,
    class_names: Sequence[str] | None = None,
) -> dict[int, float]:
    """Computes one weight per class.

    Args:
        data: A :class:`longtail.Dataset`, or labels: sparse class indices
            ``(n,)``, one-hot or soft rows ``(n, k)``. Leave it out when
            giving ``counts``.
        strategy: One of
            ``"balanced"`` (``n / (k * n_c)``, equal to scikit-learn's
            ``compute_class_weight("balanced")``),
            ``"inverse"`` (``max_c n_c / n_c``, what users write by hand),
            ``"sqrt"`` (``sqrt(max_c n_c / n_c)``),
            ``"effective"`` (Cui et al. 2019, ``(1 - beta) / (1 - beta^n_c)``
            normalised to sum to the number of classes);
            a dict keyed by class index or class name (missing classes get
            1.0 with a warning that names them); or a callable taking the
            count array and returning one weight per class.
        beta: The ``effective`` strategy's beta, in [0, 1).
        num_classes: Number of classes when ``data`` is sparse labels whose
            highest classes may be absent.
        counts: Samples per class, instead of ``data`` (what a Dataset's
            ``class_counts`` holds; fractions such as soft-label sums work).
        class_names: Names of the classes, for dict keys and warnings;
            default a Dataset's names, else none (indices).

    Returns:
        ``{class_index: weight}`` for every class, in ``class_names`` order.
        A class with no samples gets weight 0.0 and a warning naming it
        (it never reaches the loss, and no strategy divides by zero).

    Example:
        >>> class_weights([0, 0, 0, 1], "balanced")
        {0: 0.6666666666666666, 1: 2.0}
        >>> class_weights(counts=[3, 1], class_names=["cat", "dog"])
        {0: 0.6666666666666666, 1: 2.0}
    """
    if (data is None) == (counts is None):
        raise ConfigError("pass either `data` (a Dataset or labels) or `counts`, exactly one")
    if counts is None:
        counts, names = _counts_of(data, num_classes)
    else:
        counts, names = _given_counts(counts), None
    if class_names is not None:
        names = [str(c) for c in class_names]
        if len(names) != len(counts):
            raise ConfigError(f"`class_names` must name the {len(counts)} classes; "
                              f"got {len(names)} names")
    k = len(counts)
    if isinstance(strategy, Mapping):
        return _from_mapping(strategy, k, names)
    if callable(strategy):
        weights = np.asarray(strategy(counts.copy()), dtype=np.float64).reshape(-1)
        if weights.shape != (k,):
            raise ConfigError(
                f"`class_weight` callable must return {k} weights; got shape {weights.shape}"
            )
        _check_finite(weights, "class_weight callable result")
        return {i: float(w) for i, w in enumerate(weights)}
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ConfigError(
            f"`strategy` must be one of {', '.join(STRATEGIES)}, a dict or a callable; "
            f"got {strategy!r}"
        )
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"`beta` must be in [0, 1); got {beta}")
    present = counts > 0
    if not present.any():
        raise ConfigError("cannot compute class weights: every class has zero samples")
    if not present.all():
        empty = [names[i] if names else str(i) for i in np.flatnonzero(~present)]
        warnings.warn(
            f"classes with no samples get class weight 0.0: {', '.join(empty)}",
            stacklevel=2,
        )
    weights = np.zeros(k)
    weights[present] = STRATEGIES[strategy](counts[present], beta)
    return {i: float(w) for i, w in enumerate(weights)}


def _given_counts(counts) -> np.ndarray:
    array = v.class_vector("counts", counts, np.size(counts))
    if (array < 0).any():
        raise ConfigError(f"`counts` must be >= 0 for every class; got {array.tolist()}")
    return array


def _from_mapping(mapping: Mapping, k: int, names: list[str] | None) -> dict[int, float]:
    weights = {}
    for key, value in mapping.items():
        index = _class_index(key, k, names)
        weights[index] = float(value)
    _check_finite(np.array(list(weights.values())), "class_weight")
    missing = [i for i in range(k) if i not in weights]
    if missing:
        shown = [names[i] if names else str(i) for i in missing]
        warnings.warn(
            f"class_weight has no entry for classes {', '.join(shown)}; they get weight 1.0",
            stacklevel=3,
        )
    return {i: weights.get(i, 1.0) for i in range(k)}


def _class_index(key, k: int, names: list[str] | None) -> int:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if 0 <= key < k:
            return int(key)
        raise ConfigError(f"class_weight key {key} is outside the class indices 0..{k - 1}")
    if isinstance(key, str) and names is not None and key in names:
        return names.index(key)
    known = ", ".join(names) if names else f"indices 0..{k - 1}"
    raise ConfigError(f"class_weight key {key!r} is not a class; known classes: {known}")


def _check_finite(weights: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        raise ConfigError(f"{what} must be finite and >= 0; got {weights[bad][0]}")


def resolve_class_weight(class_weight, data) -> np.ndarray | None:
    """Returns class weights as a float32 array in class order, or None.

    Args:
        class_weight: None, a strategy name, a dict or a callable, as
            :func:`class_weights` takes; or an array of one weight per class.
        data: The dataset (or labels) the weights are for.
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, (list, tuple, np.ndarray)):
        weights = np.asarray(class_weight, dtype=np.float64).reshape(-1)
        _check_finite(weights, "class_weight")
        return weights.astype(np.float32)
    resolved = class_weights(data, class_weight)
    return np.array([resolved[i] for i in range(len(resolved))], dtype=np.float32)


def sample_weights(y, class_weight) -> np.ndarray:
    """Turns class weights into one weight per sample.

    Args:
        y: Sparse class indices ``(n,)`` or ``(n, 1)``, or one-hot or soft
            label rows ``(n, k)`` (the weight is the dot product of the row
            with the class weights).
        class_weight: ``{class_index: weight}`` as :func:`class_weights`
            returns, or an array of one weight per class.

    Returns:
        float32 array of shape ``(n,)``.

    Example:
        >>> sample_weights([1, 0], {0: 0.5, 1: 2.0})
        array([2. , 0.5], dtype=float32)
    """
    if isinstance(class_weight, Mapping):
        k = max(int(i) for i in class_weight) + 1
        missing = [i for i in range(k) if i not in class_weight]
        if missing:
            warnings.warn(
                f"class_weight has no entry for classes {missing}; they get weight 1.0",
                stacklevel=2,
            )
        table = np.array([class_weight.get(i, 1.0) for i in range(k)], dtype=np.float64)
    else:
        table = np.asarray(class_weight, dtype=np.float64).reshape(-1)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        if y.shape[1] != len(table):
            raise ConfigError(
                f"labels have {y.shape[1]} columns but class_weight has {len(table)} classes"
            )
        return (y.astype(np.float64) @ table).astype(np.float32)
    y = y.reshape(-1)
    if y.size and (y.min() < 0 or y.max() >= len(table)):
        raise ConfigError(
            f"labels must be class indices in 0..{len(table) - 1}; got {y.min()}..{y.max()}"
        )
    return table[y.astype(np.int64)].astype(np.float32)
