"""Kill ``longtail train`` with SIGKILL at random moments; check what it leaves.

Run: ``python tools/kill_train.py [--seeds 20] [--kills 4] [--work DIR]``

For each seed a small source (a long-tailed folder of PNG/JPEG images, or a
CSV table of numeric features for every third seed) and a set of options (a
balancing strategy, 3-5 epochs, int or categorical labels, the built-in
small CNN or a tiny user model with flip and dropout layers, so the random
state of augmentation is exercised; early stopping with patience 1 for one
seed in four) are drawn, and an
uninterrupted ``longtail train`` gives the reference run folder. Then real
``longtail train`` subprocesses on a fresh run folder are SIGKILLed (the whole
process group) several times in a row, each kill followed by
``longtail train --resume``. Half the kills come after a random delay (uniform
over the duration of the reference run, process start included); the other
half wait for a random moment of the run (config.json written, a checkpoint
model saved but not yet named by state.json, a checkpoint being written,
epoch k committed, the first best weights saved, model.keras / metrics.json /
report.html written, the run marked finished, the final model being written) and kill after a random
0-20 ms. A kill that finds the run finished checks that ``--resume`` of a
finished run is a no-op (exit 0, "already finished", no file changed) and
starts a fresh run, so the next kill interrupts real work.

After every kill, every file of the run folder that exists must be whole and
agree with the reference: config.json, val.parquet and metrics.json equal to
the reference's, history.csv and checkpoints/state.json a prefix of the
reference history, the checkpoint model state.json names present and
loadable, model.keras (written only at the end) with the reference weights,
report.html ending in ``</html>``, PNGs that decode; metrics.json never
without model.keras, report.html never without metrics.json. A folder the
kill left without config.json must be refused by ``--resume`` with one clear
line (exit 2), after which the run starts again without ``--resume``; any
other folder must resume. The run resumed to the end must equal the
reference exactly: same history.csv values (the ``epoch_seconds`` timings
aside), same metrics.json (``train_seconds`` aside), same model weights, no
checkpoint or temporary file left behind. The source files (data and user
model) are hashed before and after: no byte may change.

Then a few scenarios run once: ``--resume`` of a nonexistent and of an empty
folder (exit 2, one line), of a run whose data gained a file between the kill
and the resume (refused, exit 2; resumes to the reference once the file is
gone), whose data had a file rewritten in place under the same name (not
detected: the index fingerprint holds names, labels and order, not
contents), and whose state.json was damaged by hand (refused, exit 2).

The states the kills left are counted and printed.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

CLI = "import sys; from longtail.cli import main; sys.exit(main(sys.argv[1:]))"
STRATEGIES = ("none", "class-weight", "resample", "logit-adjust", "ldam-drw", "focal",
              "sqrt-resample", "balanced-softmax", "effective-weight")
TIMINGS = {"epoch_seconds", "train_seconds"}  # wall-clock figures, never equal twice


# ------------------------------------------------------------------ set-up
def make_images(root: str, counts, seed: int, size=(10, 8)) -> str:
    """Long-tailed PNG/JPEG tree; class c has its own mean colour plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    k = len(counts)
    angles = 2 * np.pi * np.arange(k) / k
    means = np.stack([128 + 70 * np.cos(angles), 128 + 70 * np.sin(angles),
                      np.full(k, 128.0)], axis=1)
    for c, n in enumerate(counts):
        folder = os.path.join(root, f"class_{c}")
        os.makedirs(folder, exist_ok=True)
        for i in range(n):
            pixels = means[c] + rng.normal(0, 30, 3) + rng.normal(0, 10, (*size, 3))
            ext = "jpg" if i % 4 == 0 else "png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                os.path.join(folder, f"{i:04d}.{ext}"))
    return root


def make_table(path: str, counts, seed: int) -> str:
    """CSV of 6 numeric features per row; class c is a Gaussian blob."""
    rng = np.random.default_rng(seed)
    rows = []
    for c, n in enumerate(counts):
        centre = rng.normal(0, 1.5, 6)
        for _ in range(n):
            rows.append([*(centre + rng.normal(0, 1, 6)), f"class_{c}"])
    order = rng.permutation(len(rows))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{i}" for i in range(6)] + ["label"])
        writer.writerows(rows[i] for i in order)
    return path


def make_tiny_model(path: str, num_classes: int, input_shape, seed: int) -> str:
    """A user model with random layers (flip, dropout) that compiles fast.

    No RandomTranslation: Keras marks it `supports_jit = False`, which makes the
    whole train step run eagerly.
    """
    import keras

    from longtail._seed import seed_everything

    seed_everything(seed)  # the same initial weights every time
    layers = keras.layers
    model = keras.Sequential([
        keras.Input(input_shape), layers.Rescaling(1 / 255),
        layers.RandomFlip("horizontal", seed=seed),
        layers.Conv2D(4, 3, padding="same", activation="relu"), layers.Flatten(),
        layers.Dropout(0.2, seed=seed), layers.Dense(num_classes)])
    model.save(path)
    return path


def setup(seed: int, work: str) -> dict:
    """The source and the ``longtail train`` options of one seed."""
    k = 3 + seed % 3
    counts = [int(c) for c in np.maximum(6, np.round(90 * 0.5 ** np.arange(k)))]
    root = os.path.join(work, f"source-{seed}")
    shutil.rmtree(root, ignore_errors=True)
    options = ["--epochs", str(3 + seed % 3), "--batch-size", "16", "--val-split", "0.25",
               "--seed", str(seed), "--balance", STRATEGIES[seed % len(STRATEGIES)]]
    if seed % 4 == 3:
        options += ["--label-mode", "categorical"]
    if seed % 4 == 1:  # patience 1: often stops before the last epoch
        options += ["--early-stopping", "1"]
    if seed % 3 == 2:
        data = make_table(os.path.join(root, "table.csv"), [3 * c for c in counts], seed)
        model = "mlp"
    else:
        data = make_images(os.path.join(root, "images"), counts, seed)
        options += ["--image-size", "10x8"]
        if seed % 5 == 0:
            model = "small-cnn (flip, crop)"
        else:
            path = make_tiny_model(os.path.join(root, "tiny.keras"), k, (10, 8, 3), seed)
            options += ["--model", path, "--augment", "none"]
            model = "tiny user model"
    return {"seed": seed, "root": root, "data": data, "options": options, "model": model,
            "epochs": 3 + seed % 3, "kind": "table" if seed % 3 == 2 else "images"}


def checksums(root: str) -> dict:
    """sha256 of every file under ``root`` (or of ``root`` itself)."""
    paths = [root] if os.path.isfile(root) else [
        os.path.join(d, n) for d, _, names in os.walk(root) for n in names]
    out = {}
    for path in sorted(paths):
        with open(path, "rb") as f:
            out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def command(s: dict, out: str, resume: bool = False, data: str | None = None) -> list[str]:
    cmd = [sys.executable, "-c", CLI, "train", data or s["data"], "--out", out]
    return cmd + (["--resume"] if resume else s["options"])


def run(cmd: list[str], timeout: float = 900) -> tuple[int, float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    return done.returncode, time.perf_counter() - start, done.stderr


# --------------------------------------------------------------- reading
def read_history(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if None in row or None in row.values():
            raise AssertionError(f"{path}: a row with the wrong number of fields: {row}")
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def csv_rows(rows: list[dict]) -> list[dict]:
    """history.csv rows as written from state.json's rows (csv writes repr of floats)."""
    return [{k: str(v) for k, v in row.items() if k not in TIMINGS} for row in rows]


def read_metrics(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)
    return {k: v for k, v in metrics.items() if k not in TIMINGS}


def model_weights(path: str) -> list[np.ndarray]:
    from longtail.models import load_model

    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        if bad is not None:
            raise AssertionError(f"{path}: member {bad} is damaged")
    return [np.asarray(w) for w in load_model(path, compile=False).get_weights()]


def reference(s: dict, work: str, runs: int = 1) -> dict:
    """An uninterrupted run (``runs`` of them, which must agree) and what it wrote."""
    ref = None
    for attempt in range(runs):
        out = os.path.join(work, f"reference-{s['seed']}-{attempt}")
        shutil.rmtree(out, ignore_errors=True)
        code, seconds, err = run(command(s, out))
        if code != 0:
            raise AssertionError(f"seed {s['seed']}: reference run failed: {err[-2000:]}")
        got = {
            "out": out, "seconds": seconds,
            "history": read_history(os.path.join(out, "history.csv")),
            "metrics": read_metrics(os.path.join(out, "metrics.json")),
            "weights": model_weights(os.path.join(out, "model.keras")),
            "files": sorted(n for n in os.listdir(out)),
        }
        for name in ("config.json", "val.parquet"):
            with open(os.path.join(out, name), "rb") as f:
                got[name] = f.read()
        if ref is None:
            ref = got
        else:
            same_result(ref, got, f"seed {s['seed']}: two uninterrupted runs")
            ref["seconds"] = min(ref["seconds"], seconds)
    return ref


def same_weights(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y)
                                    for x, y in zip(a, b))


def same_result(ref: dict, got: dict, what: str) -> None:
    if got["history"] != ref["history"]:
        raise AssertionError(f"{what}: history.csv differs:\n{got['history']}\n"
                             f"{ref['history']}")
    if got["metrics"] != ref["metrics"]:
        raise AssertionError(f"{what}: metrics.json differs")
    if not same_weights(got["weights"], ref["weights"]):
        raise AssertionError(f"{what}: model.keras weights differ")


# --------------------------------------------------------------- states
def read_state(out: str) -> dict | None:
    path = os.path.join(out, "checkpoints", "state.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def classify(out: str, epochs: int) -> str:
    """The stage of the run that a kill left the folder in."""
    if not os.path.isdir(out) or not os.listdir(out):
        return "nothing written"
    if not os.path.exists(os.path.join(out, "config.json")):
        return "no config.json yet"
    state = read_state(out)
    if state is None:
        return "config, no checkpoint"
    if state.get("finished"):
        return "finished"
    done = state["epochs_done"]
    if done < epochs and not state.get("stopped"):
        return f"{done}/{epochs} epochs" if done == 1 else "2+ epochs, not all"
    written = [n for n in ("model.keras", "metrics.json", "report.html")
               if os.path.exists(os.path.join(out, n))]
    ended = "stopped early, " if done < epochs else "all epochs, "
    return ended + (f"{written[-1]} written" if written else "finishing")


def temp_files(folder: str) -> list[str]:
    from longtail._io import _TEMP

    return [n for n in os.listdir(folder) if _TEMP.fullmatch(n)] if os.path.isdir(folder) else []


def check_folder(out: str, ref: dict) -> int:
    """Every file the kill left in ``out`` is whole and agrees with the reference.

    Returns:
        The number of temporary files the kill left (hidden, never read).
    """
    from PIL import Image

    if not os.path.isdir(out):
        return 0
    names = set(os.listdir(out))
    visible = {n for n in names if not n.startswith(".")}
    extra = visible - set(ref["files"])
    if extra:
        raise AssertionError(f"{out}: unexpected files {sorted(extra)}")
    from longtail import runs

    # the lock file stays (released); a kill mid-commit leaves its stage and journal,
    # which the next writer or reader carries out
    hidden = {n for n in names - visible if n not in (runs.LOCK, runs.JOURNAL)
              and not n.startswith(runs._STAGE)}
    if hidden - set(temp_files(out)):
        raise AssertionError(f"{out}: unexpected hidden files {sorted(hidden)}")
    for name in ("config.json", "val.parquet"):
        if name in names:
            with open(os.path.join(out, name), "rb") as f:
                if f.read() != ref[name]:
                    raise AssertionError(f"{out}/{name}: differs from the reference")
    state = read_state(out)
    if state is not None:
        if "config.json" not in names:
            raise AssertionError(f"{out}: a checkpoint without config.json")
        rows = csv_rows(state["history"])
        if rows != ref["history"][:len(rows)] or len(rows) != state["epochs_done"]:
            raise AssertionError(f"{out}/checkpoints/state.json: history differs from the "
                                 "reference")
        if state.get("finished"):
            if len(rows) != len(ref["history"]):
                raise AssertionError(f"{out}: finished with {len(rows)} epochs")
            for name in ("model.keras", "metrics.json", "report.html"):
                if name not in names:
                    raise AssertionError(f"{out}: marked finished without {name}")
        else:
            model = os.path.join(out, "checkpoints", state["model"])
            if not os.path.exists(model):
                raise AssertionError(f"{out}: state.json names a missing {state['model']}")
            model_weights(model)  # opens as a zip and a model
            if state.get("early_stopping"):  # the best weights so far, as .npz
                best = os.path.join(out, "checkpoints", state["early_stopping"]["weights"])
                with np.load(best, allow_pickle=False) as z:
                    [z[name] for name in z.files]
    folder = os.path.join(out, "checkpoints")
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if not (name == "state.json" or name.endswith((".keras", ".npz"))
                    or name in temp_files(folder)):
                raise AssertionError(f"{folder}: unexpected file {name}")
    if "history.csv" in names:
        rows = read_history(os.path.join(out, "history.csv"))
        if rows != ref["history"][:len(rows)]:
            raise AssertionError(f"{out}/history.csv: rows differ from the reference")
        done = state["epochs_done"] if state else 0
        if not done - 1 <= len(rows) <= done:  # at most one epoch behind state.json
            raise AssertionError(f"{out}/history.csv: {len(rows)} rows for {done} epochs")
    if "model.keras" in names:
        if not same_weights(model_weights(os.path.join(out, "model.keras")), ref["weights"]):
            raise AssertionError(f"{out}/model.keras: weights differ from the reference")
    if "metrics.json" in names:
        if "model.keras" not in names:
            raise AssertionError(f"{out}: metrics.json without model.keras")
        if read_metrics(os.path.join(out, "metrics.json")) != ref["metrics"]:
            raise AssertionError(f"{out}/metrics.json: differs from the reference")
    if "report.html" in names:
        if "metrics.json" not in names:
            raise AssertionError(f"{out}: report.html without metrics.json")
        with open(os.path.join(out, "report.html"), encoding="utf-8") as f:
            if not f.read().rstrip().endswith("</html>"):
                raise AssertionError(f"{out}/report.html: cut short")
    for name in names:
        if name.endswith(".png") and not name.startswith("."):
            with Image.open(os.path.join(out, name)) as image:
                image.load()
    return len(temp_files(out)) + len(temp_files(folder))


# ---------------------------------------------------------------- kills
def _exists(*parts):
    path = os.path.join(*parts)
    return lambda: os.path.exists(path)


def _hidden(folder: str, prefix: str):
    def test():
        try:
            return any(n.startswith(prefix) for n in os.listdir(folder))
        except FileNotFoundError:
            return False
    return test


def _epochs_done(out: str, k: int):
    def test():
        try:
            state = read_state(out)
        except (OSError, ValueError):
            raise AssertionError(f"{out}: state.json unreadable while training") from None
        return state is not None and state["epochs_done"] >= k
    return test


def trigger(rng, out: str, epochs: int, early_stopping: bool = False):
    """A random moment of the run, as a test of the folder's state."""
    ck = os.path.join(out, "checkpoints")
    k = int(rng.integers(1, epochs + 1))
    moments = [
        ("config.json written", _exists(out, "config.json")),
        (f"epoch-{k}.keras saved, not yet in state.json", _exists(ck, f"epoch-{k}.keras")),
        ("a checkpoint being written", _hidden(ck, ".epoch-")),
        (f"epoch {k} committed", _epochs_done(out, k)),
        ("final model being written", _hidden(out, ".model.keras.")),
        ("model.keras written", _exists(out, "model.keras")),
        ("metrics.json written", _exists(out, "metrics.json")),
        ("report.html written", _exists(out, "report.html")),
        ("run marked finished", lambda: (read_state(out) or {}).get("finished", False)),
    ]
    if early_stopping:
        moments.append(("best-1.npz saved", _exists(ck, "best-1.npz")))
    return moments[int(rng.integers(len(moments)))]


def kill_when(proc, deadline: float, test=None, jitter: float = 0.0) -> bool:
    """SIGKILLs the process group once ``test()`` holds (or at ``deadline`` s), + jitter.

    Returns:
        Whether the process was still running when the kill came.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < deadline:
        if test is not None and test():
            time.sleep(jitter)
            break
        if proc.poll() is not None:
            break
        time.sleep(0.002)
    alive = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # decode threads and any worker process too
    except ProcessLookupError:
        pass
    proc.wait()
    return alive


# C++ logging of TensorFlow (imported by Keras when installed, as in a dev
# environment) on stderr; not longtail's output.
_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} ")


def clear_refusal(code: int, err: str, *expected: str) -> str:
    lines = [line for line in err.strip().splitlines() if not _NOISE.match(line)]
    if code != 2 or len(lines) != 1 or not lines[0].startswith("longtail: error: ") \
            or not any(e in lines[0] for e in expected):
        raise AssertionError(f"expected a one-line refusal ({' or '.join(expected)}), got exit "
                             f"{code}: {err[-2000:]}")
    return lines[0]


def check_finished_resume(s: dict, out: str) -> None:
    """``--resume`` of a finished run: exit 0, says so, changes no file."""
    before = checksums(out)
    code, _, err = run(command(s, out, resume=True))
    if code != 0 or "already finished" not in err:
        raise AssertionError(f"--resume of a finished run: exit {code}: {err[-2000:]}")
    if checksums(out) != before:
        raise AssertionError(f"{out}: --resume of a finished run changed files")


def finished_result(out: str) -> dict:
    return {"history": read_history(os.path.join(out, "history.csv")),
            "metrics": read_metrics(os.path.join(out, "metrics.json")),
            "weights": model_weights(os.path.join(out, "model.keras"))}


def kill_seed(s: dict, ref: dict, work: str, kills: int = 4) -> list[tuple[str, str]]:
    """Kills one run ``kills`` times, resuming after each; then finishes and compares.

    Returns:
        ``(state after the kill, how the kill was timed)`` for each kill.
    """
    rng = np.random.default_rng(s["seed"])
    out = os.path.join(work, f"run-{s['seed']}")
    shutil.rmtree(out, ignore_errors=True)
    log = os.path.join(work, f"stderr-{s['seed']}.txt")
    results = []
    for i in range(kills):
        resume = os.path.exists(os.path.join(out, "config.json"))
        if os.path.isdir(out) and not resume:  # killed before config.json: refused
            code, _, err = run(command(s, out, resume=True))
            clear_refusal(code, err, "holds no run")
        with open(log, "w") as stderr:
            proc = subprocess.Popen(command(s, out, resume=resume), stdout=subprocess.DEVNULL,
                                    stderr=stderr, start_new_session=True)
            if i % 2 == 0:
                how = "timed"
                alive = kill_when(proc, rng.uniform(0, ref["seconds"]))
            else:
                how, test = trigger(rng, out, s["epochs"], "--early-stopping" in s["options"])
                alive = kill_when(proc, 3 * ref["seconds"], test, jitter=rng.uniform(0, 0.02))
        if not alive and proc.returncode != 0:
            with open(log) as f:
                raise AssertionError(f"seed {s['seed']}: exit {proc.returncode} before the "
                                     f"kill: {f.read()[-2000:]}")
        state = classify(out, s["epochs"]) if alive else "finished before the kill"
        temps = check_folder(out, ref)
        results.append((state + (" (+temp files)" if temps else ""), how))
        if read_state(out) is not None and read_state(out).get("finished"):
            check_finished_resume(s, out)
            shutil.rmtree(out)  # the next kill interrupts a fresh run
    resume = os.path.exists(os.path.join(out, "config.json"))
    if os.path.isdir(out) and not resume:
        code, _, err = run(command(s, out, resume=True))
        clear_refusal(code, err, "holds no run")
    code, _, err = run(command(s, out, resume=resume))
    if code != 0:
        raise AssertionError(f"seed {s['seed']}: the final run failed: {err[-2000:]}")
    same_result(ref, finished_result(out), f"seed {s['seed']}: resumed run vs reference")
    check_folder(out, ref)
    left = temp_files(out) + os.listdir(os.path.join(out, "checkpoints"))
    if left != ["state.json"]:
        raise AssertionError(f"{out}: left behind {left}")
    shutil.rmtree(out)
    return results


# ------------------------------------------------------------ scenarios
def scenarios(s: dict, ref: dict, work: str) -> list[str]:
    """``--resume`` of nothing, an empty folder, changed data, a damaged state.json."""
    from PIL import Image

    lines = []
    nope = os.path.join(work, "no-such-run")
    code, _, err = run(command(s, nope, resume=True))
    lines.append("nonexistent folder: " + clear_refusal(code, err, "no such run folder"))
    empty = os.path.join(work, "empty-run")
    os.makedirs(empty, exist_ok=True)
    code, _, err = run(command(s, empty, resume=True))
    lines.append("empty folder: " + clear_refusal(code, err, "holds no run"))

    # The data gains a file between the kill and the resume; a copy, not the source.
    data = os.path.join(work, "changed", os.path.basename(s["data"]))
    shutil.rmtree(os.path.dirname(data), ignore_errors=True)
    shutil.copytree(s["data"], data)
    out = os.path.join(work, "changed-run")
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(command(s, out, data=data), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    kill_when(proc, 3 * ref["seconds"], _epochs_done(out, 1))
    extra = os.path.join(data, "class_1", "added.png")
    Image.new("RGB", (8, 10), (200, 30, 30)).save(extra)
    code, _, err = run(command(s, out, resume=True, data=data))
    lines.append("a file added to DATA: " + clear_refusal(code, err, "data has changed"))
    os.remove(extra)
    code, _, err = run(command(s, out, resume=True, data=data))
    if code != 0:
        raise AssertionError(f"resume once the added file is gone: exit {code}: {err[-2000:]}")
    same_result(ref, finished_result(out), "resumed after the data was restored")
    lines.append("the added file removed again: resumed, identical to the reference")

    # A file rewritten in place, same name: the index fingerprint cannot see it.
    shutil.rmtree(out)
    proc = subprocess.Popen(command(s, out, data=data), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    kill_when(proc, 3 * ref["seconds"], _epochs_done(out, 1))
    victim = os.path.join(data, "class_0", "0001.png")
    Image.new("RGB", (8, 10), (0, 0, 0)).save(victim)
    code, _, err = run(command(s, out, resume=True, data=data))
    if code != 0:
        raise AssertionError(f"resume after an in-place edit: exit {code}: {err[-2000:]}")
    same = finished_result(out)["history"] == ref["history"]
    lines.append("a file rewritten in place (same name): not detected; resumed with exit 0, "
                 f"history {'identical to' if same else 'differs from'} the reference")

    # A state.json damaged by hand.
    shutil.rmtree(out)
    proc = subprocess.Popen(command(s, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    kill_when(proc, 3 * ref["seconds"], _epochs_done(out, 1))
    with open(os.path.join(out, "checkpoints", "state.json"), "w") as f:
        f.write('{"epochs_done": 1, "hist')
    code, _, err = run(command(s, out, resume=True))
    lines.append("state.json cut short by hand: "
                 + clear_refusal(code, err, "not a valid checkpoint state"))
    shutil.rmtree(out)
    shutil.rmtree(os.path.dirname(data))
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=4, help="kills per seed")
    parser.add_argument("--no-scenarios", action="store_true")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    work = args.work or tempfile.mkdtemp(prefix="longtail-kill-train-")
    started = time.perf_counter()
    states, timings = collections.Counter(), collections.Counter()
    scenario_lines: list[str] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        s = setup(seed, work)
        before = checksums(s["root"])
        ref = reference(s, work, runs=2 if seed < args.first_seed + 2 else 1)
        results = kill_seed(s, ref, work, args.kills)
        if not (args.no_scenarios or scenario_lines) and s["model"] == "tiny user model":
            scenario_lines = scenarios(s, ref, work)
        if checksums(s["root"]) != before:
            raise AssertionError(f"seed {seed}: a source file changed")
        states.update(state for state, _ in results)
        timings.update(re.sub(r"\d+", "k", how) for _, how in results)
        opts = s["options"]
        print(f"seed {seed:>3} ({s['kind']}, {s['model']}, "
              f"{opts[opts.index('--balance') + 1]}, "
              f"{'early stopping, ' if '--early-stopping' in opts else ''}"
              f"{len(ref['history'])}/{s['epochs']} epochs, reference "
              f"{ref['seconds']:.1f} s): " + "; ".join(f"{how} -> {state}"
                                                      for state, how in results)
              + "; resumed: identical", flush=True)
        shutil.rmtree(ref["out"], ignore_errors=True)
        shutil.rmtree(ref["out"][:-1] + "1", ignore_errors=True)
        shutil.rmtree(s["root"])
    total = sum(states.values())
    print(f"\n{total} kills over {args.seeds} seeds in {time.perf_counter() - started:.0f} s; "
          "after every kill each file of the run folder was whole and agreed with the "
          "reference run, every folder either resumed or was refused in one line, every run "
          "resumed to the end was identical to its reference (history, metrics, weights), "
          "and no source file changed")
    print("state left by the kill: " + ", ".join(f"{k} {v}" for k, v in states.most_common()))
    print("kill moment: " + ", ".join(f"{k} {v}" for k, v in timings.most_common()))
    if scenario_lines:
        print("scenarios:\n  " + "\n  ".join(scenario_lines))
    if not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
