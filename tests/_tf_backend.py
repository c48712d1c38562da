"""Checks ``longtail.tf`` under the TensorFlow backend, in its own process.

Used by tests/test_tf.py (the suite's own process runs JAX):

    KERAS_BACKEND=tensorflow python tests/_tf_backend.py WORK_DIR

Builds PNG trees in ``WORK_DIR``, loads them with
``keras.utils.image_dataset_from_directory`` in each label mode and prints
one JSON line:

- ``modes[mode]``: ``max_weight_error`` (weights from ``with_sample_weights``
  against ``lt.sample_weights`` of the same labels, per element),
  ``class_weights`` (from ``class_weights_from``), ``reference`` (from
  ``lt.class_weights`` of ``lt.Dataset.from_directory``), ``samples`` seen,
  and ``fit_loss`` / ``expected_loss`` / ``unweighted_loss``: the loss Keras
  logs for a one-batch ``fit`` (SGD with learning rate 0) against the
  weighted mean ``sum(w * l) / n`` computed by hand from ``model.predict``;
- ``dict_by_name``, ``dict_by_index``, ``array``: the weights of the first
  batch for each ``class_weight`` form (all must agree);
- ``unbatched``: weights of an unbatched dataset against the batched ones;
- ``soft``: weights of label-smoothed rows against ``lt.sample_weights``;
- ``times_existing``: an existing weight element times the class weight;
- ``warnings``: what equal weights and a partial dict warn;
- ``errors``: the messages of refused inputs.
"""

import json
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _model(keras, k):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(k, kernel_initializer=keras.initializers.GlorotUniform(1),
                                 bias_initializer=keras.initializers.RandomNormal(seed=2))(x)
    return keras.Model(inputs, outputs)


def _per_sample_loss(logits, y, mode):
    logits = logits.astype(np.float64)
    if mode == "binary":
        z, t = logits[:, 0], y[:, 0].astype(np.float64)
        return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    top = logits.max(1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    onehot = y if mode == "categorical" else np.eye(logits.shape[1])[y]
    return -(onehot * logp).sum(1)


def main(work):
    import keras
    import tensorflow as tf

    import longtail as lt
    import longtail.tf as ltf
    from conftest import make_images

    from longtail._seed import seed_everything

    seed_everything(0)
    trees = {3: make_images(os.path.join(work, "three"), (14, 6, 3), seed=1),
             2: make_images(os.path.join(work, "two"), (13, 4), seed=2)}
    out = {"modes": {}, "errors": {}}
    for mode in ("int", "categorical", "binary"):
        root = trees[2 if mode == "binary" else 3]
        ds = keras.utils.image_dataset_from_directory(
            root, label_mode=mode, image_size=(8, 8), batch_size=5, shuffle=True, seed=3)
        reference = lt.class_weights(lt.Dataset.from_directory(root), "balanced")
        weighted = ltf.with_sample_weights(ds, "balanced")
        ys, ws = [], []
        for _, y, w in weighted:
            ys.append(y.numpy())
            ws.append(w.numpy())
        y, w = np.concatenate(ys), np.concatenate(ws)
        expected = lt.sample_weights(y, reference)

        # one batch holding every class, through a real fit
        whole = keras.utils.image_dataset_from_directory(
            root, label_mode=mode, image_size=(8, 8), batch_size=64, shuffle=False)
        k = 1 if mode == "binary" else len(whole.class_names)
        model = _model(keras, k)
        loss = {"int": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "categorical": keras.losses.CategoricalCrossentropy(from_logits=True),
                "binary": keras.losses.BinaryCrossentropy(from_logits=True)}[mode]
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss=loss)
        fit_loss = model.fit(ltf.with_sample_weights(whole, "balanced").take(1),
                             epochs=1, verbose=0, shuffle=False).history["loss"][0]
        x_b, y_b = next(iter(whole))
        per_sample = _per_sample_loss(model.predict_on_batch(x_b), y_b.numpy(), mode)
        w_b = lt.sample_weights(y_b.numpy(), reference)
        out["modes"][mode] = {
            "element_spec": str(ds.element_spec[1]),
            "max_weight_error": float(np.abs(w - expected).max()),
            "samples": int(len(y)),
            "class_weights": ltf.class_weights_from(ds, "balanced"),
            "reference": reference,
            "fit_loss": float(fit_loss),
            "expected_loss": float((w_b * per_sample).sum() / len(per_sample)),
            "unweighted_loss": float(per_sample.mean()),
        }

    # every class_weight form gives the same weights
    ds = keras.utils.image_dataset_from_directory(
        trees[3], label_mode="int", image_size=(8, 8), batch_size=32, shuffle=False)
    forms = {"dict_by_name": {"class_0": 1.0, "class_1": 2.5, "class_2": 7.0},
             "dict_by_index": {0: 1.0, 1: 2.5, 2: 7.0},
             "array": np.array([1.0, 2.5, 7.0])}
    for name, form in forms.items():
        _, y, w = next(iter(ltf.with_sample_weights(ds, form)))
        out[name] = {"w": w.numpy().tolist(), "y": y.numpy().tolist()}
    batched = ltf.with_sample_weights(ds, "inverse")
    unbatched = ltf.with_sample_weights(ds.unbatch(), batched.class_weight,
                                        class_names=ds.class_names)
    out["unbatched"] = {
        "batched": np.concatenate([w.numpy() for _, _, w in batched]).tolist(),
        "unbatched": [float(w.numpy()) for _, _, w in unbatched]}
    # an existing weight column is multiplied
    three = ds.map(lambda x, y: (x, y, tf.fill(tf.shape(y), 2.0)))
    _, _, w3 = next(iter(ltf.with_sample_weights(three, forms["array"])))
    out["times_existing"] = w3.numpy().tolist()

    # soft (label-smoothed) rows: the dot product with the class weights
    cat = keras.utils.image_dataset_from_directory(
        trees[3], label_mode="categorical", image_size=(8, 8), batch_size=32, shuffle=False)
    soft = cat.map(lambda x, y: (x, y * 0.8 + 0.2 / 3))
    _, y_s, w_s = next(iter(ltf.with_sample_weights(soft, forms["array"])))
    out["soft"] = {"w": w_s.numpy().tolist(),
                   "expected": lt.sample_weights(y_s.numpy(), forms["array"]).tolist()}

    def error(name, call):
        try:
            call()
        except lt.ConfigError as e:
            out["errors"][name] = str(e)
        else:
            out["errors"][name] = None

    mapped = ds.map(lambda x, y: (x, y))
    error("strategy_after_map", lambda: ltf.with_sample_weights(mapped, "balanced"))
    error("wrong_length", lambda: ltf.with_sample_weights(ds, [1.0, 2.0]))
    error("unknown_name", lambda: ltf.with_sample_weights(ds, {"class_9": 2.0}))
    error("binary_three_classes", lambda: ltf.with_sample_weights(
        ds.map(lambda x, y: (x, tf.cast(y, tf.float32))), [1.0, 2.0, 3.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ltf.with_sample_weights(ds, {"class_0": 1.0, "class_1": 1.0, "class_2": 1.0})
        ltf.with_sample_weights(ds, {"class_0": 2.0})
    out["warnings"] = [str(w.message) for w in caught]
    out["backend"] = keras.backend.backend()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
