"""One validator for numbers, choices and per-class vectors.

Every message has the Keras shape "`name` must be ...; got ...", naming the
Python parameter; the command line maps parameter names to its flags in one
table (``cli._FLAGS``). Booleans are not numbers here: ``epochs=True`` is
refused.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from longtail.errors import ConfigError

__all__ = ["integer", "number", "one_of", "fraction", "class_vector", "counts", "priors"]


def _fail(name: str, expected: str, value) -> ConfigError:
    return ConfigError(f"`{name}` must be {expected}; got {value!r}")


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def integer(name: str, value, *, min=None, max=None, allow_none: bool = False):
    """``value`` as an int in ``[min, max]`` (None passes with ``allow_none``)."""
    if value is None and allow_none:
        return None
    expected = "an integer" + _range(min, max) + (" or None" if allow_none else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise _fail(name, expected, value)
    value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise _fail(name, expected, value)
    return value


def number(name: str, value, *, min=None, max=None, min_open: bool = False,
           allow_none: bool = False):
    """``value`` as a finite float in ``[min, max]`` (``(min, max]`` with ``min_open``)."""
    if value is None and allow_none:
        return None
    low = "" if min is None else (f" > {min}" if min_open else f" >= {min}")
    high = "" if max is None else f" <= {max}"
    expected = "a finite number" + low + (" and" if low and high else "") + high
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise _fail(name, expected, value)
    value = float(value)
    if not math.isfinite(value) or (min is not None and (value <= min if min_open
                                                          else value < min)) \
            or (max is not None and value > max):
        raise _fail(name, expected, value)
    return value


def one_of(name: str, value, choices):
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise _fail(name, "one of " + ", ".join(str(c) for c in choices), value)
    return value


def fraction(name: str, value, *, allow_zero: bool = True):
    """``value`` as a float in [0, 1) (``(0, 1)`` without ``allow_zero``)."""
    expected = "a fraction in " + ("[0, 1)" if allow_zero else "(0, 1)")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise _fail(name, expected, value)
    value = float(value)
    if not (0.0 <= value < 1.0) or (value == 0.0 and not allow_zero):
        raise _fail(name, expected, value)
    return value


def class_vector(name: str, values, num_classes: int) -> np.ndarray:
    """A 1-D float vector of finite values, one per class."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(name, f"{num_classes} numbers, one per class", values) from None
    if array.ndim != 1 or len(array) != num_classes:
        shown = array.shape if array.ndim != 1 else f"{len(array)} values"
        raise _fail(name, f"{num_classes} numbers, one per class", shown)
    if not np.isfinite(array).all():
        raise _fail(name, "finite numbers", values)
    return array


def counts(name: str, values, num_classes: int | None = None) -> np.ndarray:
    """Per-class sample counts: integers >= 0, not all zero."""
    array = class_vector(name, values, len(values) if num_classes is None else num_classes)
    if (array < 0).any() or (array != np.round(array)).any():
        raise _fail(name, "counts (integers >= 0)", values)
    if array.sum() == 0:
        raise _fail(name, "counts with at least one sample", values)
    return array.astype(np.int64)


def priors(name: str, values, num_classes: int | None = None) -> np.ndarray:
    """Class priors: values >= 0 with a positive sum, normalised to sum to 1."""
    array = class_vector(name, values, len(values) if num_classes is None else num_classes)
    if (array < 0).any() or array.sum() <= 0:
        raise _fail(name, "priors (values >= 0 with a positive sum)", values)
    return array / array.sum()
