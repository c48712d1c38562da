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

from longtail import runs
from longtail.errors import ConfigError

__all__ = ["compare", "summary_markdown", "comparison_verdict"]

_COLUMNS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
            ("macro_f1", "macro F1"), ("few_shot_accuracy", "few-shot accuracy"))


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary_markdown(summaries: Sequence[dict], evaluated_on: str,
                     verdict: str | None = None) -> str:
    """The summary table in Markdown (strategy, metrics, training time).

    With intervals (as :func:`compare` adds them), a second table gives the
    balanced accuracy with its interval, the mean and spread across seeds and
    the difference from the baseline; ``verdict`` follows as a line.
    """
    lines = [f"Evaluated on: {evaluated_on}", "",
             "| strategy | " + " | ".join(label for _, label in _COLUMNS) + " | training time |",
             "|---" * (len(_COLUMNS) + 2) + "|"]
    for s in summaries:
        cells = [_fmt(s["metrics"].get(key)) for key, _ in _COLUMNS]
        lines.append(f"| {s['strategy']} | " + " | ".join(cells)
                     + f" | {s['train_seconds']:.1f} s |")
    if any("seeds" in s for s in summaries):
        lines += ["", f"(Above: seed {summaries[0]['seeds'][0]['seed']}. Below: the mean "
                  "over the seeds, with the interval of that mean.)"]
    if all("intervals" in s for s in summaries):
        lines += [""] + _interval_table(summaries)
    if verdict:
        lines += ["", verdict]
    return "\n".join(lines) + "\n"


def _span(d: dict | None, sign: str = "") -> str:
    if not d:
        return "n/a"
    return f"{d['estimate']:{sign}.4f} [{d['low']:{sign}.4f}, {d['high']:{sign}.4f}]"


def _interval_table(summaries: Sequence[dict]) -> list[str]:
    conf = summaries[0].get("confidence", 0.95)
    lines = [f"| strategy | balanced accuracy [{conf:.0%} interval] | seeds: mean \u00b1 sd "
             "| difference from baseline | macro F1 | few-shot accuracy |", "|---" * 6 + "|"]
    for s in summaries:
        iv, diff = s["intervals"], s.get("difference")
        name = s["strategy"] + (f" (= {s['same_objective_as']})" if s.get("same_objective_as")
                                else "")
        spread = "one seed" if "seed_mean" not in s else (
            f"{s['seed_mean']['balanced_accuracy']:.4f} \u00b1 "
            f"{s['seed_std']['balanced_accuracy']:.4f} ({len(s['seeds'])} seeds)")
        lines.append(f"| {name} | {_span(iv['balanced_accuracy'])} | {spread} | "
                     + ("baseline" if diff is None else _span(diff['balanced_accuracy'], '+'))
                     + (" **harmful**" if s.get("harmful") else "")
                     + f" | {_span(iv['macro_f1'])} | {_span(iv.get('few_shot_accuracy'))} |")
    return lines


def _eta(done: list[float], remaining: int) -> str:
    if not done:
        return "ETA unknown"
    seconds = sum(done) / len(done) * remaining
    return f"ETA {int(seconds // 60)}m{int(seconds % 60):02d}s"


def compare(data, strategies: Sequence[str], out: str, *, test=None, verbose="auto",
            seeds: Sequence[int] | None = None, baseline: str | None = None,
            require: Sequence[str] = (), resamples: int = 2000, confidence: float = 0.95,
            shot_thresholds: tuple[int, int] = (100, 20), **options) -> list[dict]:
    """Trains each strategy on the same split and writes a side-by-side summary.

    Args:
        data: Training DATA (any form); split stratified into train/val
            with ``val_split`` and ``seed`` unless ``val`` is given.
        strategies: ``--balance`` names, e.g. ``["none", "logit-adjust"]``.
        out: Output folder.
        test: Optional held-out DATA the summary is measured on.
        verbose: Keras verbosity for each training run.
        seeds: Training seeds; each strategy trains once per seed (into
            ``DIR/<strategy>/seed-<s>/`` when there are several). Default:
            the ``seed`` option. The split uses the ``seed`` option whatever
            ``seeds`` holds, so every run is measured on the same samples.
        baseline: The strategy every other one is measured against (its
            difference gets a paired bootstrap interval). Default ``"none"``
            when it is among ``strategies``, else no baseline.
        require: Expressions ``"A>B"``, checked into ``summary.json``
            ``requirements`` (passed when the lower bound of A - B on
            balanced accuracy is above zero).
        resamples, confidence: Of the bootstrap intervals.
        shot_thresholds: ``(many, few)`` training counts of the shot groups.
        **options: :func:`longtail.training` options shared by every run.

    Returns:
        One summary per strategy: ``strategy``, ``metrics`` (of the first
        seed), ``train_seconds``, ``run_dir``, ``intervals`` (metric ->
        ``{"estimate", "low", "high"}``), ``difference`` (the same, of the
        difference from the baseline; None for the baseline), and with several
        seeds ``seeds`` (per-seed summary metrics), ``seed_mean``, ``seed_std``.
    """
    from longtail.strategies import resolve_strategy
    from longtail.training import TrainConfig

    strategies = [s.strip() for s in strategies if s.strip()]
    if not strategies:
        raise ConfigError("`strategies` must name at least one strategy")
    for name in strategies:
        resolve_strategy(name)
    bootstrap = _check_evidence_options(strategies, seeds, baseline, require, resamples,
                                        confidence, options.get("seed", 0))
    seeds = bootstrap.pop("seeds")
    if len(set(strategies)) != len(strategies):
        raise ConfigError(f"`strategies` names a strategy twice: {', '.join(strategies)}")
    config = TrainConfig(**options)  # checks every option before any work
    runs.check_out_outside_data(out, data)
    with runs.locked(out, "compare"):
        return _compare(data, strategies, out, test, verbose, config, options,
                        seeds=seeds, shot_thresholds=tuple(shot_thresholds),
                        bootstrap=bootstrap)


def _check_same_comparison(out: str, data, ds, config, test) -> None:
    """Refuses to continue a comparison in ``out`` made with other DATA or options.

    ``compare.json`` records what the split and the runs were made from: the
    data's fingerprint, the options (all but the worker count) and the test DATA.
    """
    from longtail._io import write_json
    from longtail.training.checkpoint import fingerprint

    options = {k: value for k, value in config.to_json().items() if k != "num_workers"}
    now = {"data": str(data), "fingerprint": fingerprint(ds), "options": options,
           "test": None if test is None else str(test)}
    path = os.path.join(out, "compare.json")
    if not os.path.exists(path):
        write_json(path, now)
        return
    then = runs.read_json(path, "comparison record", {"fingerprint": str, "options": dict})
    changed = [k for k in sorted(set(options) | set(then["options"]))
               if options.get(k) != then["options"].get(k)]
    if then["fingerprint"] != now["fingerprint"]:
        changed.insert(0, "DATA")
    if then.get("test") != now["test"]:
        changed.append("test")
    if changed:
        raise ConfigError(f"--out {out}: holds a comparison made with other "
                          f"{', '.join(changed)}; rerun with the same DATA and options to "
                          "continue it, or choose another --out")


def _compare(data, strategies, out, test, verbose, config, options, *, seeds,
             shot_thresholds, bootstrap) -> list[dict]:
    from longtail._io import write_json, write_text
    from longtail.dataset import Dataset
    from longtail.evaluation import evaluate
    from longtail.report import write_compare_report
    from longtail.training import train

    from longtail.training.run import check_image_options

    data_options = config.data_options
    ds = Dataset.open(data, **data_options)
    check_image_options(ds, options, data)  # before anything is written
    _check_same_comparison(out, data, ds, config, test)

    split_dir = os.path.join(out, "split")
    train_path = os.path.join(split_dir, "train.parquet")
    val_path = os.path.join(split_dir, "val.parquet")
    runs.recover(split_dir)  # a split a kill left half moved in
    if not os.path.exists(val_path):
        ds = Dataset.open(data, **data_options)
        if config.val is None:
            train_ds, val_ds = ds.split(val=config.val_split, seed=config.seed)
        else:
            train_ds, val_ds = ds, Dataset.open(config.val, **data_options,
                                                class_names=ds.class_names)
        with runs.commit_set(split_dir) as stage:  # train and val appear together
            train_ds.save(stage.path("train.parquet"))
            val_ds.save(stage.path("val.parquet"))
    train_ds = Dataset.load(train_path)
    test_ds = None
    if test is not None:
        test_ds = Dataset.open(test, **data_options, class_names=train_ds.class_names)
    shared = {k: v for k, v in options.items() if k not in ("val", "val_split", "data_options")}

    summaries, durations, jobs = [], [], [(n, s) for n in strategies for s in seeds]
    predictions: dict[str, list] = {name: [] for name in strategies}
    for i, (name, seed) in enumerate(jobs):
        run_dir = os.path.join(out, name) if len(seeds) == 1 else os.path.join(
            out, name, f"seed-{seed}")
        if verbose != 0:
            print(f"[{i + 1}/{len(jobs)}] {name}{'' if len(seeds) == 1 else f' seed {seed}'} "
                  f"({_eta(durations, len(jobs) - i)})", file=sys.stderr, flush=True)
        started = time.perf_counter()
        complete = os.path.exists(os.path.join(run_dir, "metrics.json"))
        if complete:
            from longtail.models import load_model

            model = load_model(os.path.join(run_dir, "model.keras"))
        else:
            # A run killed before its first checkpoint resumes from epoch 0.
            resume = os.path.exists(os.path.join(run_dir, "config.json"))
            result = train(train_path, run_dir, resume=resume, verbose=verbose, balance=name,
                           val=val_path, **{**shared, "seed": seed,
                                            "shot_thresholds": shot_thresholds})
            model = result.model
        durations.append(time.perf_counter() - started)
        target = test_ds if test_ds is not None else Dataset.load(val_path)
        loader_kw = {"label_mode": "int"}
        if target.source.is_image:
            loader_kw.update(image_size=config.image_size, color_mode=config.color_mode)
        report = evaluate(model, target.loader(batch_size=config.batch_size,
                                               sampling="sequential", **loader_kw),
                          class_names=train_ds.class_names,
                          train_counts=train_ds.class_counts.tolist(),
                          shot_thresholds=shot_thresholds)
        report._metrics["evaluated_on"] = {
            "split": "test" if test_ds is not None else "validation",
            "data": str(test) if test_ds is not None else val_path, "samples":
            int(report.to_dict()["n_samples"])}
        predictions[name].append(report)
        history = os.path.join(run_dir, "history.csv")
        seconds = _train_seconds(history)
        if predictions[name][1:]:
            summaries[-1]["train_seconds"] += seconds
            summaries[-1]["seeds"].append({"seed": seed, "run_dir": run_dir,
                                           **_headline(report.to_dict())})
            continue
        summaries.append({"strategy": name, "metrics": report.to_dict(),
                          "train_seconds": seconds, "run_dir": run_dir})
        _add_calibration(summaries[-1]["metrics"], report, model, None if test_ds is None
                         else Dataset.load(val_path).loader(batch_size=config.batch_size,
                                                            sampling="sequential",
                                                            **loader_kw))
        if len(seeds) > 1:
            summaries[-1]["seeds"] = [{"seed": seed, "run_dir": run_dir,
                                       **_headline(report.to_dict())}]

    evidence = _add_intervals(summaries, predictions, train_ds.class_counts.tolist(),
                              shot_thresholds, **bootstrap,
                              params=config.strategy_params)
    evaluated_on = "test data " + str(test) if test is not None else "validation split"
    write_json(os.path.join(out, "summary.json"),
               {"evaluated_on": evaluated_on, "class_names": train_ds.class_names,
                "train_counts": train_ds.class_counts.tolist(), "runs": summaries,
                **evidence})
    write_text(os.path.join(out, "summary.md"),
               summary_markdown(summaries, evaluated_on, evidence["verdict"]))
    write_compare_report(out, summaries, train_counts=train_ds.class_counts.tolist(),
                         title="longtail comparison", verdict=evidence["verdict"])
    return summaries


def _check_evidence_options(strategies, seeds, baseline, require, resamples, confidence,
                            default_seed) -> dict:
    """Checks the interval options before any training; returns them resolved."""
    from longtail.intervals import BootstrapOptions, parse_requirement

    seeds = [int(default_seed)] if seeds is None else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"`seeds` must list distinct integers; got {seeds}")
    if baseline is None:
        baseline = "none" if "none" in strategies else None
    elif baseline not in strategies:
        raise ConfigError(f"--baseline must be one of the strategies "
                          f"({', '.join(strategies)}); got {baseline!r}")
    pairs = [parse_requirement(r) for r in require]
    for a, b in pairs:
        for name in (a, b):
            if name not in strategies:
                raise ConfigError(f"--require names {name!r}, which is not among the "
                                  f"strategies ({', '.join(strategies)})")
    return {"seeds": seeds, "baseline": baseline, "pairs": pairs,
            "options": BootstrapOptions(resamples=resamples, confidence=confidence)}


def _add_calibration(metrics, report, model, val_loader) -> None:
    """Calibration of a run, its temperature fitted on the validation split.

    Without a separate test set the validation split is the evaluation data
    too, so the temperature is fitted on the very samples it is judged on.
    """
    from longtail.calibration import add_calibration
    from longtail.evaluation import evaluate

    val = report if val_loader is None else evaluate(
        model, val_loader, class_names=report.class_names, bootstrap=False)
    add_calibration(metrics, report, val)


def _headline(metrics: dict) -> dict:
    return {key: metrics.get(key) for key, _ in _COLUMNS}


def comparison_verdict(intervals: dict, same_objective: Sequence[dict] = (),
                       metric: str = "balanced_accuracy") -> dict:
    """The verdict of a comparison, with harmful strategies and equal objectives named.

    Args:
        intervals: :func:`longtail.intervals.bootstrap_intervals`' result
            (``baseline``, ``confidence``, ``differences``: strategy ->
            metric -> ``{"estimate", "low", "high"}`` of strategy - baseline).
        same_objective: :func:`longtail.strategies.same_objective_pairs`.
        metric: The metric judged.

    Returns:
        ``{"text", "harmful", "same_objective"}``: ``text`` is
        :func:`longtail.intervals.verdict`'s sentence, then one clause per
        strategy worse than the baseline beyond its interval (the upper bound
        of strategy - baseline below zero: *harmful* on this data), then one
        per pair of strategies that train the same objective; ``harmful``
        lists ``{"strategy", "estimate", "low", "high"}``.
    """
    from longtail.intervals import verdict

    text = [verdict(intervals, metric)]
    diffs = intervals.get("differences") or {}
    base, label = intervals.get("baseline"), metric.replace("_", " ")
    pct = f"{intervals.get('confidence', 0.95):.0%}"
    harmful = sorted(({"strategy": n, **d[metric]} for n, d in diffs.items()
                      if d is not None and d[metric]["high"] < 0),
                     key=lambda h: h["estimate"])
    for h in harmful:
        text.append(f"harmful: {h['strategy']} is worse than {base} on {label} by "
                    f"{h['estimate']:+.4f} ({pct} interval [{h['low']:+.4f}, "
                    f"{h['high']:+.4f}]); do not use it on this data")
    for pair in same_objective:
        a, b = pair["strategies"]
        text.append(f"same objective: {a} trains exactly what {b} does ({pair['why']}); "
                    "their rows differ only by run-to-run noise, so count them as one")
    return {"text": "; ".join(text), "harmful": harmful,
            "same_objective": list(same_objective)}


def _add_intervals(summaries, reports, train_counts, shot_thresholds, *, baseline, pairs,
                   options, params: dict | None = None) -> dict:
    """Adds bootstrap intervals and seed spreads to ``summaries``; returns the verdict."""
    import numpy as np

    from longtail.intervals import METRICS, bootstrap_intervals

    first = next(iter(reports.values()))[0]
    y, k = first.y_true, len(first.class_names)
    preds = {name: [r.y_pred for r in done] for name, done in reports.items()}
    common = dict(train_counts=train_counts, shot_thresholds=shot_thresholds, options=options)
    iv = bootstrap_intervals(y, preds, k, baseline=baseline, **common)
    for s in summaries:
        name = s["strategy"]
        s["confidence"] = options.confidence
        s["intervals"] = {m: v for m, v in iv["metrics"][name].items() if m in METRICS}
        s["per_class_intervals"] = {m: iv["metrics"][name][m] for m in ("recall", "precision")}
        diff = iv["differences"].get(name)
        s["difference"] = None if diff is None else {m: v for m, v in diff.items()
                                                     if m in METRICS}
        s["per_class_difference"] = None if diff is None else {
            m: diff[m] for m in ("recall", "precision")}
        if "seeds" in s:
            for stat, fn in (("seed_mean", np.mean), ("seed_std", np.std)):
                s[stat] = {key: None if any(r[key] is None for r in s["seeds"]) else
                           float(fn([r[key] for r in s["seeds"]], **(
                               {"ddof": 1} if fn is np.std else {})))
                           for key, _ in _COLUMNS}
    requirements = []
    for a, b in pairs:
        d = iv["differences"][a] if b == baseline and a != b else bootstrap_intervals(
            y, {a: preds[a], b: preds[b]}, k, baseline=b, **common)["differences"].get(a)
        d = d["balanced_accuracy"] if d else {"estimate": 0.0, "low": 0.0, "high": 0.0}
        requirements.append({"expression": f"{a}>{b}", "metric": "balanced_accuracy", **d,
                             "passed": d["low"] > 0})
    meta = {key: iv[key] for key in ("method", "resamples", "confidence", "seed", "baseline")}
    from longtail.strategies import same_objective_pairs

    judged = comparison_verdict(iv, same_objective_pairs([s["strategy"] for s in summaries],
                                                         params or {}))
    harmful = {h["strategy"] for h in judged["harmful"]}
    same = {pair["strategies"][0]: pair["strategies"][1] for pair in judged["same_objective"]}
    for s in summaries:
        s["harmful"] = s["strategy"] in harmful
        if s["strategy"] in same:
            s["same_objective_as"] = same[s["strategy"]]
    return {"bootstrap": meta, "verdict": judged["text"], "harmful": judged["harmful"],
            "same_objective": judged["same_objective"], "requirements": requirements}


def _train_seconds(history_csv: str) -> float:
    """Training time of a run: the sum of its epochs' ``epoch_seconds``."""
    import csv

    if not os.path.exists(history_csv):
        return 0.0
    with open(history_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return float(sum(float(r.get("epoch_seconds") or 0.0) for r in rows))
