"""Training: strategies, run folder, resume after SIGKILL, label modes, weights."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import LT_COUNTS, make_images

import longtail as lt
from longtail.cli import main
from longtail.strategies import STRATEGIES

FAST = dict(image_size=8, augment="none", batch_size=32, learning_rate=3e-3)


@pytest.fixture(scope="module")
def lt_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("lt")
    train = make_images(root / "train", LT_COUNTS, seed=1, spread=1.0)
    test = make_images(root / "test", [40] * len(LT_COUNTS), seed=2, spread=1.0)
    return train, test


def test_run_folder_holds_the_contract_files(lt_images, tmp_path):
    train, test = lt_images
    result = lt.train(train, tmp_path / "run", balance="class-weight", epochs=2, val=test,
                      verbose=0, **FAST)
    run = tmp_path / "run"
    for name in ("model.keras", "config.json", "history.csv", "metrics.json", "report.html",
                 "confusion_matrix.png", "per_class_recall.png", "val.parquet"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("classes", "accuracy", "balanced_accuracy", "macro_f1", "per_class",
                "confusion_matrix", "true_distribution", "predicted_distribution"):
        assert key in metrics
    assert metrics["true_distribution"] == [40] * 8
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["balance"] == "class-weight"
    assert config["train_counts"] == list(LT_COUNTS)
    lines = (run / "history.csv").read_text().strip().splitlines()
    assert len(lines) == 3 and "val_balanced_accuracy" in lines[0]
    assert result.metrics["balanced_accuracy"] == metrics["balanced_accuracy"]
    loaded = keras.saving.load_model(run / "model.keras")
    assert loaded.output_shape[-1] == 8


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_trains(name, lt_images, tmp_path):
    train, test = lt_images
    result = lt.train(train, None, balance=name, epochs=1, val=test, verbose=0, **FAST)
    epochs = sum(STRATEGIES[name].stages(1))  # 1, or 1 + 1 for a second stage
    assert len(result.history["loss"]) == epochs and np.isfinite(result.history["loss"]).all()
    assert 0.0 <= result.metrics["balanced_accuracy"] <= 1.0
    bias = result.model.get_layer("logits").bias
    strategy = STRATEGIES[name]
    if strategy.bias == "zero":
        assert strategy.output_bias(np.array(LT_COUNTS), {}).tolist() == [0.0] * 8
    elif name == "none":
        expected = np.log(np.array(LT_COUNTS) / sum(LT_COUNTS))
        np.testing.assert_allclose(strategy.output_bias(np.array(LT_COUNTS), {}), expected,
                                   rtol=1e-5)
    elif name in ("class-weight", "resample"):
        np.testing.assert_allclose(strategy.output_bias(np.array(LT_COUNTS), {}),
                                   np.full(8, np.log(1 / 8)), rtol=1e-5)
    assert bias.shape == (8,)


def _balanced_accuracy_and_tv(result):
    m = result.metrics
    true = np.array(m["true_distribution"], float)
    pred = np.array(m["predicted_distribution"], float)
    return m["balanced_accuracy"], 0.5 * np.abs(true / true.sum() - pred / pred.sum()).sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_logit_adjust_beats_none_on_balanced_test(lt_images, seed):
    train, test = lt_images
    runs = {name: lt.train(train, None, balance=name, epochs=16, val=test, seed=seed,
                           verbose=0, **FAST) for name in ("none", "logit-adjust")}
    bacc_none, tv_none = _balanced_accuracy_and_tv(runs["none"])
    bacc_la, tv_la = _balanced_accuracy_and_tv(runs["logit-adjust"])
    assert bacc_la > bacc_none + 0.03, (bacc_none, bacc_la)
    assert tv_la < tv_none - 0.05, (tv_none, tv_la)


def test_label_modes_give_the_same_model(lt_images):
    train, test = lt_images
    a = lt.train(train, None, balance="class-weight", epochs=2, val=test, label_mode="int",
                 verbose=0, **FAST)
    b = lt.train(train, None, balance="class-weight", epochs=2, val=test,
                 label_mode="categorical", verbose=0, **FAST)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-4)


def test_seeded_run_is_reproducible(lt_images):
    train, test = lt_images
    a = lt.train(train, None, balance="resample", epochs=1, val=test, seed=5, verbose=0,
                 **FAST)
    b = lt.train(train, None, balance="resample", epochs=1, val=test, seed=5, verbose=0,
                 **FAST)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_tabular_weight_column_reaches_the_loss(tmp_path):
    rng = np.random.default_rng(0)
    n = 64
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] > 0).astype(int)
    w = rng.uniform(0.1, 3.0, n)
    rows = ["a,b,c,label,weight"] + [f"{a},{b},{c},{l},{v}" for (a, b, c), l, v in zip(x, y, w)]
    (tmp_path / "rows.csv").write_text("\n".join(rows) + "\n")

    class FirstBatch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = [v.copy() for v in self.model.get_weights()]

        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.loss = float(logs["loss"])

    def run(weight_column):
        recorder = FirstBatch()
        opts = {"weight_column": weight_column} if weight_column else {}
        result = lt.train(tmp_path / "rows.csv", None, epochs=1, batch_size=16, val_split=0.25,
                          balance="none",  # the hand computation below is plain cross-entropy
                          data_options=opts, callbacks=[recorder], verbose=0)
        return recorder, result

    weighted, result = run("weight")
    plain, _ = run(None)
    assert weighted.loss != pytest.approx(plain.loss, rel=1e-3)
    # Hand computation: the first batch of the same plan through the initial model.
    ds = lt.Dataset.from_table(tmp_path / "rows.csv", weight_column="weight")
    train_ds, _ = ds.split(val=0.25, seed=0)
    xb, yb, wb = next(iter(train_ds.loader(batch_size=16, sampling="shuffle", seed=0)))
    model = result.model
    model.set_weights(weighted.weights)
    logits = np.asarray(model(xb, training=False), dtype=np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    ce = -log_p[np.arange(len(yb)), yb]
    assert np.isin(wb, train_ds.weights).all()  # w comes from the weight column
    assert weighted.loss == pytest.approx(float((wb * ce).sum() / len(yb)), rel=1e-4)


def test_user_model_with_wrong_output_size_is_refused(lt_images, tmp_path, capsys):
    train, test = lt_images
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.save(tmp_path / "mine.keras")
    code = main(["train", train, "--out", str(tmp_path / "run"), "--model",
                 str(tmp_path / "mine.keras"), "--image-size", "8", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "outputs 3 values but the data has 8 classes" in err[0]


def test_user_model_trains(lt_images, tmp_path):
    train, test = lt_images
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(8)])
    model.save(tmp_path / "mine.keras")
    result = lt.train(train, None, model=str(tmp_path / "mine.keras"), epochs=1, val=test,
                      verbose=0, **FAST)
    assert result.model.count_params() == model.count_params()


def test_existing_run_is_not_overwritten(lt_images, tmp_path, capsys):
    train, test = lt_images
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    code = main(["train", train, "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "config.json").read_text() == "{}"


def test_resume_after_sigkill_mid_epoch(lt_images, tmp_path):
    train, test = lt_images
    run = tmp_path / "run"
    args = [sys.executable, "-m", "longtail.cli", "train", train, "--out", str(run),
            "--val", test, "--epochs", "4", "--image-size", "8", "--augment", "none",
            "--batch-size", "8", "--seed", "3"]
    env = dict(os.environ, KERAS_BACKEND="jax")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= 1:
            time.sleep(0.3)  # into the next epoch
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.keras").exists(), "killed before the end"
    done = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done < 4
    result = subprocess.run(args[:7] + ["--resume"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    history = (run / "history.csv").read_text().strip().splitlines()
    epochs = [int(float(line.split(",")[0])) for line in history[1:]]
    assert epochs == [0, 1, 2, 3]
    assert (run / "metrics.json").is_file() and (run / "model.keras").is_file()


@pytest.mark.system  # a CLI run in a subprocess: ~15 CPU-seconds
def test_progress_into_a_pipe_is_one_line_per_epoch(tmp_path):
    train = make_images(tmp_path / "data", (12, 6, 4), size=8, seed=5)
    result = subprocess.run(
        [sys.executable, "-m", "longtail", "train", train, "--out", str(tmp_path / "run"),
         "--epochs", "3", "--image-size", "8", "--augment", "none", "--batch-size", "8"],
        env=dict(os.environ, KERAS_BACKEND="jax"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "\r" not in out and "\x1b" not in out, out[:500]  # no bar frames, no colours
    epoch_lines = [line for line in out.splitlines() if " - loss: " in line]
    assert len(epoch_lines) == 3, out
    assert all("val_balanced_accuracy: " in line for line in epoch_lines)


def test_resume_reopens_a_validation_dataset_object(lt_images, tmp_path):
    # val given as a Dataset object, not a path: --resume reopens the copy the
    # run saved (val.parquet) and finishes with the same validation data.
    train, test = lt_images
    val = lt.Dataset.from_directory(test)

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # epoch 0 is checkpointed by now
                raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        lt.train(train, run, balance="none", epochs=2, val=val, verbose=0,
                 callbacks=[Stop()], **FAST)
    assert not (run / "metrics.json").exists()
    result = lt.train(train, run, resume=True, verbose=0)
    assert len(result.history["loss"]) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["true_distribution"] == val.class_counts.tolist()
