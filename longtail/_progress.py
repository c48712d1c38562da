"""Progress bars on standard error: shown where they help, silent elsewhere.

A bar is drawn only when it is asked for, when there is more than one step,
and when standard error is a terminal: written to a file or a pipe, tqdm's
carriage-return frames would fill the log.
"""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(iterable=None, *, total: int | None = None, desc: str, unit: str = "batch",
                 enabled: bool = True):
    """A tqdm bar with an ETA over ``iterable`` (or to ``update`` by hand).

    Args:
        iterable: What to iterate; None for a bar updated with ``bar.update(n)``.
        total: Number of steps; default ``len(iterable)`` when it has one.
        desc: Label before the bar.
        unit: Name of one step.
        enabled: False (``--quiet``) draws nothing.
    """
    from tqdm import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    stream = sys.stderr
    isatty = getattr(stream, "isatty", None)
    useful = enabled and (total is None or total > 1) and bool(isatty and isatty())
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, leave=False,
                mininterval=0.5, disable=not useful, dynamic_ncols=True)
