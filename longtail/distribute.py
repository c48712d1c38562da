"""Data-parallel training over several devices and hosts (JAX backend).

``longtail train DATA --out RUN --distribute`` (or ``lt.train(...,
distribute=True)``) trains one model replicated on every device of every
process, through ``keras.distribution.DataParallel``:

- **One host, several devices**: all local devices; nothing else to set.
- **Several hosts** (processes): every process runs the same command with
  the coordinator's address, the number of processes and its own id, from
  ``--coordinator HOST:PORT --num-processes N --process-id I`` or the
  environment (``KERAS_DISTRIBUTION_JOB_ADDRESSES``,
  ``KERAS_DISTRIBUTION_NUM_PROCESSES``, ``KERAS_DISTRIBUTION_PROCESS_ID``,
  or JAX's ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``). With only a coordinator given, JAX detects the rest
  on Slurm, Open MPI and Kubernetes (JobSet/indexed Job) clusters.
  :func:`setup` calls ``keras.distribution.initialize`` (which calls
  ``jax.distributed.initialize``).

The data are never decoded twice: every process computes the same global
index plan (a pure function of labels, seed and epoch) and its loader keeps
only its interleaved slice, ``shard=(process_id, num_processes)``
(``auto_shard_dataset=False``: Keras' own auto-sharding would decode every
sample on every host and keep 1/N). Local batch ``j`` of all processes
together is global batch ``j`` of the single-process plan, so a balanced plan
stays balanced over the job. ``batch_size`` is per process; the global batch
is ``batch_size * num_processes``, split evenly over all devices.

Validation runs on each process on an undistributed copy of the model with
the current weights (predictions of a sharded model cannot be gathered to
one host as NumPy, and a last partial batch cannot be split over devices);
every process computes the same numbers. See docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings

import keras

from longtail.errors import ConfigError, DataError

__all__ = ["Cluster", "Placement", "setup", "undistributed"]

# (what, flag, environment variables in the order they are read)
_ENV = {
    "coordinator": ("--coordinator", ("KERAS_DISTRIBUTION_JOB_ADDRESSES",
                                      "JAX_COORDINATOR_ADDRESS")),
    "num_processes": ("--num-processes", ("KERAS_DISTRIBUTION_NUM_PROCESSES",
                                          "JAX_NUM_PROCESSES")),
    "process_id": ("--process-id", ("KERAS_DISTRIBUTION_PROCESS_ID", "JAX_PROCESS_ID")),
}


def _int(name, value, minimum):
    flag, variables = _ENV[name]
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or number < minimum \
            or (isinstance(value, float) and value != number):
        raise ConfigError(f"{flag} (or {' / '.join(variables)}) must be an integer "
                          f">= {minimum}; got {value!r}")
    return number


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process sits in a multi-process job.

    Args:
        coordinator: ``host:port`` of process 0 (Keras also accepts the
            comma-separated addresses of all processes, first one the
            coordinator), or None.
        num_processes: number of processes, or None.
        process_id: this process, ``0 <= process_id < num_processes``, or None.

    A None field is read from the environment by :meth:`resolve`, and left
    to JAX's cluster detection (Slurm, Open MPI, Kubernetes) when unset there.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def __post_init__(self):
        if self.coordinator is not None and (not isinstance(self.coordinator, str)
                                             or not self.coordinator.strip()):
            raise ConfigError(f"--coordinator must be HOST:PORT; got {self.coordinator!r}")
        if self.num_processes is not None:
            object.__setattr__(self, "num_processes",
                               _int("num_processes", self.num_processes, 1))
        if self.process_id is not None:
            object.__setattr__(self, "process_id", _int("process_id", self.process_id, 0))
        if None not in (self.num_processes, self.process_id) \
                and self.process_id >= self.num_processes:
            raise ConfigError(f"--process-id must be in 0..{self.num_processes - 1} "
                              f"(--num-processes {self.num_processes}); got {self.process_id}")

    @classmethod
    def resolve(cls, cluster=None, environ=None) -> "Cluster":
        """Fills the unset fields of ``cluster`` (a Cluster, dict or None) from ``environ``."""
        environ = os.environ if environ is None else environ
        if cluster is None:
            cluster = {}
        elif isinstance(cluster, Cluster):
            cluster = dataclasses.asdict(cluster)
        elif not isinstance(cluster, dict):
            raise ConfigError("`cluster` must be a longtail.distribute.Cluster, a dict with "
                              f"coordinator, num_processes, process_id, or None; got {cluster!r}")
        unknown = set(cluster) - set(_ENV)
        if unknown:
            raise ConfigError(f"`cluster` keys must be among {', '.join(_ENV)}; "
                              f"got {', '.join(sorted(unknown))}")
        values = {}
        for name, (_, variables) in _ENV.items():
            value = cluster.get(name)
            for variable in variables:
                if value is None and environ.get(variable, "").strip():
                    value = environ[variable].strip()
            values[name] = value
        return cls(**values)

    @property
    def multi_process(self) -> bool:
        """True when this describes more than one process."""
        return self.coordinator is not None or (self.num_processes or 1) > 1


@dataclasses.dataclass(frozen=True)
class Placement:
    """What :func:`setup` set up: this process's place and the distribution.

    Attributes:
        process_id: this process.
        num_processes: processes in the job.
        local_devices: devices of this process.
        devices: devices of the whole job.
        distribution: the ``keras.distribution.DataParallel`` in effect.
    """

    process_id: int
    num_processes: int
    local_devices: int
    devices: int
    distribution: object = dataclasses.field(repr=False)
    previous: object = dataclasses.field(default=None, repr=False)

    @property
    def shard(self) -> tuple[int, int]:
        """``(process_id, num_processes)``: the loader's ``shard`` argument."""
        return self.process_id, self.num_processes

    def global_batch(self, batch_size: int) -> int:
        """The global batch of a per-process ``batch_size``."""
        return batch_size * self.num_processes

    def validation(self, callbacks, validation_data=None):
        """One callback that runs ``callbacks`` on an undistributed copy of the model.

        At the end of every epoch it copies the current weights into a
        local model, evaluates ``validation_data`` on it when given (adding
        ``val_loss`` and the compiled metrics to the logs, as ``fit`` does
        with ``validation_data``) and then calls each callback's
        ``on_epoch_end`` with the copy as its model.
        """
        return _LocalValidation(list(callbacks), validation_data)

    def on_one_device(self, callback):
        """Runs ``callback``'s epoch and train hooks with the distribution off.

        For a callback that saves the model on one process only: saving
        under a multi-process distribution creates variables, which is a
        collective every process must join (the others would wait forever).
        """
        return _Undistributed(callback)

    def check_same(self, what: str, *arrays) -> None:
        """Raises DataError unless every process passes the same ``arrays``.

        Args:
            what: names the data in the message, e.g. ``"the training labels"``.
            *arrays: NumPy arrays (compared through a CRC-32 and their sizes).
        """
        if self.num_processes == 1:
            return
        import zlib

        import numpy as np
        from jax.experimental import multihost_utils

        digest = np.array([len(arrays)] + [int(np.asarray(a).size) for a in arrays]
                          + [zlib.crc32(np.ascontiguousarray(a).tobytes()) for a in arrays],
                          dtype=np.int64)
        try:
            multihost_utils.assert_equal(digest, what)
        except AssertionError as e:
            raise DataError(
                f"process {self.process_id} of {self.num_processes} sees different {what} "
                "than the others: every process must open the same DATA (the same files) "
                "with the same options") from e

    def barrier(self, name: str) -> None:
        """Waits until every process reaches the barrier ``name``."""
        if self.num_processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def local_model(self, model):
        """Ends the distributed phase: restores the previous distribution and
        returns an undistributed copy of ``model`` with its weights."""
        copy = _local_copy(model, compile_like=True)
        keras.distribution.set_distribution(self.previous)
        return copy


@contextlib.contextmanager
def undistributed():
    """Within the block, Keras places new variables and computations on one device."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def _local_copy(model, compile_like: bool, into=None):
    """An undistributed copy of ``model`` (or ``into``, refreshed) with its weights."""
    weights = model.get_weights()  # replicated arrays: every process has them whole
    with undistributed():
        if into is None:
            into = keras.models.clone_model(model)
            if compile_like and getattr(model, "compiled", False):
                try:
                    into.compile_from_config(model.get_compile_config())
                except Exception as e:  # an unserializable loss or metric: predict only
                    warnings.warn(f"validation on the local copy reports no val_loss: the "
                                  f"compiled loss or metrics cannot be copied ({e})",
                                  stacklevel=2)
        into.set_weights(weights)
    return into


def _check_backend():
    if keras.backend.backend() != "jax":
        raise ConfigError(
            "--distribute needs the JAX backend (KERAS_BACKEND=jax); the Keras backend is "
            f"{keras.backend.backend()!r}. With PyTorch, use longtail.torch.BalancedSampler "
            "with DistributedDataParallel")


def _initialize(cluster: Cluster):
    import jax

    if jax.distributed.is_initialized():  # the caller did it already
        return
    try:
        keras.distribution.initialize(job_addresses=cluster.coordinator,
                                      num_processes=cluster.num_processes,
                                      process_id=cluster.process_id)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ConfigError(
            f"cannot join the multi-process job (coordinator {cluster.coordinator!r}, "
            f"{cluster.num_processes} processes, process id {cluster.process_id}): "
            f"{str(e).splitlines()[0]}. Pass --coordinator HOST:PORT, --num-processes N "
            "and --process-id I (or their environment variables) on every process, "
            "before anything else runs JAX") from e


def setup(cluster=None, *, batch_size: int | None = None) -> Placement:
    """Sets the global Keras distribution to data parallel over every device.

    Joins the multi-process job first when ``cluster`` (or the environment)
    describes one. Call it before building the model (variables are placed
    when they are created).

    Args:
        cluster: a :class:`Cluster`, a dict with ``coordinator``,
            ``num_processes``, ``process_id``, or None; unset fields come
            from the environment (see the module docstring).
        batch_size: the per-process batch size, checked to split evenly over
            this process's devices.

    Returns:
        A :class:`Placement`; pass ``placement.shard`` to the loader.

    Raises:
        ConfigError: not the JAX backend, a bad cluster description, a job
            that cannot be joined, or a batch size the devices cannot split.

    Example:
        >>> placement = setup(batch_size=64)                  # doctest: +SKIP
        >>> loader = train.loader(batch_size=64, shard=placement.shard,
        ...                       sampling="balanced")         # doctest: +SKIP
    """
    _check_backend()
    import jax
    cluster = Cluster.resolve(cluster)
    if cluster.multi_process:
        _initialize(cluster)
    local, total = jax.local_device_count(), jax.device_count()
    if batch_size is not None and batch_size % local:
        raise ConfigError(
            f"--batch-size (per process) must be a multiple of this process's {local} "
            f"devices so each gets an equal part; got {batch_size}. Try "
            f"{max(local, batch_size // local * local)}")
    previous = keras.distribution.distribution()
    distribution = keras.distribution.DataParallel(auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    return Placement(process_id=jax.process_index(), num_processes=jax.process_count(),
                     local_devices=local, devices=total, distribution=distribution,
                     previous=previous)


class _Undistributed(keras.callbacks.Callback):
    """See :meth:`Placement.on_one_device`."""

    def __init__(self, callback):
        super().__init__()
        self.callback = callback

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def _call(self, hook, *args):
        with undistributed():
            getattr(self.callback, hook)(*args)

    def on_train_begin(self, logs=None):
        self._call("on_train_begin", logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, logs)


class _LocalValidation(keras.callbacks.Callback):
    """See :meth:`Placement.validation`."""

    def __init__(self, callbacks, validation_data):
        super().__init__()
        self.callbacks = callbacks
        self.validation_data = validation_data
        self._copy = None

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        self._copy = _local_copy(self.model, compile_like=True, into=self._copy)
        with undistributed():
            if self.validation_data is not None and getattr(self._copy, "compiled", False):
                results = self._copy.evaluate(self.validation_data, verbose=0,
                                              return_dict=True)
                logs.update({f"val_{k}": float(v) for k, v in results.items()})
            for callback in self.callbacks:
                callback.set_model(self._copy)
                callback.on_epoch_end(epoch, logs)
