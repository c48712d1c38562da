"""Sampling plans: which sample indices an epoch visits, in which order.

A plan is a pure function of ``(labels, seed, epoch)``: it never reads data,
and every host that computes it gets the same int64 index array, so each host
can take its own slice with :func:`shard` and the union over hosts is the
single-host plan, with no communication (DESIGN.md, rule 1).

Per-epoch randomness comes from ``np.random.default_rng([seed, epoch])``.
Everything is vectorised NumPy: a 10 million sample plan takes a fraction of a
second.

Class-share plans (``balanced``, ``sqrt``, ``power``, ``progressive``) give
class ``c`` the share ``n_c**q / sum_j n_j**q`` of the epoch. The number of
draws per class is the expected count rounded by systematic sampling (so each
class gets ``floor`` or ``ceil`` of its expected count, with exactly the
expected mean); a class drawn more often than it has samples repeats all its
samples equally often and fills the rest without replacement; a class drawn
less often gets a fresh random subset each epoch. This is sampling with
replacement with the variance taken out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from longtail.errors import ConfigError

__all__ = [
    "Sampler",
    "Shuffle",
    "Sequential",
    "Power",
    "Balanced",
    "Sqrt",
    "Undersample",
    "Progressive",
    "SAMPLERS",
    "resolve_sampling",
    "shard",
    "class_shares",
]


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch)])


def _counts(labels: np.ndarray) -> np.ndarray:
    if labels.size and labels.min() < 0:
        raise ConfigError(
            f"labels must be non-negative class indices; got {int(labels.min())}"
        )
    return np.bincount(labels, minlength=0).astype(np.int64)


def class_shares(counts: np.ndarray, q: float) -> np.ndarray:
    """Class shares proportional to ``counts**q``; empty classes get 0.

    Args:
        counts: samples per class, shape ``(k,)``.
        q: exponent; 1 is instance-balanced, 0.5 square-root, 0 balanced.

    Returns:
        float64 array of shape ``(k,)`` summing to 1 (all zeros if empty).
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    shares = np.zeros_like(counts)
    shares[present] = counts[present] ** float(q)
    total = shares.sum()
    return shares / total if total > 0 else shares


def _quotas(shares: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Integer draws per class with mean ``length * shares`` (systematic)."""
    expected = shares * length
    base = np.floor(expected).astype(np.int64)
    short = int(length - base.sum())
    if short > 0:
        frac = expected - base
        # Systematic sampling: class c gets one extra draw with probability
        # frac[c], and exactly `short` classes get one.
        edges = np.cumsum(frac)
        edges *= short / edges[-1]  # exact total despite rounding
        points = rng.random() + np.arange(short)
        hit = np.searchsorted(edges, points, side="right")
        base += np.bincount(hit, minlength=len(base))[: len(base)]
    return base


_CHUNK = 1 << 18  # labels grouped per chunk: the temporaries stay a few MB, in cache


def _group_by_class(labels: np.ndarray, counts: np.ndarray, index_dtype) -> np.ndarray:
    """Sample indices ordered by class, then by index: a stable argsort of ``labels``.

    Built chunk by chunk into one ``index_dtype`` array (int32 below 2**31
    samples), so no int64 array of the dataset's length is ever made: each
    chunk is sorted on its own (a radix sort on uint16 keys) and scattered to
    its class's next free slots.
    """
    n = labels.size
    grouped = np.empty(n, index_dtype)
    next_free = np.cumsum(counts) - counts  # where each class's next member goes
    narrow = counts.size <= 1 << 16  # uint16 keys make NumPy's stable sort a radix sort
    for lo in range(0, n, _CHUNK):
        keys = labels[lo: lo + _CHUNK]
        if narrow:
            keys = keys.astype(np.uint16)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        local = np.bincount(keys, minlength=counts.size)
        # rank of each sorted element within its class in this chunk
        rank = np.arange(order.size) - (np.cumsum(local) - local)[sorted_keys]
        grouped[next_free[sorted_keys] + rank] = order + lo
        next_free += local
    return grouped


def _draw(labels: np.ndarray, counts: np.ndarray, quotas: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """Draw ``quotas[c]`` indices of class ``c`` for every class, shuffled.

    A class with ``quotas[c] >= counts[c]`` contributes every member
    ``quotas[c] // counts[c]`` times plus a random subset (without
    replacement) for the rest; a smaller quota is a random subset.
    The loop runs over classes, never over samples; the draws are written
    into one preallocated array.
    """
    n = labels.size
    index_dtype = np.int32 if n < 2**31 else np.int64
    grouped = _group_by_class(labels, counts, index_dtype)
    ends = np.cumsum(counts)
    out = np.empty(int(quotas.sum()), index_dtype)
    at = 0
    for c in np.flatnonzero(quotas):
        members = grouped[ends[c] - counts[c]: ends[c]]
        repeats, rest = divmod(int(quotas[c]), int(counts[c]))
        if repeats:
            out[at: at + repeats * members.size].reshape(repeats, members.size)[:] = members
            at += repeats * members.size
        if rest:
            out[at: at + rest] = members[rng.choice(members.size, rest, replace=False)]
            at += rest
    del grouped
    rng.shuffle(out)
    return out.astype(np.int64)


class Sampler:
    """Base class: turns ``(labels, seed, epoch)`` into an index plan.

    Subclasses implement :meth:`plan` and :meth:`length`; both must be pure
    functions of their arguments.
    """

    name = "sampler"

    def plan(self, labels, *, seed: int = 0, epoch: int = 0) -> np.ndarray:
        """Returns the int64 indices this epoch visits, in order."""
        raise NotImplementedError

    def length(self, labels) -> int:
        """Returns ``len(self.plan(labels, ...))`` without building the plan."""
        raise NotImplementedError

    def class_shares(self, counts, *, epoch: int = 0) -> np.ndarray:
        """The expected share of each class in the plan of ``epoch``.

        Args:
            counts: samples per class, shape ``(k,)``.
            epoch: the epoch (only schedules such as ``progressive`` use it).

        Returns:
            float64 array of shape ``(k,)`` summing to 1 (all zeros when
            every count is 0). The default: every sample once, so the
            shares are the class frequencies.
        """
        return class_shares(counts, 1.0)

    def get_config(self) -> dict[str, Any]:
        """Returns a JSON-able dict that :func:`resolve_sampling` accepts."""
        config = {"name": self.name}
        if dataclasses.is_dataclass(self):
            config.update(dataclasses.asdict(self))
        return config


@dataclasses.dataclass(frozen=True)
class Shuffle(Sampler):
    """Every sample exactly once per epoch, in a new order each epoch."""

    name = "shuffle"

    def plan(self, labels, *, seed=0, epoch=0):
        n = len(labels)
        out = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
        _rng(seed, epoch).shuffle(out)
        return out.astype(np.int64)

    def length(self, labels):
        return len(labels)


@dataclasses.dataclass(frozen=True)
class Sequential(Sampler):
    """Every sample once, in index order; for evaluation and prediction."""

    name = "sequential"

    def plan(self, labels, *, seed=0, epoch=0):
        return np.arange(len(labels), dtype=np.int64)

    def length(self, labels):
        return len(labels)


def _check_length(epoch_length):
    if epoch_length is not None and (
        isinstance(epoch_length, bool) or not isinstance(epoch_length, (int, np.integer))
        or epoch_length < 1
    ):
        raise ConfigError(
            f"epoch_length must be a positive int or None; got {epoch_length!r}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ClassShares(Sampler):
    """Base of the plans that give class ``c`` a share ``n_c**q``."""

    epoch_length: int | None = None

    def __post_init__(self):
        _check_length(self.epoch_length)

    def exponent(self, epoch: int) -> float:
        """The exponent ``q`` used at ``epoch``."""
        raise NotImplementedError

    def length(self, labels):
        return int(self.epoch_length or len(labels))

    def class_shares(self, counts, *, epoch=0):
        return class_shares(counts, self.exponent(epoch))

    def plan(self, labels, *, seed=0, epoch=0):
        labels = np.asarray(labels)
        counts = _counts(labels)
        length = self.length(labels)
        if labels.size == 0:
            return np.zeros(0, np.int64)
        rng = _rng(seed, epoch)
        quotas = _quotas(class_shares(counts, self.exponent(epoch)), length, rng)
        return _draw(labels, counts, quotas, rng)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Power(_ClassShares):
    """Class shares proportional to ``n_c**q``.

    Args:
        q: exponent; ``1`` is instance-balanced (every sample equally likely),
            ``0.5`` square-root, ``0`` class-balanced.
        epoch_length: samples per epoch; default the dataset size.
    """

    q: float = 0.5
    name = "power"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.q, bool) or not isinstance(self.q, (int, float, np.number)) \
                or not np.isfinite(self.q):
            raise ConfigError(f"q must be a finite number; got {self.q!r}")

    def exponent(self, epoch):
        return float(self.q)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Balanced(_ClassShares):
    """Every class an equal expected share; minority classes repeat.

    Args:
        epoch_length: samples per epoch; default the dataset size.
    """

    name = "balanced"

    def exponent(self, epoch):
        return 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sqrt(_ClassShares):
    """Class share proportional to ``sqrt(n_c)``.

    Args:
        epoch_length: samples per epoch; default the dataset size.
    """

    name = "sqrt"

    def exponent(self, epoch):
        return 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Progressive(_ClassShares):
    """From instance-balanced to class-balanced over ``epochs`` epochs.

    Epoch ``t`` uses ``q_t = max(0, 1 - t / epochs)`` (Kang et al., 2020,
    "Decoupling representation and classifier for long-tailed recognition",
    progressively-balanced sampling): epoch 0 is instance-balanced, epoch
    ``epochs`` and later are class-balanced.

    Args:
        epochs: length ``E`` of the schedule.
        epoch_length: samples per epoch; default the dataset size.
    """

    epochs: int = 10
    name = "progressive"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, np.integer)) \
                or self.epochs < 1:
            raise ConfigError(f"epochs must be a positive int; got {self.epochs!r}")

    def exponent(self, epoch):
        return max(0.0, 1.0 - int(epoch) / int(self.epochs))


@dataclasses.dataclass(frozen=True)
class Undersample(Sampler):
    """Every class cut to the smallest non-zero class count, fresh each epoch."""

    name = "undersample"

    def length(self, labels):
        counts = _counts(np.asarray(labels))
        present = counts[counts > 0]
        return int(present.min() * present.size) if present.size else 0

    def class_shares(self, counts, *, epoch=0):
        return class_shares(counts, 0.0)  # every present class the same number

    def plan(self, labels, *, seed=0, epoch=0):
        labels = np.asarray(labels)
        counts = _counts(labels)
        if labels.size == 0:
            return np.zeros(0, np.int64)
        quotas = np.where(counts > 0, counts[counts > 0].min(), 0)
        return _draw(labels, counts, quotas, _rng(seed, epoch))


# name -> factory taking keyword options. Adding a plan is one entry here.
SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "shuffle": Shuffle,
    "sequential": Sequential,
    "balanced": Balanced,
    "undersample": Undersample,
    "sqrt": Sqrt,
    "power": Power,
    "progressive": Progressive,
}


def resolve_sampling(sampling) -> Sampler:
    """Turns a sampling argument into a :class:`Sampler`.

    Args:
        sampling: one of
            - a name: ``"shuffle"``, ``"sequential"``, ``"balanced"``,
              ``"undersample"``, ``"sqrt"``, ``"power"`` (q=0.5 unless given),
              ``"progressive"`` (over 10 epochs unless given);
            - a dict ``{"name": NAME, **options}``, e.g.
              ``{"name": "power", "q": 0.3}`` or
              ``{"name": "balanced", "epoch_length": 10000}``;
            - a :class:`Sampler` instance, returned as is.

    Returns:
        A :class:`Sampler`.

    Raises:
        ConfigError: unknown name or bad options.

    Example:
        >>> resolve_sampling({"name": "power", "q": 0.0}).plan([0, 0, 1], seed=1).size
        3
    """
    if isinstance(sampling, Sampler):
        return sampling
    options: dict[str, Any] = {}
    if isinstance(sampling, dict):
        options = dict(sampling)
        name = options.pop("name", None)
    else:
        name = sampling
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ConfigError(
            f"sampling must be one of {', '.join(SAMPLERS)}, a dict with a 'name' "
            f"key, or a Sampler; got {sampling!r}"
        )
    try:
        return SAMPLERS[name](**options)
    except TypeError as e:
        raise ConfigError(f"sampling {name!r}: bad options {options!r} ({e})") from e


def shard(plan, index: int, count: int, remainder: str = "pad") -> np.ndarray:
    """This host's slice of a global plan.

    Host ``index`` takes ``plan[index::count]`` (interleaved), so local batch
    ``j`` of every host together make up global batch ``j`` of the
    single-host plan with ``count`` times the batch size. All hosts get the
    same length.

    Args:
        plan: the global index plan.
        index: this host, ``0 <= index < count``.
        count: number of hosts.
        remainder: what to do when ``len(plan)`` is not a multiple of
            ``count``: ``"pad"`` (default, like torch's DistributedSampler)
            repeats the first ``count - len(plan) % count`` entries so no
            sample is lost; ``"drop"`` drops the last ``len(plan) % count``
            entries so none repeats.

    Returns:
        int64 array of length ``ceil(len/count)`` (pad) or ``len//count``
        (drop).
    """
    plan = np.asarray(plan, dtype=np.int64)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ConfigError(f"shard count must be a positive int; got {count!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index < count:
        raise ConfigError(
            f"shard index must be an int in [0, {count - 1}]; got {index!r}"
        )
    if remainder not in ("pad", "drop"):
        raise ConfigError(f"remainder must be one of pad, drop; got {remainder!r}")
    extra = len(plan) % count
    if extra and remainder == "drop":
        plan = plan[: len(plan) - extra]
    elif extra and plan.size:
        plan = np.concatenate((plan, np.resize(plan, count - extra)))
    return plan[index::count]
