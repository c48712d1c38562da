"""Ctrl-C early in the first epoch ends the process with status 130, never a crash."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.system
@pytest.mark.parametrize("delay", [0.0, 0.8])
def test_sigint_in_the_first_epoch_exits_130(tmp_path, delay):
    rng = np.random.default_rng(0)
    for c, n in (("a", 60), ("b", 30), ("c", 10)):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
                tmp_path / "data" / c / f"{i}.jpg")
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO, KERAS_BACKEND="jax")
    proc = subprocess.Popen([sys.executable, "-m", "longtail", "train", str(tmp_path / "data"),
                             "--out", str(out), "--epochs", "3", "--image-size", "32",
                             "--batch-size", "4"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        start = time.monotonic()
        while not (out / "config.json").exists() and proc.poll() is None:
            assert time.monotonic() - start < 300
            time.sleep(0.01)
        time.sleep(delay)  # training has begun: config.json is written first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    if proc.returncode == 0:  # finished before the signal: nothing to check
        pytest.skip("the run ended before the interrupt")
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("longtail: interrupted")
