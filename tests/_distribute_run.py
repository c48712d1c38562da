"""Trains with ``lt.train(..., distribute=True)`` in its own process.

Used by tests/test_distribute.py; the device count must be set before JAX
starts, so every run is a fresh process:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
        python tests/_distribute_run.py devices DATA MODEL OUT_DIR
    XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/_distribute_run.py process DATA MODEL OUT_DIR PROCESS_ID PORT

``devices``: one process trains the same run twice, on one device and with
``distribute=True`` over its 4 devices (batch 8 both times), and saves the
final weights as ``OUT_DIR/one-device.npz`` and ``OUT_DIR/devices.npz``.

``process``: this process joins a 2-process job on ``localhost:PORT`` and
trains with a per-process batch of 4 (global batch 8); process 0 passes the
cluster as arguments, process 1 through KERAS_DISTRIBUTION_* variables. Saves
its final weights as ``OUT_DIR/process-<id>.npz``; process 0 writes the run
folder ``OUT_DIR/run``.

Each prints one JSON line: the placement, the history, and which training
sample each (epoch, position) of this process's loader decoded.
"""

import json
import os
import sys

import numpy as np

OPTIONS = dict(balance="resample", epochs=1, batch_size=8, image_size=8, augment="none",
               learning_rate=0.05, schedule="constant", weight_decay=0.0, val_split=0.25,
               num_workers=0, seed=3)


def _record_decodes():
    """Which file each training (non-sequential) batch position decoded."""
    from longtail.loader import Loader

    decoded = {}
    original = Loader._make_batch

    def make_batch(self, epoch, b):  # every batch this process reads, position by position
        if self.sampler_.name != "sequential":
            start = b * self._batch_size
            for j, index in enumerate(self.plan(epoch)[start:start + self._batch_size]):
                path = self.dataset.path(int(index))
                decoded[f"{epoch}:{start + j}"] = os.path.basename(
                    os.path.dirname(path)) + "/" + os.path.basename(path)
        return original(self, epoch, b)

    Loader._make_batch = make_batch
    return decoded


def main(mode, data, model, out, *rest):
    import keras

    import longtail as lt
    import longtail.distribute as dist

    decoded = _record_decodes()
    result = {"mode": mode}
    if mode == "devices":
        single = lt.train(data, model=model, verbose=0, **OPTIONS)
        np.savez(os.path.join(out, "one-device.npz"), *single.model.get_weights())
        result["one_device_history"] = single.history
        decoded.clear()
        multi = lt.train(data, model=model, verbose=0, distribute=True, **OPTIONS)
        np.savez(os.path.join(out, "devices.npz"), *multi.model.get_weights())
        result.update(history=multi.history, config=multi.config.get("distributed"),
                      distribution_after=str(keras.distribution.distribution()))
        try:
            dist.setup(batch_size=6)
        except lt.ConfigError as e:
            result["odd_batch_error"] = str(e)
    else:
        process_id, port = int(rest[0]), rest[1]
        if process_id == 0:
            cluster = {"coordinator": f"localhost:{port}", "num_processes": 2,
                       "process_id": 0}
        else:
            cluster = None
            os.environ.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}",
                              KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                              KERAS_DISTRIBUTION_PROCESS_ID=str(process_id))
        options = dict(OPTIONS, batch_size=4)
        run = lt.train(data, os.path.join(out, "run"), model=model, verbose=0,
                       distribute=True, cluster=cluster, **options)
        np.savez(os.path.join(out, f"process-{process_id}.npz"), *run.model.get_weights())
        result.update(history=run.history, config=run.config.get("distributed"),
                      run_dir=run.run_dir, process_id=process_id)
    result["decoded"] = decoded
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
