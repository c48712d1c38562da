"""Label shift: estimate the deployment class prior and adapt a trained model.

A model trained on prior ``pi`` predicts ``p(y | x) ~ p(x | y) pi_y``. When
the deployment data has another class mix ``q`` (label shift: ``p(x | y)``
unchanged), the Bayes-optimal scores are ``log p(y | x) + log q_y - log pi_y``.
``q`` is rarely known, so it is estimated from the model's outputs on
unlabeled deployment data:

* **EM** (Saerens, Latinne & Decaestecker 2002): alternately re-weights the
  calibrated posteriors by ``q / pi`` and sets ``q`` to their mean; the
  fixed point is the maximum-likelihood prior. Needs calibrated
  probabilities, so bias-corrected temperature scaling (one temperature and
  one bias per class; Alexandari et al. 2020) is fitted on the run's
  validation split first: the posteriors are then relative to the
  validation class mix whatever balancing the model was trained with (a
  logit-adjusted model's outputs are not relative to the training prior).
* **BBSE** (Lipton, Wang & Smola 2018): solves ``C w = mu`` where ``C`` is
  the validation joint distribution of (prediction, label) and ``mu`` the
  distribution of predictions on the deployment data; ``q = w * p_val(y)``.
  Least squares, clipped at 0 and renormalised. Needs only hard predictions.

Each estimate gets a percentile interval from resampling the unlabeled
samples. :func:`adapt_model` builds the adapted Keras model (a
:class:`longtail.layers.PriorShift` on top, loadable in safe mode);
:func:`bayes_decision` picks the class of least expected cost.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax

from longtail.errors import ConfigError, DataError

__all__ = ["em_prior", "bbse_prior", "prior_interval", "adapt_model", "bayes_decision",
           "read_cost_matrix", "METHODS"]

METHODS = ("em", "bbse")


def _prior(values, name: str, k: int | None = None) -> np.ndarray:
    p = np.asarray(values, dtype=np.float64).reshape(-1)
    if (k is not None and p.size != k) or np.any(p < 0) or not np.isfinite(p).all() \
            or p.sum() <= 0:
        raise ConfigError(f"`{name}` must hold {k or 'one per class'} non-negative values, "
                          f"not all zero; got {p.tolist()!r:.200}")
    return p / p.sum()


def em_prior(probs, train_prior, max_iter: int = 1000, tol: float = 1e-8) -> np.ndarray:
    """The deployment prior by EM (Saerens et al. 2002).

    Args:
        probs: Calibrated posteriors ``(n, k)`` on the unlabeled data, under
            the training prior.
        train_prior: The prior the posteriors are relative to.
        max_iter, tol: Stop after ``max_iter`` steps or when no class's
            prior moves by more than ``tol``.

    Returns:
        The estimated prior ``(k,)``, summing to 1.
    """
    probs = np.asarray(probs, dtype=np.float64)
    pi = _prior(train_prior, "train_prior", probs.shape[1])
    q = pi.copy()
    for _ in range(max_iter):
        w = probs * (q / np.maximum(pi, 1e-12))
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
        new = w.mean(axis=0)
        if np.max(np.abs(new - q)) < tol:
            return new
        q = new
    return q


def bbse_prior(val_pred, val_true, target_pred, num_classes: int) -> np.ndarray:
    """The deployment prior by black-box shift estimation (Lipton et al. 2018).

    Args:
        val_pred, val_true: Predictions and labels on the validation split
            (drawn from the training distribution).
        target_pred: Predictions on the unlabeled deployment data.
        num_classes: Number of classes.

    Returns:
        The estimated prior ``(k,)``: ``w * p_val(y)`` with ``w`` the
        least-squares solution of ``C w = mu``, clipped at 0, renormalised.
    """
    k = num_classes
    val_pred, val_true = np.asarray(val_pred), np.asarray(val_true)
    joint = np.zeros((k, k))
    np.add.at(joint, (val_pred, val_true), 1.0)
    joint /= max(val_true.size, 1)
    mu = np.bincount(np.asarray(target_pred), minlength=k) / max(np.size(target_pred), 1)
    w = np.linalg.lstsq(joint, mu, rcond=None)[0]
    q = np.clip(w, 0, None) * (np.bincount(val_true, minlength=k) / max(val_true.size, 1))
    if q.sum() <= 0:
        raise DataError("BBSE found no positive class weight: the validation confusion "
                        "matrix is too poor to invert; use --method em")
    return q / q.sum()


def prior_interval(estimate_fn, n: int, resamples: int = 200, confidence: float = 0.95,
                   seed: int = 0) -> dict:
    """Percentile interval of a prior estimate over resamples of the unlabeled data.

    Args:
        estimate_fn: ``rows -> prior``, given an index array into the
            unlabeled samples.
        n: Number of unlabeled samples.

    Returns:
        ``{"low": [...], "high": [...], "resamples", "confidence"}``.
    """
    rng = np.random.default_rng(seed)
    draws = np.array([estimate_fn(rng.integers(0, n, n)) for _ in range(resamples)])
    alpha = 1 - confidence
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return {"low": low.tolist(), "high": high.tolist(), "resamples": int(resamples),
            "confidence": float(confidence)}


def adapt_model(model, train_prior, target_prior, temperature: float = 1.0,
                from_probabilities: bool = False, bias=None):
    """The model with calibration and prior shift built in (logits out).

    Args:
        model: A Keras model with one output ``(batch, k)``.
        train_prior, target_prior: The prior the (calibrated) outputs are
            relative to, and the deployment prior.
        temperature: Divides the logits first.
        from_probabilities: Whether ``model`` outputs probabilities.
        bias: Per-class calibration bias (bias-corrected temperature scaling).

    Returns:
        A new functional ``keras.Model`` whose output is
        ``logits / temperature + bias + log(target) - log(train)``.
    """
    import keras

    from longtail.layers import PriorShift

    k = int(model.outputs[0].shape[-1])
    pi = _prior(train_prior, "train_prior", k)
    q = _prior(target_prior, "target_prior", k)
    shift = np.log(np.maximum(q, 1e-12)) - np.log(np.maximum(pi, 1e-12))
    if bias is not None:
        shift = shift + np.asarray(bias, np.float64).reshape(k)
    out = PriorShift(shift.tolist(), temperature, from_probabilities,
                     name="prior_shift")(model.outputs[0])
    return keras.Model(model.inputs, out, name=f"{model.name}_adapted")


def bayes_decision(probs, cost) -> np.ndarray:
    """The class of least expected cost: ``argmin_d sum_y p(y | x) cost[y, d]``.

    Args:
        probs: Posteriors ``(n, k)``.
        cost: ``(k, k)`` matrix, row the true class, column the decision.

    Example:
        >>> bayes_decision([[0.7, 0.3]], [[0, 1], [5, 0]]).tolist()
        [1]
    """
    probs, cost = np.asarray(probs, np.float64), np.asarray(cost, np.float64)
    if cost.shape != (probs.shape[1],) * 2:
        raise ConfigError(f"the cost matrix must be {probs.shape[1]}x{probs.shape[1]} "
                          f"(true class by decision); got {cost.shape}")
    return (probs @ cost).argmin(axis=1)


def read_cost_matrix(path, class_names) -> np.ndarray:
    """Reads COSTS.csv: a header ``true,<class>,...`` then one row per true class.

    Rows and columns are matched to ``class_names`` by name, in any order.

    Raises:
        DataError: Names the file and what is missing or not a number.
    """
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataError(f"{path}: cannot read the cost matrix: {e.strerror or e}") from e
    names = [str(c) for c in class_names]
    if not rows or sorted(rows[0][1:]) != sorted(names):
        raise DataError(f"{path}: the header must be a first cell then the classes "
                        f"{names}; got {rows[0] if rows else []}")
    col = {name: j for j, name in enumerate(rows[0][1:])}
    cost = np.full((len(names),) * 2, np.nan)
    for row in rows[1:]:
        if not row:
            continue
        if row[0] not in names or len(row) != len(names) + 1:
            raise DataError(f"{path}: each row must be a class name then {len(names)} "
                            f"costs; got {row}")
        try:
            values = [float(v) for v in row[1:]]
        except ValueError as e:
            raise DataError(f"{path}: costs must be numbers; got {row}") from e
        cost[names.index(row[0])] = [values[col[n]] for n in names]
    if np.isnan(cost).any() or not np.isfinite(cost).all():
        missing = [n for n, r in zip(names, cost) if np.isnan(r).any()]
        raise DataError(f"{path}: no finite costs for true classes {missing}")
    return cost


def _probs(logits, temperature=1.0) -> np.ndarray:
    return softmax(np.asarray(logits, np.float64) / temperature, axis=1)


def estimate(logits, val_logits, val_true, *, method="em", resamples=200,
             confidence=0.95, seed=0) -> dict:
    """Calibration, EM and BBSE estimates with intervals, as ``prior.json`` holds them.

    Bias-corrected temperature scaling is fitted on the validation split, so
    the calibrated posteriors are relative to its class mix (the training
    prior, for a stratified split), whatever balancing the model was
    trained with.

    Args:
        logits: Model logits on the unlabeled data ``(n, k)``.
        val_logits, val_true: Logits and labels of the validation split.
        method: Which estimate is ``estimate``: ``"em"`` or ``"bbse"``.
        resamples, confidence, seed: Of the intervals.

    Returns:
        ``{"method", "estimate", "interval", "temperature", "bias",
        "source_prior", "em": {"estimate", "interval"}, "bbse": {...},
        "n_unlabeled"}``.
    """
    from longtail.calibration import fit_bias_temperature

    if method not in METHODS:
        raise ConfigError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}")
    logits = np.asarray(logits, np.float64)
    k = logits.shape[1]
    val_true = np.asarray(val_true).astype(np.int64)
    source = _prior(np.bincount(val_true, minlength=k), "validation labels", k)
    t, bias = fit_bias_temperature(val_logits, val_true)
    probs = _probs(logits / t + bias)
    pred, val_pred = logits.argmax(axis=1), np.asarray(val_logits).argmax(axis=1)
    fns = {"em": lambda rows: em_prior(probs[rows], source, tol=1e-6),
           "bbse": lambda rows: bbse_prior(val_pred, val_true, pred[rows], k)}
    out = {"method": method, "temperature": t, "bias": bias.tolist(),
           "source_prior": source.tolist(), "n_unlabeled": int(logits.shape[0])}
    for name, fn in fns.items():
        out[name] = {"estimate": fn(np.arange(logits.shape[0])).tolist(),
                     "interval": prior_interval(fn, logits.shape[0], resamples, confidence,
                                                seed)}
    out["estimate"] = out[method]["estimate"]
    out["interval"] = out[method]["interval"]
    return out


def _target_prior(prior, train_prior, class_names) -> tuple[np.ndarray, str]:
    """``--prior uniform | train | FILE`` as an array and the method's name."""
    import json

    k = len(class_names)
    if prior == "uniform":
        return np.full(k, 1 / k), "uniform"
    if prior == "train":
        return np.asarray(train_prior, np.float64), "train"
    try:
        with open(prior, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{prior}: --prior must be uniform, train or a JSON file (a list "
                        f"of {k} shares, a dict class -> share, or a prior.json); {e}") from e
    if isinstance(value, dict) and "estimate" in value:
        value = value["estimate"]
    if isinstance(value, dict):
        unknown = sorted(set(map(str, value)) - set(class_names))
        if unknown:
            raise DataError(f"{prior}: unknown classes {unknown[:5]}; the classes are "
                            f"{class_names[:10]}")
        value = [float(value.get(name, 0.0)) for name in class_names]
    try:
        return _prior(value, f"--prior {prior}", k), "file"
    except (ConfigError, TypeError, ValueError) as e:
        raise DataError(f"{prior}: {e}") from e


def _unlabeled_logits(model, data, names, loader_kw, batch_size, from_probabilities):
    """Model logits on DATA: any DATA form (labels ignored) or image files/folders."""
    from longtail.dataset import Dataset
    from longtail.errors import LongtailError
    from longtail.evaluation import evaluate

    try:
        ds = Dataset.open(data, class_names=names)
    except LongtailError:
        ds = None
    if ds is not None and len(ds):
        kw = loader_kw if ds.source.is_image else {}
        return evaluate(model, ds.loader(batch_size=batch_size, sampling="sequential",
                                         label_mode="int", **kw),
                        class_names=names, bootstrap=False).logits
    from longtail.decode import DecodeOptions
    from longtail.predict import _batches, collect_inputs

    if not loader_kw:
        raise DataError(f"{data}: not a DATA the model's rows can be read from (the model "
                        "takes feature rows, not images)")
    options = DecodeOptions(image_size=tuple(loader_kw["image_size"]),
                            color_mode=loader_kw["color_mode"])
    outs = [np.asarray(model.predict_on_batch(x), np.float64)
            for _, x, _ in _batches(collect_inputs([data]), options, batch_size, 4)
            if x is not None]
    if not outs:
        raise DataError(f"{data}: no readable samples to adapt to")
    out = np.concatenate(outs)
    return np.log(np.maximum(out, 1e-12)) if from_probabilities else out


def adapt_run(run, unlabeled, out, *, prior=None, method="em", resamples=200,
              confidence=0.95, batch_size=64) -> dict:
    """``longtail adapt``: estimate the deployment prior and write an adapted run.

    Args:
        run: A run folder (``model.keras``, ``config.json``, ``val.parquet``).
        unlabeled: Deployment DATA (labels, if any, are ignored) or image
            files/folders.
        out: Output folder: ``model.keras`` (adapted), ``config.json`` (the
            run's, with ``adapted``), ``prior.json``.
        prior: ``None`` to estimate the prior, or ``"uniform"``, ``"train"``
            or a JSON file for a known target mix.
        method: ``"em"`` or ``"bbse"``: the estimate the model is adapted to.
        resamples, confidence: Of the estimate's interval.
        batch_size: Batch size of the model passes.

    Returns:
        The ``prior.json`` dict.
    """
    import os

    from longtail._io import atomic_path, write_json
    from longtail.dataset import Dataset
    from longtail.evaluation import evaluate
    from longtail.models import load_model

    paths = {name: os.path.join(run, name) for name in ("model.keras", "config.json",
                                                        "val.parquet")}
    missing = [n for n, p in paths.items() if not os.path.isfile(p)]
    if missing:
        raise DataError(f"{run}: not a complete run folder (missing {', '.join(missing)})")
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    from longtail.runs import read_config

    config = read_config(run)
    names, pi = config["class_names"], _prior(config["train_counts"], "train_counts")
    model = load_model(paths["model.keras"], compile=False)
    from longtail.run_evaluation import image_options

    val_ds = Dataset.load(paths["val.parquet"])
    takes_images = len(model.inputs[0].shape) == 4
    loader_kw = image_options(model, config) if takes_images else {}
    val = evaluate(model, val_ds.loader(batch_size=batch_size, sampling="sequential",
                                        label_mode="int", **(
                                            loader_kw if val_ds.source.is_image else {})),
                   class_names=names, bootstrap=False)
    from_probabilities = not np.array_equal(val.logits, val.y_score)
    if prior is None:
        logits = _unlabeled_logits(model, unlabeled, names, loader_kw, batch_size,
                                   from_probabilities)
        result = estimate(logits, val.logits, val.y_true, method=method,
                          resamples=resamples, confidence=confidence)
    else:
        from longtail.calibration import fit_bias_temperature

        q, how = _target_prior(prior, pi, names)
        t, bias = fit_bias_temperature(val.logits, val.y_true)
        source = np.bincount(val.y_true, minlength=len(names)) / len(val.y_true)
        result = {"method": how, "estimate": q.tolist(), "interval": None,
                  "temperature": t, "bias": bias.tolist(), "source_prior": source.tolist()}
    result["classes"] = names
    adapted = adapt_model(model, result["source_prior"], result["estimate"],
                          result["temperature"], from_probabilities, bias=result["bias"])
    from longtail import runs

    with runs.locked(out, "adapt"), runs.commit_set(out) as stage:  # the three files together
        with atomic_path(os.path.join(stage.dir, "model.keras"), suffix=".keras") as tmp:
            adapted.save(tmp)
        write_json(os.path.join(stage.dir, "prior.json"), result)
        write_json(os.path.join(stage.dir, "config.json"), {**config, "adapted": {
            "from_run": os.path.abspath(run), "method": result["method"],
            "target_prior": result["estimate"], "temperature": result["temperature"]}})
    return result
