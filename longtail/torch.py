"""PyTorch adapters: longtail's sampling plans and decoding for a ``DataLoader``.

PyTorch has ``WeightedRandomSampler`` and ``DistributedSampler`` but nothing
that is both: weighted or class-balanced sampling with one disjoint shard per
rank. :class:`BalancedSampler` is that sampler. It draws the epoch's global
index plan from :mod:`longtail.sampling` (a pure function of labels, seed and
epoch, so every rank computes the same plan without communication) and yields
this rank's interleaved slice, as :func:`longtail.sampling.shard` cuts it:
the union over ranks is the single-process plan, so the class shares of the
global epoch are exactly those of the plan.

:class:`ImageDataset` serves decoded images of a :class:`longtail.Dataset`
(fast JPEG decode with DCT-domain downscaling, Pillow for other formats) as
CHW ``uint8`` tensors, ready for torchvision transforms and the default
collate.

Example:
    >>> import longtail as lt
    >>> from longtail.torch import BalancedSampler, ImageDataset
    >>> ds = lt.Dataset.from_directory("photos/")               # doctest: +SKIP
    >>> sampler = BalancedSampler(ds.labels, sampling="balanced",
    ...                           num_replicas=world, rank=rank)  # doctest: +SKIP
    >>> loader = torch.utils.data.DataLoader(
    ...     ImageDataset(ds, image_size=64), batch_size=64, sampler=sampler,
    ...     num_workers=8)                                      # doctest: +SKIP
    >>> for epoch in range(10):                                  # doctest: +SKIP
    ...     sampler.set_epoch(epoch)
    ...     for x, y in loader: ...
"""

from __future__ import annotations

import numpy as np
import torch
import torch.utils.data

from longtail.errors import ConfigError
from longtail.options import MAX_PIXELS, ImageOptions
from longtail.sampling import resolve_sampling, shard

__all__ = ["BalancedSampler", "ImageDataset"]


def _index(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"`{name}` must be an int >= {minimum}; got {value!r}")
    return int(value)


def _replicas(num_replicas, rank):
    """``(num_replicas, rank)``, filling a None from ``torch.distributed``."""
    dist = torch.distributed
    running = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if running else 1
    if rank is None:
        rank = dist.get_rank() if running else 0
    num_replicas = _index("num_replicas", num_replicas, 1)
    rank = _index("rank", rank, 0)
    if rank >= num_replicas:
        raise ConfigError(f"`rank` must be in 0..{num_replicas - 1}; got {rank}")
    return num_replicas, rank


class BalancedSampler(torch.utils.data.Sampler):
    """A (distributed) sampler over longtail's index plans.

    Each epoch, every rank computes the same global plan
    ``resolve_sampling(sampling).plan(labels, seed=seed, epoch=epoch)`` and
    yields ``plan[rank::num_replicas]``. Ranks are disjoint slices of one
    plan, so a class-balanced plan stays balanced over the whole job; with
    one replica it is the plan itself.

    Call :meth:`set_epoch` at the start of every epoch (as with
    ``DistributedSampler``) so that all ranks draw the same new plan. Without
    it, each new iteration moves to the next epoch by itself (0, 1, 2, ...),
    so a single-process loop still gets a fresh plan every epoch.

    Args:
        labels: int class indices, one per sample (``Dataset.labels``), or a
            :class:`longtail.Dataset`.
        sampling: ``"balanced"`` (default: every class an equal expected
            share, minority classes repeated), ``"sqrt"``, ``"power"``,
            ``"progressive"``, ``"undersample"``, ``"shuffle"``,
            ``"sequential"``, a dict such as ``{"name": "power", "q": 0.3}``,
            or a :class:`longtail.sampling.Sampler`.
        num_replicas: number of ranks; default the ``torch.distributed``
            world size when a process group is running, else 1.
        rank: this rank; default from ``torch.distributed``, else 0.
        seed: seed of the plans; must be the same on every rank.
        epoch_length: samples per epoch over all ranks, for the class-share
            plans (``balanced``, ``sqrt``, ``power``, ``progressive``);
            default the dataset size.
        remainder: ``"pad"`` (default, like ``DistributedSampler``: the plan
            is padded by repeating its first entries so every rank gets the
            same count) or ``"drop"`` (the last ``len % num_replicas`` entries
            are dropped).

    Attributes:
        sampler_: the resolved :class:`longtail.sampling.Sampler`.
        epoch: the epoch of the next iteration.
    """

    def __init__(self, labels, sampling="balanced", num_replicas=None, rank=None, seed=0,
                 epoch_length=None, remainder="pad"):
        labels = getattr(labels, "labels", labels)
        self.labels = np.asarray(labels)
        if self.labels.ndim != 1 or (self.labels.size
                                     and not np.issubdtype(self.labels.dtype, np.integer)):
            raise ConfigError("`labels` must be a 1-D array of int class indices; got "
                              f"shape {self.labels.shape} and dtype {self.labels.dtype}")
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.seed = _index("seed", seed, 0)
        if remainder not in ("pad", "drop"):
            raise ConfigError(f"`remainder` must be one of pad, drop; got {remainder!r}")
        self.remainder = remainder
        sampler = resolve_sampling(sampling)
        if epoch_length is not None:
            if not hasattr(sampler, "epoch_length"):
                raise ConfigError(
                    "`epoch_length` applies to the sampling plans balanced, sqrt, power and "
                    f"progressive; got sampling={sampler.name!r}")
            sampler = resolve_sampling({**sampler.get_config(),
                                        "epoch_length": _index("epoch_length", epoch_length, 1)})
        self.sampler_ = sampler
        self.epoch = 0
        self._explicit = False

    def set_epoch(self, epoch: int) -> None:
        """Uses the plan of ``epoch`` for the next iteration (call on every rank)."""
        self.epoch = _index("epoch", epoch, 0)
        self._explicit = True

    def plan(self, epoch: int | None = None) -> np.ndarray:
        """This rank's indices for ``epoch`` (default: the next iteration's)."""
        epoch = self.epoch if epoch is None else _index("epoch", epoch, 0)
        full = self.sampler_.plan(self.labels, seed=self.seed, epoch=epoch)
        return shard(full, self.rank, self.num_replicas, self.remainder)

    def __iter__(self):
        local = self.plan()
        if not self._explicit:
            self.epoch += 1
        return iter(local.tolist())

    def __len__(self) -> int:
        total = self.sampler_.length(self.labels)
        if self.remainder == "drop":
            return total // self.num_replicas
        return -(-total // self.num_replicas)

    def __repr__(self):
        return (f"BalancedSampler({len(self.labels)} samples, sampling={self.sampler_.name!r}, "
                f"rank {self.rank} of {self.num_replicas}, epoch={self.epoch})")


class ImageDataset(torch.utils.data.Dataset):
    """Decoded samples of a :class:`longtail.Dataset`, for a ``DataLoader``.

    ``dataset[i]`` is ``(image, label)``: ``image`` a ``torch.uint8`` tensor
    of shape ``(channels, height, width)`` (CHW, as torchvision expects;
    values 0..255, scale them in the model or a transform), ``label`` a
    Python int. For a dataset of feature rows it is a float32 tensor of
    shape ``(features,)``. Samples are read through the dataset's source:
    files are decoded, a cache's rows are read from the cache (at its size).
    Reading runs in the ``DataLoader`` workers; the object holds only the
    index (paths and labels), so it is cheap to send to worker processes.

    Args:
        dataset: a :class:`longtail.Dataset`.
        image_size: ``(height, width)``, an int or ``"HxW"``; None keeps each
            image's size (then batch with ``batch_size=1`` or a custom
            collate); a cache's own size for a cache.
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
        resize: ``"stretch"``, ``"crop"`` or ``"pad"``; see
            :class:`longtail.options.ImageOptions`.
        transform: callable applied to the image tensor (for example
            torchvision transforms), or None.
        target_transform: callable applied to the label, or None.
        max_pixels: decompression-bomb guard, see ``ImageOptions``.
        max_file_bytes: file-size guard, see ``ImageOptions``.

    Raises:
        longtail.DecodeError: from ``__getitem__``, naming a file that
            cannot be decoded.
    """

    def __init__(self, dataset, image_size=None, color_mode="rgb", resize="stretch",
                 transform=None, target_transform=None, max_pixels=MAX_PIXELS,
                 max_file_bytes="default"):
        if not hasattr(dataset, "labels") or not hasattr(dataset, "source"):
            raise ConfigError(
                f"`dataset` must be a longtail.Dataset; got {type(dataset).__name__}")
        self.dataset = dataset
        self.source = dataset.source
        self.options = self.source.resolve(ImageOptions(
            image_size=image_size, color_mode=color_mode, resize=resize, dtype="uint8",
            max_pixels=max_pixels, max_file_bytes=max_file_bytes))
        self.transform = transform
        self.target_transform = target_transform
        self.class_names = list(dataset.class_names)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        index %= len(self)
        label = int(self.dataset.labels[index])
        x = self.source.read(np.array([index], np.int64), self.options)[0]
        if self.source.is_image:  # HWC -> CHW, as torchvision expects
            x = x.transpose(2, 0, 1)
        x = torch.from_numpy(np.ascontiguousarray(x))
        if self.transform is not None:
            x = self.transform(x)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return x, label

    def __repr__(self):
        return f"ImageDataset({len(self)} {self.source.describe()}, {self.options})"
