"""Runs RandomShift's checks and a small fit under KERAS_BACKEND (see test_layers)."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
from test_layers import (  # noqa: E402
    test_each_image_is_its_input_shifted_by_whole_pixels_within_the_range as check_shifts,
    test_identity_at_inference_and_shape_kept as check_identity)

from longtail.layers import RandomShift  # noqa: E402

check_shifts()
check_identity()
inputs = keras.Input((8, 8, 1))
x = keras.layers.Flatten()(RandomShift(0.25, seed=0)(inputs))
model = keras.Model(inputs, keras.layers.Dense(2)(x))
model.compile(optimizer="sgd", loss="mse")
history = model.fit(np.ones((16, 8, 8, 1), "float32"), np.zeros((16, 2), "float32"),
                    batch_size=8, epochs=1, verbose=0)
assert np.isfinite(history.history["loss"][0])
print("ok", keras.backend.backend())
