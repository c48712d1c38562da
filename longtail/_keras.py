"""The one place where longtail touches Keras' private modules (``keras.src``).

Keras does not export its data-adapter base class, so the loader reaches into
``keras.src``; every such import lives here, behind a version check, so a
Keras release that moves them breaks one module with a clear message instead
of several with an ImportError. ``pyproject.toml`` bounds Keras to the minors
in :data:`TESTED`; update both after running the suite on a new minor.
"""

from __future__ import annotations

import warnings

import keras

__all__ = ["DataAdapter", "TESTED", "get_torch_dataloader"]

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
