"""epochs="auto": the step budget rule, early stopping that ends on the best weights, resume."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import longtail as lt
from longtail.errors import ConfigError
from longtail.training import schedule
from longtail.training.config import TrainConfig
from longtail.training.schedule import plan_epochs


def test_budget_follows_the_stated_rule():
    for n, spe in ((300, 4), (5_000, 78), (1_000_000, 15_625)):
        plan = plan_epochs(n, spe)
        steps = min(max(round(40 * math.sqrt(n)), 600), 100_000)
        assert plan.steps == steps
        assert plan.epochs == min(max(math.ceil(steps / spe), 1), 500)
        assert plan.patience == min(max(plan.epochs // 10, 5), 30)
        assert plan.warmup == math.ceil(plan.epochs / 4)  # early stopping counts after it


def test_small_data_gets_more_epochs_and_large_data_more_steps():
    small, large = plan_epochs(300, 300 // 64), plan_epochs(100_000, 100_000 // 64)
    assert small.epochs > large.epochs
    assert small.epochs * small.steps_per_epoch < large.epochs * large.steps_per_epoch
    assert plan_epochs(300, 4, patience=3).patience == 3  # an explicit patience is kept


def test_config_accepts_auto_and_refuses_nonsense():
    assert TrainConfig().epochs == "auto"
    assert TrainConfig(epochs=5).epochs == 5
    for bad in (0, -1, "many", 2.5):
        with pytest.raises(ConfigError, match="epochs"):
            TrainConfig(epochs=bad)
    with pytest.raises(ConfigError, match="drw_epoch"):
        TrainConfig(epochs=5, drw_epoch=5, balance="ldam-drw")
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="^`early_stopping_start` must be "):
            TrainConfig(early_stopping_start=bad)


def _table(path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)) + y[:, None] * 0.8  # noisy classes: the scores wander
    columns = {f"f{i}": x[:, i] for i in range(4)}
    columns["label"] = [f"c{v}" for v in y]
    pacsv.write_csv(pa.table(columns), str(path))
    return str(path)


@pytest.mark.slow
def test_auto_ends_on_the_best_epoch_and_says_why(tmp_path, monkeypatch):
    # A smaller budget than the real rule gives, to keep the test cheap.
    monkeypatch.setattr(schedule, "_MIN_STEPS", 8)
    monkeypatch.setattr(schedule, "_MIN_EPOCHS", 3)
    data = _table(tmp_path / "t.csv")
    result = lt.train(data, str(tmp_path / "run"), verbose=0, batch_size=32,
                      learning_rate=0.05)
    plan = result.config["epoch_plan"]
    assert result.config["options"]["epochs"] == plan["epochs"]
    scores = result.history["val_balanced_accuracy"]
    training = result.metrics["training"]
    assert training["epochs_run"] == len(scores) <= plan["epochs"]
    # The best epoch after the warm-up (early stopping does not count before it).
    warmup = result.config["options"]["early_stopping_start"]
    assert warmup == plan["warmup"] == math.ceil(plan["epochs"] / 4)
    best = warmup + int(np.argmax(scores[warmup:]))
    assert training["best_epoch"] == best + 1
    # The model that comes back (and model.keras) is the best epoch's: its
    # validation balanced accuracy is the best one in the history.
    assert result.metrics["balanced_accuracy"] == pytest.approx(scores[best], abs=1e-6)
    if len(scores) < plan["epochs"]:
        assert len(scores) - best - 1 == plan["patience"]
        assert training["stopped"].startswith("early stopping")
    from longtail.models import load_model

    reloaded = load_model(str(tmp_path / "run" / "model.keras"))
    weights = result.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(reloaded.get_weights(), weights))


def _balanced_accuracy_on(run, test, tmp_path, capsys):
    """``longtail evaluate RUN TEST`` as a user runs it; the balanced accuracy it writes."""
    import json

    from longtail.cli import main

    assert main(["evaluate", run, test, "--out", str(tmp_path / "eval")]) == 0
    capsys.readouterr()
    return json.loads((tmp_path / "eval" / "metrics.json").read_text())["balanced_accuracy"]


@pytest.mark.system
def test_default_train_learns_a_300_image_long_tailed_folder(tmp_path, capsys):
    # The README's `longtail train DATA --out RUN` on Digits-LT (250 training
    # images, 100 .. 1 per class, 10 classes: chance is 0.1), with every
    # learning default (epochs auto, the default --balance, model, optimizer,
    # augmentation); only the image size is small, to keep the test cheap.
    # Before the early-stopping warm-up, such a run stopped on the head-class
    # plateau and ended at exactly 0.100.
    from longtail.cli import main
    from longtail.demo import make_digits_lt

    parts = make_digits_lt(str(tmp_path / "digits"))
    run = str(tmp_path / "run")
    assert main(["train", parts["train"], "--out", run, "--image-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "epochs auto" in out and "warm-up" in out
    # Measured on the balanced test part (seed 0): 0.818 with the default
    # logit-adjust (early stopping at epoch 94, best epoch 74), 0.796 with none.
    assert _balanced_accuracy_on(run, parts["test"], tmp_path, capsys) >= 0.5


@pytest.mark.system
def test_default_train_learns_a_long_tailed_table(tmp_path, capsys):
    # 8 classes, 120 .. 2 rows (imbalance 60, 360 rows), balanced test table:
    # chance is 0.125.
    from sklearn.datasets import make_classification

    from longtail.cli import main

    x, y = make_classification(n_samples=4000, n_features=10, n_informative=6, n_redundant=2,
                               n_classes=8, n_clusters_per_class=1, class_sep=1.5,
                               random_state=0)
    counts = [max(2, round(120 * 60 ** (-c / 7))) for c in range(8)]
    rng = np.random.default_rng(0)
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in range(8)]
    for name, per_class in (("train", counts), ("test", [40] * 8)):
        rows = np.concatenate([[pools[c].pop() for _ in range(n)]
                               for c, n in enumerate(per_class)])
        columns = {f"f{j}": x[rows, j] for j in range(x.shape[1])}
        columns["label"] = [f"c{c}" for c in y[rows]]
        pacsv.write_csv(pa.table(columns), str(tmp_path / f"{name}.csv"))
    run = str(tmp_path / "run")
    assert main(["train", str(tmp_path / "train.csv"), "--out", run]) == 0
    capsys.readouterr()
    # measured 0.772 (seed 0, the default logit-adjust)
    assert _balanced_accuracy_on(run, str(tmp_path / "test.csv"), tmp_path, capsys) >= 0.5
