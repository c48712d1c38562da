"""Runs a real small ``model.fit`` on a longtail Loader under one backend.

Used by tests/test_loader.py in a subprocess (``KERAS_BACKEND`` must be set
before Keras is imported):

    KERAS_BACKEND=torch python tests/_fit_backend.py DATA_DIR

``DATA_DIR`` holds PNG files named ``<class>_<i>.png``. The script prints
one JSON line with what the test checks:

- ``weighted_loss`` / ``expected_weighted_loss``: the loss Keras logs for one
  epoch with SGD(learning_rate=0), against the weighted mean computed by hand
  from ``model.predict`` (Keras' ``sum_over_batch_size`` reduction:
  ``sum(w * l) / n`` per batch, batches averaged by size);
- ``unweighted_loss``: the same model's plain mean loss, to show the weights
  changed the number;
- ``balanced_losses`` / ``expected_balanced_losses``: the loss of each of
  3 epochs of a ``balanced`` loader (still lr=0), against the mean loss of
  the samples in that epoch's plan: Keras trained on a new plan every epoch;
- ``epochs_seen``: the loader's epoch after ``fit(epochs=3)``;
- ``val_loss`` / ``expected_val_loss``: validation ran on a second loader.

The dataset has per-row weights, so every loader here yields ``(x, y, w)``.
"""

import json
import os
import sys

import numpy as np


def main(root):
    import keras

    import longtail as lt
    from longtail._seed import seed_everything

    seed_everything(0)
    names = sorted(os.listdir(root))
    labels = [name.split("_")[0] for name in names]
    ds = lt.Dataset.from_arrays([os.path.join(root, n) for n in names], labels,
                                weights=np.linspace(0.5, 1.5, len(names)))
    class_weight = {0: 1.0, 1: 2.0, 2: 4.0}
    k = len(ds.class_names)

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(k, kernel_initializer=keras.initializers.GlorotUniform(1))(x)
    model = keras.Model(inputs, outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss=loss)

    train = ds.loader(batch_size=4, image_size=(8, 8), sampling="sequential",
                      class_weight=class_weight, num_workers=2)
    history = model.fit(train, epochs=1, verbose=0)

    # the same numbers by hand
    per_sample = np.zeros(len(ds))
    sequential = ds.loader(batch_size=5, image_size=(8, 8), sampling="sequential")
    for b, (x_b, y_b, *_) in enumerate(sequential):
        logits = model.predict_on_batch(x_b).astype(np.float64)
        top = logits.max(1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
        per_sample[b * 5:b * 5 + len(y_b)] = -logp[np.arange(len(y_b)), y_b]
    cw = np.array([class_weight[c] for c in range(k)])
    w = cw[ds.labels] * ds.weights
    batch_means = [(w[i:i + 4] * per_sample[i:i + 4]).mean() for i in range(0, len(ds), 4)]
    sizes = [len(per_sample[i:i + 4]) for i in range(0, len(ds), 4)]

    # a new plan every epoch, validation on another loader
    balanced = ds.loader(batch_size=4, image_size=(8, 8), sampling="balanced", seed=5)
    val = ds.loader(batch_size=4, image_size=(8, 8), sampling="sequential")
    fit = model.fit(balanced, validation_data=val, epochs=3, verbose=0)
    rw = ds.weights * per_sample  # both loaders carry the per-row weights
    expected = [rw[balanced.plan(e)[:len(balanced) * 4]].mean() for e in range(3)]
    print(json.dumps({
        "backend": keras.backend.backend(),
        "weighted_loss": float(history.history["loss"][0]),
        "expected_weighted_loss": float(np.average(batch_means, weights=sizes)),
        "unweighted_loss": float(per_sample.mean()),
        "balanced_losses": [float(v) for v in fit.history["loss"]],
        "expected_balanced_losses": [float(v) for v in expected],
        "epochs_seen": balanced.epoch,
        "val_loss": [float(v) for v in fit.history["val_loss"]],
        "expected_val_loss": float(rw.mean()),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
