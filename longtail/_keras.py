"""The one place where longtail touches Keras' private modules (``keras.src``).

Keras does not export its data-adapter base class, so the loader reaches into
``keras.src``; every such import lives here, behind a version check, so a
Keras release that moves them breaks one module with a clear message instead
of several with an ImportError. ``pyproject.toml`` bounds Keras to the minors
in :data:`TESTED`; update both after running the suite on a new minor.
"""

from __future__ import annotations

import sys
import warnings

import keras

from longtail.errors import ConfigError

__all__ = ["DataAdapter", "TESTED", "get_torch_dataloader", "refuse_fit_weights"]

TESTED = ((3, 11), (3, 15))  # first and last Keras minor the suite has run on


def _minor(version: str) -> tuple[int, int]:
    parts = (version.split("+")[0].split(".") + ["0"])[:2]
    return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)


def check_version(version: str = keras.__version__) -> bool:
    """Whether ``version`` is a Keras minor longtail was tested with; warns if not."""
    ok = TESTED[0] <= _minor(version) <= TESTED[1]
    if not ok:
        (lo_major, lo_minor), (hi_major, hi_minor) = TESTED
        warnings.warn(f"longtail was tested with Keras {lo_major}.{lo_minor} to "
                      f"{hi_major}.{hi_minor}; this is Keras {version}. The loader uses Keras' "
                      "private data-adapter API (longtail/_keras.py), which may have changed",
                      stacklevel=2)
    return ok


check_version()

try:
    from keras.src.trainers.data_adapters.data_adapter import DataAdapter
    from keras.src.trainers.data_adapters.data_adapter_utils import get_torch_dataloader
except ImportError as e:  # pragma: no cover - depends on the installed Keras
    raise ImportError(f"longtail needs Keras' data-adapter API (keras.src.trainers."
                      f"data_adapters), which Keras {keras.__version__} does not have; "
                      f"install keras>={TESTED[0][0]}.{TESTED[0][1]},"
                      f"<{TESTED[1][0]}.{TESTED[1][1] + 1}") from e


def refuse_fit_weights(adapter) -> None:
    """Raises ConfigError if ``fit``/``evaluate`` was given weights Keras would ignore.

    Keras returns a DataAdapter passed as ``x`` as is and drops ``class_weight``,
    ``sample_weight`` and ``y`` without a word (``get_data_adapter``). Nothing
    public tells the adapter what ``fit`` received, so this reads ``fit``'s
    arguments from the calling frames (a few levels up, where Keras' trainer
    calls ``on_epoch_begin``): a dependency on Keras internals, hence here.
    Making the loader a ``keras.utils.PyDataset`` (whose adapter applies
    ``class_weight``) was measured 3.6x slower in ``fit``, see
    ``benchmarks/pydataset_adapter.py`` and docs/tf-data.md.
    """
    frame = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            return
        local = frame.f_locals
        if frame.f_code.co_name in ("fit", "evaluate") and local.get("x") is adapter:
            for name in ("class_weight", "sample_weight", "y"):
                if local.get(name) is not None:
                    raise ConfigError(
                        f"{frame.f_code.co_name}() was given `{name}`, which Keras ignores "
                        f"for a longtail Loader; pass class_weight= to the loader instead")
            return
        frame = frame.f_back
