"""Evaluating a trained model: stream batches, collect scores, compute metrics.

:func:`evaluate` runs a model over a loader (or over a :class:`longtail.Dataset`,
for which it builds a sequential loader) one batch at a time, keeps only the
labels and the model's scores, optionally corrects the scores for the training
priors (post-hoc logit adjustment), and returns an :class:`EvaluationReport`
whose :meth:`~EvaluationReport.to_dict` is the ``metrics.json`` of DESIGN.md.
"""

from __future__ import annotations

import os
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

from longtail import _io
from longtail.errors import ConfigError, DataError
from longtail.metrics import _resolve_counts, _row_blocks, compute_metrics

__all__ = ["evaluate", "EvaluationReport", "predict_batches", "to_logits"]


class EvaluationReport:
    """The result of :func:`evaluate`.

    Attributes:
        y_true: int64 array ``(n,)`` of true class indices.
        y_score: float array ``(n, k)`` of the scores the metrics were computed
            from (the model's outputs, or adjusted logits when ``posthoc_tau``
            was given); float32, or float64 when the model gave float64.
        y_pred: int64 array ``(n,)``, the argmax of ``y_score``.
        logits: float array ``(n, k)``: the model's outputs as logits before
            any adjustment (the log when the outputs are probabilities), fit
            for :func:`longtail.posthoc.tune_tau`; the same array as
            ``y_score`` when the model gives logits and no ``posthoc_tau``.
        class_names: The class names, in index order.
        posthoc_tau: The post-hoc adjustment strength applied, or None.
    """

    def __init__(self, *, y_true, y_score, class_names, metrics: dict, posthoc_tau=None,
                 logits=None):
        self.y_true = np.asarray(y_true)
        self.y_score = np.asarray(y_score)
        self.logits = self.y_score if logits is None else np.asarray(logits)
        self.class_names = list(class_names)
        self.posthoc_tau = posthoc_tau
        self._metrics = metrics

    @property
    def y_pred(self) -> np.ndarray:
        return self.y_score.argmax(axis=1)

    def to_dict(self) -> dict:
        """The ``metrics.json`` dict (a deep copy: safe to modify)."""
        import copy

        return copy.deepcopy(self._metrics)

    def save(self, out_dir) -> str:
        """Writes ``metrics.json`` into ``out_dir`` atomically; returns its path.

        Holds the folder's lock (:func:`longtail.runs.locked`) while writing.
        """
        from longtail import runs

        path = os.path.join(os.fspath(out_dir), "metrics.json")
        with runs.locked(out_dir, "evaluate"):
            _io.write_json(path, rounded(self._metrics))
        return path

    def write_report(self, out_dir, **options):
        """Writes ``report.html`` and its plots; see :func:`longtail.report.write_report`."""
        from longtail import runs
        from longtail.report import write_report

        with runs.locked(out_dir, "evaluate"):
            return write_report(out_dir, self._metrics, **options)

    def write(self, out_dir, **options) -> str:
        """Writes ``metrics.json``, ``report.html`` and the plots as one set.

        As ``longtail evaluate --out``: under the folder's lock, committed
        together (:func:`longtail.runs.commit_set`), so ``out_dir`` holds the
        whole old set or the whole new one. ``options`` go to
        :func:`longtail.report.write_report`. Returns the path of
        ``metrics.json``.
        """
        from longtail import runs
        from longtail.report import write_report

        with runs.locked(out_dir, "evaluate"), runs.commit_set(out_dir) as stage:
            _io.write_json(os.path.join(stage.dir, "metrics.json"), rounded(self._metrics))
            write_report(stage.dir, self._metrics, **options)
        return os.path.join(os.fspath(out_dir), "metrics.json")

    def __repr__(self) -> str:
        m = self._metrics
        return (f"EvaluationReport({m['n_samples']} samples, {len(self.class_names)} "
                f"classes, accuracy {m['accuracy']:.4f}, balanced accuracy "
                f"{m['balanced_accuracy']:.4f})")


def _to_numpy(value) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, RuntimeError):  # e.g. a torch tensor on a GPU
        import keras

        return keras.ops.convert_to_numpy(value)


def _is_dataset(data) -> bool:
    return callable(getattr(data, "loader", None)) and hasattr(data, "class_counts")


def _image_size(model) -> tuple[int, int] | None:
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4 and all(
        isinstance(d, int) for d in shape[1:3]
    ):
        return (shape[1], shape[2])
    return None


def _loader_of(model, data, batch_size: int, loader_kw: dict) -> Iterable:
    if not _is_dataset(data):
        if loader_kw:
            raise ConfigError(
                f"loader options {sorted(loader_kw)} apply only when `data` is a "
                "longtail.Dataset; got an iterable of batches"
            )
        return data
    options = {"sampling": "sequential", "label_mode": "int", **loader_kw}
    if data.source.is_image and data.source.image_size is None and "image_size" not in options:
        size = _image_size(model)
        if size is None:
            raise ConfigError(
                "cannot infer `image_size` from the model's input shape "
                f"{getattr(model, 'input_shape', None)}; pass image_size=(height, width)"
            )
        options["image_size"] = size
    return data.loader(batch_size=batch_size, **options)


def _labels_of(y) -> np.ndarray:
    y = _to_numpy(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot or soft labels
        return y.argmax(axis=1).astype(np.int64)
    return y.reshape(-1).astype(np.int64)


def predict_batches(model, batches: Iterable, steps: int | None = None, *,
                    name: str = "data", error: type = DataError, progress: bool = False,
                    reduce=None) -> tuple[np.ndarray, np.ndarray]:
    """Runs a model over ``(x, y)`` or ``(x, y, w)`` batches, one at a time.

    The one prediction loop: :func:`evaluate` and
    :class:`longtail.callbacks.PerClassMetrics` both go through it. The
    outputs are kept as float32 (float64 only when the model gives float64),
    written into one array as they come when the number of batches is known:
    ``n x units x 4`` bytes, with no second copy.

    Args:
        model: A Keras model (``predict_on_batch`` is used) or a callable
            ``model(x, training=False)``.
        batches: An iterable of batches; ``y`` sparse, one-hot or soft.
        steps: Stop after this many batches (default: all).
        name: The argument the batches came from, for error messages.
        error: The error class raised for a batch of the wrong form.
        progress: Show a progress bar with ETA (on a terminal only).
        reduce: A function of one batch's outputs ``(rows, units)`` whose
            result (an array of ``rows`` rows) is kept instead of the
            outputs, e.g. ``lambda out: out.argmax(axis=1)``: memory then
            grows with that result, not with ``n x units``.

    Returns:
        ``(y_true, outputs)``: int64 class indices ``(n,)`` and the outputs
        ``(n, units)`` (or what ``reduce`` made of them); both empty when no
        batch came.
    """
    from longtail._progress import progress_bar

    predict = getattr(model, "predict_on_batch", None)
    ys, outs = [], _Rows()
    total = len(batches) if hasattr(batches, "__len__") else None
    total = total if steps is None or total is None else min(total, steps)
    bar = progress_bar(total=total, desc="evaluating", enabled=progress)
    for step, batch in enumerate(batches):
        if steps is not None and step >= steps:
            break
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise error(f"`{name}` must yield (x, y) or (x, y, sample_weight) batches; "
                        f"got {type(batch).__name__}")
        x, y = batch[0], batch[1]
        out = predict(x) if predict is not None else model(x, training=False)
        if isinstance(out, (list, tuple, Mapping)):
            raise ConfigError("`model` must have a single output; got several")
        ys.append(_labels_of(y))
        out = _to_numpy(out)
        out = out.astype(score_dtype(out.dtype), copy=False).reshape(len(ys[-1]), -1)
        outs.add(out if reduce is None else np.asarray(reduce(out)),
                 None if total is None else total - step)
        bar.update(1)
    bar.close()
    if not ys:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return np.concatenate(ys), outs.array()


def score_dtype(dtype) -> type:
    """float64 for float64 scores, float32 for any other: how scores are kept."""
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


class _Rows:
    """Batches of rows gathered into one array without a second full copy.

    With the number of batches still to come known, the first batch sizes
    one array for all of them and each batch is written into it; otherwise
    (or when a batch does not fit) the batches are kept and joined at the
    end, as ``np.concatenate`` does.
    """

    def __init__(self):
        self.buffer, self.filled, self.parts = None, 0, []

    def add(self, rows: np.ndarray, batches_left: int | None) -> None:
        if self.buffer is None and not self.parts and batches_left:
            self.buffer = np.empty((len(rows) * batches_left, *rows.shape[1:]), rows.dtype)
        if (self.buffer is not None and rows.shape[1:] == self.buffer.shape[1:]
                and rows.dtype == self.buffer.dtype
                and self.filled + len(rows) <= len(self.buffer)):
            self.buffer[self.filled:self.filled + len(rows)] = rows
            self.filled += len(rows)
            return
        if self.buffer is not None:  # does not fit: keep what was written, join at the end
            self.parts.append(self.buffer[:self.filled])
            self.buffer = None
        self.parts.append(rows)

    def array(self) -> np.ndarray:
        if self.buffer is not None:
            kept = self.buffer[:self.filled]
            # a last batch shorter than the first leaves less than a batch unused
            return kept if self.filled * 2 > len(self.buffer) else kept.copy()
        return np.concatenate(self.parts)


def _collect(model, batches: Iterable, steps: int | None,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Runs the model batch by batch; returns (y_true, raw outputs)."""
    y_true, outputs = predict_batches(model, batches, steps, progress=progress)
    if not len(y_true):
        raise DataError("`data` yielded no batches: there is nothing to evaluate")
    return y_true, outputs


def _drop_unreadable(batches, y_true, scores, steps):
    """Leaves out the rows a sequential loader filled in for unreadable files.

    A longtail loader replaces a file that fails to decode with another sample
    of its class; fine for training, but evaluation would count that sample
    twice. In a sequential pass row ``i`` is sample ``i``, so those rows are
    dropped and the files listed in a warning (and in ``unreadable_files``).
    """
    errors = list(getattr(batches, "errors", None) or [])
    sampler = getattr(getattr(batches, "sampler_", None), "name", None)
    if not errors or steps is not None or sampler != "sequential" or batches.shard != (0, 1):
        return y_true, scores, []
    keep = np.ones(len(y_true), bool)
    bad = batches.unreadable
    keep[bad[bad < len(keep)]] = False
    if not keep.any():
        raise DataError(f"none of the {len(y_true)} files could be decoded; first: {errors[0]}")
    shown = "; ".join(str(e) for e in errors[:5]) + (" ..." if len(errors) > 5 else "")
    warnings.warn(f"{len(errors)} unreadable files were left out of the metrics: {shown}",
                  UserWarning, stacklevel=3)
    return y_true[keep], scores[keep], errors


#: How far a row's sum may be from 1 for the row to count as probabilities: a
#: float16 softmax (mixed precision) sums within ~1e-3, a float32 one within ~1e-6.
PROBABILITY_ATOL = 1e-3


def looks_like_probabilities(scores: np.ndarray) -> bool:
    """Whether every row of ``scores`` is in [0, 1] and sums to 1 (within 1e-3).

    Checked a block of rows at a time, sums in float64: no ``n x k`` temporary.
    """
    scores = np.asarray(scores)
    for block in _row_blocks(scores):
        if not (block.size == 0 or (block.min() >= 0 and block.max() <= 1)):
            return False
        if not np.allclose(block.sum(axis=1, dtype=np.float64), 1.0, atol=PROBABILITY_ATOL):
            return False
    return True


def to_logits(scores: np.ndarray, from_logits: bool | None = None) -> np.ndarray:
    """A model's outputs as logits: the log of probabilities, logits as they are.

    ``from_logits=None`` decides with :func:`looks_like_probabilities`; what
    :func:`evaluate` and ``longtail predict`` do with any model's outputs.
    Logits come back as they are (float32 or float64, no copy); the log of
    probabilities is one new array of their float type.
    """
    scores = np.asarray(scores)
    scores = scores.astype(score_dtype(scores.dtype), copy=False)
    if from_logits is None:
        from_logits = not looks_like_probabilities(scores)
    if from_logits:
        return scores
    logits = np.maximum(scores, 1e-12)
    return np.log(logits, out=logits)


def _two_columns(out: np.ndarray) -> np.ndarray:
    """A one-unit (sigmoid) output as two class columns of the same kind."""
    z = out[:, 0]
    if np.all((z >= 0) & (z <= 1)):
        return np.stack([1.0 - z, z], axis=1)  # probabilities
    return np.stack([np.zeros_like(z), z], axis=1)  # softmax([0, z]) == sigmoid(z)


def _resolve_priors(priors, train_counts, class_names) -> np.ndarray:
    source, name = (priors, "priors") if priors is not None else (train_counts, "train_counts")
    if source is None:
        raise ConfigError(
            "`posthoc_tau` needs the training class priors: pass `priors` or "
            "`train_counts` (the evaluation set's own frequencies would be wrong)"
        )
    if isinstance(source, Mapping):
        values = _resolve_counts(source, class_names).astype(np.float64)
    else:
        values = np.asarray(source, dtype=np.float64).reshape(-1)
    if values.shape != (len(class_names),) or np.any(values < 0) or values.sum() <= 0:
        raise ConfigError(
            f"`{name}` must hold {len(class_names)} non-negative values, not all zero; "
            f"got {np.asarray(source).tolist()!r:.200}"
        )
    return values / values.sum()


def evaluate(
    model,
    data,
    *,
    class_names: Sequence[str] | None = None,
    train_counts=None,
    posthoc_tau: float | None = None,
    priors=None,
    from_logits: bool | None = None,
    batch_size: int = 64,
    steps: int | None = None,
    shot_thresholds: tuple[int, int] = (100, 20),
    top_k: Sequence[int] = (5,),
    bootstrap=True,
    progress: bool = False,
    out=None,
    **loader_kw,
) -> EvaluationReport:
    """Evaluates a classifier on data too large to hold in memory.

    Only labels and scores are kept, never inputs: memory grows with
    ``n * num_classes`` (one float32 array of scores; a second for the log
    of probabilities or the adjusted scores), not with the data. The passes
    over the scores (checks, top-k, calibration) go a block of rows at a
    time, in float64 where sums need it.

    Args:
        model: A Keras model (``predict_on_batch`` is used) or any callable
            ``model(x, training=False)`` returning scores ``(batch, k)``; a
            single sigmoid unit counts as two classes.
        data: An iterable of ``(x, y)`` or ``(x, y, w)`` batches, with ``y``
            sparse or one-hot; or a :class:`longtail.Dataset`, read in order
            by ``data.loader(batch_size, sampling="sequential",
            label_mode="int", image_size=<from the model's input shape>,
            **loader_kw)``.
        class_names: Class names; default ``data.class_names``, then
            ``data.dataset.class_names``, then ``"0"``, ``"1"``, ...
        train_counts: Training samples per class (sequence or dict keyed by
            class name or index): enables many/medium/few-shot accuracy and
            serves as priors for ``posthoc_tau``.
        posthoc_tau: When given, the scores become
            ``adjust_logits(logits, priors, posthoc_tau)``
            (``logits - tau * log(priors)``) before the argmax.
        priors: Training class priors for ``posthoc_tau``; default
            ``train_counts`` normalised.
        from_logits: Whether the model outputs logits. ``None`` decides from
            the outputs: rows in [0, 1] summing to 1 are probabilities, whose
            log is taken for ``report.logits`` and before a post-hoc
            adjustment.
        batch_size: Batch size of the loader built for a ``Dataset``.
        steps: Stop after this many batches (default: all).
        shot_thresholds: See :func:`longtail.metrics.compute_metrics`.
        top_k: See :func:`longtail.metrics.compute_metrics`.
        bootstrap: ``True`` (2,000 resamples, 95%), a
            :class:`longtail.intervals.BootstrapOptions`, or ``False``: the
            class-stratified bootstrap intervals added as ``intervals`` (and
            per class as ``recall_interval`` and ``precision_interval``).
        progress: Show a progress bar with an ETA on standard error (only
            on a terminal, and only for more than one batch).
        out: A folder to write ``metrics.json``, ``report.html`` and the
            plots into, as one set (:meth:`EvaluationReport.write`). Its lock
            is held from the start, so a second writer of the folder is
            refused (:class:`longtail.runs.LockedError`) before any work.
        **loader_kw: Further options of ``Dataset.loader`` (only with a
            ``Dataset``).

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        ConfigError: Bad options, or ``posthoc_tau`` without priors.
        DataError: Batches of the wrong form, or labels out of range.

    Example:
        >>> report = evaluate(model, val.loader(batch_size=64))  # doctest: +SKIP
        >>> report.save("run/")                                  # doctest: +SKIP
    """
    if out is not None:
        from longtail import runs

        with runs.locked(out, "evaluate"):
            report = evaluate(model, data, class_names=class_names, train_counts=train_counts,
                              posthoc_tau=posthoc_tau, priors=priors, from_logits=from_logits,
                              batch_size=batch_size, steps=steps,
                              shot_thresholds=shot_thresholds, top_k=top_k,
                              bootstrap=bootstrap, progress=progress, **loader_kw)
            report.write(out)
        return report
    batches = _loader_of(model, data, batch_size, loader_kw)
    source = getattr(batches, "source", None)
    if source is not None and hasattr(model, "inputs"):  # backbone+head on embeddings: the head
        model = source.model_for(model)
    y_true, scores = _collect(model, batches, steps, progress)
    y_true, scores, unreadable = _drop_unreadable(batches, y_true, scores, steps)
    if scores.shape[1] == 1:
        scores = _two_columns(scores)
    if class_names is None:
        class_names = getattr(data, "class_names", None)
    if class_names is None:
        class_names = getattr(getattr(data, "dataset", None), "class_names", None)
    if class_names is None:
        class_names = [str(i) for i in range(scores.shape[1])]
    class_names = [str(c) for c in class_names]
    if scores.shape[1] != len(class_names):
        raise DataError(
            f"the model outputs {scores.shape[1]} scores per sample but there are "
            f"{len(class_names)} classes ({class_names[:5]}...)"
        )
    if _is_dataset(data) and steps is None and len(y_true) + len(unreadable) != len(data):
        warnings.warn(f"the loader yielded {len(y_true)} samples but `data` holds "
                      f"{len(data)}; metrics cover only those yielded", UserWarning,
                      stacklevel=2)

    logits = to_logits(scores, from_logits)
    if posthoc_tau is not None:
        p = _resolve_priors(priors, train_counts, class_names)
        from longtail.posthoc import adjust_logits

        scores = adjust_logits(logits, p, float(posthoc_tau))  # float type of the logits

    metrics = compute_metrics(y_true, scores, class_names, train_counts=train_counts,
                              shot_thresholds=shot_thresholds, top_k=top_k)
    metrics["posthoc_tau"] = None if posthoc_tau is None else float(posthoc_tau)
    if bootstrap is not False:
        _add_intervals(metrics, y_true, scores.argmax(axis=1), train_counts, shot_thresholds,
                       None if bootstrap is True else bootstrap)
    if unreadable:
        metrics["unreadable_files"] = [{"path": e.path, "reason": e.reason} for e in unreadable]
    return EvaluationReport(y_true=y_true, y_score=scores, class_names=class_names,
                            metrics=metrics, posthoc_tau=posthoc_tau, logits=logits)


def _add_intervals(metrics: dict, y_true, y_pred, train_counts, shot_thresholds,
                   options) -> None:
    """Adds bootstrap intervals to a metrics dict (``intervals`` and per class)."""
    from longtail.intervals import METRICS, bootstrap_intervals

    counts = None if train_counts is None else [
        row["train_count"] for row in metrics["per_class"]]
    iv = bootstrap_intervals(y_true, {"model": y_pred}, len(metrics["classes"]),
                             train_counts=counts, shot_thresholds=shot_thresholds,
                             options=options)
    values = iv["metrics"]["model"]
    metrics["intervals"] = {
        **{key: iv[key] for key in ("method", "resamples", "confidence", "seed")},
        **{m: {"low": values[m]["low"], "high": values[m]["high"]}
           for m in METRICS if m in values}}
    for i, row in enumerate(metrics["per_class"]):
        for m in ("recall", "precision"):
            row[f"{m}_interval"] = [values[m]["low"][i], values[m]["high"][i]]


def rounded(obj, digits: int = 10):
    """``obj`` with every float to ``digits`` significant digits (metrics.json).

    Float sums print as ``0.8160000000000001``; ten digits keep far more
    precision than any metric has and print ``0.816``.
    """
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj
