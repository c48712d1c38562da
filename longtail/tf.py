"""Class weights for ``tf.data`` pipelines, without leaving them.

For users who already load images with
``keras.utils.image_dataset_from_directory`` (or any ``(x, y)``
``tf.data.Dataset``) and want class-balanced training with two extra lines:

    >>> import longtail.tf                                     # doctest: +SKIP
    >>> train = keras.utils.image_dataset_from_directory(
    ...     "photos/", label_mode="categorical")               # doctest: +SKIP
    >>> train = longtail.tf.with_sample_weights(train, "balanced")  # doctest: +SKIP
    >>> model.fit(train, epochs=10)                            # doctest: +SKIP

:func:`class_weights_from` counts the classes from the dataset's
``file_paths`` and ``class_names`` attributes (the class is the sub-folder
each path sits in), so no image is decoded. :func:`with_sample_weights`
appends one weight per sample as a third element, computed inside the graph
(``tf.gather`` for integer labels, a dot product for one-hot or soft rows,
``y * w1 + (1 - y) * w0`` for binary labels), so it works in ``fit``,
``evaluate`` and under any ``tf.distribute`` strategy. See docs/tf-data.md.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import numpy as np

from longtail.errors import ConfigError
from longtail.weights import _check_finite, _from_mapping, class_weights

__all__ = ["class_weights_from", "with_sample_weights"]


def _class_names(ds, class_names):
    names = class_names if class_names is not None else getattr(ds, "class_names", None)
    return None if names is None else [str(n) for n in names]


def _class_of_paths(paths, names: list[str]) -> np.ndarray:
    """Class index of each path: the class folder right below the data folder.

    The data folder is the deepest common folder of all paths whose next
    component is a class name for every path (so a class tree with one class,
    or class folders with sub-folders, still resolve).
    """
    parts = [os.path.normpath(str(p)).split(os.sep) for p in paths]
    # the index of the component right below the common folder
    common = len(os.path.normpath(os.path.commonpath([str(p) for p in paths]))
                 .split(os.sep)) if len(parts) > 1 else len(parts[0]) - 2
    index = {name: i for i, name in enumerate(names)}
    for depth in range(min(common, min(len(p) for p in parts) - 2), -1, -1):
        found = [index.get(p[depth]) for p in parts]
        if None not in found:
            return np.asarray(found, dtype=np.int64)
    raise ConfigError(
        "cannot tell the class of each file: no folder level of `file_paths` holds "
        f"only the class names {', '.join(names)}; e.g. {paths[0]!r}")


def class_weights_from(ds, strategy="balanced", *, beta: float = 0.999,
                       class_names=None) -> dict[int, float]:
    """Class weights of a dataset from ``image_dataset_from_directory``.

    Counts the samples of each class from the dataset's ``file_paths`` (the
    class is the sub-folder under the data folder each file sits in) and
    ``class_names`` attributes; no image is read. With ``validation_split``
    and ``subset="training"``, only the training files are counted.

    Args:
        ds: the dataset Keras returned (``.map``, ``.prefetch`` and friends
            return a new dataset without these attributes: call this on the
            original one, or pass ``class_names``).
        strategy: ``"balanced"`` (``n / (k * n_c)``, scikit-learn's
            ``compute_class_weight``), ``"inverse"``, ``"sqrt"``,
            ``"effective"``, a dict or a callable; see
            :func:`longtail.class_weights`.
        beta: the ``"effective"`` strategy's beta.
        class_names: class names in label order, when ``ds`` has no
            ``class_names`` attribute.

    Returns:
        ``{class_index: weight}`` in ``class_names`` order, as
        :func:`longtail.class_weights` returns.

    Raises:
        ConfigError: ``ds`` has no ``file_paths`` or ``class_names``, or the
            paths are not in class folders.

    Example:
        >>> ds = keras.utils.image_dataset_from_directory("photos/")  # doctest: +SKIP
        >>> class_weights_from(ds, "balanced")                        # doctest: +SKIP
        {0: 0.6, 1: 3.0}
    """
    paths = getattr(ds, "file_paths", None)
    names = _class_names(ds, class_names)
    if paths is None or names is None:
        missing = "file_paths" if paths is None else "class_names"
        raise ConfigError(
            f"the dataset has no `{missing}` attribute: pass the dataset that "
            "keras.utils.image_dataset_from_directory(..., labels='inferred') returned, "
            "before .map/.batch/.prefetch (they drop it), or pass class weights "
            "(a dict or an array) instead of a strategy name")
    if len(paths) == 0:
        raise ConfigError("the dataset's `file_paths` is empty: no files to count")
    labels = _class_of_paths(paths, names)
    counts = np.bincount(labels, minlength=len(names)).astype(np.float64)
    return class_weights(counts=counts, strategy=strategy, beta=beta, class_names=names)


def _label_spec(ds):
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ConfigError(
            "with_sample_weights needs a dataset of (x, y) or (x, y, w) elements; "
            f"got element_spec {spec}")
    y = spec[1]
    if not hasattr(y, "dtype") or y.shape.rank is None:
        raise ConfigError(f"labels must be one tensor of known rank; got {y}")
    return y


def _weight_table(ds, class_weight, class_names, y_spec) -> np.ndarray:
    """Class weights as a float array in class order."""
    names = _class_names(ds, class_names)
    width = y_spec.shape[-1] if y_spec.shape.rank else None
    if isinstance(class_weight, str) or callable(class_weight):
        weights = class_weights_from(ds, class_weight, class_names=names)
        return np.array([weights[i] for i in range(len(weights))])
    if isinstance(class_weight, Mapping):
        k = len(names) if names is not None else (
            width if y_spec.dtype.is_floating and width and width > 1 else None)
        if k is None:
            keys = [key for key in class_weight if not isinstance(key, str)]
            if len(keys) != len(class_weight):
                raise ConfigError(
                    "class_weight has class-name keys but the dataset has no `class_names`; "
                    "pass class_names=[...] or use class indices as keys")
            k = max(int(key) for key in keys) + 1
        weights = _from_mapping(class_weight, k, names)
        return np.array([weights[i] for i in range(k)])
    if isinstance(class_weight, (list, tuple, np.ndarray)):
        table = np.asarray(class_weight, dtype=np.float64).reshape(-1)
        _check_finite(table, "class_weight")
        if names is not None and len(table) != len(names):
            raise ConfigError(f"class_weight has {len(table)} entries but the dataset has "
                              f"{len(names)} classes ({', '.join(names)})")
        return table
    raise ConfigError(
        "class_weight must be a strategy name (balanced, inverse, sqrt, effective), "
        f"a dict keyed by class index or name, an array or a callable; got {class_weight!r}")


def with_sample_weights(ds, class_weight="balanced", *, class_names=None):
    """Appends one weight per sample to an ``(x, y)`` ``tf.data.Dataset``.

    The weight is computed in graph mode from the label:

    - integer labels (``label_mode="int"``, shape ``(n,)`` or ``(n, 1)``):
      ``tf.gather(class_weights, y)``;
    - one-hot or soft rows (``label_mode="categorical"``, shape ``(n, k)``):
      the dot product of the row with the class weights;
    - binary float labels (``label_mode="binary"``, shape ``(n, 1)``, two
      classes): ``y * w[1] + (1 - y) * w[0]`` (label-smoothed values too).

    Works on batched and unbatched datasets. An existing third element
    (``(x, y, w)``) is multiplied by the class weight.

    Args:
        ds: a ``tf.data.Dataset`` of ``(x, y)`` (or ``(x, y, w)``).
        class_weight: a strategy name (``"balanced"``, ``"inverse"``,
            ``"sqrt"``, ``"effective"``; then the weights come from
            :func:`class_weights_from`, which needs ``ds.file_paths``), a dict
            keyed by class index or class name (a missing class gets 1.0 with
            a warning), an array of one weight per class, or a callable
            taking the class counts.
        class_names: class names in label order, when ``ds`` has no
            ``class_names`` attribute (for name keys and checks).

    Returns:
        A ``tf.data.Dataset`` of ``(x, y, w)`` with float32 ``w``; its
        ``class_names``, ``file_paths`` and ``class_weight`` (the float
        array used) attributes are set.

    Raises:
        ConfigError: bad ``class_weight``, or labels that do not match it.

    Example:
        >>> train = keras.utils.image_dataset_from_directory(
        ...     "photos/", label_mode="int")                       # doctest: +SKIP
        >>> train = with_sample_weights(train, {"cat": 4.0, "dog": 1.0})  # doctest: +SKIP
        >>> model.fit(train, epochs=5)                              # doctest: +SKIP
    """
    import tensorflow as tf

    y_spec = _label_spec(ds)
    table = _weight_table(ds, class_weight, class_names, y_spec)
    if table.size and np.allclose(table, table[0]):
        warnings.warn(f"all class weights are equal ({table[0]:g}): the weights will not "
                      "change what the model learns", stacklevel=2)
    k = len(table)
    rank = y_spec.shape.rank
    width = y_spec.shape[-1] if rank else None
    floating = y_spec.dtype.is_floating
    if floating and width is not None and width > 1:
        if width != k:
            raise ConfigError(f"labels are rows of {width} columns but class_weight has "
                              f"{k} classes")
        mode = "rows"
    elif floating:
        if k != 2:
            raise ConfigError(
                f"float labels of width 1 are read as binary labels (label_mode='binary'), "
                f"which need 2 class weights; got {k}. Use label_mode='int' or "
                "'categorical' for more classes")
        mode = "binary"
    elif y_spec.dtype.is_integer:
        mode = "index"
    else:
        raise ConfigError(f"labels must be integers or floats; got dtype {y_spec.dtype.name}")
    squeeze = rank is not None and rank >= 1 and width == 1

    def weigh(*element):
        x, y = element[0], element[1]
        if mode == "rows":
            w = tf.reduce_sum(tf.cast(y, tf.float32) * tf.constant(table, tf.float32), -1)
        else:
            v = tf.squeeze(y, -1) if squeeze else y
            if mode == "index":
                w = tf.gather(tf.constant(table, tf.float32), tf.cast(v, tf.int32))
            else:
                v = tf.cast(v, tf.float32)
                w = v * float(table[1]) + (1.0 - v) * float(table[0])
        if len(element) == 3:
            w = w * tf.cast(element[2], tf.float32)
        return x, y, w

    out = ds.map(weigh, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for attr in ("class_names", "file_paths"):
        if getattr(ds, attr, None) is not None:
            setattr(out, attr, getattr(ds, attr))
    if class_names is not None and getattr(out, "class_names", None) is None:
        out.class_names = list(class_names)
    out.class_weight = table.astype(np.float32)
    return out
