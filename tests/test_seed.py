"""seed_everything seeds as keras.utils.set_random_seed does, without importing TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from longtail._seed import seed_everything

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_jax(script: str) -> dict:
    """Runs ``script`` under KERAS_BACKEND=jax in a fresh process; its last line is JSON."""
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_seeding_matches_keras_and_leaves_tensorflow_unloaded():
    pytest.importorskip("tensorflow")  # the import to avoid must be possible
    result = run_jax("""
        import json, random, sys
        import numpy as np
        import keras
        import longtail
        from longtail._seed import seed_everything

        def draw(seed_fn):
            seed_fn(3)
            model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4),
                                      keras.layers.Dense(2)])
            weights = [w.tolist() for w in model.get_weights()]
            return {"weights": weights, "normal": keras.random.normal((3,)).tolist(),
                    "numpy": np.random.random(2).tolist(), "python": random.random()}

        ours = [draw(seed_everything), draw(seed_everything)]
        tf_loaded = "tensorflow" in sys.modules
        keras_own = draw(keras.utils.set_random_seed)  # imports TensorFlow
        print(json.dumps({"ours": ours, "keras": keras_own, "tf_loaded": tf_loaded,
                          "tf_after_keras": "tensorflow" in sys.modules}))
    """)
    assert result["tf_after_keras"]  # keras' own function does import TensorFlow
    assert not result["tf_loaded"]
    first, second = result["ours"]
    assert first == second  # seeding twice: the same weights and draws
    assert first == result["keras"]  # exactly what keras.utils.set_random_seed gives
    assert len(first["weights"]) == 4 and any(any(row) for row in first["weights"][0])


@pytest.mark.slow
def test_a_small_jax_training_run_never_imports_tensorflow(tmp_path):
    pytest.importorskip("tensorflow")
    from tests.conftest import make_images

    make_images(str(tmp_path / "data"), [6, 3], size=8)
    result = run_jax(f"""
        import json, sys
        from longtail.training import train
        train({str(tmp_path / "data")!r}, {str(tmp_path / "run")!r}, verbose=0,
              epochs=1, batch_size=4, image_size=8, val_split=0.3)
        print(json.dumps({{"tf": sorted(m for m in sys.modules if m.startswith("tensorflow"))[:3]}}))
    """)
    assert result["tf"] == []


@pytest.mark.parametrize("bad,error", [(1.5, TypeError), ("0", TypeError), (True, TypeError),
                                       (-1, ValueError)])
def test_bad_seeds_are_refused(bad, error):
    with pytest.raises(error, match="`seed` must be"):
        seed_everything(bad)
