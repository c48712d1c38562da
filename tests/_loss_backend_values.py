"""Loss values, gradients and a DRW run under one Keras backend, as JSON.

Run as ``KERAS_BACKEND=jax|torch|tensorflow python tests/_loss_backend_values.py``;
tests/test_losses.py and tests/test_callbacks.py run it once per backend and
compare the output with NumPy references and across backends. Importing it
(for CASES and the inputs) does not import Keras.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script too
from _backends import BACKENDS, require_backend, start_script  # noqa: E402

K = 5
N = 12
COUNTS = [500.0, 120.0, 30.0, 8.0, 2.0]
PRIORS = [c / sum(COUNTS) for c in COUNTS]
WEIGHTS = [0.5, 1.0, 2.0, 4.0, 0.0]
ZERO_COUNTS = [500.0, 120.0, 0.0, 8.0, 2.0]
ZERO_PRIORS = [0.7, 0.2, 0.0, 0.06, 0.04]

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
    # Zero counts and priors: raised to min(1, smallest positive count) and
    # to the smallest positive prior (with a warning).
    "balanced_softmax_zero": ("BalancedSoftmax", {"class_counts": ZERO_COUNTS}),
    "ldam_zero": ("LDAM", {"class_counts": ZERO_COUNTS, "scale": 5.0}),
    "cb_zero": ("ClassBalanced", {"class_counts": ZERO_COUNTS, "beta": 0.999}),
    "logit_adjusted_zero": ("LogitAdjusted", {"priors": ZERO_PRIORS, "tau": 1.0}),
}

MARKER = "@@longtail-json "
#: Cases that take probabilities (from_logits=False) rather than logits.
PROB_CASES = {name for name, (_, kw) in CASES.items() if not kw.get("from_logits", True)}
DRW_START = 2
DRW_EPOCHS = 3
DRW_BETA = 0.9
DRW_LOSS = {"class_counts": COUNTS, "scale": 1.0}


_RUNS: dict = {}


def start_backends() -> None:
    """Starts this script under every other installed backend (idempotent).

    Importing Keras and a backend costs more than everything the script
    computes, so the tests start the runs early and collect them late; the
    runs write to temporary files and are killed if never collected.
    """
    if _RUNS:
        return
    import keras

    here = keras.backend.backend()
    for backend in BACKENDS:
        if backend != here:
            run = start_script(os.path.basename(__file__), backend, one_thread=True)
            if run is not None:
                _RUNS[backend] = run
    _RUNS[here] = None  # computed in this process
    atexit.register(_kill_runs)


def _kill_runs() -> None:
    for run in _RUNS.values():
        if run is not None:
            run.kill()


@functools.lru_cache(maxsize=None)
def run_all_backends(timeout: float = 300.0) -> dict:
    """Results under every installed backend; this process' one computed here.

    Returns:
        ``{backend: result dict}``, or ``{backend: "error text"}`` for a
        backend whose run failed; backends not installed are left out.
    """
    start_backends()
    results = {}
    for backend, run in _RUNS.items():
        if run is None:
            if backend in BACKENDS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # *_zero cases
                    results[backend] = collect()
            continue
        code, out, err = run.result(timeout)
        lines = [line for line in out.splitlines() if line.startswith(MARKER)]
        if code == 0 and lines:
            results[backend] = json.loads(lines[-1][len(MARKER):])
        else:
            results[backend] = f"exit {code}:\n{err[-3000:]}"
    return results


def result_of(backend: str) -> dict:
    """The result under ``backend``: a skip when it is not installed, a failure if its run was."""
    require_backend(backend)
    result = run_all_backends()[backend]
    if isinstance(result, str):
        import pytest

        pytest.fail(f"the {backend} subprocess failed: {result}")
    return result


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


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def _grad_fn(backend):
    """grad(f, z): the gradient of scalar f at z, under this backend."""
    if backend == "jax":
        import jax

        return lambda f, z: jax.grad(f)(z)
    if backend == "torch":
        import torch

        def grad(f, z):
            t = torch.tensor(np.asarray(z), requires_grad=True)
            f(t).backward()
            return t.grad

        return grad
    import tensorflow as tf

    def grad(f, z):
        t = tf.Variable(z)
        with tf.GradientTape() as tape:
            value = f(t)
        return tape.gradient(value, t)

    return grad


def _evaluate(cases, inputs, grad):
    """Per-sample values, extreme-logit values and gradients of every case."""
    out = {}
    for name, (loss, mean_loss) in cases.items():
        pred = inputs["probs"] if name in PROB_CASES else inputs["logits"]
        out[name] = {t: loss(inputs[t], pred) for t in ("sparse", "onehot", "soft")}
        if name not in PROB_CASES:
            out[name]["extreme"] = loss(inputs["sparse"], inputs["extreme"])
            out[name]["grads"] = [
                grad(lambda z, y=inputs[t]: mean_loss(y, z), inputs["extreme"])
                for t in ("sparse", "soft")
            ]
    return out


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
    drw = callbacks.DeferredReweighting(COUNTS, start_epoch=DRW_START,
                                            beta=DRW_BETA)
    history = model.fit(x, y, batch_size=16, epochs=DRW_EPOCHS, verbose=0,
                        validation_data=(x, y), callbacks=[drw], shuffle=False)
    return {"before": before, "loss": history.history["loss"],
            "val_loss": history.history["val_loss"],
            "weights": drw.weights_.tolist()}


def collect() -> dict:
    """Everything the tests compare, under the current backend, as JSON types."""
    import keras
    from keras import ops

    from longtail import losses

    backend = keras.backend.backend()
    inputs = make_inputs()
    inputs["probs"] = _softmax(inputs["logits"])
    cases = {
        name: (losses.LOSSES[cls_name](reduction="none", **kwargs),
               losses.LOSSES[cls_name](**kwargs))
        for name, (cls_name, kwargs) in CASES.items()
    }
    evaluate = functools.partial(_evaluate, cases, grad=_grad_fn(backend))
    if backend == "jax":  # one compiled program instead of ~100 eager ones
        import jax

        evaluate = jax.jit(evaluate)
    out = evaluate({k: ops.convert_to_tensor(v) for k, v in inputs.items()})
    values, extreme, grads_finite = {}, {}, {}
    for name, got in out.items():
        values[name] = {t: ops.convert_to_numpy(got[t]).tolist()
                        for t in ("sparse", "onehot", "soft")}
        if name not in PROB_CASES:
            extreme[name] = ops.convert_to_numpy(got["extreme"]).tolist()
            grads_finite[name] = all(
                bool(np.all(np.isfinite(ops.convert_to_numpy(g)))) for g in got["grads"])
    x, y = make_drw_data()
    drw = _drw_run("LDAM", DRW_LOSS, x, y)
    return {"backend": backend, "values": values, "extreme": extreme,
            "grads_finite": grads_finite, "drw": drw}


def main():
    print(MARKER + json.dumps(collect()))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
