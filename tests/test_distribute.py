"""longtail.distribute: data-parallel training on virtual CPU devices and processes.

The device count of a JAX process is fixed when JAX starts, so the training
runs happen in subprocesses (tests/_distribute_run.py): one process with 4
virtual devices, and a job of two processes with 2 devices each on localhost.
"""

import collections
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import longtail as lt
from longtail.cli import build_parser, main
from longtail.distribute import Cluster

from conftest import make_images

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "_distribute_run.py")


def _env(devices):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               TF_CPP_MIN_LOG_LEVEL="3")
    for name in list(env):  # the job is described by arguments only
        if name.startswith(("KERAS_DISTRIBUTION_", "JAX_COORDINATOR", "JAX_NUM_PROC",
                            "JAX_PROCESS_ID")):
            del env[name]
    return env


def _last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import keras

    work = tmp_path_factory.mktemp("distribute")
    data = make_images(work / "data", (40, 16, 8), size=8, seed=5)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(2))(x)
    model = str(work / "tiny.keras")
    keras.Model(inputs, outputs).save(model)

    devices = subprocess.run([sys.executable, SCRIPT, "devices", data, model, str(work)],
                             capture_output=True, text=True, env=_env(4), timeout=900)
    assert devices.returncode == 0, devices.stderr[-3000:]

    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, SCRIPT, "process", data, model, str(work),
                               str(i), port], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(2)) for i in (0, 1)]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=900)
            assert proc.returncode == 0, stderr[-3000:]
            outputs.append(_last_json(stdout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    weights = {name: [a for _, a in sorted(np.load(work / f"{name}.npz").items(),
                                           key=lambda kv: int(kv[0].split("_")[1]))]
               for name in ("one-device", "devices", "process-0", "process-1")}
    return {"devices": _last_json(devices.stdout), "processes": outputs,
            "weights": weights, "work": work}


def _assert_close(a, b, **tol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **tol)


@pytest.mark.slow
def test_four_devices_match_one_device(runs):
    result = runs["devices"]
    assert result["config"] == {"processes": 1, "devices": 4, "global_batch_size": 8}
    w = runs["weights"]
    # AdamW divides by sqrt(v): summation-order noise in a near-zero gradient
    # can move a single weight by more than the noise itself
    _assert_close(w["devices"], w["one-device"], rtol=1e-3, atol=2e-4)
    diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(w["devices"], w["one-device"])])
    assert np.median(diffs) < 1e-6
    np.testing.assert_allclose(result["history"]["loss"], result["one_device_history"]["loss"],
                               rtol=1e-4)
    assert "val_balanced_accuracy" in result["history"]
    assert "val_loss" in result["history"]  # computed on the local copy
    assert result["distribution_after"] == "None"  # train() ends the distribution
    assert "multiple of this process's 4 devices" in result["odd_batch_error"]


@pytest.mark.slow
def test_two_processes_train_together(runs):
    p0, p1 = runs["processes"]
    assert p0["config"] == p1["config"] == {"processes": 2, "devices": 4,
                                             "global_batch_size": 8}
    w = runs["weights"]
    for a, b in zip(w["process-0"], w["process-1"]):
        np.testing.assert_array_equal(a, b)  # replicas hold identical weights
    # ... and they trained on the global batch: the one-device run with batch 8
    _assert_close(w["process-0"], w["one-device"], rtol=1e-3, atol=2e-4)
    assert p0["history"]["loss"] == p1["history"]["loss"]
    # process 0 alone writes the run folder
    assert p0["run_dir"] is not None and p1["run_dir"] is None
    assert os.path.exists(os.path.join(p0["run_dir"], "model.keras"))
    assert not os.path.exists(os.path.join(runs["work"], "run", "process-1"))


@pytest.mark.slow
def test_each_process_decodes_only_its_shard_of_the_global_plan(runs):
    p0, p1 = runs["processes"]
    single = runs["devices"]["decoded"]  # the plan of the 4-device (one-process) run
    assert len(p0["decoded"]) == len(p1["decoded"]) == len(single) // 2
    union = {}
    for p in (p0, p1):
        for key, path in p["decoded"].items():
            epoch, position = map(int, key.split(":"))
            union[f"{epoch}:{2 * position + p['process_id']}"] = path
    assert union == single
    # the global plan is class-balanced (resample): equal shares, up to rounding
    counts = collections.Counter(path.split("/")[0] for path in union.values())
    assert max(counts.values()) - min(counts.values()) <= 2, counts


def test_cluster_from_arguments_and_environment():
    env = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234",
           "KERAS_DISTRIBUTION_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3",
           "JAX_NUM_PROCESSES": "8"}
    assert Cluster.resolve(None, env) == Cluster("10.0.0.1:1234", 4, 3)  # Keras first
    assert Cluster.resolve({"process_id": 1}, env).process_id == 1  # arguments win
    jax_only = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": "0"}
    assert Cluster.resolve(Cluster(), jax_only) == Cluster("h:1", 2, 0)
    assert not Cluster.resolve(None, {}).multi_process
    assert not Cluster(num_processes=1).multi_process
    assert Cluster(coordinator="h:1").multi_process  # the rest from Slurm & co
    with pytest.raises(lt.ConfigError, match="--process-id must be in 0..1"):
        Cluster.resolve(None, {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"})
    with pytest.raises(lt.ConfigError, match="KERAS_DISTRIBUTION_NUM_PROCESSES"):
        Cluster.resolve(None, {"KERAS_DISTRIBUTION_NUM_PROCESSES": "two"})
    with pytest.raises(lt.ConfigError, match="keys"):
        Cluster.resolve({"rank": 0}, {})


def test_cli_flags(tmp_path, capsys):
    args = build_parser().parse_args(
        ["train", "data", "--out", "run", "--distribute", "--coordinator", "h:1",
         "--num-processes", "2", "--process-id", "1"])
    assert (args.distribute, args.coordinator, args.num_processes, args.process_id) == \
        (True, "h:1", 2, 1)
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "run"),
                 "--num-processes", "2"]) == 2
    assert "need --distribute" in capsys.readouterr().err


def test_distribute_needs_jax(tmp_path):
    data = make_images(tmp_path / "data", (4, 4), size=4)
    env = dict(os.environ, KERAS_BACKEND="numpy")
    proc = subprocess.run([sys.executable, "-m", "longtail.cli", "train", data, "--out",
                           str(tmp_path / "run"), "--distribute"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "needs the JAX backend" in proc.stderr and "Traceback" not in proc.stderr


def test_training_set_smaller_than_a_global_batch_is_refused(tmp_path):
    # Without --distribute the batch shrinks to the data; distributed, each
    # process's shard and its devices would have to split it, so it says what to change.
    data = make_images(tmp_path / "data", (6, 4), size=4)
    proc = subprocess.run([sys.executable, "-m", "longtail.cli", "train", data, "--out",
                           str(tmp_path / "run"), "--distribute", "--batch-size", "64",
                           "--val-split", "0.2", "--epochs", "1"],
                          capture_output=True, text=True, env=_env(2), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "fewer than one global batch (batch_size 64 x 1 processes); lower --batch-size" \
        in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "run")
