"""Loss values, gradients and a DRW run under one Keras backend, as JSON.

Run as ``KERAS_BACKEND=jax|torch|tensorflow python tests/_loss_backend_values.py``;
tests/test_losses.py and tests/test_callbacks.py run it once per backend and
compare the output with NumPy references and across backends. Importing it
(for CASES and the inputs) does not import Keras.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

K = 5
N = 12
COUNTS = [500.0, 120.0, 30.0, 8.0, 2.0]
PRIORS = [c / sum(COUNTS) for c in COUNTS]
WEIGHTS = [0.5, 1.0, 2.0, 4.0, 0.0]

#: name -> (loss class name, constructor kwargs). Every loss of
#: longtail.losses.LOSSES must appear at least once (checked by the tests).
CASES = {
    "weighted_ce": ("WeightedCrossentropy", {"class_weight": WEIGHTS}),
    "weighted_ce_probs": ("WeightedCrossentropy",
                          {"class_weight": WEIGHTS, "from_logits": False}),
    "focal": ("Focal", {"gamma": 2.0}),
    "focal_scalar_alpha": ("Focal", {"gamma": 0.5, "alpha": 0.25}),
    "focal_class_alpha": ("Focal", {"gamma": 1.5, "alpha": WEIGHTS}),
    "cb_ce": ("ClassBalanced", {"class_counts": COUNTS, "beta": 0.99}),
    "cb_focal": ("ClassBalanced", {"class_counts": COUNTS, "beta": 0.999,
                                   "base": "focal", "gamma": 1.5}),
    "logit_adjusted": ("LogitAdjusted", {"priors": PRIORS, "tau": 1.0}),
    "logit_adjusted_half": ("LogitAdjusted", {"priors": PRIORS, "tau": 0.5}),
    "balanced_softmax": ("BalancedSoftmax", {"class_counts": COUNTS}),
    "ldam": ("LDAM", {"class_counts": COUNTS, "max_margin": 0.5, "scale": 30.0}),
    "ldam_weighted": ("LDAM", {"class_counts": COUNTS, "max_margin": 0.3,
                               "scale": 1.0, "class_weight": WEIGHTS}),
}

MARKER = "@@longtail-json "
DRW_START = 2
DRW_EPOCHS = 3


def make_inputs():
    """Sparse, one-hot and soft targets; moderate and extreme logits."""
    rng = np.random.RandomState(0)
    sparse = rng.randint(0, K, size=N).astype("int32")
    onehot = np.eye(K, dtype="float32")[sparse]
    soft = rng.dirichlet(np.ones(K), size=N).astype("float32")
    logits = (2.0 * rng.randn(N, K)).astype("float32")
    extreme = (1e4 * rng.choice([-1.0, 1.0], size=(N, K))
               + rng.randn(N, K)).astype("float32")
    return {"sparse": sparse, "onehot": onehot, "soft": soft,
            "logits": logits, "extreme": extreme}


def make_drw_data():
    rng = np.random.RandomState(1)
    x = rng.rand(32, 3).astype("float32")
    y = np.repeat(np.arange(K), [16, 8, 4, 2, 2]).astype("int32")
    return x, y


def _predictions(name, logits):
    """What the case feeds the loss: logits, or softmax for from_logits=False."""
    if CASES[name][1].get("from_logits", True):
        return logits
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def _grad_fn(backend):
    from keras import ops

    if backend == "jax":
        import jax

        return lambda f, z: np.asarray(jax.grad(f)(ops.convert_to_tensor(z)))
    if backend == "torch":
        import torch

        def grad(f, z):
            t = torch.tensor(z, requires_grad=True)
            f(t).backward()
            return t.grad.numpy()

        return grad
    import tensorflow as tf

    def grad(f, z):
        t = tf.Variable(z)
        with tf.GradientTape() as tape:
            value = f(t)
        return tape.gradient(value, t).numpy()

    return grad


def _drw_run(loss_name, loss_kwargs, x, y):
    """Loss per epoch of a zero model (lr 0) under DeferredReweighting."""
    import keras

    from longtail import callbacks, losses

    loss = losses.LOSSES[loss_name](**loss_kwargs)
    model = keras.Sequential([
        keras.Input((x.shape[1],)),
        keras.layers.Dense(K, kernel_initializer="zeros", bias_initializer="zeros"),
    ])
    model.compile(keras.optimizers.SGD(0.0), loss=loss)
    before = float(model.evaluate(x, y, batch_size=16, verbose=0))  # builds test step
    drw = callbacks.DeferredReweighting(COUNTS, start_epoch=DRW_START, beta=0.9)
    history = model.fit(x, y, batch_size=16, epochs=DRW_EPOCHS, verbose=0,
                        validation_data=(x, y), callbacks=[drw], shuffle=False)
    return {"before": before, "loss": history.history["loss"],
            "val_loss": history.history["val_loss"],
            "weights": drw.weights_.tolist()}


def main():
    import keras
    from keras import ops

    from longtail import losses

    backend = keras.backend.backend()
    grad = _grad_fn(backend)
    inputs = make_inputs()
    values, extreme, grads_finite = {}, {}, {}
    for name, (cls_name, kwargs) in CASES.items():
        loss = losses.LOSSES[cls_name](reduction="none", **kwargs)
        pred = _predictions(name, inputs["logits"])
        values[name] = {
            target: ops.convert_to_numpy(loss(inputs[target], pred)).tolist()
            for target in ("sparse", "onehot", "soft")
        }
        if kwargs.get("from_logits", True):
            extreme[name] = ops.convert_to_numpy(
                loss(inputs["sparse"], inputs["extreme"])).tolist()
            mean_loss = losses.LOSSES[cls_name](**kwargs)
            finite = True
            for target in ("sparse", "onehot", "soft"):
                y = ops.convert_to_tensor(inputs[target])
                g = grad(lambda z, y=y: mean_loss(y, z), inputs["extreme"])
                finite &= bool(np.all(np.isfinite(g)))
            grads_finite[name] = finite
    x, y = make_drw_data()
    drw = {
        "ldam": _drw_run("LDAM", {"class_counts": COUNTS, "scale": 1.0}, x, y),
        "focal": _drw_run("Focal", {"gamma": 2.0}, x, y),
    }
    result = {"backend": backend, "values": values, "extreme": extreme,
              "grads_finite": grads_finite, "drw": drw}
    print(MARKER + json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
