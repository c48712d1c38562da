"""``fit`` fed by longtail's Loader (a Keras DataAdapter) vs the same Loader as a PyDataset.

Run: ``python -m benchmarks.pydataset_adapter [--images 600] [--size 64]
[--batch-size 32] [--epochs 3] [--rounds 2] [--root DIR]``

The question (issue 13): may the loader become a ``keras.utils.PyDataset``,
so that Keras itself handles ``fit(class_weight=...)`` instead of longtail
walking the stack to refuse it? Only if it is as fast. Both candidates run in
this one process (``KERAS_BACKEND=jax``), interleaved ``--rounds`` times, on
the same JPEG tree and the same tiny model (so the data path dominates):

- ``adapter``: ``model.fit(loader)``, the Loader being its own DataAdapter;
- ``pydataset``: ``model.fit(LoaderPyDataset(loader))``, a PyDataset whose
  ``__getitem__(i)`` hands out the loader's batches (decoded ahead by its own
  threads, ``workers=1`` so Keras adds no thread pool of its own), through
  Keras' ``PyDatasetAdapter``.

Each fit runs one warm-up epoch then ``--epochs`` timed ones; the best epoch of
each candidate counts (other load on a shared machine only slows an epoch).
Prints images per second and the ratio pydataset / adapter.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402

import longtail as lt  # noqa: E402
from benchmarks.loader import make_tree  # noqa: E402


class LoaderPyDataset(keras.utils.PyDataset):
    """A longtail Loader seen as a PyDataset: batch ``i`` of the current epoch."""

    def __init__(self, loader):
        super().__init__(workers=1, use_multiprocessing=False)
        self.loader = loader
        self._iterator, self._next = None, None

    def __len__(self):
        return len(self.loader)

    def __getitem__(self, i):
        if self._iterator is None or i != self._next:  # random access: restart there
            self.loader.set_state({"epoch": self.loader.epoch, "batch": i})
            self._iterator = iter(self.loader)
        self._next = i + 1
        return next(self._iterator)

    def on_epoch_end(self):
        self._iterator = None


class _EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def _model(size: int, classes: int):
    model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.AveragePooling2D(4), keras.layers.Flatten(),
                              keras.layers.Dense(classes)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def best_rate(ds, candidate: str, size: int, batch_size: int, epochs: int) -> float:
    """Images per second of the best timed epoch of ``fit`` with ``candidate``."""
    loader = ds.loader(batch_size=batch_size, image_size=size, sampling="shuffle")
    data = loader if candidate == "adapter" else LoaderPyDataset(loader)
    clock = _EpochTimes()
    _model(size, ds.num_classes).fit(data, epochs=epochs + 1, verbose=0, callbacks=[clock])
    return len(loader) * batch_size / min(clock.times[1:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", default=None)
    args = parser.parse_args(argv)
    root = args.root or os.path.join(tempfile.gettempdir(), f"longtail-bench-pyds-{args.images}")
    if not os.path.isdir(root):
        make_tree(root, args.images, args.classes)
    ds = lt.Dataset.from_directory(root, progress=False)
    best = {"adapter": 0.0, "pydataset": 0.0}
    for _ in range(args.rounds):
        for candidate in best:
            rate = best_rate(ds, candidate, args.size, args.batch_size, args.epochs)
            best[candidate] = max(best[candidate], rate)
    print(f"{len(ds)} JPEGs -> {args.size}x{args.size}, batch {args.batch_size}, "
          f"{os.cpu_count()} cores, Keras {keras.__version__} ({keras.backend.backend()})")
    for candidate, rate in best.items():
        print(f"{candidate:>10}: {rate:8.1f} images/s (best epoch of {args.rounds} fits)")
    print(f"ratio pydataset / adapter: {best['pydataset'] / best['adapter']:.3f}")


if __name__ == "__main__":
    main()
