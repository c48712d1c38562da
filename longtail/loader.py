"""The batch loader: plan -> shard -> decode in parallel -> (x, y[, w]) batches.

:func:`make_loader` returns a :class:`Loader`. Per epoch it takes the global
index plan of its sampler (:mod:`longtail.sampling`), keeps this host's slice,
and decodes the batches in a Grain pipeline: ``MapDataset.range(num_batches)
.map(make_batch).to_iter_dataset(ReadOptions(num_threads, prefetch))``. Each
element is a whole batch, decoded by one thread straight into a preallocated
array (JPEG decode and the OpenCV resize release the GIL), with at most
``prefetch`` batches in flight, so memory stays flat however large the
dataset. A batch is a pure function of ``(seed, epoch, batch index)``, which
makes the output deterministic and resumable mid-epoch.

The :class:`Loader` is a Keras data adapter: ``model.fit(loader,
validation_data=val_loader)`` uses it as is on JAX, PyTorch and TensorFlow,
knows the number of batches (a progress bar with a total) and gets the plan of
a new epoch each time Keras starts one.
"""

from __future__ import annotations

import os
import threading
import warnings

import grain
import numpy as np

from longtail._keras import DataAdapter, get_torch_dataloader, refuse_fit_weights
from longtail.errors import ConfigError, DecodeError
from longtail.options import MAX_PIXELS, ImageOptions
from longtail.sampling import resolve_sampling
from longtail.sampling import shard as shard_plan

__all__ = ["Loader", "make_loader"]

LABEL_MODES = ("int", "categorical")
ON_ERROR = ("skip", "raise")
_REPLACEMENT_TRIES = 32  # same class first, then any class; then give up


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def _with_epoch_length(sampling, epoch_length):
    sampler = resolve_sampling(sampling)
    if epoch_length is None:
        return sampler
    if not hasattr(sampler, "epoch_length"):
        raise ConfigError(
            "epoch_length applies to the sampling plans balanced, sqrt, power and "
            f"progressive; got sampling={sampler.name!r}")
    config = sampler.get_config()
    config["epoch_length"] = _positive_int("epoch_length", epoch_length)
    return resolve_sampling(config)


def make_loader(dataset, batch_size: int, image_size=None, sampling="shuffle",
                class_weight=None, label_mode: str = "int", seed: int = 0,
                shard=(0, 1), num_workers: int | None = None,
                prefetch: int | None = None, on_error: str = "skip",
                color_mode: str = "rgb", resize: str = "stretch",
                dtype: str = "uint8", epoch_length: int | None = None,
                drop_remainder: bool | None = None,
                max_pixels: int | None = MAX_PIXELS,
                max_file_bytes: int | str | None = "default") -> "Loader":
    """Builds a batch loader over a :class:`longtail.Dataset`.

    Args:
        dataset: a :class:`longtail.Dataset` of files or feature rows.
        batch_size: samples per batch (per host when sharded).
        image_size: ``(height, width)``, an int, or ``"HxW"``; None keeps
            each image's size (then all images must share one; a cache's
            size for a cache). Ignored for features.
        sampling: a plan name (``"shuffle"``, ``"sequential"``,
            ``"balanced"``, ``"undersample"``, ``"sqrt"``, ``"power"``,
            ``"progressive"``), a dict such as ``{"name": "power", "q": 0.3}``
            or a :class:`longtail.sampling.Sampler`.
        class_weight: None, a strategy name (``"balanced"``, ``"inverse"``,
            ``"sqrt"``, ``"effective"``), a dict keyed by class index or
            name, or an array; see :func:`longtail.class_weights`. Multiplied
            with the dataset's per-row weights when it has them.
        label_mode: ``"int"`` (int32, shape ``(n,)``) or ``"categorical"``
            (float32 one-hot, shape ``(n, k)``).
        seed: seed of the plans and of replacement draws.
        shard: ``(index, count)``: this host's slice of the global plan.
        num_workers: decoding threads; default twice the number of CPU
            cores (each thread decodes a whole batch; the second thread per
            core covers file reads and the short stretches that hold the
            GIL); 0 decodes in the consuming thread.
        prefetch: batches decoded ahead, the bound on the loader's memory;
            default ``num_workers + 2``.
        on_error: ``"skip"`` (default: an unreadable file is counted, listed
            in ``loader.errors``, warned about once, and replaced by a sample
            of the same class drawn deterministically, so batches stay full)
            or ``"raise"`` (:class:`longtail.DecodeError` naming the file).
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
        resize: ``"stretch"``, ``"crop"`` or ``"pad"``; see
            :class:`longtail.options.ImageOptions`.
        dtype: ``"uint8"`` or ``"float32"`` images, values 0..255.
        epoch_length: samples per epoch for the class-share plans
            (``balanced``, ``sqrt``, ``power``, ``progressive``).
        drop_remainder: drop the last partial batch; default True for every
            plan except ``"sequential"`` (evaluation sees every sample).
        max_pixels: decompression-bomb guard, see ``ImageOptions``.
        max_file_bytes: files larger than this are unreadable without being
            read (default 256 MiB, or an enclosing ``file_size_limit``);
            None for no limit; see ``ImageOptions``.

    Returns:
        A :class:`Loader`; ``model.fit(loader, epochs=...)`` works as is.

    Example:
        >>> loader = make_loader(ds, 64, image_size=(64, 64),
        ...                      sampling="balanced")  # doctest: +SKIP
        >>> model.fit(loader, epochs=10)                # doctest: +SKIP
    """
    return Loader(**locals())  # every argument, by the names Loader takes


class Loader(DataAdapter):
    """Batches of ``(x, y)`` or ``(x, y, w)`` NumPy arrays, epoch after epoch.

    Build it with :func:`make_loader` or ``Dataset.loader(...)``.

    ``len(loader)`` is the number of batches per epoch. Iterating yields the
    batches from the current position: after a full pass the position is the
    start of the next epoch (a new plan), after a ``break`` the next unseen
    batch. :meth:`get_state` / :meth:`set_state` save and restore the
    position as a JSON-able dict; the remaining batches are identical.

    Keras: ``model.fit(loader, validation_data=val_loader, epochs=n)``.
    The loader is a Keras data adapter, so Keras' ``shuffle``,
    ``class_weight`` and ``sample_weight`` arguments do not apply; pass
    ``class_weight`` to the loader (``fit`` is refused one).

    Attributes:
        errors: the :class:`DecodeError` of each unreadable file (once each);
            :attr:`unreadable` holds their dataset indices.
        skipped: how many times a sample was replaced because it failed.
        sampler_: the resolved :class:`longtail.sampling.Sampler`.
        class_weight_: float32 weight per class, or None.
    """

    def __init__(self, dataset, *, batch_size, image_size=None, sampling="shuffle",
                 class_weight=None, label_mode="int", seed=0, shard=(0, 1),
                 num_workers=None, prefetch=None, on_error="skip", color_mode="rgb",
                 resize="stretch", dtype="uint8", epoch_length=None,
                 drop_remainder=None, max_pixels=MAX_PIXELS, max_file_bytes="default"):
        from longtail.weights import resolve_class_weight

        self.dataset = dataset
        self._batch_size = _positive_int("batch_size", batch_size)
        for name, value, accepted in (("label_mode", label_mode, LABEL_MODES),
                                      ("on_error", on_error, ON_ERROR)):
            if value not in accepted:
                raise ConfigError(
                    f"{name} must be one of {', '.join(accepted)}; got {value!r}")
        self.label_mode, self.on_error = label_mode, on_error
        self.seed = _positive_int("seed", seed, minimum=0)
        if not (isinstance(shard, (tuple, list)) and len(shard) == 2):
            raise ConfigError(f"shard must be an (index, count) pair; got {shard!r}")
        self.shard = (int(shard[0]), int(shard[1]))
        shard_plan(np.zeros(0, np.int64), *self.shard)  # validates the pair
        self.num_workers = min(32, 2 * (os.cpu_count() or 1)) if num_workers is None \
            else _positive_int("num_workers", num_workers, minimum=0)
        self.prefetch = self.num_workers + 2 if prefetch is None else \
            _positive_int("prefetch", prefetch, minimum=0)
        self.source = dataset.source
        self.options = self.source.resolve(ImageOptions(
            image_size=image_size, color_mode=color_mode, resize=resize, dtype=dtype,
            max_pixels=max_pixels, max_file_bytes=max_file_bytes))
        self.sampler_ = _with_epoch_length(sampling, epoch_length)
        self.drop_remainder = (self.sampler_.name != "sequential"
                               if drop_remainder is None else bool(drop_remainder))
        self._labels = np.asarray(dataset.labels)
        self._num_classes = len(dataset.class_names)
        self.class_weight_ = resolve_class_weight(class_weight, dataset)
        if self.class_weight_ is not None and len(self.class_weight_) != self._num_classes:
            raise ConfigError(
                f"`class_weight` must have one weight per class ({self._num_classes}: "
                f"{', '.join(dataset.class_names)}); got {len(self.class_weight_)} weights")
        self._row_weights = getattr(dataset, "weights", None)
        total = self.sampler_.length(self._labels)
        count = self.shard[1]
        self._local_length = -(-total // count)  # shard() pads to equal lengths
        full, part = divmod(self._local_length, self._batch_size)
        self._num_batches = full if self.drop_remainder or not part else full + 1
        if self._num_batches == 0:
            raise ConfigError(
                f"batch_size={self._batch_size} leaves no batch: an epoch has "
                f"{self._local_length} samples on this host and drop_remainder="
                f"{self.drop_remainder}; use a smaller batch_size or drop_remainder=False")
        self.errors: list[DecodeError] = []
        self.skipped = 0
        self._bad: set[int] = set()
        self._lock = threading.Lock()
        self._plan_cache: tuple[int, np.ndarray] | None = None
        self._members = None
        self._cursor = (0, 0)  # (epoch, next batch) of the next batch handed out
        self._epoch_start = (0, 0)
        self._drawn = 0

    # ------------------------------------------------------------ the plan
    def __len__(self) -> int:
        return self._num_batches

    @property
    def unreadable(self) -> np.ndarray:
        """Sorted dataset indices of the files that failed to decode so far."""
        with self._lock:
            return np.array(sorted(self._bad), dtype=np.int64)

    @property
    def epoch(self) -> int:
        """The epoch of the next batch."""
        return self._cursor[0]

    def plan(self, epoch: int | None = None) -> np.ndarray:
        """This host's sample indices for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        with self._lock:
            if self._plan_cache is None or self._plan_cache[0] != epoch:
                full = self.sampler_.plan(self._labels, seed=self.seed, epoch=epoch)
                self._plan_cache = (epoch, shard_plan(full, *self.shard))
            return self._plan_cache[1]

    def __repr__(self):
        return (f"Loader({len(self.dataset)} {self.source.kind}, {self._num_batches} batches "
                f"of {self._batch_size}, sampling={self.sampler_.name!r}, epoch={self.epoch})")

    # ------------------------------------------------------- batch assembly
    def __getitem__(self, index: int):
        """Batch ``index`` of the current epoch (decoded on the spot)."""
        if not -self._num_batches <= index < self._num_batches:
            raise IndexError(f"batch {index} out of range for {self._num_batches} batches")
        return self._make_batch(self.epoch, index % self._num_batches)

    def _make_batch(self, epoch: int, b: int):
        plan = self.plan(epoch)
        start = b * self._batch_size
        idx = plan[start:start + self._batch_size]
        rows = idx.copy()
        candidates = {}  # position in the batch -> its replacement draws

        def substitute(j, index, error):
            if self.on_error == "raise":
                raise error
            self._record(index, error)
            if j not in candidates:
                candidates[j] = self._candidates(index, error, epoch, start + j)
            rows[j] = next(candidates[j])
            return rows[j]

        x = self.source.read(idx, self.options, substitute=substitute)
        y = self._labels[rows].astype(np.int32)
        if self.label_mode == "categorical":
            onehot = np.zeros((len(y), self._num_classes), np.float32)
            onehot[np.arange(len(y)), y] = 1.0
            y = onehot
        w = None
        if self.class_weight_ is not None:
            w = self.class_weight_[self._labels[rows]]
        if self._row_weights is not None:
            rw = np.asarray(self._row_weights[rows], dtype=np.float32)
            w = rw if w is None else w * rw
        return (x, y) if w is None else (x, y, w.astype(np.float32))

    def _candidates(self, index: int, first: DecodeError, epoch: int, position: int):
        """Yields deterministic replacements for sample ``index``, which failed to read.

        Candidates depend only on (seed, epoch, global position), so the
        outcome is the same whatever the thread timing or resume point: first
        samples of the same class, then of any class; a DecodeError when
        they are used up.
        """
        members = self._class_members(self._labels[index])
        glob = position * self.shard[1] + self.shard[0]
        rng = np.random.default_rng([self.seed, epoch, glob, 0x5EED])
        for attempt in range(_REPLACEMENT_TRIES):
            pool = members if attempt < _REPLACEMENT_TRIES // 2 else None
            size = len(pool) if pool is not None else len(self._labels)
            pick = int(rng.integers(size))
            candidate = int(pool[pick]) if pool is not None else pick
            if candidate not in self._bad:
                yield candidate
        raise DecodeError(first.path, f"{first.reason}; and {_REPLACEMENT_TRIES} "
                          "replacement samples also failed to decode")

    def _class_members(self, c):
        with self._lock:
            if self._members is None:
                order = np.argsort(self._labels, kind="stable")
                ends = np.cumsum(np.bincount(self._labels, minlength=self._num_classes))
                self._members = (order, ends)
        order, ends = self._members
        return order[(ends[c - 1] if c else 0):ends[c]]

    def _record(self, index, error):
        with self._lock:
            self.skipped += 1
            new = index not in self._bad
            self._bad.add(index)
            if new:
                self.errors.append(error)
        if new:
            warnings.warn(f"skipping unreadable file {error}; a sample of the same class "
                          "is used instead (on_error='skip')", stacklevel=2)

    # ------------------------------------------------------------- iteration
    def _epoch_batches(self, epoch: int, start: int):
        """A Grain iterator over batches ``start..`` of ``epoch``."""
        ds = grain.MapDataset.range(start, self._num_batches).map(
            lambda b: self._make_batch(epoch, b))
        threads = self.num_workers if self.prefetch else 0
        if threads and self.source.is_image:
            from longtail.decode import opencv_on_calling_thread

            opencv_on_calling_thread()
        return iter(ds.to_iter_dataset(grain.ReadOptions(
            num_threads=threads, prefetch_buffer_size=self.prefetch if threads else 0)))

    def _batches(self, rolling: bool):
        epoch, b = self._cursor
        while True:
            iterator = self._epoch_batches(epoch, b)
            try:
                for batch in iterator:
                    b += 1
                    with self._lock:
                        self._cursor = (epoch + 1, 0) if b == self._num_batches else (epoch, b)
                        self._drawn += 1
                    yield batch
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
            if not rolling or self._num_batches == 0:
                return
            epoch, b = epoch + 1, 0

    def __iter__(self):
        """One pass: the batches from the current position to the epoch's end."""
        return self._batches(rolling=False)

    def get_state(self) -> dict:
        """The position as a JSON-able dict, for :meth:`set_state`."""
        epoch, batch = self._cursor
        return {"epoch": epoch, "batch": batch, "seed": self.seed,
                "num_batches": self._num_batches, "shard": list(self.shard),
                "sampling": self.sampler_.get_config()}

    def set_state(self, state: dict) -> None:
        """Moves to a position saved by :meth:`get_state` (of an equal loader)."""
        for key, mine in (("seed", self.seed), ("num_batches", self._num_batches),
                          ("shard", list(self.shard)),
                          ("sampling", self.sampler_.get_config())):
            if key in state and state[key] != mine:
                raise ConfigError(f"state was saved with {key}={state[key]!r}; "
                                  f"this loader has {key}={mine!r}")
        epoch = _positive_int("state['epoch']", state.get("epoch"), minimum=0)
        batch = _positive_int("state['batch']", state.get("batch", 0), minimum=0)
        if batch > self._num_batches:
            raise ConfigError(f"state['batch'] must be in 0..{self._num_batches}; got {batch}")
        with self._lock:
            self._cursor = (epoch + 1, 0) if batch == self._num_batches else (epoch, batch)
            self._epoch_start = self._cursor

    def set_epoch(self, epoch: int) -> None:
        """Moves to the start of ``epoch``."""
        self.set_state({"epoch": epoch, "batch": 0})

    # ------------------------------------------------- Keras data adapter
    def on_epoch_begin(self):
        refuse_fit_weights(self)
        with self._lock:
            self._epoch_start, self._drawn = self._cursor, 0

    def on_epoch_end(self):
        # Keras peeks at one batch to build the model, and may end an epoch
        # early; such a partial epoch is replayed from where it began.
        with self._lock:
            if 0 < self._drawn < self._num_batches:
                self._cursor = self._epoch_start
            self._drawn = 0

    def get_numpy_iterator(self):
        return self._batches(rolling=True)

    def get_jax_iterator(self):
        return self._batches(rolling=True)

    def get_torch_dataloader(self):
        return get_torch_dataloader(self._batches(rolling=True))

    def get_tf_dataset(self):
        import tensorflow as tf

        ds = tf.data.Dataset.from_generator(lambda: self._batches(rolling=True),
                                            output_signature=self._tf_signature(tf))
        options = tf.data.Options()  # our own threads prefetch; no TF prefetch
        options.autotune.enabled = False
        options.experimental_optimization.inject_prefetch = False
        options.threading.private_threadpool_size = 1
        return ds.with_options(options)

    def _tf_signature(self, tf):
        n = self._batch_size if self.drop_remainder else None
        x = tf.TensorSpec((n, *self.source.item_shape(self.options)),
                          self.source.item_dtype(self.options))
        y = (tf.TensorSpec((n,), tf.int32) if self.label_mode == "int"
             else tf.TensorSpec((n, self._num_classes), tf.float32))
        weighted = self.class_weight_ is not None or self._row_weights is not None
        return (x, y, tf.TensorSpec((n,), tf.float32)) if weighted else (x, y)

    @property
    def num_batches(self):
        return self._num_batches

    @property
    def batch_size(self):
        """Samples per batch (per host when sharded)."""
        return self._batch_size

    @property
    def has_partial_batch(self):
        return self._local_length % self._batch_size != 0 and not self.drop_remainder

    @property
    def partial_batch_size(self):
        return self._local_length % self._batch_size if self.has_partial_batch else None
