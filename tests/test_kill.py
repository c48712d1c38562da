"""Runs killed midway: `train` and `cache` resume to the uninterrupted result or refuse.

Real SIGKILLs come from tools/kill_train.py and tools/kill_cache.py (20+ seeds
each there; a few here). The in-process tests stop a run at chosen moments
(an exception from a callback, after the checkpoint of that epoch) to pin
the windows a random kill hits rarely. test_train.py holds the first
mid-epoch SIGKILL test; test_cache.py three seeds of cache kills.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import longtail as lt
from longtail.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kill_train = _tool("kill_train")


class Stopped(Exception):
    """Stands for a kill: raised after the checkpoint of an epoch was written."""


class StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epochs:
            raise Stopped(epoch)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = kill_train.make_images(str(root / "images"), [40, 20, 10, 6], seed=0)
    model = kill_train.make_tiny_model(str(root / "tiny.keras"), 4, (10, 8, 3), seed=0)
    return data, model


def _options(model):
    return dict(epochs=3, batch_size=16, image_size="10x8", model=model, augment="none",
                balance="class-weight", seed=5, verbose=0)


def _history(run):
    return kill_train.read_history(os.path.join(run, "history.csv"))


def _same_run(a, b):
    assert _history(a) == _history(b)
    assert (kill_train.read_metrics(os.path.join(a, "metrics.json"))
            == kill_train.read_metrics(os.path.join(b, "metrics.json")))
    assert kill_train.same_weights(kill_train.model_weights(os.path.join(a, "model.keras")),
                                   kill_train.model_weights(os.path.join(b, "model.keras")))


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    data, model = images
    run = str(tmp_path_factory.mktemp("ref") / "run")
    lt.train(data, run, **_options(model))
    return run


def test_resume_repeats_random_layers_exactly(images, reference, tmp_path):
    """Flip and dropout draw the same numbers after a resume: .keras files leave the
    seed generators' state out, so state.json keeps it."""
    data, model = images
    run = str(tmp_path / "run")
    with pytest.raises(Stopped):
        lt.train(data, run, callbacks=[StopAfter(1)], **_options(model))
    state = json.loads(open(os.path.join(run, "checkpoints", "state.json")).read())
    assert state["epochs_done"] == 1 and state["model"] == "epoch-1.keras"
    assert len(state["rng"]) == 2 and all(s[1] > 0 for s in state["rng"])  # flip, dropout
    lt.train(data, run, resume=True, verbose=0)
    _same_run(run, reference)


def test_resume_ignores_a_checkpoint_saved_but_not_committed(images, reference, tmp_path):
    """A kill between saving epoch-2.keras and replacing state.json: resume uses the
    model state.json names (epoch 1), and the leftovers are removed."""
    data, model = images
    ahead, run = str(tmp_path / "ahead"), str(tmp_path / "run")
    for folder, epochs in ((ahead, 2), (run, 1)):
        with pytest.raises(Stopped):
            lt.train(data, folder, callbacks=[StopAfter(epochs)], **_options(model))
    checkpoints = os.path.join(run, "checkpoints")
    shutil.copy(os.path.join(ahead, "checkpoints", "epoch-2.keras"), checkpoints)
    with open(os.path.join(checkpoints, ".epoch-3.keras.a1b2c3d4.keras"), "wb") as f:
        f.write(b"PK\x03\x04 half a zip")  # a save the kill cut short
    lt.train(data, run, resume=True, verbose=0)
    _same_run(run, reference)
    assert os.listdir(checkpoints) == ["state.json"]


def test_resume_before_the_first_checkpoint_starts_over(images, reference, tmp_path):
    """Killed after config.json, before the first epoch ended: --resume starts at 0."""
    data, model = images
    run = str(tmp_path / "run")

    class StopAtStart(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise Stopped()

    with pytest.raises(Stopped):
        lt.train(data, run, callbacks=[StopAtStart()], **_options(model))
    assert os.path.exists(os.path.join(run, "config.json"))
    assert not os.path.exists(os.path.join(run, "checkpoints"))
    code = main(["train", data, "--out", run])  # a new run there is refused...
    assert code == 2
    lt.train(data, run, resume=True, verbose=0)  # ...and --resume starts it over
    _same_run(run, reference)


def test_resume_of_a_finished_run_changes_nothing(images, reference, capsys):
    data, _ = images
    before = kill_train.checksums(reference)
    code = main(["train", data, "--out", reference, "--resume"])
    err = capsys.readouterr().err
    assert code == 0 and "already finished (3 epochs); nothing to resume" in err
    assert kill_train.checksums(reference) == before


def test_resume_with_early_stopping_repeats_the_run(images, tmp_path):
    """The patience count, best value and best weights live in checkpoints/, so a run
    resumed mid-way stops where the uninterrupted one stopped, and a run killed after
    it stopped (while writing the results) trains no further and ends on the best
    weights."""
    data, model = images
    options = dict(_options(model), epochs=8, early_stopping=2, learning_rate=0.01)
    reference = str(tmp_path / "reference")
    lt.train(data, reference, **options)
    stopped_after = len(_history(reference))
    assert stopped_after < 8, "the reference run should stop early"
    for k in sorted({2, stopped_after - 1, stopped_after}):
        run = str(tmp_path / f"run{k}")
        with pytest.raises(Stopped):
            lt.train(data, run, callbacks=[StopAfter(k)], **options)
        lt.train(data, run, resume=True, verbose=0)
        _same_run(run, reference)


def test_resume_with_a_validation_dataset_of_absolute_paths(images, tmp_path):
    """The data check compares paths as val.parquet stores them (made relative)."""
    data, model = images
    paths = sorted(str(p) for p in Path(data).glob("*/*") if p.suffix in (".png", ".jpg"))
    names = sorted(os.listdir(data))
    val = lt.Dataset.from_arrays(np.array(paths[::4]),
                                 np.array([names.index(Path(p).parent.name) for p in paths[::4]]),
                                 class_names=names)
    assert val.root is None
    run = str(tmp_path / "run")
    with pytest.raises(Stopped):
        lt.train(data, run, val=val, callbacks=[StopAfter(1)], **_options(model))
    result = lt.train(data, run, resume=True, verbose=0)
    assert len(result.history["loss"]) == 3


def _refusal(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("longtail: error: "), err
    return err[0]


def test_resume_refuses_what_it_cannot_continue(images, tmp_path, capsys):
    data, model = images
    assert "no such run folder" in _refusal(
        capsys, "train", data, "--out", tmp_path / "nope", "--resume")
    (tmp_path / "empty").mkdir()
    assert "holds no run" in _refusal(
        capsys, "train", data, "--out", tmp_path / "empty", "--resume")

    copy = str(tmp_path / "data")
    shutil.copytree(data, copy)
    run = str(tmp_path / "run")
    with pytest.raises(Stopped):
        lt.train(copy, run, callbacks=[StopAfter(1)], **_options(model))
    os.remove(os.path.join(copy, "class_2", "0003.png"))
    message = _refusal(capsys, "train", copy, "--out", run, "--resume")
    assert "has changed since the run" in message
    assert "61 + 15 training + validation samples then, 60 + 15 now" in message

    state = os.path.join(run, "checkpoints", "state.json")
    with open(state, "w") as f:
        f.write('{"epochs_done": 1, "hist')
    assert "state.json: not a valid checkpoint state" in _refusal(
        capsys, "train", data, "--out", run, "--resume")
    os.remove(state)
    os.remove(os.path.join(run, "checkpoints", "epoch-1.keras"))
    with open(state, "w") as f:
        json.dump({"epochs_done": 1, "model": "epoch-1.keras", "history": [], "rng": [],
                   "stopped": False}, f)
    shutil.copy(os.path.join(data, "class_2", "0003.png"), os.path.join(copy, "class_2"))
    assert "the checkpoint named by state.json is missing" in _refusal(
        capsys, "train", copy, "--out", run, "--resume")


# ------------------------------------------------------- real SIGKILLs
@pytest.mark.slow
@pytest.mark.system
@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_train_at_random_moments(seed, tmp_path):
    """Seed 1: images, a user model with flip and dropout; seed 2: a table, the MLP,
    resampling. Two kills each (one timed, one at a random moment of the run); the
    checks are kill_train's: whole files that agree with the reference after each
    kill, one-line refusals, an identical resumed run, an unchanged source."""
    s = kill_train.setup(seed, str(tmp_path))
    before = kill_train.checksums(s["root"])
    ref = kill_train.reference(s, str(tmp_path))
    results = kill_train.kill_seed(s, ref, str(tmp_path), kills=2)
    assert len(results) == 2
    assert kill_train.checksums(s["root"]) == before


@pytest.mark.slow
@pytest.mark.system
def test_sigkill_cache_single_part_jpeg(tmp_path):
    """Seed 0 (one part, --format jpeg; test_cache.py runs seeds 1-3), source hashed."""
    tool = _tool("kill_cache")
    data = tool.make_source(str(tmp_path / "data"), 80)
    before = tool.checksums(data)
    reference, duration = tool.references(data, str(tmp_path))
    outcomes = tool.kill_seed(0, data, str(tmp_path), reference, duration, kills=3)
    assert all(o in ("refused", "opened") for _, o in outcomes)
    assert tool.checksums(data) == before
