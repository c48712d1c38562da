"""Per-class calibration: are the probabilities of tail classes trustworthy?

Top-label calibration error (what torchmetrics reports) is dominated by head
classes, whose samples are the many. Here every class is measured on its own,
one-vs-rest: for class ``c`` the confidence is ``p_c(x)`` and the outcome is
``y == c``, binned on equal-width bins of ``[0, 1]``:

``ECE_c = sum_b (n_b / n) * |mean(y == c in b) - mean(p_c in b)|``.

Groups of classes (many/medium/few-shot) get the mean of their classes' ECE,
and a reliability diagram pools the one-vs-rest pairs of a group's classes.
:func:`fit_temperature` fits one temperature ``T`` on validation logits by
minimising the negative log-likelihood of ``softmax(logits / T)`` (Guo et al.
2017), with :func:`scipy.optimize.minimize_scalar` over ``log T``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from longtail.errors import DataError
from longtail.metrics import _row_blocks

__all__ = ["classwise_ece", "reliability", "fit_temperature", "fit_bias_temperature", "nll",
           "calibration_summary", "add_calibration"]


def _check(scores, y_true) -> tuple[np.ndarray, np.ndarray]:
    """Scores as an array of their float type (float32 kept: no copy) and int labels."""
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != y.size:
        raise DataError(f"scores must have shape (n, k) with n = {y.size}; got {scores.shape}")
    if y.size and (y.min() < 0 or y.max() >= scores.shape[1]):
        raise DataError(f"labels must be class indices 0..{scores.shape[1] - 1}")
    return scores, y


def _blocks(scores: np.ndarray, y: np.ndarray, temperature: float | None = None):
    """``(float64 block, its labels)`` a block of rows at a time: the scores, or
    ``softmax(scores / temperature)`` when a temperature is given. Memory: one
    block (about 2**20 cells), never ``n x k`` temporaries."""
    lo = 0
    for block in _row_blocks(scores):
        block = block.astype(np.float64)
        if temperature is not None:
            block = log_softmax(block / temperature, axis=1)
            np.exp(block, out=block)
        yield block, y[lo:lo + len(block)]
        lo += len(block)


def _which_bin(conf: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each confidence; exactly 1 falls in the last bin."""
    return np.minimum((conf * bins).astype(np.int64), bins - 1)


class _ClassBins:
    """Per class and bin: summed confidence and summed outcome (one-vs-rest)."""

    def __init__(self, k: int, bins: int):
        self.k, self.bins, self.n = k, bins, 0
        self.conf = np.zeros(k * bins)
        self.hit = np.zeros(k * bins)

    def add(self, probs: np.ndarray, y: np.ndarray) -> None:
        which = _which_bin(probs, self.bins)
        which += np.arange(self.k) * self.bins  # cell (class, bin)
        self.conf += np.bincount(which.ravel(), weights=probs.ravel(),
                                 minlength=self.k * self.bins)
        self.hit += np.bincount(which[np.arange(len(y)), y], minlength=self.k * self.bins)
        self.n += len(y)

    def ece(self) -> np.ndarray:
        gap = np.abs(self.hit - self.conf).reshape(self.k, self.bins).sum(axis=1)
        return gap / max(self.n, 1)


class _PooledBins:
    """Per bin: count, summed confidence and outcome of the (sample, class)
    pairs of a group of classes."""

    def __init__(self, classes, bins: int):
        self.classes, self.bins = np.asarray(classes, dtype=np.int64), bins
        self.count = np.zeros(bins, np.int64)
        self.conf = np.zeros(bins)
        self.hit = np.zeros(bins)

    def add(self, probs: np.ndarray, y: np.ndarray) -> None:
        conf = probs[:, self.classes].ravel()
        which = _which_bin(conf, self.bins)
        hit = (y[:, None] == self.classes[None]).ravel()
        self.count += np.bincount(which, minlength=self.bins)
        self.conf += np.bincount(which, weights=conf, minlength=self.bins)
        self.hit += np.bincount(which[hit], minlength=self.bins)

    def result(self) -> dict:
        keep = self.count > 0
        return {"confidence": (self.conf[keep] / self.count[keep]).tolist(),
                "frequency": (self.hit[keep] / self.count[keep]).tolist(),
                "count": self.count[keep].tolist()}


def classwise_ece(probs, y_true, bins: int = 15) -> np.ndarray:
    """One-vs-rest expected calibration error of every class.

    Args:
        probs: Probabilities ``(n, k)``.
        y_true: int labels ``(n,)``.
        bins: Number of equal-width bins on ``[0, 1]``; a confidence of
            exactly 1 falls in the last bin.

    Returns:
        A float array ``(k,)``.

    Example:
        >>> classwise_ece([[0.9, 0.1], [0.6, 0.4]], [0, 1], bins=2).round(3)
        array([0.25, 0.25])
    """
    probs, y = _check(probs, y_true)
    stats = _ClassBins(probs.shape[1], bins)
    for block, labels in _blocks(probs, y):
        stats.add(block, labels)
    return stats.ece()


def reliability(probs, y_true, classes, bins: int = 10) -> dict:
    """The reliability diagram of a group of classes, pooled one-vs-rest.

    Returns:
        ``{"confidence", "frequency", "count"}``: per non-empty bin, the mean
        confidence, the observed frequency of the class and the number of
        (sample, class) pairs.
    """
    probs, y = _check(probs, y_true)
    stats = _PooledBins(classes, bins)
    for block, labels in _blocks(probs, y):
        stats.add(block, labels)
    return stats.result()


def nll(logits, y_true, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)``.

    Computed in float64 a block of rows at a time (float32 logits are not
    copied whole).
    """
    logits, y = _check(logits, y_true)
    total = 0.0
    for block, labels in _blocks(logits, y):
        block = log_softmax(block / temperature, axis=1)
        total += float(block[np.arange(len(block)), labels].sum())
    return -total / y.size if y.size else float("nan")


def fit_temperature(logits, y_true) -> float:
    """The temperature ``T`` in [0.05, 20] that minimises validation NLL."""
    logits, y = _check(logits, y_true)
    result = minimize_scalar(lambda log_t: nll(logits, y, float(np.exp(log_t))),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                             options={"xatol": 1e-4})
    return float(np.exp(result.x))


def fit_bias_temperature(logits, y_true) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling: ``softmax(logits / T + b)``.

    Fits ``T`` and one bias per class by minimising the NLL (L-BFGS, with
    the analytic gradient). Alexandari et al. (2020) show it is the
    calibration that makes EM prior estimation work: the biases absorb what
    a balancing strategy did to the priors, so the calibrated posteriors are
    relative to the class mix of the data it is fitted on.

    Returns:
        ``(T, b)``; ``b`` is centred (mean 0), as only its differences matter.
    """
    from scipy.optimize import minimize

    logits, y = _check(logits, y_true)
    n, k = logits.shape
    true_logits = float(logits[np.arange(n), y].astype(np.float64).sum())
    true_counts = np.bincount(y, minlength=k)

    def loss(theta):  # a pass over the logits a block at a time: no n x k copies
        t, b = np.exp(theta[0]), theta[1:]
        total, p_sum, pz_sum = 0.0, np.zeros(k), 0.0
        for block, labels in _blocks(logits, y):
            logp = log_softmax(block / t + b, axis=1)
            total -= logp[np.arange(len(labels)), labels].sum()
            p = np.exp(logp, out=logp)
            p_sum += p.sum(axis=0)
            pz_sum += float(np.einsum("ij,ij->", p, block))
        # d NLL / d a = (p - onehot) / n with a = logits / T + b
        grad_log_t = -(pz_sum - true_logits) / (n * t)
        return total / n, np.concatenate([[grad_log_t], (p_sum - true_counts) / n])

    theta = minimize(loss, np.zeros(k + 1), jac=True, method="L-BFGS-B",
                     bounds=[(np.log(0.05), np.log(20.0))] + [(-30, 30)] * k).x
    b = theta[1:] - theta[1:].mean()
    return float(np.exp(theta[0])), b


def calibration_summary(logits, y_true, groups, *, val_logits=None, val_true=None,
                        bins: int = 15) -> dict:
    """Per-class and per-group calibration, before and after temperature scaling.

    Args:
        logits: Test logits ``(n, k)`` (log-probabilities work too).
        y_true: Test labels ``(n,)``.
        groups: Shot group of every class (``"many"``, ``"medium"``,
            ``"few"``), e.g. from :func:`longtail.metrics.shot_groups`.
        val_logits, val_true: Validation logits and labels to fit the
            temperature on; without them no temperature is fitted.
        bins: Equal-width bins of the ECE (the diagrams use 10).

    Returns:
        A JSON-ready dict: ``bins``, ``temperature`` (or None),
        ``val_nll`` (``{"before", "after"}``), ``ece_per_class`` and
        ``ece_groups`` (``{"before": ..., "after": ...}``), and
        ``reliability`` (``{"head"|"tail": {"before", "after"}}``, head the
        many-shot classes, tail the few-shot ones, else medium).
    """
    groups = np.asarray(groups)
    temperature = None
    out = {"bins": int(bins), "temperature": None, "val_nll": None,
           "ece_per_class": {}, "ece_groups": {}, "reliability": {}}
    stages = [("before", 1.0)]
    if val_logits is not None:
        temperature = fit_temperature(val_logits, val_true)
        out["temperature"] = temperature
        out["val_nll"] = {"before": nll(val_logits, val_true),
                          "after": nll(val_logits, val_true, temperature)}
        stages.append(("after", temperature))
    tail = "few" if np.any(groups == "few") else "medium"
    logits, y = _check(logits, y_true)
    for stage, t in stages:  # one pass over the logits per stage, a block at a time
        ece = _ClassBins(logits.shape[1], bins)
        diagrams = {name: _PooledBins(np.flatnonzero(groups == group), 10)
                    for name, group in (("head", "many"), ("tail", tail))
                    if np.any(groups == group)}
        for probs, labels in _blocks(logits, y, t):
            ece.add(probs, labels)
            for diagram in diagrams.values():
                diagram.add(probs, labels)
        ece = ece.ece()
        out["ece_per_class"][stage] = ece.tolist()
        out["ece_groups"][stage] = {g: float(ece[groups == g].mean()) if np.any(groups == g)
                                    else None for g in ("many", "medium", "few")}
        for name, diagram in diagrams.items():
            out["reliability"].setdefault(name, {})[stage] = diagram.result()
    return out


def add_calibration(metrics: dict, report, val_report=None, bins: int = 15) -> dict:
    """Adds ``calibration`` (see :func:`calibration_summary`) to a metrics dict.

    Args:
        metrics: The ``metrics.json`` dict of ``report``; its per-class
            ``shot`` names the groups (all ``"many"`` without training counts).
        report: The :class:`longtail.EvaluationReport` of the test data.
        val_report: The report on validation data, to fit the temperature on.
        bins: ECE bins.

    Returns:
        ``metrics``, with ``calibration`` set.
    """
    groups = [row.get("shot", "many") for row in metrics["per_class"]]
    metrics["calibration"] = calibration_summary(
        report.logits, report.y_true, groups, bins=bins,
        val_logits=None if val_report is None else val_report.logits,
        val_true=None if val_report is None else val_report.y_true)
    return metrics
