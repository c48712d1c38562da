"""A run's model.keras loads with plain Keras, no longtail import, and predicts as the run did."""

import os
import subprocess
import sys

import numpy as np
import pytest

import longtail as lt
from conftest import make_images

_LOAD = """
import sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
assert not any(m.split('.')[0] == 'longtail' for m in sys.modules), 'longtail was imported'
np.save(sys.argv[3], np.asarray(model.predict(np.load(sys.argv[2]), verbose=0)))
print([type(l).__name__ for l in model.layers])
"""


@pytest.mark.slow
def test_image_model_with_default_augmentation_loads_in_plain_keras(tmp_path):
    data = make_images(tmp_path / "data", [12, 8, 6], size=8)
    result = lt.train(str(data), str(tmp_path / "run"), epochs=2, image_size=8,
                      batch_size=8, verbose=0, balance="logit-adjust")
    assert result.config["options"]["augment"] == "flip,crop"  # the default
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3)).astype("float32")
    expected = np.asarray(result.model.predict(x, verbose=0))
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["KERAS_BACKEND"] = "jax"
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, str(tmp_path / "run" / "model.keras"),
         str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RandomShift" not in done.stdout and "Identity" in done.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)
