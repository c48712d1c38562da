"""The ``longtail`` command line.

Every command takes DATA in any form ``Dataset.open`` accepts. Bad arguments
or bad input end with exit status 2 and one line on stderr naming the
argument or file; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import warnings

from longtail import _validation as v
from longtail import runs
from longtail.errors import DataError, LongtailError
from longtail.options import COLOR_MODES, MAX_FILE_BYTES, RESIZE_MODES, file_size_limit

__all__ = ["main", "build_parser"]

_DESCRIPTION = """\
longtail trains Keras classifiers on data that is class-imbalanced (long-tailed: a
few classes hold most samples) and may be too large for memory: a folder with one
sub-folder per class, a table of feature rows, or a manifest of image paths. It
measures what each balancing strategy does per class, with intervals, and writes
self-contained HTML reports."""

_WORKFLOW = """\
a first session:
  longtail stats DATA                          how imbalanced is DATA?
  longtail compare DATA --strategies none,logit-adjust --out cmp
                                               what does balancing change?
  longtail train DATA --balance logit-adjust --out run
  longtail evaluate run TEST --out eval        per-class metrics on held-out data
  longtail predict run images/ --out preds.csv
  longtail demo                                all of it on a built-in data set

longtail COMMAND --help describes each command's options and their defaults."""



class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        # "argument --x: must be ..." reads as the validator's "--x must be ..."
        message = re.sub(r"^argument (\S+): (must be )", r"\1 \2", message)
        self.exit(2, f"longtail: error: {message}\n")


def _add_data_options(p: argparse.ArgumentParser, optional: bool = False,
                      data_help: str = "") -> None:
    p.add_argument("data", metavar="DATA", nargs="?" if optional else None,
                   help="folder with one sub-folder per class, a .csv/.parquet table or "
                        "manifest, or a cache folder" + data_help)
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="the table column holding the class labels (default: label)")
    p.add_argument("--path-column", default=None, metavar="NAME",
                   help="the table column holding image paths, relative to the table's "
                        "folder; a table without it holds feature rows (default: path)")
    p.add_argument("--weight-column", default=None, metavar="NAME",
                   help="the table column holding a weight per row (default: none; a "
                        "column named weight, sample_weight or w draws a warning)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="follow symbolic links when indexing a folder (default: skipped "
                        "and counted)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept a table, manifest or cache whose paths lead outside its "
                        "folder (absolute paths elsewhere, ..) (default: refused)")
    _add_file_size_option(p)


def _add_file_size_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-file-bytes", default=None, metavar="BYTES",
                   help="files larger than this are unreadable, not read (e.g. 512M, 2G; "
                        "0 for no limit) (default: 256M)")


def _max_file_bytes(args):
    """--max-file-bytes: None when not given (the default limit), 0 for no limit."""
    value = getattr(args, "max_file_bytes", None)
    if value is None:
        return MAX_FILE_BYTES
    return None if value.strip() == "0" else value


def _open(args, data=None):
    from longtail.dataset import Dataset

    return Dataset.open(
        data if data is not None else args.data,
        label_column=args.label_column, path_column=args.path_column,
        weight_column=args.weight_column, follow_symlinks=args.follow_symlinks or None,
        allow_outside_root=args.allow_outside_root or None,
        **({"progress": False} if getattr(args, "quiet", False) else {}),
    )


def _add_quiet(p: argparse.ArgumentParser, what: str = "progress bars") -> None:
    p.add_argument("--quiet", action="store_true",
                   help=f"print no {what}, only the result (default: shown on a terminal)")


def _strategy_option(text):
    from longtail.strategies import parse_strategy_option

    try:
        return parse_strategy_option(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fraction(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1); got {text!r}")
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1); got {text}")
        return value
    parse.__name__ = name
    return parse


# ----------------------------------------------------------------- commands
def cmd_stats(args) -> int:
    ds = _open(args)
    if len(ds) == 0:
        raise DataError(f"{args.data}: no samples in any of its {ds.num_classes} classes")
    summary = {"data": args.data, **ds.describe()}
    rows = summary["per_class"]
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    strategies = list(rows[0]["weights"])
    width = max(5, *(len(r["class"]) for r in rows))
    head = f"{'class':<{width}} {'count':>9} {'share':>7} " + " ".join(
        f"{s:>9}" for s in strategies)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['class']:<{width}} {r['count']:>9} {r['share']:>7.2%} " + " ".join(
            f"{r['weights'][s]:>9.3f}" for s in strategies))
    print("-" * len(head))
    print(f"{'total':<{width}} {len(ds):>9} {1:>7.0%}")
    print(f"{ds.num_classes} classes, imbalance ratio {ds.imbalance_ratio:.1f} "
          f"(largest / smallest non-empty class)")
    empty = [r["class"] for r in rows if r["count"] == 0]
    if empty:
        print(f"empty classes: {', '.join(empty)}")
    _print_columns(args, ds)
    print("\nweight columns: the class weight each strategy gives (n samples, k classes, n_c "
          "in class c); each is normalised differently:")
    for name in strategies:
        print(f"  {name:<10} {_WEIGHT_COLUMNS.get(name, '')}")
    return 0


#: What each weight column of ``stats`` is, and how it is normalised.
_WEIGHT_COLUMNS = {
    "balanced": "n / (k * n_c), scikit-learn's 'balanced': the mean weight over the samples "
                "is 1",
    "inverse": "max(n_c) / n_c: the largest class weighs 1, the others more",
    "sqrt": "sqrt(max(n_c) / n_c): the largest class weighs 1; milder than inverse",
    "effective": "(1 - beta) / (1 - beta^n_c), beta 0.999 (Cui et al. 2019): the weights "
                 "of the classes sum to k",
}


def _print_columns(args, ds) -> None:
    """For a table: the feature columns and the weight column in use."""
    if ds.feature_names is not None:
        print(f"feature columns ({len(ds.feature_names)}): {', '.join(ds.feature_names)}")
    if ds.feature_names is not None or ds.weights is not None:
        weight = args.weight_column or ("from the manifest" if ds.weights is not None
                                        else "none (--weight-column NAME to weight rows)")
        print(f"weight column: {weight}")


def cmd_split(args) -> int:
    ds = _open(args)
    if len(ds) == 0:
        raise DataError(f"{args.data}: no samples to split")
    if ds.num_classes < 2:
        raise LongtailError(f"{args.data}: found {ds.num_classes} class; at least 2 are needed")
    from longtail.split import write_split

    parts = write_split(ds, args.out, val=args.val, test=args.test, seed=args.seed)
    for name, part in parts.items():
        path = os.path.join(args.out, f"{name}.parquet")
        print(f"{path}: {len(part)} samples, per class {part.class_counts.tolist()}")
    return 0


def cmd_demo(args) -> int:
    from longtail.comparison import compare, summary_markdown
    from longtail.demo import DEMO_OPTIONS, DEMO_STRATEGIES, make_digits_lt

    parts = make_digits_lt(os.path.join(args.out, "digits-lt"))
    print(f"Digits-LT in {os.path.dirname(parts['train'])}: training split long-tailed "
          "(imbalance ratio 100), balanced validation and test splits\n")
    cmd_stats(argparse.Namespace(data=parts["train"], json=False, label_column=None,
                                 path_column=None, weight_column=None, follow_symlinks=False,
                                 allow_outside_root=False, quiet=args.quiet))
    print(f"\ntraining {', '.join(DEMO_STRATEGIES)} ...")
    out = os.path.join(args.out, "compare")
    summaries = compare(parts["train"], DEMO_STRATEGIES, out, test=parts["test"],
                        val=parts["val"], verbose=0 if args.quiet else "auto",
                        epochs=args.epochs, **DEMO_OPTIONS)
    print()
    print(summary_markdown(summaries, "the balanced test split (50 images per class)"))
    print(f"report: {os.path.join(out, 'compare.html')}")
    return 0


def _train_options(args) -> dict:
    """TrainConfig options from the parsed train/compare arguments."""
    data_options = {k: v for k, v in (
        ("label_column", args.label_column), ("path_column", args.path_column),
        ("weight_column", args.weight_column),
        ("follow_symlinks", args.follow_symlinks or None),
        ("allow_outside_root", args.allow_outside_root or None)) if v is not None}
    image = {k: v for k, v in (("image_size", args.image_size), ("color_mode", args.color_mode),
                               ("augment", args.augment)) if v is not None}
    return dict(
        epochs=args.epochs, batch_size=args.batch_size, **image, model=args.model,
        weights=args.weights, finetune=args.finetune, head_epochs=args.head_epochs,
        val_split=args.val_split, val=args.val, label_mode=args.label_mode, seed=args.seed,
        learning_rate=args.learning_rate, early_stopping=args.early_stopping, tau=args.tau,
        gamma=args.gamma, beta=args.beta, drw_epoch=args.drw_epoch,
        num_workers=args.workers, data_options=data_options,
        shot_thresholds=tuple(args.shot_thresholds),
        **({"strategy_options": _group_options(args.strategy_option)}
           if args.strategy_option else {}))


def _group_options(items) -> dict:
    """``[(strategy, field, value), ...]`` -> ``{strategy: {field: value}}``."""
    grouped: dict = {}
    for name, key, value in items:
        grouped.setdefault(name, {})[key] = value
    return grouped


def _given_options(args) -> dict:
    """The train options given on the command line (those that differ from the defaults)."""
    defaults = build_parser().parse_args(["train", "DATA", "--out", "RUN"])
    given, default = _train_options(args), _train_options(defaults)
    given = {k: value for k, value in given.items() if value != default.get(k)}
    if args.balance != defaults.balance:
        given["balance"] = args.balance
    return given


def cmd_train(args) -> int:
    from longtail.training import train

    options = _given_options(args) if args.resume else _train_options(args)
    cluster = {"coordinator": args.coordinator, "num_processes": args.num_processes,
               "process_id": args.process_id}
    if not (args.distribute or args.resume) and any(v is not None for v in cluster.values()):
        raise LongtailError("--coordinator, --num-processes and --process-id need --distribute")
    if args.distribute and not args.resume:
        options["distribute"] = True
    if not args.resume:
        options["balance"] = args.balance
        if args.data is None:
            raise LongtailError("train: DATA is required (only --resume takes it from the "
                                "run's config.json)")
    result = train(args.data, args.out, resume=args.resume, cluster=cluster,
                   verbose=0 if args.quiet else "auto", **options)
    m = result.metrics
    print(f"{'' if args.quiet else chr(10)}{result.config['strategy']}: validation accuracy {m['accuracy']:.4f}, "
          f"balanced accuracy {m['balanced_accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}")
    if result.run_dir is not None:  # in a multi-process run, process 0 writes it
        print(f"run folder: {args.out} (report: {os.path.join(args.out, 'report.html')})")
    return 0


def _model_of(path: str):
    """The model of MODEL (a .keras file or a run folder), its path and run config."""
    model_path, run = runs.model_and_config(path)
    model = runs.load_model(model_path)
    runs.check_model(model, run, model_path)
    return model, model_path, run


def cmd_evaluate(args) -> int:
    from longtail.intervals import BootstrapOptions
    from longtail.run_evaluation import evaluate_run

    evidence = _evidence_options(args, compare=False)
    result = evaluate_run(
        args.model, args.data, posthoc_tau=args.posthoc_tau, tune_tau=args.tune_tau,
        batch_size=args.batch_size, shot_thresholds=evidence["shot_thresholds"],
        bootstrap=BootstrapOptions(resamples=evidence["resamples"],
                                   confidence=evidence["confidence"]),
        progress=not args.quiet, label_column=args.label_column,
        path_column=args.path_column, weight_column=args.weight_column,
        follow_symlinks=args.follow_symlinks or None,
        allow_outside_root=args.allow_outside_root or None)
    result.write(args.out)
    metrics = result.metrics
    where = metrics["evaluated_on"]
    print(f"{where['split']} data {where['data']} ({where['samples']} samples): accuracy "
          f"{metrics['accuracy']:.4f}, balanced accuracy {metrics['balanced_accuracy']:.4f}, "
          f"macro F1 {metrics['macro_f1']:.4f}"
          + ("" if result.posthoc_tau is None else f" at post-hoc tau {result.posthoc_tau:g}"))
    if result.untuned is not None:
        u = result.untuned
        before = "no post-hoc tau" if u["posthoc_tau"] is None else \
            f"post-hoc tau {u['posthoc_tau']:g}"
        print(f"tuned post-hoc tau on the validation split: {result.posthoc_tau:g}; with "
              f"{before} instead: accuracy {u['accuracy']:.4f}, balanced accuracy "
              f"{u['balanced_accuracy']:.4f}, macro F1 {u['macro_f1']:.4f} (tuned: "
              f"{metrics['balanced_accuracy'] - u['balanced_accuracy']:+.4f} balanced "
              "accuracy)")
    print(f"metrics: {os.path.join(args.out, 'metrics.json')}, report: "
          f"{os.path.join(args.out, 'report.html')}")
    return 0


def cmd_compare(args) -> int:
    from longtail.comparison import compare, summary_markdown

    options = _train_options(args)
    options.pop("shot_thresholds")  # an evidence option of compare, passed on to each run
    summaries = compare(args.data, args.strategies.split(","), args.out, test=args.test,
                        verbose=0 if args.quiet else "auto", **_evidence_options(args),
                        **options)
    with open(os.path.join(args.out, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    print()
    print(summary_markdown(summaries, "test data" if args.test else "validation split",
                           summary["verdict"]))
    print(f"report: {os.path.join(args.out, 'compare.html')}")
    failed = [r for r in summary["requirements"] if not r["passed"]]
    for r in summary["requirements"]:
        print(f"require {r['expression']}: {'passed' if r['passed'] else 'FAILED'} "
              f"(difference {r['estimate']:+.4f}, interval [{r['low']:+.4f}, "
              f"{r['high']:+.4f}])", file=sys.stderr)
    return 1 if failed else 0


# ------------------------------------------------- evidence options (issue 17)
def _cost_matrix(args, names):
    if args.cost is None:
        return None
    from longtail.adapt import read_cost_matrix

    return read_cost_matrix(args.cost, names)


def cmd_adapt(args) -> int:
    from longtail.adapt import adapt_run

    result = adapt_run(args.run, args.unlabeled, args.out, prior=args.prior,
                       method=args.method, resamples=args.resamples,
                       batch_size=args.batch_size)
    shares = ", ".join(f"{n} {v:.3f}" for n, v in zip(result["classes"], result["estimate"]))
    print(f"deployment prior ({result['method']}): {shares}")
    print(f"temperature {result['temperature']:.3f}; adapted model: "
          f"{os.path.join(args.out, 'model.keras')}, prior: "
          f"{os.path.join(args.out, 'prior.json')}")
    return 0

def _int_list(name, count=None):
    def parse(text):
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values or (count is not None and len(values) != count):
            what = f"{count} comma-separated integers" if count else "comma-separated integers"
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}")
        return values
    parse.__name__ = name
    return parse


def _add_evidence_options(p: argparse.ArgumentParser, compare: bool) -> None:
    p.add_argument("--resamples", type=int, default=2000,
                   help="bootstrap resamples of the intervals (default: %(default)s)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="coverage of the intervals (default: %(default)s)")
    p.add_argument("--shot-thresholds", type=_int_list("shot-thresholds", 2),
                   default=[100, 20], metavar="MANY,FEW",
                   help="shot groups: many-shot classes have more than MANY training "
                        "samples, few-shot fewer than FEW (default: 100,20)")
    if compare:
        p.add_argument("--seeds", type=_int_list("seeds"), default=None, metavar="S,S,...",
                       help="train every strategy once per seed (default: --seed)")
        p.add_argument("--baseline", default=None, metavar="STRATEGY",
                       help="the strategy others are measured against (default: none, "
                            "when it is among --strategies)")
        p.add_argument("--require", action="append", default=[], metavar="A>B",
                       help="exit 1 unless the interval of A - B (balanced accuracy) "
                            "lies above 0; repeatable (default: no requirement)")


def _evidence_options(args, compare: bool = True) -> dict:
    options = dict(resamples=args.resamples, confidence=args.confidence,
                   shot_thresholds=tuple(args.shot_thresholds))
    if compare:
        options.update(seeds=args.seeds, baseline=args.baseline, require=args.require)
    return options


def cmd_predict(args) -> int:
    from longtail._io import write_text
    from longtail.predict import collect_inputs, predict_files

    v.integer("batch_size", args.batch_size, min=1)
    v.integer("top_k", args.top_k, min=1)
    from longtail.run_evaluation import image_options

    model, model_path, run = _model_of(args.model)
    rows = _feature_rows(args.inputs, run)
    if rows is not None:  # a feature store or table: the head predicts its rows
        from longtail.predict import predict_rows

        names = run["class_names"] if run else rows.class_names
        text = predict_rows(model, rows, class_names=names,
                            priors=run["train_counts"] if run else None,
                            posthoc_tau=args.posthoc_tau, top_k=args.top_k,
                            batch_size=args.batch_size)
        write_text(args.out, text) if args.out else sys.stdout.write(text)
        return 0
    shape = model.inputs[0].shape
    if len(shape) != 4:
        raise LongtailError(f"{model_path}: the model takes rows of {shape[-1]} features, "
                            "not images; predict takes images")
    options = image_options(model, run)
    if None not in tuple(shape[1:3]):  # the model's own size (a head run's backbone)
        options["image_size"] = tuple(shape[1:3])
    k = model.outputs[0].shape[-1]
    names = run["class_names"] if run else [str(i) for i in range(k)]
    if args.posthoc_tau is not None and not run:
        raise LongtailError(f"--posthoc-tau: {args.model} has no config.json with the "
                            "training priors beside it")
    paths = collect_inputs(args.inputs, allow_outside_root=args.allow_outside_root,
                           follow_symlinks=args.follow_symlinks)
    text, failed = predict_files(
        model, paths, class_names=names,
        **options,
        priors=run["train_counts"] if run else None, posthoc_tau=args.posthoc_tau,
        top_k=args.top_k, batch_size=args.batch_size, cost=_cost_matrix(args, names),
        progress=not args.quiet)
    if args.out:
        write_text(args.out, text)
        print(f"{args.out}: {len(paths)} rows ({len(paths) - len(failed)} predicted)",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    if failed:
        print(f"{len(failed)} unreadable inputs (rows with an error, no prediction):",
              file=sys.stderr)
        for path, reason in failed[:20]:
            print(f"  {path}: {reason}", file=sys.stderr)
    return 0


def _feature_rows(inputs, run):
    """The Dataset of INPUT when it is one table of feature rows (a feature store), else None."""
    from longtail.dataset import Dataset

    if len(inputs) != 1 or not str(inputs[0]).lower().endswith((".parquet", ".csv")):
        return None
    try:
        ds = Dataset.open(inputs[0], class_names=run["class_names"] if run else None)
    except LongtailError:
        return None  # a manifest of paths, read by collect_inputs
    return None if ds.source.is_image else ds


def cmd_cache(args) -> int:
    from longtail.cache import build_cache
    from longtail.errors import ConfigError

    if args.check:
        from longtail.cache import check_cache

        if args.data or args.out:
            raise ConfigError("--check CACHE takes no DATA and no --out")
        result = check_cache(args.check, allow_outside_root=args.allow_outside_root)
        print(f"{args.check}: {result.rows} cached rows; {len(result.changed)} sources changed "
              f"(size or modification time), {len(result.missing)} missing")
        for label, paths in (("changed", result.changed), ("missing", result.missing)):
            for path in paths[:20]:
                print(f"  {label}: {path}")
            if len(paths) > 20:
                print(f"  ... and {len(paths) - 20} more {label}")
        return 0 if result.ok else 1
    for value, what in ((args.data, "DATA (or --check CACHE)"), (args.out, "--out CACHE"),
                        (args.image_size, "--image-size (N or HxW, e.g. 64)")):
        if value is None:
            raise ConfigError(f"cache: {what} is required")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=_PILLOW_BOMB)
        result = build_cache(
            args.data, args.out, image_size=args.image_size, format=args.format,
            quality=args.quality, color_mode=args.color_mode, resize=args.resize,
            shard=args.shard, workers=args.workers, rows_per_shard=args.rows_per_shard,
            label_column=args.label_column, path_column=args.path_column,
            weight_column=args.weight_column, follow_symlinks=args.follow_symlinks or None,
            allow_outside_root=args.allow_outside_root or None,
            progress=False if args.quiet else None)
    for w in caught:
        print(f"longtail: warning: {_one_line(w.message)}", file=sys.stderr)
    done = (f"{result.images} images written in {result.shards_built} shards, "
            f"{result.shards_reused} complete shards kept")
    if result.complete:
        m = result.manifest
        h, w = m["image_size"]
        size = sum(f["bytes"] for s in m["shards"] for f in s["files"].values())
        print(f"{args.out}: {m['num_rows']} rows, {m['format']} {h}x{w} {m['color_mode']}, "
              f"{len(m['shards'])} shards, {size / 2**20:.1f} MB ({done})")
    else:
        print(f"{args.out}: part {args.shard} done ({done}); waiting for "
              f"{len(result.missing_shards)} shards of the other parts; the cache opens once "
              "every part is built")
    return 0


# --- longtail features (backbone embeddings as a DATA) ---------------------------------

def cmd_features(args) -> int:
    from longtail.errors import ConfigError
    from longtail.features import check_features, read_identity, write_features

    if args.check:
        identity = check_features(args.check)
        start, stop = identity["rows"]
        skipped = len(identity.get("skipped", []))
        print(f"{args.check}: {stop - start - skipped} rows ({skipped} unreadable images "
              f"skipped), {identity['backbone']} ({identity['weights']}), "
              f"{len(identity['class_names'])} classes: ok")
        return 0
    if args.data is None or args.out is None or args.model is None:
        raise ConfigError("features: DATA, --model NAME and --out FEATS.parquet are required "
                          "(or --check FEATS)")
    try:
        index, count = (int(v) for v in args.shard.split("/"))
    except ValueError as e:
        raise ConfigError(f"--shard must be I/N, e.g. 0/4; got {args.shard!r}") from e
    data_options = {k: v for k, v in (
        ("label_column", args.label_column), ("path_column", args.path_column),
        ("weight_column", args.weight_column)) if v is not None}
    out = write_features(args.data, args.out, model=args.model, weights=args.weights or "imagenet",
                         image_size=args.image_size, batch_size=args.batch_size,
                         dtype=args.dtype, shard=(index, count), resume=args.resume,
                         data_options=data_options, progress=not args.quiet)
    if out != args.out:
        print(f"{out}: shard {args.shard} written; {args.out} is joined by the run that "
              "completes the last shard")
        return 0
    skipped = len(read_identity(out).get("skipped", []))
    print(f"{out}: written ({skipped} unreadable images skipped); a DATA for stats, split, "
          "train, compare, evaluate")
    return 0


def _add_features_parser(sub) -> None:
    from longtail.backbones import BACKBONES

    p = sub.add_parser("features", help="embed DATA once with a pretrained backbone; the "
                                        "result (a .parquet table) is itself a DATA")
    _add_data_options(p, optional=True)
    p.add_argument("--model", default=None,
                   help="the backbone: " + ", ".join(BACKBONES) + " (required unless --check)")
    p.add_argument("--weights", default=None, metavar="imagenet|PATH|none",
                   help="imagenet (from $KERAS_HOME/models, never downloaded), a weights "
                        "file, or none (default: imagenet)")
    p.add_argument("--image-size", default="224", metavar="N|HxW",
                   help="the size images are resized to before the backbone, N or HxW "
                        "(default: %(default)s)")
    p.add_argument("--out", default=None, metavar="FEATS",
                   help="the .parquet file to write (required unless --check)")
    p.add_argument("--batch-size", type=_positive("batch-size"), default=64,
                   help="images per embedding step (default: %(default)s)")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"),
                   help="the stored precision of the features (default: %(default)s)")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="embed part I of N into FEATS.shards/; the run that completes the "
                        "last part joins them into FEATS (default: %(default)s, all of DATA)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (default: start anew)")
    p.add_argument("--check", default=None, metavar="FEATS",
                   help="verify a feature store instead of writing one (default: write)")
    _add_quiet(p, "progress bar")


COMMANDS = {"stats": cmd_stats, "split": cmd_split, "demo": cmd_demo, "train": cmd_train,
            "evaluate": cmd_evaluate, "compare": cmd_compare, "predict": cmd_predict,
            "cache": cmd_cache, "adapt": cmd_adapt, "features": cmd_features}


def _add_backbone_options(p: argparse.ArgumentParser) -> None:
    from longtail.backbones import BACKBONES, FINETUNE_HELP

    p.add_argument("--weights", default=None, metavar="imagenet|PATH|none",
                   help="weights of a pretrained --model (" + ", ".join(BACKBONES) + "): "
                        "imagenet (from $KERAS_HOME/models, never downloaded), a "
                        "weights file, or none (default: imagenet)")
    p.add_argument("--finetune", default="head", metavar="head|top:N|all",
                   help=FINETUNE_HELP + " (default: %(default)s)")
    p.add_argument("--head-epochs", type=int, default=None,
                   help="with --finetune top:N or all: epochs of the head stage (default: "
                        "half of the epochs)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("longtail")
    except PackageNotFoundError:
        return "(not installed)"


def _positive(name: str):
    """An argparse type: an integer >= 1, refused with the option's name otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text}")
        return value
    return parse


def _epochs(text: str):
    """``--epochs``: ``auto`` or a positive integer."""
    return "auto" if text == "auto" else _positive("epochs")(text)


def _add_train_options(p: argparse.ArgumentParser, optional_data: bool = False) -> None:
    from longtail.strategies import STRATEGIES

    _add_data_options(p, optional=optional_data, data_help=(
        "; with --resume, default the DATA the run recorded" if optional_data else ""))
    p.add_argument("--out", required=True, help="the run folder to write (required)")
    p.add_argument("--epochs", type=_epochs, default="auto",
                   help="passes over the training data, or auto: a step budget that grows "
                        "with the data, early stopping on validation balanced accuracy, "
                        "ending on the best epoch (see docs/guide.md) (default: %(default)s)")
    p.add_argument("--batch-size", type=_positive("batch-size"), default=64,
                   help="samples per training step (default: %(default)s)")
    p.add_argument("--image-size", default=None, metavar="N|HxW",
                   help="images: the size every image is resized to, N or HxW (height x "
                        "width); refused for a table of feature rows (default: 64)")
    p.add_argument("--color-mode", default=None, choices=tuple(COLOR_MODES),
                   help="images: the channels decoded; refused for a table of feature rows "
                        "(default: rgb)")
    p.add_argument("--model", default=None,
                   help="the network to train: small-cnn, resnet, mlp, a pretrained backbone "
                        "(see --weights) or a .keras file (default: small-cnn for images, "
                        "mlp for tables)")
    _add_backbone_options(p)
    p.add_argument("--augment", default=None,
                   help="images: training-time augmentation, comma-separated flip, crop, or "
                        "none; refused for a table of feature rows (default: flip,crop)")
    p.add_argument("--val-split", type=_fraction("val-split"), default=0.2,
                   help="fraction of each class held out as the validation split "
                        "(default: %(default)s)")
    p.add_argument("--val", default=None, metavar="DATA",
                   help="validation DATA to use instead of splitting DATA (default: none)")
    p.add_argument("--label-mode", default="int", choices=("int", "categorical"),
                   help="labels as class indices (int) or one-hot vectors (categorical) "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split, sampling, augmentation and initial weights "
                        "(default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=1e-3,
                   help="AdamW peak learning rate, cosine-decayed over the run "
                        "(default: %(default)s)")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop when validation balanced accuracy stalls this many epochs "
                        "(default: off with --epochs N; --epochs auto sets its own)")
    p.add_argument("--tau", type=float, default=1.0,
                   help="logit-adjust: strength of the log-prior offset (default: %(default)s)")
    p.add_argument("--gamma", type=float, default=2.0,
                   help="focal: focusing exponent (default: %(default)s)")
    p.add_argument("--beta", type=float, default=0.999,
                   help="effective-weight: beta of the effective number of samples "
                        "(default: %(default)s)")
    p.add_argument("--drw-epoch", type=int, default=None,
                   help="ldam-drw: the epoch that starts re-weighting; must be below an "
                        "explicit --epochs (default: 80%% of the epochs)")
    p.add_argument("--workers", type=int, default=None,
                   help="decode threads of the loader (default: the number of cores)")
    p.add_argument("--strategy-option", type=_strategy_option, action="append", default=[],
                   metavar="NAME.FIELD=VALUE",
                   help="a strategy's hyper-parameter, e.g. crt.stage2_share=0.5 or "
                        "weight-balancing.max_norm=1 (repeatable; fields in the docs of "
                        "longtail.decoupled) (default: none)")
    p.epilog = "strategies: " + "; ".join(f"{n}: {s.description}"
                                          for n, s in STRATEGIES.items())


def build_parser() -> argparse.ArgumentParser:
    from longtail.strategies import DEFAULT_BALANCE, STRATEGIES

    parser = _Parser(prog="longtail", description=_DESCRIPTION, epilog=_WORKFLOW,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line (default: "
                             "off)")
    parser.add_argument("--version", action="version", version=f"longtail {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("stats", help="class counts, shares and class weights")
    _add_data_options(p)
    p.add_argument("--json", action="store_true",
                   help="print JSON instead of a table (default: a table)")
    _add_quiet(p, "indexing progress bar")

    p = sub.add_parser("split", help="stratified train/val/test manifests")
    _add_data_options(p)
    p.add_argument("--out", required=True,
                   help="the folder for train/val/test.parquet (required)")
    p.add_argument("--val", type=_fraction("val"), default=0.2,
                   help="fraction of each class for val.parquet (default: %(default)s)")
    p.add_argument("--test", type=_fraction("test"), default=0.0,
                   help="fraction of each class for test.parquet; 0 writes none "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the split (default: %(default)s)")
    _add_quiet(p, "indexing progress bar")

    p = sub.add_parser("train", help="train a classifier with a balancing strategy")
    _add_train_options(p, optional_data=True)
    p.add_argument("--balance", default=DEFAULT_BALANCE, metavar="STRATEGY",
                   help="the balancing strategy: " + ", ".join(STRATEGIES)
                        + " (each described below) (default: %(default)s, chosen by "
                          "measurement: docs/guide.md)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its own "
                        "options and DATA (default: start a new run)")
    p.add_argument("--shot-thresholds", type=_int_list("shot-thresholds", 2),
                   default=[100, 20], metavar="MANY,FEW",
                   help="shot groups of the report: many-shot classes have more than MANY "
                        "training samples, few-shot fewer than FEW (default: 100,20)")
    _add_quiet(p, "per-epoch progress")
    p.add_argument("--distribute", action="store_true",
                   help="JAX: data parallel over every device (of every process, with the "
                        "options below); --batch-size is per process (default: one device)")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-host: the address of process 0 (default: "
                        "KERAS_DISTRIBUTION_JOB_ADDRESSES or JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="multi-host: the number of processes (default: "
                        "KERAS_DISTRIBUTION_NUM_PROCESSES or JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="multi-host: this process, 0..N-1 (default: "
                        "KERAS_DISTRIBUTION_PROCESS_ID or JAX_PROCESS_ID)")

    p = sub.add_parser("evaluate", help="per-class metrics and a report for a trained model")
    p.add_argument("model", metavar="MODEL", help="a .keras file or a run folder")
    _add_data_options(p)
    p.add_argument("--out", required=True,
                   help="the folder for metrics.json and report.html (required)")
    p.add_argument("--posthoc-tau", type=float, default=None, metavar="T",
                   help="subtract T * log(training priors) from the logits (default: none)")
    p.add_argument("--tune-tau", action="store_true",
                   help="pick the post-hoc tau with the best balanced accuracy on the run's "
                        "validation split, and print the untuned figures beside it "
                        "(default: off)")
    p.add_argument("--batch-size", type=_positive("batch-size"), default=64,
                   help="samples per evaluation step (default: %(default)s)")
    _add_evidence_options(p, compare=False)
    _add_quiet(p, "progress bar")

    p = sub.add_parser("predict", help="predict classes of files, folders or a manifest")
    p.add_argument("model", metavar="MODEL", help="a .keras file or a run folder")
    p.add_argument("inputs", metavar="INPUT", nargs="+",
                   help="image files, folders (searched recursively) or manifests")
    p.add_argument("--posthoc-tau", type=float, default=None, metavar="T",
                   help="subtract T * log(training priors) from the logits (default: none)")
    p.add_argument("--top-k", type=_positive("top-k"), default=1, metavar="K",
                   help="write the K most likely classes per input (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="the CSV file to write (default: standard output)")
    p.add_argument("--batch-size", type=_positive("batch-size"), default=64,
                   help="inputs per prediction step (default: %(default)s)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept a manifest whose paths lead outside its folder (default: "
                        "refused)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="follow symbolic links inside INPUT folders (default: skipped, "
                        "as when indexing)")
    p.add_argument("--cost", default=None, metavar="COSTS.csv",
                   help="predict the class of least expected cost; CSV: header "
                        "true,<class>,..., one row per true class (default: the most "
                        "probable class)")
    _add_quiet(p, "progress bar")
    _add_file_size_option(p)

    p = sub.add_parser("adapt", help="estimate the deployment class prior (label shift) "
                                     "and write an adapted model")
    p.add_argument("run", metavar="RUN", help="a run folder of longtail train")
    p.add_argument("--unlabeled", required=True, metavar="DATA",
                   help="deployment data: any DATA (labels ignored) or image files/folders "
                        "(required)")
    p.add_argument("--out", required=True,
                   help="the folder for model.keras and prior.json (required)")
    p.add_argument("--prior", default=None, metavar="uniform|train|FILE",
                   help="a known target prior instead of estimating it (default: estimated "
                        "from --unlabeled)")
    _add_file_size_option(p)
    p.add_argument("--method", default="em", choices=("em", "bbse"),
                   help="the estimate to adapt to; both are in prior.json "
                        "(default: %(default)s)")
    p.add_argument("--resamples", type=int, default=200,
                   help="bootstrap resamples of the estimate's interval (default: %(default)s)")
    p.add_argument("--batch-size", type=_positive("batch-size"), default=64,
                   help="samples per prediction step (default: %(default)s)")

    p = sub.add_parser("compare", help="train several strategies on one split, side by side")
    _add_train_options(p)
    p.add_argument("--strategies", required=True,
                   help="comma-separated strategies, e.g. none,class-weight,logit-adjust "
                        "(required)")
    p.add_argument("--test", default=None, metavar="DATA",
                   help="held-out DATA to measure on (default: the validation split)")
    _add_evidence_options(p, compare=True)
    _add_quiet(p, "per-run and per-epoch progress")

    p = sub.add_parser("cache", help="decode DATA once into a fixed-size cache (itself a DATA)",
                       description="longtail cache DATA --out CACHE --image-size S, or "
                                   "longtail cache --check CACHE (exit 1 if sources changed)")
    _add_data_options(p, optional=True)
    p.add_argument("--out", default=None, metavar="CACHE",
                   help="cache folder: new, or a cache to resume or repair (required "
                        "unless --check)")
    p.add_argument("--image-size", default=None, metavar="N|HxW",
                   help="the size images are stored at, N or HxW (height x width) "
                        "(required unless --check; no default)")
    p.add_argument("--format", default="raw", choices=("raw", "jpeg"),
                   help="raw: uint8 arrays, memory-mapped; jpeg: re-encoded at the size, "
                        "about 4-6x smaller than raw on photo-like images (see "
                        "docs/cache.md) (default: %(default)s)")
    p.add_argument("--quality", type=int, default=None,
                   help="JPEG quality of --format jpeg, 1-100 (default: 90)")
    p.add_argument("--color-mode", default="rgb", choices=tuple(COLOR_MODES),
                   help="the channels stored (default: %(default)s)")
    p.add_argument("--resize", default="stretch", choices=RESIZE_MODES,
                   help="fit images to the size by stretching, centre-cropping or padding "
                        "(default: %(default)s)")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="build part I of N (machines sharing CACHE each build one part) "
                        "(default: %(default)s, the whole cache)")
    p.add_argument("--workers", type=int, default=None,
                   help="decode threads (default: the number of cores)")
    p.add_argument("--rows-per-shard", type=int, default=None,
                   help="images per shard (default: about 64 MB of pixels)")
    p.add_argument("--check", default=None, metavar="CACHE",
                   help="report sources changed or missing since they were cached, instead "
                        "of building (default: build)")
    _add_quiet(p, "progress bar")

    _add_features_parser(sub)

    p = sub.add_parser("demo", help="build Digits-LT and show what balancing does")
    p.add_argument("--out", default="longtail-demo",
                   help="the folder for the data set and the comparison (default: "
                        "%(default)s)")
    p.add_argument("--epochs", type=_positive("epochs"), default=30,
                   help="epochs per strategy (default: %(default)s)")
    _add_quiet(p, "per-epoch progress bars")
    return parser


# Library parameter -> command-line flag, for messages: the library names its
# parameters ("`batch_size` must be ..."), the command line shows the flag.
_FLAGS = {
    "batch_size": "--batch-size", "epochs": "--epochs", "image_size": "--image-size",
    "color_mode": "--color-mode", "label_mode": "--label-mode", "val_split": "--val-split",
    "val": "--val", "test": "--test", "seed": "--seed", "learning_rate": "--learning-rate",
    "early_stopping": "--early-stopping", "tau": "--tau", "gamma": "--gamma",
    "beta": "--beta", "drw_epoch": "--drw-epoch", "num_workers": "--workers",
    "workers": "--workers", "top_k": "--top-k", "posthoc_tau": "--posthoc-tau",
    "strategies": "--strategies", "balance": "--balance", "quality": "--quality",
    "rows_per_shard": "--rows-per-shard", "model": "--model", "augment": "--augment",
    "shot_thresholds": "--shot-thresholds",
    "max_file_bytes": "--max-file-bytes",
}


def _flags(message: str) -> str:
    """A library message with its `parameter` names shown as the flags that set them."""
    return re.sub(r"`(\w+)`", lambda m: _FLAGS.get(m.group(1), m.group(0)), message)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that temp files and stages are removed."""


def _terminate(signum, frame):
    raise _Terminated()


def _resume_hint(args) -> str:
    """For an interrupted ``train``: the command that continues the run."""
    if args.command != "train" or not os.path.isfile(os.path.join(args.out, runs.CONFIG)):
        return ""
    import shlex

    return ("; the run continues where its last finished epoch left it with: "
            f"longtail train --resume --out {shlex.quote(args.out)}")


def _one_line(text) -> str:
    """A message on one line: newlines (in file names, say) shown as \\n."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


# Pillow warns, without the file name, about images that the decoder's
# max_pixels then refuses with a DecodeError naming the file.
_PILLOW_BOMB = "Image size .* decompression bomb"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"longtail: warning: {_one_line(message)}", file=sys.stderr)


def main(argv=None) -> int:
    process = argv is None  # the process's own command line: the program ends after this
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    if threading.current_thread() is not threading.main_thread():
        return _run(args, debug)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = _run(args, debug)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if process and code == 130:
        # Ctrl-C: the run folder is consistent and unlocked, the line printed. Tearing
        # down the backend and the loader's threads would take seconds more; Ctrl-C
        # should stop at once.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe
                pass
        os._exit(code)
    return code


def _run(args, debug: bool) -> int:
    """Runs the command; a bad input or argument is one line and exit status 2."""
    try:
        with warnings.catch_warnings():
            if not debug:  # one line per warning, without the source line
                warnings.showwarning = _show_warning
            warnings.filterwarnings("ignore", message=_PILLOW_BOMB)
            with file_size_limit(_max_file_bytes(args)):
                return COMMANDS[args.command](args) or 0
    except LongtailError as e:
        if debug:
            raise
        print(f"longtail: error: {_one_line(_flags(str(e)))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        return 0
    except OSError as e:  # unreadable input, unwritable --out, full disk
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"longtail: error: {_one_line(where)}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if sys.stdout.isatty():  # end a progress bar's line: the message gets its own
            print(flush=True)
        print(f"longtail: interrupted{_resume_hint(args)}", file=sys.stderr, flush=True)
        return 130
    except _Terminated:
        print("longtail: terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
