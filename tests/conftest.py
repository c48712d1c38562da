import os

# Tests run on JAX unless a test starts its own process with another backend
# (a user's ~/.keras/keras.json must not pick the backend for the suite).
os.environ["KERAS_BACKEND"] = os.environ.get("LONGTAIL_TEST_BACKEND", "jax")

import pytest  # noqa: E402


def make_tree(root, counts, ext="png", nested=True):
    """Creates empty files: {class: n} -> root/class[/sub]/i.ext."""
    for name, n in counts.items():
        for i in range(n):
            sub = os.path.join(root, name, "sub" if nested and i % 2 else "")
            os.makedirs(sub, exist_ok=True)
            open(os.path.join(sub, f"{i:04d}.{ext}"), "w").close()
    return str(root)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data", {"dog": 30, "cat": 6, "Zebra": 3})


def make_images(root, counts, size=8, seed=0, spread=1.0):
    """PNG images whose class is their colour, blurred by a per-image offset.

    Class ``c`` has a mean colour on a circle in RGB space; each image adds a
    random colour offset (``spread`` times the distance between neighbouring
    classes) and a little pixel noise, so classes overlap and the class prior
    matters for the best decision.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    k = len(counts)
    angles = 2 * np.pi * np.arange(k) / k
    means = np.stack([128 + 70 * np.cos(angles), 128 + 70 * np.sin(angles),
                      np.full(k, 128.0)], axis=1)
    step = 70 * 2 * np.sin(np.pi / k)
    for c, n in enumerate(counts):
        folder = os.path.join(root, f"class_{c}")
        os.makedirs(folder, exist_ok=True)
        for i in range(n):
            colour = means[c] + rng.normal(0, spread * step / 2, 3)
            pixels = colour + rng.normal(0, 8, (size, size, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                os.path.join(folder, f"{i:04d}.png"))
    return str(root)


LT_COUNTS = (200, 115, 65, 37, 21, 12, 7, 4)  # 8 classes, imbalance ratio 50


# A tiny backbone registered in longtail.backbones.BACKBONES for tests that
# need a backbone but not EfficientNet-Lite0's build time.
TINY = "tiny-test"


def _tiny_backbone(input_shape, path, name):
    import keras

    inputs = keras.Input(tuple(input_shape), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="_blocks_0_conv")(x)
    x = keras.layers.Conv2D(12, 3, strides=2, activation="relu", name="_blocks_1_conv")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x), name=name)
    if path is not None:
        model.load_weights(path)
    return model


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    """Registers TINY, a one-convolution backbone (fast tests of backbone code);
    yields (a folder, its weights file)."""
    from longtail._seed import seed_everything  # keras.utils.set_random_seed imports TF
    from longtail.backbones import BACKBONES, Backbone

    root = tmp_path_factory.mktemp("tiny")
    BACKBONES[TINY] = Backbone(TINY, _tiny_backbone, 32, "tiny.weights.h5", r"^(_blocks_\d+)_")
    seed_everything(0)
    weights = str(root / "tiny.weights.h5")
    _tiny_backbone((32, 32, 3), None, "tiny").save_weights(weights)
    yield root, weights
    del BACKBONES[TINY]
