"""Post-hoc logit adjustment (Menon et al. 2021): correct priors after training.

A model trained with plain cross-entropy on long-tailed data learns
``logit_c ~ log p(x | c) + log pi_c``. Subtracting ``tau * log pi_c`` at
prediction time removes the bias towards frequent classes without
retraining; :func:`tune_tau` picks tau on validation data.

tau-normalisation (Kang et al. 2020) corrects the classifier instead: its
class vectors grow with the class's frequency, and ``w_c / ||w_c||**tau``
evens them out; :func:`tau_normalize` applies it to a kernel and
:func:`tune_tau_norm` picks tau on validation features (the classifier's
inputs).
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from longtail.errors import ConfigError
from longtail.losses._base import as_priors, check_number
from longtail.metrics import SPARSE_CONFUSION_ABOVE, _mean_recall, _row_blocks

__all__ = ["adjust_logits", "tune_tau", "tau_normalize", "tune_tau_norm", "tune_tau_norm_batches"]


def _is_numpy_like(value) -> bool:
    return isinstance(value, (np.ndarray, list, tuple, numbers.Number))


def _log_priors(priors, k) -> np.ndarray:
    priors = as_priors(priors, "priors")
    if k is not None and len(priors) != k:
        raise ConfigError(
            f"`priors` has {len(priors)} entries but the logits have {k} classes"
        )
    return np.log(priors)


def adjust_logits(logits, priors, tau=1.0):
    """Post-hoc logit adjustment: ``logits - tau * log(priors)``.

    Use it on the logits of a model trained with an unadjusted loss (not on
    those of ``LogitAdjusted``, ``BalancedSoftmax`` or ``LDAM`` models, which
    are adjusted already). Only the priors' ratios matter (counts work
    too); a zero prior is raised to the smallest positive prior, with a
    warning, so that it neither gives NaN nor a huge boost.

    Args:
        logits: Array of shape (..., k): a NumPy array (or nested list) or a
            tensor of the current Keras backend.
        priors: Training class frequencies or counts, one per class.
        tau: Strength of the correction, >= 0; 1 is the Bayes-optimal choice
            for balanced error when the model is calibrated.

    Returns:
        The adjusted logits: a NumPy array for NumPy (or list) input, of the
        input's float dtype; a backend tensor for tensor input.

    Example:
        >>> import numpy as np
        >>> adjust_logits(np.array([[2.0, 0.0]]), [0.9, 0.1], tau=1.0).round(3)
        array([[2.105, 2.303]])
    """
    tau = check_number(tau, "tau", 0.0)
    if _is_numpy_like(logits):
        logits = np.asarray(logits)
        if not np.issubdtype(logits.dtype, np.floating):
            logits = logits.astype(np.float64)
        if logits.ndim < 1:
            raise ConfigError(f"`logits` must have shape (..., k); got {logits.shape}")
        offset = tau * _log_priors(priors, logits.shape[-1])
        return logits - offset.astype(logits.dtype)
    from keras import ops

    offset = tau * _log_priors(priors, logits.shape[-1])
    return ops.subtract(logits, ops.convert_to_tensor(offset, dtype=logits.dtype))


def _labels(y_true) -> np.ndarray:
    y = _to_numpy(y_true)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1).reshape(-1)
    return y.reshape(-1).astype(np.int64)


def _to_numpy(value) -> np.ndarray:
    if _is_numpy_like(value):
        return np.asarray(value)
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value))


def tune_tau(logits, y_true, priors, taus=None):
    """Picks the post-hoc tau with the best balanced accuracy.

    Args:
        logits: Validation logits, shape (n, k), NumPy or backend tensor.
        y_true: Validation labels: sparse (n,) / (n, 1) or one-hot (n, k).
        priors: Training class frequencies or counts, one per class.
        taus: Candidate values, each >= 0; defaults to
            ``np.linspace(0, 2, 21)``. Ties go to the first candidate.

    Returns:
        ``(best_tau, scores)``: the chosen tau (a float) and a NumPy array of
        the balanced accuracy (``sklearn.metrics.balanced_accuracy_score``;
        above :data:`longtail.metrics.SPARSE_CONFUSION_ABOVE` classes the
        same mean of recalls, without its dense ``k x k`` matrix) of every
        candidate, in ``taus`` order. The logits are read a block of rows at
        a time, in float64: float32 logits are not copied whole.

    Example:
        >>> import numpy as np
        >>> logits = np.array([[1.0, 0.0], [1.0, 0.5], [0.0, 1.0]])
        >>> tau, scores = tune_tau(logits, [0, 1, 1], [0.8, 0.2])
        >>> float(tau), float(scores.max())
        (0.4, 1.0)
    """
    taus = np.linspace(0.0, 2.0, 21) if taus is None else np.asarray(taus, dtype=float)
    if taus.ndim != 1 or taus.size == 0:
        raise ConfigError(f"`taus` must be a non-empty list of numbers; got {taus!r}")
    if not np.all(np.isfinite(taus)) or np.any(taus < 0):
        raise ConfigError(f"`taus` must all be finite and >= 0; got {taus.tolist()}")
    logits = _to_numpy(logits)
    y = _labels(y_true)
    if logits.ndim != 2 or logits.shape[0] != y.shape[0]:
        raise ConfigError(
            f"`logits` must have shape (n, k) with n = {y.shape[0]} labels; "
            f"got {logits.shape}"
        )
    k = logits.shape[-1]
    log_priors = _log_priors(priors, k)
    predictions = np.empty((taus.size, y.size), np.int64)
    lo = 0
    for block in _row_blocks(logits):  # float64 a block at a time: no n x k copies
        block = block.astype(np.float64)
        for i, tau in enumerate(taus):
            predictions[i, lo:lo + len(block)] = np.argmax(block - tau * log_priors, axis=-1)
        lo += len(block)
    if k > SPARSE_CONFUSION_ABOVE:  # sklearn's would build a dense k x k matrix per tau
        scores = np.array([_mean_recall(y, pred, k) for pred in predictions])
    else:
        scores = np.array([balanced_accuracy_score(y, pred) for pred in predictions])
    return float(taus[int(np.argmax(scores))]), scores


def tau_normalize(kernel, tau):
    """tau-normalisation of a classifier kernel: ``w_c / ||w_c||**tau`` per class.

    Args:
        kernel: The classifier's weights, shape (d, k) as a Keras ``Dense``
            stores them (column ``c`` is class ``c``'s vector).
        tau: Exponent >= 0: 0 leaves the kernel as it is, 1 gives every class
            vector unit norm. A class vector of norm 0 stays 0.

    Returns:
        A float64 array of the kernel's shape.

    Example:
        >>> tau_normalize(np.array([[3.0, 0.0], [4.0, 2.0]]), 1.0)
        array([[0.6, 0. ],
               [0.8, 1. ]])
    """
    tau = check_number(tau, "tau", 0.0)
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise ConfigError(f"`kernel` must have shape (d, k); got {kernel.shape}")
    norms = np.linalg.norm(kernel, axis=0)
    scale = np.ones_like(norms)
    scale[norms > 0] = norms[norms > 0] ** -tau
    return kernel * scale


def tune_tau_norm(features, y_true, kernel, bias=None, taus=None):
    """Picks the tau-normalisation exponent with the best balanced accuracy.

    Args:
        features: Validation features, the classifier's inputs, shape (n, d).
        y_true: Validation labels: sparse (n,) / (n, 1) or one-hot (n, k).
        kernel: The classifier's kernel, shape (d, k).
        bias: The classifier's bias (k,) to keep in the logits, or None to
            leave it out (as Kang et al.'s code does).
        taus: Candidates, each >= 0; defaults to ``np.linspace(0, 2, 21)``
            as in the paper. Ties go to the first candidate.

    Returns:
        ``(best_tau, scores)``: the chosen tau and the balanced accuracy
        (``sklearn.metrics.balanced_accuracy_score``) of every candidate.
    """
    return tune_tau_norm_batches([(features, y_true)], kernel, bias, taus)


def tune_tau_norm_batches(batches, kernel, bias=None, taus=None):
    """:func:`tune_tau_norm` over ``(features, y_true)`` batches, never all features at once.

    Only each candidate's predicted class is kept per sample (one int32),
    not the ``d`` features: memory is bounded by one batch plus the labels.

    Args:
        batches: An iterable of ``(features, y_true)`` pairs, as
            :func:`tune_tau_norm` takes them.
        kernel, bias, taus: As :func:`tune_tau_norm`.

    Returns:
        ``(best_tau, scores)``, as :func:`tune_tau_norm`.
    """
    taus = np.linspace(0.0, 2.0, 21) if taus is None else np.asarray(taus, dtype=float)
    if taus.ndim != 1 or taus.size == 0 or not np.all(np.isfinite(taus)) or np.any(taus < 0):
        raise ConfigError(f"`taus` must be a non-empty list of numbers >= 0; got {taus!r}")
    kernel = np.asarray(kernel, dtype=np.float64)
    kernels = [tau_normalize(kernel, t) for t in taus]
    offset = 0.0 if bias is None else np.asarray(bias, dtype=np.float64)
    ys, predicted = [], []
    for features, y_true in batches:
        features = _to_numpy(features).astype(np.float64)
        y = _labels(y_true)
        if features.ndim != 2 or features.shape != (y.shape[0], kernel.shape[0]):
            raise ConfigError(f"`features` must have shape (n, d) = ({y.shape[0]}, "
                              f"{kernel.shape[0]}); got {features.shape}")
        ys.append(y)
        predicted.append(np.stack([np.argmax(features @ k + offset, axis=-1)
                                   for k in kernels]).astype(np.int32))
    y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    predicted = (np.concatenate(predicted, axis=1) if predicted
                 else np.zeros((len(taus), 0), np.int32))
    scores = np.array([balanced_accuracy_score(y, p) for p in predicted])
    return float(taus[int(np.argmax(scores))]), scores
