"""``longtail predict``: class predictions for files, folders or a manifest.

Inputs are decoded in parallel threads with the loader's decoder and fed to
the model batch by batch, so memory stays bounded whatever the number of
inputs. Every input gets one row; an unreadable one gets an empty prediction
and its error in the ``error`` column, and is listed at the end, never fatal.
"""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np

from longtail._io import csv_cell
from longtail.errors import DataError, DecodeError

__all__ = ["collect_inputs", "predict_files", "predict_rows"]


def collect_inputs(inputs: Sequence[str], extensions=None,
                   allow_outside_root: bool = False,
                   follow_symlinks: bool = False) -> list[str]:
    """Expands files, folders (searched recursively) and manifests into paths.

    Args:
        inputs: Image files, folders, or ``.csv``/``.parquet`` manifests
            with a ``path`` column.
        extensions: Accepted image extensions for folders (default as
            :meth:`longtail.Dataset.from_directory`).
        allow_outside_root: Accept a manifest whose paths lead outside its
            folder (as :meth:`longtail.Dataset.from_table`).
        follow_symlinks: Follow symbolic links inside folders (skipped with a
            count otherwise), as :meth:`longtail.Dataset.from_directory`.
    """
    from longtail.dataset import Dataset
    from longtail.sources.directory import DEFAULT_EXTENSIONS, list_files

    exts = {e.lower().lstrip(".") for e in (extensions or DEFAULT_EXTENSIONS)}
    paths: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            paths += list_files(item, extensions=exts, follow_symlinks=follow_symlinks)
        elif item.lower().endswith((".csv", ".tsv", ".parquet", ".pq")):
            table = Dataset.from_table(item, allow_outside_root=allow_outside_root)
            if table.relative_paths is None:
                raise DataError(f"{item}: a manifest for predict needs a path column")
            paths += table.paths.tolist()
        elif os.path.exists(item):
            paths.append(os.path.abspath(item))
        else:
            raise DataError(f"{item}: no such file or folder")
    if not paths:
        raise DataError(f"no image files found in {', '.join(map(str, inputs))}")
    return paths


def _batches(paths, options, batch_size, workers) -> Iterator[tuple[list, np.ndarray, list]]:
    """Yields (paths, decoded stack or None, errors) per batch, decoding ahead."""
    from longtail.decode import opencv_on_calling_thread, read_image

    def load(path):
        try:
            return read_image(path, options), None
        except DecodeError as e:
            return None, e.reason

    opencv_on_calling_thread()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        pending = [pool.map(load, chunk) for chunk in chunks[:2]]
        for n, chunk in enumerate(chunks):
            results = list(pending.pop(0))
            if n + 2 < len(chunks):
                pending.append(pool.map(load, chunks[n + 2]))
            images = [im for im, _ in results if im is not None]
            yield chunk, (np.stack(images) if images else None), [err for _, err in results]


def predict_files(model, paths: Sequence[str], *, class_names: Sequence[str],
                  image_size, color_mode="rgb", priors=None, posthoc_tau=None, top_k=1,
                  batch_size=64, workers=None, cost=None,
                  progress: bool = False) -> tuple[str, list[tuple[str, str]]]:
    """Predicts every path; returns the CSV text and the unreadable inputs.

    Columns: ``path, predicted, probability`` then ``top{i}, top{i}_probability``
    for i in 2..top_k, then ``error`` (empty when the input was read). With
    ``cost`` (a ``(k, k)`` matrix, row the true class, column the decision),
    ``predicted`` is the Bayes decision (least expected cost, see
    :func:`longtail.adapt.bayes_decision`) and an ``expected_cost`` column
    comes before ``error``; the ``top{i}`` columns stay the most probable
    other classes. ``progress`` shows a bar with an ETA on standard error (on a
    terminal, for more than one batch).
    """
    from longtail._progress import progress_bar
    from longtail.adapt import bayes_decision

    from longtail.decode import DecodeOptions

    from longtail import _validation as v

    batch_size = v.integer("batch_size", batch_size, min=1)
    top_k = v.integer("top_k", top_k, min=1)
    options = DecodeOptions(image_size=tuple(image_size), color_mode=color_mode)
    k = len(class_names)
    top_k = min(top_k, k)
    header = ["path", "predicted", "probability"]
    for i in range(2, top_k + 1):
        header += [f"top{i}", f"top{i}_probability"]
    header += (["expected_cost"] if cost is not None else []) + ["error"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    failed = []
    workers = workers or os.cpu_count() or 1
    bar = progress_bar(_batches(list(paths), options, batch_size, workers),
                       total=-(-len(paths) // batch_size), desc="predicting", enabled=progress)
    for chunk, x, errors in bar:
        probs = None if x is None else _probabilities(model, x, priors, posthoc_tau)
        row_of = iter(range(len(chunk)))
        for path, error in zip(chunk, errors):
            if error is not None:
                failed.append((path, error))
                writer.writerow([csv_cell(path)] + [""] * (len(header) - 2) + [csv_cell(error)])
                continue
            p = probs[next(row_of)]
            order = np.argsort(-p, kind="stable")
            extra = []
            if cost is not None:
                choice = int(bayes_decision(p[None], cost)[0])
                order = np.concatenate([[choice], order[order != choice]])
                extra = [f"{float(p @ np.asarray(cost)[:, choice]):.6f}"]
            cells = [csv_cell(path)]
            for c in order[:top_k]:
                cells += [csv_cell(class_names[c]), f"{p[c]:.6f}"]
            writer.writerow(cells + extra + [""])
    return out.getvalue(), failed


def _probabilities(model, x, priors, posthoc_tau) -> np.ndarray:
    from longtail.evaluation import to_logits
    from longtail.posthoc import adjust_logits

    logits = to_logits(model.predict_on_batch(x))  # a softmax model's log
    if posthoc_tau:
        logits = adjust_logits(logits, priors, posthoc_tau)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def predict_rows(model, dataset, *, class_names: Sequence[str], priors=None, posthoc_tau=None,
                 top_k=1, batch_size=64) -> str:
    """Predicts every row of a Dataset of feature rows (a table, a feature store).

    ``model`` may be a run's backbone+head model: the part that takes the
    rows is used (:meth:`longtail.sources.Source.model_for`). Columns:
    ``row`` (0-based), ``label`` (the stored one), ``predicted``,
    ``probability``, then ``top{i}, top{i}_probability`` for i in 2..top_k.
    """
    from longtail import _validation as v

    batch_size = v.integer("batch_size", batch_size, min=1)
    top_k = min(v.integer("top_k", top_k, min=1), len(class_names))
    model = dataset.source.model_for(model)
    header = ["row", "label", "predicted", "probability"]
    for i in range(2, top_k + 1):
        header += [f"top{i}", f"top{i}_probability"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    loader = dataset.loader(batch_size=batch_size, sampling="sequential", label_mode="int")
    row = 0
    for batch in loader:
        x = batch[0][: len(dataset) - row]
        probs = _probabilities(model, x, priors, posthoc_tau)
        for p in probs:
            cells = [row, csv_cell(dataset.class_names[dataset.labels[row]])]
            for c in np.argsort(-p, kind="stable")[:top_k]:
                cells += [csv_cell(class_names[c]), f"{p[c]:.6f}"]
            writer.writerow(cells)
            row += 1
        if row >= len(dataset):
            break
    return out.getvalue()
