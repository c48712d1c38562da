"""Evaluating a trained run on DATA: what ``longtail evaluate`` does, as a function.

:func:`evaluate_run` takes MODEL (a run folder or a ``.keras`` file), reads
the image options from the run's ``config.json`` (else from the model's input
shape), optionally tunes the post-hoc tau on the run's validation split, and
returns the report, its ``metrics.json`` dict (with calibration and the data
it measured) and what tuning chose. :meth:`RunEvaluation.write` writes
``metrics.json`` and ``report.html`` as one set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from longtail import _validation as v
from longtail import runs
from longtail.errors import DataError, LongtailError

__all__ = ["RunEvaluation", "evaluate_run", "image_options", "tune_run_tau"]


def image_options(model, run: dict | None) -> dict:
    """``image_size`` and ``color_mode`` to feed ``model``: the run's, else its input shape's.

    Args:
        model: A Keras model with an image input ``(None, h, w, c)``.
        run: The run's ``config.json`` dict, or None for a bare ``.keras`` file.
    """
    from longtail.options import color_mode_of

    options = (run or {}).get("options", {})
    shape = model.inputs[0].shape
    return {"image_size": tuple(options.get("image_size") or shape[1:3]),
            "color_mode": options.get("color_mode") or color_mode_of(shape[-1])}


@dataclass
class RunEvaluation:
    """What :func:`evaluate_run` returns.

    Attributes:
        report: The :class:`longtail.EvaluationReport` on DATA.
        metrics: Its ``metrics.json`` dict, with ``calibration``,
            ``evaluated_on`` and, when tau was tuned, ``tau_tuning``.
        model_path: The ``.keras`` file evaluated.
        run: The run's ``config.json`` dict (None for a bare model file).
        data: DATA as given.
        posthoc_tau: The tau applied (tuned, given or None).
        untuned: With ``tune_tau``: the metrics before tuning
            (``posthoc_tau``, ``accuracy``, ``balanced_accuracy``,
            ``macro_f1``), on the same DATA; else None.
    """

    report: object
    metrics: dict
    model_path: str
    run: dict | None
    data: str
    posthoc_tau: float | None
    untuned: dict | None = None

    def write(self, out) -> str:
        """Writes ``metrics.json`` and ``report.html`` (and plots) into ``out`` as one set."""
        from longtail._io import write_json
        from longtail.evaluation import rounded
        from longtail.report import write_report

        with runs.locked(out, "evaluate"), runs.commit_set(out) as stage:
            write_json(os.path.join(stage.dir, "metrics.json"), rounded(self.metrics))
            write_report(stage.dir, self.metrics,
                         config={"model": self.model_path, "data": self.data,
                                 "posthoc_tau": self.posthoc_tau, "run": self.run},
                         train_counts=None if self.run is None else self.run["train_counts"],
                         title=f"longtail evaluation: {os.path.basename(str(self.data))}")
        return os.path.join(out, "report.html")


def _val_path(model_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(model_path)), "val.parquet")


def tune_run_tau(model, model_path: str, run: dict | None, loader_kw: dict, *,
                 progress: bool = False):
    """Picks the post-hoc tau with the best balanced accuracy on the run's validation split.

    Returns:
        ``(tau, validation report, candidate scores)``.

    Raises:
        LongtailError: ``model_path`` is not in a run folder with
            ``config.json`` and ``val.parquet``.
    """
    from longtail.dataset import Dataset
    from longtail.evaluation import evaluate
    from longtail.posthoc import tune_tau

    val_path = _val_path(model_path)
    if run is None or not os.path.exists(val_path):
        raise LongtailError(f"--tune-tau: {model_path} is not in a run folder with "
                            "config.json and val.parquet")
    val = evaluate(model, Dataset.load(val_path).loader(**loader_kw),
                   class_names=run["class_names"], train_counts=run["train_counts"],
                   bootstrap=False, progress=progress)
    tau, scores = tune_tau(val.logits, val.y_true, run["train_counts"])
    return tau, val, scores


def evaluate_run(model, data, *, posthoc_tau: float | None = None, tune_tau: bool = False,
                 batch_size: int = 64, shot_thresholds=(100, 20), bootstrap=True,
                 progress: bool = False, **data_options) -> RunEvaluation:
    """Evaluates a trained model on DATA, as ``longtail evaluate`` does.

    Args:
        model: A run folder of ``longtail train`` or a ``.keras`` file (with
            a ``config.json`` beside it for class names, priors and image
            options; without one, the image options come from the model's
            input shape and the classes are numbered).
        data: Any DATA form (folder, table, manifest, cache).
        posthoc_tau: Subtract ``tau * log(training priors)`` from the logits.
        tune_tau: Choose ``posthoc_tau`` by validation balanced accuracy on
            the run's ``val.parquet``; ``untuned`` then holds the figures at
            the tau given (or none) on the same DATA.
        batch_size: Evaluation batch size.
        shot_thresholds: ``(many, few)`` training counts of the shot groups.
        bootstrap: As :func:`longtail.evaluate`.
        progress: Progress bars with an ETA on standard error (terminal only).
        **data_options: Options of :meth:`longtail.Dataset.open`
            (``label_column``, ``path_column``, ``weight_column``, ...).

    Returns:
        A :class:`RunEvaluation`.

    Raises:
        DataError: DATA has no samples, or does not match the model.
        LongtailError: ``tune_tau`` or ``posthoc_tau`` without a run folder.
    """
    from longtail.calibration import add_calibration
    from longtail.dataset import Dataset
    from longtail.evaluation import evaluate

    v.integer("batch_size", batch_size, min=1)
    model_path, run = runs.model_and_config(os.fspath(model))
    keras_model = runs.load_model(model_path)
    runs.check_model(keras_model, run, model_path)
    names = run["class_names"] if run else None
    counts = run["train_counts"] if run else None
    if posthoc_tau is not None and counts is None and not tune_tau:
        raise LongtailError(f"--posthoc-tau: {model} has no config.json with the "
                            "training priors beside it")
    ds = Dataset.open(data, class_names=names, **{k: value for k, value in data_options.items()
                                                   if value is not None})
    if len(ds) == 0:
        raise DataError(f"{data}: no samples to evaluate")
    loader_kw = {"label_mode": "int", "batch_size": batch_size, "sampling": "sequential"}
    if ds.source.is_image:  # files, or a cache (which checks the size)
        loader_kw.update(image_options(keras_model, run))

    untuned_tau, val = posthoc_tau, None
    if tune_tau:
        posthoc_tau, val, scores = tune_run_tau(keras_model, model_path, run, loader_kw,
                                                progress=progress)
    report = evaluate(keras_model, ds.loader(**loader_kw),
                      class_names=names or ds.class_names, train_counts=counts,
                      posthoc_tau=posthoc_tau, priors=counts,
                      shot_thresholds=tuple(shot_thresholds), bootstrap=bootstrap,
                      progress=progress)
    if val is None and os.path.exists(_val_path(model_path)):  # to fit the temperature
        val = evaluate(keras_model, Dataset.load(_val_path(model_path)).loader(**loader_kw),
                       class_names=names, bootstrap=False, progress=progress)
    metrics = add_calibration(report.to_dict(), report, val)
    metrics["evaluated_on"] = _evaluated_on(data, model_path, report)
    untuned = None
    if tune_tau:
        untuned = _untuned(report, untuned_tau, counts, shot_thresholds)
        metrics["tau_tuning"] = {"tau": posthoc_tau, "on": "validation",
                                 "validation_balanced_accuracy": float(scores.max()),
                                 "untuned": untuned}
    return RunEvaluation(report=report, metrics=metrics, model_path=model_path, run=run,
                         data=str(data), posthoc_tau=posthoc_tau, untuned=untuned)


def _evaluated_on(data, model_path: str, report) -> dict:
    """Which data the figures are of: the run's own validation split, or other (test) data."""
    val_path = _val_path(model_path)
    split = "test"
    try:
        if os.path.exists(val_path) and os.path.samefile(os.fspath(data), val_path):
            split = "validation"
    except (OSError, TypeError):
        pass
    return {"split": split, "data": str(data), "samples": int(report.to_dict()["n_samples"])}


def _untuned(report, tau, counts, shot_thresholds) -> dict:
    """The headline metrics on the same scores at ``tau`` (None: the raw logits)."""
    from longtail.metrics import compute_metrics
    from longtail.posthoc import adjust_logits

    scores = report.logits if tau is None else adjust_logits(report.logits, counts, tau)
    m = compute_metrics(report.y_true, scores, report.class_names, train_counts=counts,
                        shot_thresholds=tuple(shot_thresholds))
    return {"posthoc_tau": tau, **{key: m[key] for key in
                                   ("accuracy", "balanced_accuracy", "macro_f1")}}
