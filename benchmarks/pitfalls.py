"""Five class-imbalance pitfalls, each measured on Digits-LT in one run.

Run: ``python -m benchmarks.pitfalls [--epochs 12] [--seeds 0,1,2] [--sgd-lr 0.02]
[--root DIR]``

Builds Digits-LT (:func:`longtail.demo.make_digits_lt`: train long-tailed
100..1 images per class, imbalance ratio 100; val 20 and test 50 per class)
in a temporary folder unless ``--root`` is given, then measures:

1. **Class weights and the effective learning rate.** The mean class weight
   per sample and per batch under each weighting (no training: read from the
   loader's index plan), then training with SGD (momentum 0.9, constant
   learning rate; the first two seeds) under ``balanced`` weights,
   ``inverse`` weights and ``balanced`` weights at 4x the learning rate; and the same comparison with
   AdamW (what ``lt.train`` uses), taken from the runs of pitfall 5.
2. **``metrics`` vs ``weighted_metrics``.** What Keras logs for
   ``metrics=["accuracy"]`` and ``weighted_metrics=["accuracy"]`` on the same
   training batches, and what ``model.evaluate`` reports on the same model
   and the same batches under different weights, checked by hand.
3. **Weights on validation data.** For each weighting, the validation loss
   as longtail reports it (unweighted) and as it would be with the training
   class weights on the validation batches, next to validation balanced
   accuracy.
4. **Output-bias initialisation.** ``none`` with the logits bias at the log
   class priors (longtail's default) vs at zero: the loss before the first
   step, the first epochs, and the end.
5. **Weights that are too extreme.** ``inverse``, ``balanced``, ``sqrt``,
   ``effective`` class weights, none, and ``inverse-squared``
   (``(n_max / n_c)^2``, a ratio of 10^4, to show where "too extreme"
   starts) with ``lt.train`` over the seeds: head/medium/tail test accuracy
   and the spread between seeds; plus post-hoc logit adjustment of the
   ``none`` models (no retraining).

Then, for choosing a strategy, every ``--balance`` strategy over the same
seeds next to ``none`` corrected post hoc with tau = 1 (table 6).

Every ``lt.train`` call is ``lt.train(train, None, val=val, image_size=16,
color_mode="grayscale", augment="none", batch_size=32, learning_rate=3e-3,
epochs=E, balance=...)`` (AdamW, cosine decay, small CNN); weightings that
``--balance`` does not name (``inverse``, ``sqrt``, ``inverse-squared``,
zero bias) are passed as
:class:`longtail.strategies.Strategy` objects, so they go through the same
code path. Test figures come from ``longtail.evaluate`` on the balanced test
folder with shot groups head (> 30 training images: 100, 60, 36), medium
(8-22) and tail (< 6: 5, 3, 2, 1).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

IMAGE = dict(image_size=16, color_mode="grayscale")
TRAIN_OPTIONS = dict(IMAGE, augment="none", batch_size=32, learning_rate=3e-3,
                     num_workers=0)
SHOTS = (30, 6)  # head: > 30 training images, tail: < 6
SNAPSHOT_EPOCH = 3  # pitfall 2b evaluates the SGD model as it was after this epoch
WEIGHTINGS = ("none", "balanced", "inverse", "sqrt", "effective", "inverse-squared")
#: Weightings that longtail does not name, as callables of the class counts.
WEIGHT_FUNCTIONS = {"inverse-squared": lambda counts: (counts.max() / counts) ** 2}
#: The ``--balance`` strategies of table 6 (``none``, ``class-weight`` and
#: ``effective-weight`` come from the runs of pitfall 5).
STRATEGIES = ("none", "class-weight", "effective-weight", "resample", "sqrt-resample",
              "focal", "logit-adjust", "balanced-softmax", "ldam-drw")


# ----------------------------------------------------------------- helpers
def _table(title: str, header: list[str], rows: list[list]) -> None:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(cell(v) for v in row) + " |")
    print(flush=True)


def _ce(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample softmax cross-entropy from logits (float64)."""
    z = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]


def _weights_of(scheme: str, counts) -> np.ndarray:
    from longtail.weights import class_weights

    if scheme == "none":
        return np.ones(len(counts))
    cw = class_weights(np.repeat(np.arange(len(counts)), counts),
                       WEIGHT_FUNCTIONS.get(scheme, scheme))
    return np.array([cw[i] for i in range(len(counts))])


def _strategy(weighting: str, zero_bias: bool = False):
    """``--balance`` for a weighting: a registered name, or a Strategy object."""
    from longtail.losses import WeightedCrossentropy
    from longtail.strategies import Strategy

    registered = {"none": "none", "balanced": "class-weight", "effective": "effective-weight"}
    if weighting in registered and not zero_bias:
        return registered[weighting]

    def plain(counts, params):
        return WeightedCrossentropy([1.0] * len(counts))

    return Strategy(f"{weighting}{'-zero-bias' if zero_bias else ''}", "benchmark",
                    class_weight=None if weighting == "none" else
                    WEIGHT_FUNCTIONS.get(weighting, weighting),
                    loss=plain, bias="zero" if zero_bias else "trained")


def _decoded(ds):
    """All images and labels of a dataset, in order (for whole-set losses)."""
    xs, ys = [], []
    for batch in ds.loader(batch_size=256, sampling="sequential", num_workers=0, **IMAGE):
        xs.append(batch[0])
        ys.append(batch[1])
    return np.concatenate(xs), np.concatenate(ys)


def _recorder(train_xy):
    import keras

    class Recorder(keras.callbacks.Callback):
        """Loss on the whole training set before the first step."""

        def on_train_begin(self, logs=None):
            logits = np.asarray(self.model.predict(train_xy[0], batch_size=256, verbose=0),
                                dtype=np.float64)
            self.initial_loss = float(_ce(logits, train_xy[1]).mean())

    return Recorder()


def _test_figures(model, test, counts) -> dict:
    import longtail as lt

    m = lt.evaluate(model, test, train_counts=counts, shot_thresholds=SHOTS, num_workers=0,
                 **IMAGE).to_dict()
    return {"bacc": m["balanced_accuracy"], "head": m["many_shot_accuracy"],
            "medium": m["medium_shot_accuracy"], "tail": m["few_shot_accuracy"]}


def _logits(model, ds) -> tuple[np.ndarray, np.ndarray]:
    import longtail as lt

    report = lt.evaluate(model, ds, num_workers=0, **IMAGE)
    return report.logits, report.y_true


# -------------------------------------------------------------------- runs
def run_lt(paths, weighting, seed, epochs, train_xy, zero_bias=False, balance=None) -> dict:
    """One ``lt.train`` run; its history, test figures and val/test logits.

    ``balance`` (a ``--balance`` name) overrides the strategy built from
    ``weighting``.
    """
    import longtail as lt

    recorder = _recorder(train_xy)
    result = lt.train(paths["train"], None, val=paths["val"], epochs=epochs, seed=seed,
                      verbose=0, balance=balance or _strategy(weighting, zero_bias),
                      callbacks=[recorder], **TRAIN_OPTIONS)
    counts = np.asarray(result.config["train_counts"])
    test, val = lt.Dataset.from_directory(paths["test"]), lt.Dataset.from_directory(paths["val"])
    out = {"history": result.history, "initial_loss": recorder.initial_loss,
           "counts": counts, **_test_figures(result.model, test, counts)}
    out["val_logits"], out["val_y"] = _logits(result.model, val)
    out["test_logits"], out["test_y"] = _logits(result.model, test)
    return out


def run_sgd(paths, scheme, lr, seed, epochs) -> dict:
    """A direct Keras fit with SGD at a constant learning rate (lt.train uses AdamW)."""
    import keras

    import longtail as lt
    from longtail.losses import WeightedCrossentropy
    from longtail.models import build_model

    train = lt.Dataset.from_directory(paths["train"])
    from longtail._seed import seed_everything

    seed_everything(seed)
    model = build_model("small-cnn", (16, 16, 1), train.num_classes,
                        output_bias=np.zeros(train.num_classes), seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9),
                  loss=WeightedCrossentropy([1.0] * train.num_classes),
                  metrics=["accuracy"], weighted_metrics=["accuracy"])
    loader = train.loader(batch_size=32, class_weight=scheme, seed=seed, num_workers=0,
                          **IMAGE)
    snapshot = {}
    keep = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: snapshot.setdefault(
        epoch + 1, model.get_weights()) if epoch + 1 == SNAPSHOT_EPOCH else None)
    history = model.fit(loader, epochs=epochs, verbose=0, callbacks=[keep]).history
    test = lt.Dataset.from_directory(paths["test"])
    return {"model": model, "snapshot": snapshot.get(SNAPSHOT_EPOCH), "history": {k: [float(v) for v in vs] for k, vs in history.items()},
            **_test_figures(model, test, train.class_counts)}


# --------------------------------------------------------------- pitfalls
def pitfall_weights_per_batch(paths) -> None:
    import longtail as lt

    train = lt.Dataset.from_directory(paths["train"])
    labels, rows = np.asarray(train.labels), []
    for scheme in WEIGHTINGS[1:]:
        loader = train.loader(batch_size=32, class_weight=WEIGHT_FUNCTIONS.get(scheme, scheme),
                              seed=0, num_workers=0, **IMAGE)
        w = loader.class_weight_
        per_batch = []
        for epoch in range(50):  # plans only: nothing is decoded
            plan = loader.plan(epoch)[:len(loader) * 32]
            per_batch.append(w[labels[plan]].reshape(-1, 32).mean(axis=1))
        per_batch = np.concatenate(per_batch)
        rows.append([scheme, float(w.max() / w.min()), float(w[labels].mean()),
                     float(per_batch.mean()), float(per_batch.min()), float(per_batch.max())])
    _table("1a. Class weights: mean weight per sample and per batch of 32 "
           f"(Digits-LT train, {len(train)} images, 50 shuffled epochs)",
           ["weights", "max/min class weight", "mean weight per sample",
            "per-batch mean: average", "min", "max"], rows)


def pitfall_lr(paths, sgd: dict, lt_runs: dict, lr: float, seeds) -> None:
    rows = []
    for (name, seed), run in sorted(sgd.items(), key=lambda item: item[0][::-1]):
        h = run["history"]
        rows.append([f"{name}, seed {seed}", *[h["loss"][e] for e in (0, 2, len(h["loss"]) - 1)],
                     *[h["weighted_accuracy"][e] for e in (0, 2)], run["bacc"], run["tail"]])
    _table("1b. SGD (momentum 0.9, constant lr, no weight decay): the same learning rate, "
           "inverse vs balanced weights",
           ["weights @ lr", "train loss ep 1", "ep 3", "last", "train weighted acc ep 1",
            "ep 3", "test bal. acc", "test tail acc"], rows)
    rows = []
    for weighting in ("balanced", "inverse"):
        for seed in seeds:
            run = lt_runs[weighting, seed]
            h = run["history"]
            rows.append([f"{weighting}, seed {seed}", h["loss"][0], h["loss"][-1],
                         h["val_balanced_accuracy"][0], h["val_balanced_accuracy"][-1],
                         run["bacc"], run["tail"]])
    _table("1c. AdamW (lt.train, lr 3e-3, cosine): the same comparison",
           ["weights", "train loss ep 1", "last", "val bal. acc ep 1", "last",
            "test bal. acc", "test tail acc"], rows)


def pitfall_weighted_metrics(paths, run: dict, lr: float, seed: int) -> None:
    import longtail as lt

    h = run["history"]
    rows = [[e + 1, h["loss"][e], h["accuracy"][e], h["weighted_accuracy"][e]]
            for e in range(len(h["loss"]))]
    _table(f"2a. What fit logs on the same batches (SGD lr {lr:g}, balanced weights, "
           f"seed {seed})",
           ["epoch", "loss", "accuracy (metrics=)", "weighted_accuracy (weighted_metrics=)"],
           rows)
    from sklearn.metrics import balanced_accuracy_score

    model = run["model"]
    model.set_weights(run["snapshot"])
    train = lt.Dataset.from_directory(paths["train"])
    logits, y = _logits(model, train)
    ce, correct = _ce(logits, y), (logits.argmax(axis=1) == y).astype(np.float64)
    rows = []
    for scheme in ("none", "balanced", "inverse"):
        loader = train.loader(batch_size=32, sampling="sequential", num_workers=0,
                              class_weight=None if scheme == "none" else scheme, **IMAGE)
        keras_m = model.evaluate(loader, verbose=0, return_dict=True)
        w = _weights_of(scheme, train.class_counts)[y]
        rows.append([scheme, keras_m["loss"], float((w * ce).sum() / len(y)),
                     float((w * ce).sum() / w.sum()), keras_m["accuracy"],
                     keras_m["weighted_accuracy"], float((w * correct).sum() / w.sum()),
                     float(balanced_accuracy_score(y, logits.argmax(axis=1)))])
    _table(f"2b. model.evaluate on the training set: the model of 2a after epoch "
           f"{SNAPSHOT_EPOCH}, the same batches under three weightings (hand-computed "
           "columns in between)",
           ["batch weights", "Keras loss", "sum(w*l)/n", "sum(w*l)/sum(w)",
            "Keras accuracy", "Keras weighted_accuracy", "sum(w*correct)/sum(w)",
            "balanced accuracy (sklearn)"], rows)


def pitfall_val_weights(lt_runs: dict, seeds) -> None:
    rows = []
    for weighting in WEIGHTINGS:
        for seed in seeds:
            run = lt_runs[weighting, seed]
            ce = _ce(run["val_logits"], run["val_y"])
            w = _weights_of(weighting, run["counts"])[run["val_y"]]
            rows.append([f"{weighting}, seed {seed}", run["history"]["val_loss"][-1],
                         float(ce.mean()), float((w * ce).mean()),
                         run["history"]["val_balanced_accuracy"][-1]])
    _table("3. Validation loss with and without the training class weights (val: 20 per "
           "class, last epoch)",
           ["weights", "val_loss logged by lt.train", "unweighted CE (by hand)",
            "CE weighted with the training weights", "val bal. acc"], rows)


def pitfall_bias(lt_runs: dict, zero_runs: dict, seeds, counts) -> None:
    priors = counts / counts.sum()
    rows = []
    for label, runs in (("log priors (longtail)", lt_runs), ("zeros", zero_runs)):
        for seed in seeds:
            run = runs["none", seed] if label.startswith("log") else runs[seed]
            h = run["history"]
            rows.append([f"{label}, seed {seed}", run["initial_loss"], h["loss"][0],
                         h["loss"][1], *[h["val_balanced_accuracy"][e] for e in (0, 1, 2)],
                         h["val_balanced_accuracy"][-1], run["bacc"], run["tail"]])
    _table("4. Output bias for balance='none': log class priors vs zeros "
           f"(entropy of the priors: {float(-(priors * np.log(priors)).sum()):.3f}, "
           f"log k: {np.log(len(counts)):.3f})",
           ["bias init", "train loss before step 1", "train loss ep 1", "ep 2",
            "val bal. acc ep 1", "ep 2", "ep 3", "last", "test bal. acc", "test tail acc"],
           rows)


def pitfall_extreme(lt_runs: dict, seeds, counts) -> None:
    rows = []
    for weighting in WEIGHTINGS:
        w = _weights_of(weighting, counts)
        runs = [lt_runs[weighting, s] for s in seeds]
        cells = []
        for key in ("head", "medium", "tail", "bacc"):
            values = [r[key] for r in runs]
            cells.append(f"{np.mean(values):.3f} ({'/'.join(f'{v:.2f}' for v in values)})")
        spread = max(r["tail"] for r in runs) - min(r["tail"] for r in runs)
        rows.append([weighting, float(w.max() / w.min()), float(w[0]), float(w[-1]), *cells,
                     float(spread)])
    _table("5. Weightings at imbalance ratio 100 (lt.train, AdamW): test accuracy, mean "
           "(per seed)",
           ["weights", "max/min", "weight of the 100-image class", "of the 1-image class",
            "head acc (3 classes)", "medium acc (3)", "tail acc (4)", "balanced acc",
            "tail spread between seeds"], rows)


def posthoc(lt_runs: dict, seeds, counts) -> None:
    from sklearn.metrics import balanced_accuracy_score

    from longtail.posthoc import adjust_logits, tune_tau

    rows = []
    for seed in seeds:
        run = lt_runs["none", seed]
        tau, _ = tune_tau(run["val_logits"], run["val_y"], counts)
        for label, t in (("0 (as trained)", 0.0), ("1.0", 1.0), (f"{tau:.1f} (tuned on val)", tau)):
            pred = adjust_logits(run["test_logits"], counts, tau=t).argmax(axis=1)
            y = run["test_y"]
            tail = np.isin(y, np.flatnonzero(counts < SHOTS[1]))
            rows.append([f"seed {seed}", label, float(balanced_accuracy_score(y, pred)),
                         float((pred[tail] == y[tail]).mean())])
    _table("Post-hoc logit adjustment of the balance='none' models (no retraining)",
           ["run", "tau", "test bal. acc", "test tail acc"], rows)


def strategy_table(strategy_runs: dict, lt_runs: dict, seeds, counts) -> None:
    """Every ``--balance`` strategy, and ``none`` corrected post hoc (tau = 1)."""
    from sklearn.metrics import balanced_accuracy_score

    from longtail.posthoc import adjust_logits

    tail = np.flatnonzero(counts < SHOTS[1])
    head = np.flatnonzero(counts > SHOTS[0])
    rows = []

    def cell(values):
        return f"{np.mean(values):.3f} ({'/'.join(f'{v:.3f}' for v in values)})"

    for name in STRATEGIES:
        runs = [strategy_runs[name, s] for s in seeds]
        rows.append([name, cell([r["bacc"] for r in runs]), cell([r["head"] for r in runs]),
                     cell([r["tail"] for r in runs])])
    figures = []
    for seed in seeds:
        run = lt_runs["none", seed]
        y = run["test_y"]
        pred = adjust_logits(run["test_logits"], counts, tau=1.0).argmax(axis=1)
        figures.append([float(balanced_accuracy_score(y, pred)),
                        float((pred[np.isin(y, head)] == y[np.isin(y, head)]).mean()),
                        float((pred[np.isin(y, tail)] == y[np.isin(y, tail)]).mean())])
    figures = np.array(figures)
    rows.append(["none + post-hoc tau=1 (no retraining)", cell(figures[:, 0]),
                 cell(figures[:, 1]), cell(figures[:, 2])])
    _table("6. Every --balance strategy on Digits-LT (lt.train, AdamW): test accuracy, "
           "mean (per seed)",
           ["strategy", "balanced acc", "head acc (3 classes)", "tail acc (4)"], rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sgd-lr", type=float, default=0.02)
    parser.add_argument("--root", default=None, help="Digits-LT folder (default: a temp dir)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    started, cpu0 = time.perf_counter(), time.process_time()

    import keras

    import longtail as lt
    from longtail.demo import make_digits_lt

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_digits_lt(args.root or tmp)
        train = lt.Dataset.from_directory(paths["train"])
        counts = train.class_counts.astype(np.int64)
        train_xy = _decoded(train)
        print(f"Digits-LT train counts {counts.tolist()}, {args.epochs} epochs, seeds {seeds}, "
              f"Keras {keras.__version__} on {keras.backend.backend()}, "
              f"{os.cpu_count()} CPU cores", flush=True)

        pitfall_weights_per_batch(paths)

        lr = args.sgd_lr
        sgd = {(f"{scheme} @ {rate:g}", seed): run_sgd(paths, scheme, rate, seed, args.epochs)
               for seed in seeds[:2]
               for scheme, rate in (("balanced", lr), ("inverse", lr), ("balanced", 4 * lr))}
        lt_runs = {(w, s): run_lt(paths, w, s, args.epochs, train_xy)
                   for w in WEIGHTINGS for s in seeds}
        zero_runs = {s: run_lt(paths, "none", s, args.epochs, train_xy, zero_bias=True)
                     for s in seeds}
        reuse = {"none": "none", "class-weight": "balanced", "effective-weight": "effective"}
        strategy_runs = {(name, s): lt_runs[reuse[name], s] if name in reuse else
                         run_lt(paths, "none", s, args.epochs, train_xy, balance=name)
                         for name in STRATEGIES for s in seeds}

        pitfall_lr(paths, sgd, lt_runs, lr, seeds)
        pitfall_weighted_metrics(paths, sgd[f"balanced @ {lr:g}", seeds[0]], lr, seeds[0])
        pitfall_val_weights(lt_runs, seeds)
        pitfall_bias(lt_runs, zero_runs, seeds, counts)
        pitfall_extreme(lt_runs, seeds, counts)
        posthoc(lt_runs, seeds, counts)
        strategy_table(strategy_runs, lt_runs, seeds, counts)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total: {time.perf_counter() - started:.0f} s wall, "
          f"{time.process_time() - cpu0:.0f} s CPU, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
