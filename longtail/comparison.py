"""``lt.compare`` and ``longtail compare``: several strategies, one split, side by side.

Every strategy trains on the same stratified split (written once as
``split/train.parquet`` and ``split/val.parquet``), with the same seed and
model, each into its own run folder ``DIR/<strategy>/``. The figures come
from a held-out ``test`` DATA when one is given, else from the validation
split. ``summary.json``, ``summary.md`` and ``compare.html`` sit in ``DIR``.
A strategy whose run folder is already complete is not trained again, so a
stopped comparison continues where it stopped.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence

from longtail.errors import ConfigError

__all__ = ["compare", "summary_markdown"]

_COLUMNS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
            ("macro_f1", "macro F1"), ("few_shot_accuracy", "few-shot accuracy"))


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary_markdown(summaries: Sequence[dict], evaluated_on: str) -> str:
    """The summary table in Markdown (strategy, metrics, training time)."""
    lines = [f"Evaluated on: {evaluated_on}", "",
             "| strategy | " + " | ".join(label for _, label in _COLUMNS) + " | training time |",
             "|---" * (len(_COLUMNS) + 2) + "|"]
    for s in summaries:
        cells = [_fmt(s["metrics"].get(key)) for key, _ in _COLUMNS]
        lines.append(f"| {s['strategy']} | " + " | ".join(cells)
                     + f" | {s['train_seconds']:.1f} s |")
    return "\n".join(lines) + "\n"


def _eta(done: list[float], remaining: int) -> str:
    if not done:
        return "ETA unknown"
    seconds = sum(done) / len(done) * remaining
    return f"ETA {int(seconds // 60)}m{int(seconds % 60):02d}s"


def compare(data, strategies: Sequence[str], out: str, *, test=None, verbose="auto",
            **options) -> list[dict]:
    """Trains each strategy on the same split and writes a side-by-side summary.

    Args:
        data: Training DATA (any form); split stratified into train/val
            with ``val_split`` and ``seed`` unless ``val`` is given.
        strategies: ``--balance`` names, e.g. ``["none", "logit-adjust"]``.
        out: Output folder.
        test: Optional held-out DATA the summary is measured on.
        verbose: Keras verbosity for each training run.
        **options: :func:`longtail.training` options shared by every run.

    Returns:
        One summary per strategy: ``strategy``, ``metrics``, ``train_seconds``,
        ``run_dir``.
    """
    from longtail._io import write_json, write_text
    from longtail.dataset import Dataset
    from longtail.evaluation import evaluate
    from longtail.report import write_compare_report
    from longtail.strategies import resolve_strategy
    from longtail.training import TrainConfig, train

    strategies = [s.strip() for s in strategies if s.strip()]
    if not strategies:
        raise ConfigError("`strategies` must name at least one strategy")
    for name in strategies:
        resolve_strategy(name)
    if len(set(strategies)) != len(strategies):
        raise ConfigError(f"`strategies` names a strategy twice: {', '.join(strategies)}")
    config = TrainConfig(**options)  # checks every option before any work
    data_options = config.data_options

    split_dir = os.path.join(out, "split")
    train_path = os.path.join(split_dir, "train.parquet")
    val_path = os.path.join(split_dir, "val.parquet")
    if not os.path.exists(val_path):
        ds = Dataset.open(data, **data_options)
        if config.val is None:
            train_ds, val_ds = ds.split(val=config.val_split, seed=config.seed)
        else:
            train_ds, val_ds = ds, Dataset.open(config.val, **data_options,
                                                class_names=ds.class_names)
        train_ds.save(train_path)
        val_ds.save(val_path)
    train_ds = Dataset.load(train_path)
    test_ds = None
    if test is not None:
        test_ds = Dataset.open(test, **data_options, class_names=train_ds.class_names)
    shared = {k: v for k, v in options.items() if k not in ("val", "val_split", "data_options")}

    summaries, durations = [], []
    for i, name in enumerate(strategies):
        run_dir = os.path.join(out, name)
        print(f"[{i + 1}/{len(strategies)}] {name} "
              f"({_eta(durations, len(strategies) - i)})", file=sys.stderr, flush=True)
        started = time.perf_counter()
        complete = os.path.exists(os.path.join(run_dir, "metrics.json"))
        if complete:
            from longtail.models import load_model

            model = load_model(os.path.join(run_dir, "model.keras"))
        else:
            # A run killed before its first checkpoint resumes from epoch 0.
            resume = os.path.exists(os.path.join(run_dir, "config.json"))
            result = train(train_path, run_dir, resume=resume, verbose=verbose, balance=name,
                           val=val_path, **shared)
            model = result.model
        durations.append(time.perf_counter() - started)
        target = test_ds if test_ds is not None else Dataset.load(val_path)
        loader_kw = {"label_mode": "int"}
        if target.source.is_image:
            loader_kw.update(image_size=config.image_size, color_mode=config.color_mode)
        report = evaluate(model, target.loader(batch_size=config.batch_size,
                                               sampling="sequential", **loader_kw),
                          class_names=train_ds.class_names,
                          train_counts=train_ds.class_counts.tolist())
        history = os.path.join(run_dir, "history.csv")
        seconds = _train_seconds(history)
        summaries.append({"strategy": name, "metrics": report.to_dict(),
                          "train_seconds": seconds, "run_dir": run_dir})

    evaluated_on = "test data " + str(test) if test is not None else "validation split"
    write_json(os.path.join(out, "summary.json"),
               {"evaluated_on": evaluated_on, "class_names": train_ds.class_names,
                "train_counts": train_ds.class_counts.tolist(), "runs": summaries})
    write_text(os.path.join(out, "summary.md"), summary_markdown(summaries, evaluated_on))
    write_compare_report(out, summaries, train_counts=train_ds.class_counts.tolist(),
                         title="longtail comparison")
    return summaries


def _train_seconds(history_csv: str) -> float:
    """Training time of a run: the sum of its epochs' ``epoch_seconds``."""
    import csv

    if not os.path.exists(history_csv):
        return 0.0
    with open(history_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return float(sum(float(r.get("epoch_seconds") or 0.0) for r in rows))
