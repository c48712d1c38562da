"""Preprocess once: a decoded, fixed-size shard store that streams at memory speed.

``longtail cache DATA --out CACHE --image-size 64`` (or :func:`build_cache`)
decodes every image of DATA once, at the target size, into shards; the cache
folder is then a DATA form of its own: ``Dataset.open(CACHE)`` gives a
Dataset of kind ``"cache"`` whose splits, subsets and sampling plans work as
any other, and whose loader reads rows from the shards instead of decoding
the source files. See :mod:`longtail.cache.layout` for the folder format.

Modules: ``layout`` (the folder format), ``build`` (decode into shards,
resume, parts), ``combine`` (shard records -> manifest), ``check`` (changed
sources). Opening and reading a cache is a Source:
:mod:`longtail.sources.cache` (``open_cache`` and ``Cache`` are re-exported
here). Names load on first use, so ``import longtail`` stays light.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "build_cache": "build", "combine": "combine", "parse_shard": "build",
    "BuildResult": "build", "open_cache": "reader", "Cache": "reader", "load_split": "reader",
    "is_cache_manifest": "reader", "check_cache": "check", "CheckResult": "check",
    "CacheOptions": "layout", "is_cache": "layout",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f"longtail.cache.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'longtail.cache' has no attribute {name!r}")


def __dir__():
    return __all__
