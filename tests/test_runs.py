"""longtail.runs: one reader of run files, one writer per folder, sets committed whole."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import longtail as lt
from longtail import runs
from longtail.cli import main
from longtail.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # refused while parsing, before any work
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv) -> str:
    code, _, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("longtail: error: "), err
    return lines[0]


def features_table(path, n=(30, 10), weights=None, seed=0) -> str:
    """A CSV of two numeric features whose class is their mean."""
    rng = np.random.default_rng(seed)
    rows = ["x1,x2,label" + (",w" if weights is not None else "")]
    for c, count in enumerate(n):
        for i in range(count):
            x = rng.normal(2.0 * c, 1.0, 2)
            w = f",{weights}" if weights is not None else ""
            rows.append(f"{x[0]:.4f},{x[1]:.4f},c{c}{w}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run on a small features table (2 classes, 1 epoch)."""
    root = tmp_path_factory.mktemp("run")
    data = features_table(str(root / "t.csv"))
    out = str(root / "run")
    lt.train(data, out, epochs=1, batch_size=8, verbose=0)
    return data, out


# ------------------------------------------------------------ one JSON reader
@pytest.mark.parametrize("content,needle", [
    ('{"options": {', "not a valid run config"),
    ("[1, 2]", "expected a JSON object"),
    ('{"options": {}, "class_names": ["a", "b"], "train_counts": [1, 2], "strategy": "x"}',
     "no 'val_counts' key"),
    ('{"options": {}, "class_names": "ab", "train_counts": [1, 2], "val_counts": [1, 1],'
     ' "strategy": "x"}', "`class_names` must be a list; got str"),
])
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_damaged_config_is_one_line_naming_the_file(run_dir, tmp_path, capsys, content,
                                                    needle, command):
    data, out = run_dir
    copy = tmp_path / "copy"
    copy.mkdir()
    os.link(os.path.join(out, "model.keras"), copy / "model.keras")
    (copy / "config.json").write_text(content)
    extra = ["--out", tmp_path / "eval"] if command == "evaluate" else []
    message = one_line_error(capsys, command, copy, data, *extra)
    assert f"{copy / 'config.json'}: " in message and needle in message
    assert not (tmp_path / "eval").exists()


def test_resume_with_a_damaged_config_or_checkpoint(run_dir, tmp_path, capsys):
    data, out = run_dir
    run = tmp_path / "run"
    lt.train(data, str(run), epochs=2, batch_size=8, verbose=0)
    state_path = run / "checkpoints" / "state.json"
    # An unfinished run whose checkpoint was cut short.
    state = {"epochs_done": 1, "model": "epoch-1.keras", "history": [], "rng": [],
             "stopped": False}
    state_path.write_text(json.dumps(state))
    (run / "checkpoints" / "epoch-1.keras").write_bytes(b"PK\x03\x04trunc")
    message = one_line_error(capsys, "train", data, "--out", run, "--resume")
    assert "epoch-1.keras: cannot load the model" in message
    (run / "config.json").write_text('{"options": {"epochs": 2}, "class_names": ["c0", "c1"],'
                                     ' "train_counts": [1, 1], "val_counts": [1, 1],'
                                     ' "strategy": "none"}')
    message = one_line_error(capsys, "train", data, "--out", run, "--resume")
    assert "config.json: not a valid run config (no 'data_fingerprint' object)" in message


def test_model_that_disagrees_with_its_config_is_refused(run_dir, tmp_path, capsys):
    data, out = run_dir
    copy = tmp_path / "copy"
    copy.mkdir()
    os.link(os.path.join(out, "model.keras"), copy / "model.keras")
    config = json.loads(open(os.path.join(out, "config.json")).read())
    config["class_names"] += ["extra"]
    config["train_counts"] += [1]
    (copy / "config.json").write_text(json.dumps(config))
    message = one_line_error(capsys, "predict", copy, data)
    assert "the model has 2 outputs but its config.json names 3 classes" in message


# ----------------------------------------------------------- one writer each
_HOLD = """
import sys, time
from longtail import runs
with runs.locked(sys.argv[1], "train"):
    print("locked", flush=True)
    time.sleep(60)
"""


_HOLD_NAMED = _HOLD.replace('"train"', '"train", lock_name=sys.argv[2]')


def _holder(folder, lock_name=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    script, names = (_HOLD, []) if lock_name is None else (_HOLD_NAMED, [lock_name])
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder), *names], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(run_dir, tmp_path, capsys):
    data, _ = run_dir
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        for argv in (["split", data, "--out", out],
                     ["train", data, "--out", out, "--epochs", "1"]):
            message = one_line_error(capsys, *argv)
            assert f"{out}: in use by pid {holder.pid} on " in message and "(train)" in message
        assert os.listdir(out) == [runs.LOCK]  # nothing written beside the holder
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the killed holder's lock: the folder is free again.
    code, _, _ = cli(capsys, "split", data, "--out", out)
    assert code == 0 and sorted(os.listdir(out)) == ["train.parquet", "val.parquet"]


def test_library_writers_take_the_folder_lock(run_dir, tmp_path):
    from longtail.features import write_features

    data, run = run_dir
    model = runs.load_model(os.path.join(run, "model.keras"))
    ds = lt.Dataset.open(data)
    out = tmp_path / "eval"
    holder = _holder(out)
    try:
        expected = rf"^{out}: in use by pid {holder.pid} on .* \(train\); wait for it"
        with pytest.raises(runs.LockedError, match=expected):
            lt.evaluate(model, ds, out=str(out), bootstrap=False)
        report = lt.evaluate(model, ds, bootstrap=False)
        for write in (report.save, report.write, report.write_report):
            with pytest.raises(runs.LockedError, match=expected):
                write(out)
        assert os.listdir(out) == [runs.LOCK]  # nothing written beside the holder
    finally:
        holder.kill()
        holder.wait()
    report = lt.evaluate(model, ds, out=str(out), bootstrap=False)
    saved = runs.read_json(out / "metrics.json", "metrics")
    assert saved["accuracy"] == pytest.approx(report.to_dict()["accuracy"])
    assert (out / "report.html").is_file() and not (out / runs.LOCK).exists()
    # features: the store's own lock, beside it in its folder
    store = tmp_path / "feats" / "f.parquet"
    holder = _holder(store.parent, ".f.parquet.longtail-lock")
    try:
        with pytest.raises(runs.LockedError, match=rf"^{store.parent}: in use by pid "
                                                   rf"{holder.pid} on "):
            write_features(data, str(store), model="lite0", weights="none")
    finally:
        holder.kill()
        holder.wait()
    assert not store.exists()


def test_the_lock_is_reentrant_and_leaves_no_trace(tmp_path):
    folder = tmp_path / "new"
    with runs.locked(folder, "a"):
        with runs.locked(folder, "b"):  # compare -> train of the same process
            assert open(folder / runs.LOCK).read().startswith(f"pid {os.getpid()} ")
    assert not folder.exists()  # created for nothing: removed


def test_temp_files_of_a_killed_writer_are_removed_under_the_lock(run_dir, tmp_path, capsys):
    data, _ = run_dir
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".train.parquet.k1ll3d00.stage", out / ".metrics.json.abcdefgh.tmp"]
    for path in stale:
        path.write_text("half")
    (out / ".longtail-stage-12345678").mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli(capsys, "split", data, "--out", out)[0] == 0
    assert sorted(os.listdir(out)) == ["notes.txt", "train.parquet", "val.parquet"]


def test_sigterm_removes_the_stage_and_exits_143(run_dir, tmp_path):
    data, _ = run_dir
    out = tmp_path / "out"
    script = ("import os, signal, sys\n"
              "from longtail import runs\n"
              "from longtail.cli import main\n"
              "real = runs.commit_set\n"
              "def commit_set(folder, remove=()):\n"
              "    class Stage:\n"
              "        def __enter__(self):\n"
              "            self.cm = real(folder, remove); stage = self.cm.__enter__()\n"
              "            open(stage.path('x.parquet'), 'w').write('half')\n"
              "            os.kill(os.getpid(), signal.SIGTERM)\n"
              "            return stage\n"
              "        def __exit__(self, *exc):\n"
              "            return self.cm.__exit__(*exc)\n"
              "    return Stage()\n"
              "runs.commit_set = commit_set\n"
              "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", script, "split", data, "--out", str(out)],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 143, result.stderr
    assert "longtail: terminated" in result.stderr
    assert not out.exists() or os.listdir(out) == []


# ----------------------------------------------------------- sets, all or none
def _split_files(folder):
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))}


def test_a_failed_resplit_leaves_the_old_set(run_dir, tmp_path, capsys, monkeypatch):
    data, _ = run_dir
    out = tmp_path / "split"
    assert cli(capsys, "split", data, "--out", out, "--val", "0.2", "--test", "0.2")[0] == 0
    old = _split_files(out)
    real, calls = lt.Dataset.save, []

    def failing_save(self, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", path)
        return real(self, path)

    monkeypatch.setattr(lt.Dataset, "save", failing_save)
    code, _, err = cli(capsys, "split", data, "--out", out, "--val", "0.3", "--seed", "1")
    assert code == 2 and "No space left" in err
    assert _split_files(out) == old  # the complete old set, no new train.parquet


def test_a_resplit_killed_after_its_journal_is_finished_by_the_next_reader(
        run_dir, tmp_path, capsys, monkeypatch):
    data, _ = run_dir
    out = tmp_path / "split"
    assert cli(capsys, "split", data, "--out", out, "--val", "0.2", "--test", "0.2")[0] == 0

    real, calls = runs.recover, []

    def killed(folder):  # after the lock's own clean-up: the journal is on disk, no moves
        calls.append(folder)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(folder)

    monkeypatch.setattr(runs, "recover", killed)
    assert cli(capsys, "split", data, "--out", out, "--val", "0.3", "--seed", "1")[0] == 130
    monkeypatch.undo()
    assert os.path.exists(out / runs.JOURNAL)
    assert runs.recover(out)
    new = lt.Dataset.open(data).split(val=0.3, seed=1)
    assert sorted(os.listdir(out)) == ["train.parquet", "val.parquet"]  # test.parquet gone
    for name, want in zip(("train", "val"), new):
        assert lt.Dataset.open(out / f"{name}.parquet").equals(want)


def test_commit_set_moves_every_file_or_none(tmp_path):
    folder = tmp_path / "f"
    with runs.commit_set(folder) as stage:
        (open(os.path.join(stage.dir, "a.txt"), "w")).write("1")
        os.makedirs(os.path.join(stage.dir, "sub"))
        (open(os.path.join(stage.dir, "sub", "b.txt"), "w")).write("2")
    assert sorted(os.listdir(folder)) == ["a.txt", "sub"]
    with pytest.raises(RuntimeError):
        with runs.commit_set(folder, remove=["a.txt"]) as stage:
            open(os.path.join(stage.dir, "a.txt"), "w").write("new")
            raise RuntimeError("midway")
    assert (folder / "a.txt").read_text() == "1" and sorted(os.listdir(folder)) == ["a.txt",
                                                                                     "sub"]


# ------------------------------------------------------- refuse what fails
def test_train_out_inside_data_is_refused(tmp_path, capsys):
    from conftest import make_images

    data = make_images(str(tmp_path / "data"), [6, 6], size=8)
    before = sorted(os.listdir(data))
    for out in (data, os.path.join(data, "runs", "r1")):
        message = one_line_error(capsys, "train", data, "--out", out, "--epochs", "1")
        assert "is inside DATA" in message
    assert sorted(os.listdir(data)) == before


def test_resume_with_other_options_is_refused(tmp_path, capsys):
    data = features_table(str(tmp_path / "t.csv"))
    run = tmp_path / "run"

    class Stop(Exception):
        pass

    import keras

    class StopAfterOne(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Stop

    with pytest.raises(Stop):
        lt.train(data, str(run), epochs=3, batch_size=8, verbose=0, callbacks=[StopAfterOne()])
    message = one_line_error(capsys, "train", data, "--out", run, "--resume", "--epochs", "4",
                             "--balance", "focal")
    from longtail.strategies import DEFAULT_BALANCE

    assert "--epochs 3 (given 4)" in message
    assert f"--balance '{DEFAULT_BALANCE}' (given 'focal')" in message
    with pytest.raises(lt.errors.ConfigError, match="`batch_size` 8 \\(given 4\\)"):
        lt.train(data, str(run), resume=True, batch_size=4)


def test_all_zero_row_weights_are_refused(tmp_path, capsys):
    data = features_table(str(tmp_path / "t.csv"), weights=0)
    message = one_line_error(capsys, "train", data, "--out", tmp_path / "run",
                             "--weight-column", "w", "--epochs", "1")
    assert "every row weight is 0" in message
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_stops_naming_the_epoch(tmp_path, capsys):
    import keras

    data = features_table(str(tmp_path / "t.csv"))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.set_weights([np.full((2, 2), np.nan, "float32"), np.zeros(2, "float32")])
    model.save(tmp_path / "nan.keras")
    message = one_line_error(capsys, "train", data, "--out", tmp_path / "run", "--epochs", "2",
                             "--model", tmp_path / "nan.keras", "--batch-size", "8")
    assert "training diverged in epoch 1 (loss nan); lower --learning-rate" in message


@pytest.mark.parametrize("argv,needle", [
    (["--batch-size", "-1"], "--batch-size must be an integer >= 1; got -1"),
    (["--top-k", "0"], "--top-k must be an integer >= 1; got 0"),
])
def test_predict_numeric_arguments_are_validated(run_dir, capsys, argv, needle):
    data, out = run_dir
    assert needle in one_line_error(capsys, "predict", out, data, *argv)


def test_disk_full_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    from longtail import _io

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io.os, "fsync", full)
    with pytest.raises(OSError) as caught:
        _io.write_text(str(tmp_path / "m.json"), "{}")
    assert caught.value.filename == str(tmp_path / "m.json")
    assert "MB free on its device" in caught.value.strerror
    assert os.listdir(tmp_path) == []


def test_read_json_checks_types_and_names_the_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"epochs_done": true, "history": []}')
    with pytest.raises(DataError, match="s.json: .*`epochs_done` must be an integer; got bool"):
        runs.read_json(str(path), "checkpoint state", {"epochs_done": int, "history": list})


def test_a_failed_evaluate_leaves_the_old_metrics_and_report(run_dir, tmp_path, capsys,
                                                            monkeypatch):
    data, out = run_dir
    folder = tmp_path / "eval"
    assert cli(capsys, "evaluate", out, data, "--out", folder)[0] == 0
    old = _split_files(folder)
    assert {"metrics.json", "report.html"} <= set(old)
    import longtail.report

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error", "report.html")

    monkeypatch.setattr(longtail.report, "write_report", broken)
    assert cli(capsys, "evaluate", out, data, "--out", folder, "--posthoc-tau", "1")[0] == 2
    assert _split_files(folder) == old  # metrics.json of the new run did not go in alone


def test_compare_refuses_a_folder_made_with_other_data_or_options(tmp_path, capsys):
    data = features_table(str(tmp_path / "t.csv"))
    other = features_table(str(tmp_path / "u.csv"), seed=1)
    out = tmp_path / "cmp"
    argv = ["compare", data, "--strategies", "none", "--out", out, "--epochs", "1",
            "--batch-size", "8"]
    assert cli(capsys, *argv)[0] == 0
    summary = (out / "summary.json").read_bytes()
    message = one_line_error(capsys, *argv[:-4], "--epochs", "2", "--batch-size", "8")
    assert "holds a comparison made with other epochs" in message
    message = one_line_error(capsys, "compare", other, *argv[2:])
    assert "made with other DATA;" in message
    assert (out / "summary.json").read_bytes() == summary
    assert cli(capsys, *argv)[0] == 0  # the same DATA and options continue it
