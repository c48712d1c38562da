"""CLI train: Ctrl-C says how to resume, --resume needs no DATA, options that mean nothing
on a table are refused, and a table run records no image options."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from longtail.cli import main


def _table(path, n=(60, 20, 8), seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 0.7, (k, 2)) for c, k in enumerate(n)])
    y = [f"c{c}" for c, k in enumerate(n) for _ in range(k)]
    pacsv.write_csv(pa.table({"a": x[:, 0], "b": x[:, 1], "label": y}), str(path))
    return str(path)


@pytest.mark.parametrize("flag,value", [("--image-size", "32"), ("--color-mode", "grayscale"),
                                        ("--augment", "flip")])
def test_image_options_on_a_table_are_refused(tmp_path, capsys, flag, value):
    data = _table(tmp_path / "t.csv")
    for command in ("train", "compare"):
        extra = ["--strategies", "none"] if command == "compare" else []
        code = main([command, data, "--out", str(tmp_path / "out"), flag, value, *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(f"longtail: error: {flag} applies to images only")
        assert "t.csv holds feature rows" in err and "\n" not in err
        assert not (tmp_path / "out").exists()  # refused before anything was written


def test_train_without_data_needs_resume(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert "DATA is required" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


class _Interrupt:
    """A Keras callback that presses Ctrl-C at the end of epoch ``at`` (1-based)."""

    def __new__(cls, at):
        import keras

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 == at:
                    raise KeyboardInterrupt

        return Interrupt()


@pytest.mark.system
def test_resume_takes_data_from_the_run_and_a_table_run_records_no_image_options(
        tmp_path, capsys, monkeypatch):
    from longtail.training import train

    data = _table(tmp_path / "t.csv")
    run = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(data, run, epochs=3, verbose=0, callbacks=[_Interrupt(2)])
    config = json.load(open(os.path.join(run, "config.json")))
    assert not {"image_size", "color_mode", "augment"} & set(config["options"])
    assert config["data_path"] == os.path.abspath(data)
    monkeypatch.chdir(tmp_path / "..")  # DATA was given relative to another folder: no matter
    code = main(["train", "--resume", "--out", run, "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert metrics["training"]["epochs_run"] == 3
    assert metrics["evaluated_on"] == {"split": "validation", "samples": 18,
                                       "data": "val.parquet"}  # the run folder's own
    assert "Epoch" not in out  # --quiet: no per-epoch progress


@pytest.mark.system
def test_ctrl_c_stops_training_with_one_line_that_says_how_to_resume(tmp_path):
    data = _table(tmp_path / "t.csv")
    run = tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get(
               "PYTHONPATH")]))}
    # Ctrl-C raises KeyboardInterrupt even where this test runs with SIGINT ignored.
    start = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from longtail.cli import main; sys.exit(main())")
    proc = subprocess.Popen(
        [sys.executable, "-c", start, "train", data, "--out", str(run), "--epochs", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "state.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)  # stops at once, not at the end of 100000 epochs
    finally:
        proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == 130
    assert lines[-1] == ("longtail: interrupted; the run continues where its last finished "
                         f"epoch left it with: longtail train --resume --out {run}")
    assert "Traceback" not in err
