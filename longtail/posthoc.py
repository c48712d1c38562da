"""Post-hoc logit adjustment (Menon et al. 2021): correct priors after training.

A model trained with plain cross-entropy on long-tailed data learns
``logit_c ~ log p(x | c) + log pi_c``. Subtracting ``tau * log pi_c`` at
prediction time removes the bias towards frequent classes without
retraining; :func:`tune_tau` picks tau on validation data.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from longtail.errors import ConfigError
from longtail.losses._base import as_priors, check_number

__all__ = ["adjust_logits", "tune_tau"]


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
        the balanced accuracy (``sklearn.metrics.balanced_accuracy_score``)
        of every candidate, in ``taus`` order.

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
    logits = _to_numpy(logits).astype(np.float64)
    y = _labels(y_true)
    if logits.ndim != 2 or logits.shape[0] != y.shape[0]:
        raise ConfigError(
            f"`logits` must have shape (n, k) with n = {y.shape[0]} labels; "
            f"got {logits.shape}"
        )
    log_priors = _log_priors(priors, logits.shape[-1])
    scores = np.array([
        balanced_accuracy_score(y, np.argmax(logits - tau * log_priors, axis=-1))
        for tau in taus
    ])
    return float(taus[int(np.argmax(scores))]), scores
