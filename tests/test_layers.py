"""longtail.layers.RandomShift: pad-and-crop that compiles with the train step."""

import numpy as np
import pytest
from _backends import run_script

import keras

from longtail.layers import RandomShift


def _shifted(image, dy, dx):
    """NumPy reference: image moved down by dy and right by dx, zero-filled."""
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_each_image_is_its_input_shifted_by_whole_pixels_within_the_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 2, (64, 16, 12, 3)).astype("float32")  # no zeros in the input
    out = np.asarray(RandomShift(0.25, seed=3)(x, training=True))
    m_h, m_w = 4, 3
    seen = set()
    for image, result in zip(x, out):
        matches = [(dy, dx) for dy in range(-m_h, m_h + 1) for dx in range(-m_w, m_w + 1)
                   if np.array_equal(_shifted(image, dy, dx), result)]
        assert len(matches) == 1
        seen.add(matches[0])
    # 64 draws over 9 x 7 = 63 offsets: both extremes of each axis turn up
    dys, dxs = {dy for dy, _ in seen}, {dx for _, dx in seen}
    assert {-m_h, m_h} <= dys and {-m_w, m_w} <= dxs


def test_identity_at_inference_and_shape_kept():
    x = np.arange(2 * 8 * 8 * 1, dtype="float32").reshape(2, 8, 8, 1)
    layer = RandomShift(0.125, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    assert layer.compute_output_shape((None, 8, 8, 1)) == (None, 8, 8, 1)


def test_seeded_draws_repeat_and_differ_between_calls():
    x = np.random.default_rng(1).uniform(1, 2, (8, 16, 16, 1)).astype("float32")
    a, b = RandomShift(0.25, seed=5), RandomShift(0.25, seed=5)
    first = np.asarray(a(x, training=True))
    np.testing.assert_array_equal(first, np.asarray(b(x, training=True)))
    assert not np.array_equal(first, np.asarray(a(x, training=True)))


def test_a_model_holding_it_compiles_where_random_translation_does_not():
    def model(layer):
        inputs = keras.Input((16, 16, 3))
        outputs = keras.layers.Dense(2)(keras.layers.Flatten()(layer(inputs)))
        m = keras.Model(inputs, outputs)
        m.compile(optimizer="sgd", loss="mse", jit_compile="auto")
        return m

    assert model(RandomShift(0.125, seed=0)).jit_compile is True
    assert model(keras.layers.RandomTranslation(0.125, 0.125, seed=0)).jit_compile is False


def test_saved_model_loads_in_safe_mode(tmp_path):
    from longtail.models import load_model

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, RandomShift(0.25, seed=2, name="crop")(inputs))
    model.save(tmp_path / "m.keras")
    loaded = load_model(str(tmp_path / "m.keras"))
    layer = loaded.get_layer("crop")
    assert isinstance(layer, RandomShift) and (layer.factor, layer.seed) == (0.25, 2)


def test_bad_factor():
    with pytest.raises(ValueError, match=r"`factor` must be in \[0, 1\); got 1.5"):
        RandomShift(1.5)


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_other_backends(backend):
    code, out, err = run_script("_layers_backend.py", backend)
    assert code == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == f"ok {backend}"
