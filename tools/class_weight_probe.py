"""Does Keras' ``fit(class_weight=...)`` weight one-hot labels, and what does it do with
a dict that misses a class? Prints one JSON line for the backend in KERAS_BACKEND.

    for b in jax tensorflow torch; do KERAS_BACKEND=$b python tools/class_weight_probe.py; done

Each fit runs one full batch with a learning rate of 0, so the loss it reports is the
loss of the initial weights; it is compared with NumPy: the mean of ``w_i * l_i``
(weighted) and of ``l_i`` (unweighted). docs/tf-data.md records the results.
"""

import json

import numpy as np

import keras

rng = np.random.default_rng(0)
x = rng.normal(size=(32, 3)).astype("float32")
y = rng.integers(0, 3, 32)
y[:3] = [0, 1, 2]
onehot = np.eye(3, dtype="float32")[y]
FULL, MISSING = {0: 1.0, 1: 5.0, 2: 0.5}, {0: 1.0, 1: 5.0}


def model():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    m.compile(optimizer=keras.optimizers.SGD(0.0),
              loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    return m


def fit_loss(data, class_weight):
    try:
        history = model().fit(*data, class_weight=class_weight, epochs=1, shuffle=False,
                              verbose=0, **({"batch_size": 32} if len(data) == 2 else {}))
        return round(float(history.history["loss"][0]), 5)
    except Exception as e:  # noqa: BLE001 - the point is to see what is raised
        return f"{type(e).__name__}"


logits = np.asarray(model().predict(x, verbose=0), np.float64)
per_sample = -(logits - np.log(np.exp(logits).sum(1, keepdims=True)))[np.arange(32), y]
reference = {name: round(float((np.array([cw.get(c, fill) for c in y]) * per_sample).mean()), 5)
             for name, cw, fill in (("weighted", FULL, None), ("missing_as_1", MISSING, 1.0),
                                    ("missing_as_0", MISSING, 0.0))}
reference["unweighted"] = round(float(per_sample.mean()), 5)
result = {"backend": keras.backend.backend(), "keras": keras.__version__,
          "reference": reference,
          "numpy": {"one_hot": fit_loss((x, onehot), FULL),
                    "missing_class": fit_loss((x, onehot), MISSING)}}
try:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, onehot)).batch(32)
    result["tf_data"] = {"one_hot": fit_loss((ds,), FULL),
                         "missing_class": fit_loss((ds,), MISSING)}
except ImportError:
    result["tf_data"] = "tensorflow not installed"
print(json.dumps(result))
