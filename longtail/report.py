"""Self-contained HTML reports of an evaluation, and of a strategy comparison.

:func:`write_report` turns a ``metrics.json`` dict (and optionally the run's
``history.csv`` and resolved config) into ``report.html`` plus the PNG plots
beside it; :func:`write_compare_report` turns several runs into
``compare.html``. The HTML embeds its plots as base64 PNGs and needs no
scripts, fonts or network. Plots are drawn with matplotlib's Agg canvas
directly (no ``pyplot``, so no global backend is changed). Every user-provided
string is HTML-escaped; every file is written atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from longtail import _io
from longtail.errors import ConfigError, DataError
from longtail.metrics import SPARSE_CONFUSION_ABOVE

__all__ = ["write_report", "write_compare_report", "read_history", "MIN_SUPPORT",
           "SUMMARISE_CLASSES_ABOVE"]

#: Classes with fewer test samples than this are marked "too few to judge" in
#: the tables: their recall moves by 1/support with one sample (a third with 3),
#: so a best value among them is noise, not evidence.
MIN_SUPPORT = 5

_SHOT_COLORS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .7em;text-align:right;
border-bottom:1px solid #eee}th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
.wide{overflow-x:auto}.wide img{max-width:none}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
.note{color:#666;font-size:.9em}
"""


# ----------------------------------------------------------------- plotting
def _label(name: str, limit: int = 24) -> str:
    """A class name fit for a tick label: short, and with ``$`` not read as math."""
    name = name if len(name) <= limit else name[: limit - 1] + "\u2026"
    return name.replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


#: Above this many classes, plots stop naming every class (the tables do).
_MAX_NAMED = {"bars": 60, "matrix": 120}


def _class_ticks(ax, names: Sequence[str], axis: str, limit: int) -> bool:
    """Names every class when there are few enough to read; returns whether it did."""
    k = len(names)
    if k > limit:
        return False
    fontsize = float(np.clip(400 / k, 6, 10)) if axis == "x" else float(np.clip(300 / k, 6, 10))
    getattr(ax, f"set_{axis}ticks")(range(k), [_label(n) for n in names],
                                   fontsize=fontsize, rotation=90 if axis == "x" else 0)
    return True


#: Pairs of classes drawn when the confusion matrix is too large to picture.
_TOP_PAIRS = 25


def _confusion_note(metrics: dict) -> str:
    if isinstance(metrics["confusion_matrix"], dict):
        return (f"{len(metrics['classes']):,} classes: too many for a matrix (metrics.json "
                f"stores it sparse). Left: the {_TOP_PAIRS} most frequent confusions, as a "
                "share of the true class's samples (count at the bar). Right, with training "
                "counts: test samples of each shot group by the group of the predicted class, "
                "rows normalised.")
    return ("Rows are true classes, columns predictions; each row is divided by its "
            "class's sample count. Grey rows: no samples.")


def _most_confused(metrics: dict, n: int):
    """``(true, predicted, count, off_diagonal_cells)`` of the ``n`` largest
    off-diagonal cells, most samples first (ties by class index)."""
    from longtail.metrics import confusion_entries

    true, pred, count, _ = confusion_entries(metrics["confusion_matrix"])
    off = true != pred
    true, pred, count = true[off], pred[off], count[off]
    top = np.lexsort((pred, true, -count))[:n]
    return true[top], pred[top], count[top], int(off.sum())


def _plot_confused_pairs(metrics: dict) -> bytes:
    """The most confused pairs and the per-group confusion, for a sparse matrix."""
    names = metrics["classes"]
    true, pred, count, cells = _most_confused(metrics, _TOP_PAIRS)
    support = np.asarray(metrics["true_distribution"], dtype=np.float64)
    top = np.arange(len(count))
    groups = metrics.get("group_confusion")
    fig = Figure(figsize=(12 if groups else 8, max(3.0, 0.28 * len(top) + 1.5)), dpi=100,
                 layout="constrained")
    ax = fig.add_subplot(1, 2 if groups else 1, 1)
    share = count[top] / support[true[top]]
    labels = [f"{_label(names[t])} \u2192 {_label(names[p])}"
              for t, p in zip(true[top], pred[top])]
    ax.barh(range(len(top)), share, color="#1f77b4")
    ax.set_yticks(range(len(top)), labels, fontsize=8)
    ax.invert_yaxis()
    for i, (v, c) in enumerate(zip(share, count[top])):
        ax.text(v, i, f" {int(c)}", va="center", fontsize=7)
    ax.set_xlabel("share of the true class predicted as the other")
    ax.set_title(f"Most confused pairs (true \u2192 predicted), of {cells:,} "
                 "off-diagonal cells", fontsize=10)
    if not len(top):
        ax.text(0.5, 0.5, "no confusions", ha="center", va="center", transform=ax.transAxes)
    if groups:
        gm = np.asarray(groups["matrix"], dtype=np.float64)
        rows = gm.sum(axis=1, keepdims=True)
        norm = np.divide(gm, rows, out=np.full_like(gm, np.nan), where=rows > 0)
        gx = fig.add_subplot(1, 2, 2)
        gx.imshow(np.ma.masked_invalid(norm), cmap=colormaps["Blues"], vmin=0, vmax=1)
        g = len(groups["groups"])
        gx.set_xticks(range(g), groups["groups"])
        gx.set_yticks(range(g), groups["groups"])
        for i, j in np.ndindex(g, g):
            if rows[i, 0] > 0:
                gx.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if norm[i, j] > 0.55 else "#333")
        gx.set_xlabel("group of the predicted class")
        gx.set_ylabel("true group")
        gx.set_title("Confusion by shot group, rows normalised", fontsize=10)
    return _png(fig)


def _plot_confusion(metrics: dict) -> bytes:
    if isinstance(metrics["confusion_matrix"], dict):  # sparse: too many classes to draw
        return _plot_confused_pairs(metrics)
    names = metrics["classes"]
    k = len(names)
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.full_like(cm, np.nan), where=rows > 0)
    # At least 10 px a cell while classes are named (past ~100 classes the PNG is
    # wider than the page and scrolls), a fixed picture of the pattern beyond.
    named = k <= _MAX_NAMED["matrix"]
    side = float(np.clip(0.1 * k + 3, 5, 15)) if named else 11.0
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["Blues"].with_extremes(bad="#e0e0e0")
    image = ax.imshow(np.ma.masked_invalid(norm), cmap=cmap, vmin=0, vmax=1,
                      interpolation="nearest", aspect="equal")
    _class_ticks(ax, names, "x", _MAX_NAMED["matrix"])
    _class_ticks(ax, names, "y", _MAX_NAMED["matrix"])
    if k <= 15:
        for i, j in np.ndindex(k, k):
            if rows[i, 0] > 0:
                v = norm[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if v > 0.55 else "#333")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix, rows normalised", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    return _png(fig)


def _order(metrics: dict, train_counts) -> tuple[np.ndarray, np.ndarray, str]:
    """Class order for the bar plots: by training count, else by support."""
    per_class = metrics["per_class"]
    if train_counts is None and all("train_count" in row for row in per_class):
        train_counts = [row["train_count"] for row in per_class]
    if train_counts is not None:
        counts = np.asarray(train_counts, dtype=np.int64).reshape(-1)
        if counts.shape != (len(per_class),):
            raise ConfigError(f"`train_counts` must have {len(per_class)} values; "
                              f"got {counts.size}")
        what = "training count"
    else:
        counts = np.asarray([row["support"] for row in per_class], dtype=np.int64)
        what = "evaluation support"
    return np.argsort(-counts, kind="stable"), counts, what


def _bar_figure(k: int, height: float = 4.5) -> Figure:
    width = float(np.clip(0.16 * k + 3, 7, 10.5))
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _bar_style(k: int) -> dict:
    # Past a few pixels a bar, gaps and antialiasing make stripes: bars touch.
    return {"width": 0.8} if k <= _MAX_NAMED["bars"] else {
        "width": 1.0, "linewidth": 0, "antialiased": False}


def _class_axis(ax, names: Sequence[str], what: str, counted: bool = False,
                table: bool = True) -> None:
    """Names the classes on the x axis, or numbers their rank when too many."""
    if _class_ticks(ax, names, "x", _MAX_NAMED["bars"]):
        ax.set_xlabel(f"class{f' ({what})' if counted else ''}, ordered by {what}")
    else:
        note = " (names in the per-class table)" if table else ""
        ax.set_xlabel(f"class rank by {what}{note}")


#: Above this many classes the per-class plots summarise instead of drawing one
#: bar per class (10,000 bars take minutes to draw and show only a texture):
#: recall per shot group and along the class ranks, distributions summed over
#: bins of classes, confusions as the most confused pairs. The threshold is the
#: one past which ``metrics.json`` stores the confusion matrix sparse.
SUMMARISE_CLASSES_ABOVE = SPARSE_CONFUSION_ABOVE
_RANK_BINS = 100  # bins of consecutive classes in the summaries


def _summarised(metrics: dict) -> bool:
    return len(metrics["classes"]) > SUMMARISE_CLASSES_ABOVE


def _rank_bins(k: int, bins: int = _RANK_BINS) -> np.ndarray:
    """Edges of ``bins`` near-equal runs of consecutive class ranks 0..k."""
    return np.unique(np.linspace(0, k, min(bins, k) + 1).round().astype(np.int64))


def _binned(values: np.ndarray, edges: np.ndarray, how) -> np.ndarray:
    """``how`` (e.g. ``np.mean``) of ``values`` over each run of ranks."""
    return np.array([how(values[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])])


def _plot_recall_summary(metrics: dict, train_counts) -> bytes:
    """Per-class recall of many classes: per shot group, and along the class ranks."""
    order, counts, what = _order(metrics, train_counts)
    per_class = metrics["per_class"]
    k = len(order)
    recall = np.array([per_class[i]["recall"] for i in order])
    shots = np.array([per_class[i].get("shot") or "all" for i in order])
    fig = Figure(figsize=(12, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    groups = [g for g in ("many", "medium", "few", "all") if np.any(shots == g)]
    box = ax.boxplot([recall[shots == g] for g in groups], showmeans=True, patch_artist=True,
                     tick_labels=[f"{g}-shot\n({np.sum(shots == g):,} classes)"
                                  if g != "all" else f"all\n({k:,} classes)" for g in groups])
    for patch, g in zip(box["boxes"], groups):
        patch.set_facecolor(_SHOT_COLORS.get(g, "#4c72b0"))
        patch.set_alpha(0.5)
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("recall of a class")
    ax.set_title("Per-class recall by shot group (box: quartiles; triangle: mean)",
                 fontsize=10)
    bx = fig.add_subplot(1, 2, 2)
    edges = _rank_bins(k)
    mid = (edges[:-1] + edges[1:] - 1) / 2
    bx.fill_between(mid, _binned(recall, edges, lambda v: np.percentile(v, 10)),
                    _binned(recall, edges, lambda v: np.percentile(v, 90)),
                    color="#9db4d8", alpha=0.6, label="10th to 90th percentile")
    bx.plot(mid, _binned(recall, edges, np.mean), color="#1f4e8c", label="mean")
    bx.set_ylim(-0.02, 1.05)
    bx.set_xlim(0, k - 1)
    bx.set_xlabel(f"class rank by {what} (names in the per-class table)")
    bx.set_ylabel("recall")
    bx.set_title(f"Recall over runs of about {k // (len(edges) - 1):,} classes, "
                 f"{what} as the line (right axis)", fontsize=10)
    bx.legend(fontsize=8, loc="upper right")
    twin = bx.twinx()
    twin.plot(mid, _binned(np.maximum(counts[order], 0.5), edges, np.median), color="#555",
              linewidth=1)
    twin.set_yscale("log")
    twin.set_ylabel(f"{what} (median of the run)")
    return _png(fig)


def _plot_distribution_summary(metrics: dict, train_counts) -> bytes:
    """True against predicted samples of many classes, summed over runs of class ranks."""
    order, _, what = _order(metrics, train_counts)
    k = len(order)
    true = np.asarray(metrics["true_distribution"])[order]
    pred = np.asarray(metrics["predicted_distribution"])[order]
    edges = _rank_bins(k)
    fig = _bar_figure(k)
    ax = fig.add_subplot()
    width = np.diff(edges)
    ax.bar(edges[:-1], _binned(true, edges, np.sum), width=width, align="edge",
           color="#9db4d8", label="true", linewidth=0)
    ax.stairs(_binned(pred, edges, np.sum), edges, color="#dd8452", linewidth=1.2,
              label="predicted")
    ax.set_xlim(0, k)
    ax.set_xlabel(f"class rank by {what} (names in the per-class table)")
    ax.set_ylabel("samples in the run of classes")
    ax.set_title(f"True versus predicted samples, summed over runs of about "
                 f"{k // (len(edges) - 1):,} classes", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _confused_pairs_table(metrics: dict) -> str:
    """The most confused pairs as a table (for a sparse matrix)."""
    names = metrics["classes"]
    true, pred, count, _ = _most_confused(metrics, _TOP_PAIRS)
    support = metrics["true_distribution"]
    rows = [[_fmt(names[t]), _fmt(names[p]), _fmt(int(c)), _few(support[t]),
             _fmt(c / support[t])] for t, p, c in zip(true, pred, count)]
    return _table(["true class", "predicted as", "samples", "support of the true class",
                   "share"], rows)


def _plot_recall(metrics: dict, train_counts) -> bytes:
    if _summarised(metrics):
        return _plot_recall_summary(metrics, train_counts)
    order, counts, what = _order(metrics, train_counts)
    per_class = metrics["per_class"]
    k = len(order)
    recall = np.array([per_class[i]["recall"] for i in order])
    shots = [per_class[i].get("shot") for i in order]
    colors = [_SHOT_COLORS.get(s, "#4c72b0") for s in shots]
    fig = _bar_figure(k)
    ax = fig.add_subplot()
    ax.bar(range(k), recall, color=colors, **_bar_style(k))
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    _class_axis(ax, [f"{metrics['classes'][i]} ({counts[i]})" for i in order], what,
                counted=True)
    ax.set_title(f"Per-class recall; {what} as the line (right axis)", fontsize=10)
    twin = ax.twinx()
    twin.plot(range(k), np.maximum(counts[order], 0.5), color="#555", marker=".",
              linewidth=1)
    twin.set_yscale("log")
    twin.set_ylabel(what)
    if any(s is not None for s in shots):
        from matplotlib.patches import Patch

        handles = [Patch(color=c, label=f"{g}-shot") for g, c in _SHOT_COLORS.items()
                   if g in shots]
        fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return _png(fig)


def _plot_distribution(metrics: dict, train_counts) -> bytes:
    if _summarised(metrics):
        return _plot_distribution_summary(metrics, train_counts)
    order, _, what = _order(metrics, train_counts)
    k = len(order)
    true = np.asarray(metrics["true_distribution"])[order]
    pred = np.asarray(metrics["predicted_distribution"])[order]
    fig = _bar_figure(k)
    ax = fig.add_subplot()
    x = np.arange(k)
    if k <= _MAX_NAMED["bars"]:
        ax.bar(x - 0.2, true, width=0.4, label="true", color="#4c72b0")
        ax.bar(x + 0.2, pred, width=0.4, label="predicted", color="#dd8452")
    else:  # bars too thin to pair: predicted as a line over the true bars
        ax.bar(x, true, label="true", color="#9db4d8", **_bar_style(k))
        ax.step(x, pred, where="mid", label="predicted", color="#dd8452", linewidth=1.2)
    ax.set_xlim(-0.6, k - 0.4)
    _class_axis(ax, [metrics["classes"][i] for i in order], what)
    ax.set_ylabel("samples")
    ax.set_title("True versus predicted class distribution", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def read_history(path) -> dict[str, np.ndarray]:
    """Reads a Keras ``CSVLogger`` file into ``{column: float array}``.

    Raises:
        DataError: The file is missing or has no ``epoch`` column.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DataError(f"{path}: cannot read the training history: {e}") from e
    if rows and "epoch" not in rows[0]:
        raise DataError(f"{path}: a training history needs an `epoch` column; "
                        f"got columns {list(rows[0])}")

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return float("nan")

    columns = list(rows[0]) if rows else []
    return {c: np.array([number(r[c]) for r in rows]) for c in columns}


def _history_panels(history) -> list[tuple[str, list[str]]]:
    """The training-curve panels: losses, metrics, and seconds on their own axis
    (an epoch's 16 s on the accuracy axis would flatten every 0-1 curve)."""
    losses = [c for c in history if c.endswith("loss")]
    times = [c for c in history if c.endswith("seconds") and c not in losses]
    others = [c for c in history if c != "epoch" and c not in losses and c not in times
              and c not in ("lr", "learning_rate")]
    return [(title, p) for title, p in (("loss", losses), ("metrics", others),
                                        ("time per epoch", times)) if p]


def _plot_history(history: dict[str, np.ndarray]) -> bytes | None:
    if not history or len(history.get("epoch", [])) == 0:
        return None
    epoch = history["epoch"] + 1
    panels = _history_panels(history)
    if not panels:
        return None
    fig = Figure(figsize=(5.5 * len(panels), 4), dpi=100, layout="constrained")
    for n, (title, columns) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), n)
        for c in columns:
            ax.plot(epoch, history[c], marker="o" if len(epoch) < 30 else None,
                    linestyle="--" if c.startswith("val_") else "-", label=_label(c, 40))
        ax.set_xlabel("epoch")
        if title == "time per epoch":
            ax.set_ylabel("seconds")
            ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _png(fig)


# --------------------------------------------------------------------- HTML
def _fmt(value) -> str:
    if value is None:
        return "\u2014"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4f}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(data: bytes, alt: str) -> str:
    """The PNG inline, at its natural size; a section scrolls when it is wider."""
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<div class="wide"><img src="data:image/png;base64,{encoded}" '
            f'alt="{html.escape(alt)}"></div>')


def _write_png(out_dir: Path, name: str, data: bytes) -> None:
    with _io.atomic_path(out_dir / name) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<section><h2>{html.escape(h)}</h2>{content}</section>"
                   for h, content in sections)
    t = html.escape(title)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{t}</title><style>{_CSS}</style></head>"
            f"<body><h1>{t}</h1>{body}</body></html>\n")


def _evaluated_on(evaluated_on: dict | None) -> str:
    """The sentence that names the data a page measured (split, path, samples)."""
    if not evaluated_on:
        return ""
    split = evaluated_on.get("split") or "given"
    data = evaluated_on.get("data")
    samples = evaluated_on.get("samples")
    where = ", ".join(x for x in (None if data is None else f"<code>{html.escape(str(data))}"
                                  "</code>", None if samples is None else
                                  f"{int(samples):,} samples") if x)
    return (f'<p class="evaluated"><strong>Measured on the {html.escape(str(split))} '
            f"data</strong>{f' ({where})' if where else ''}.</p>")


def _few(support) -> str:
    """A support cell: the count, marked when it is too small to judge the class."""
    if support is None or support >= MIN_SUPPORT:
        return _fmt(support)
    return (f'{_fmt(support)} <span class="note" title="fewer than {MIN_SUPPORT} test '
            f'samples">(too few to judge)</span>')


def _summary_rows(metrics: dict) -> list[tuple[str, str]]:
    rows = [("samples", _fmt(metrics.get("n_samples"))),
            ("accuracy", _fmt(metrics.get("accuracy"))),
            ("balanced accuracy", _fmt(metrics.get("balanced_accuracy"))),
            ("macro F1", _fmt(metrics.get("macro_f1"))),
            ("geometric mean of recalls", _fmt(metrics.get("geometric_mean_recall")))]
    for k, v in (metrics.get("top_k_accuracy") or {}).items():
        rows.append((f"top-{html.escape(str(k))} accuracy", _fmt(v)))
    if "shot_thresholds" in metrics:
        many, few = metrics["shot_thresholds"]
        rows += [(f"many-shot accuracy (&gt; {many} training samples)",
                  _fmt(metrics.get("many_shot_accuracy"))),
                 (f"medium-shot accuracy ({few}\u2013{many})",
                  _fmt(metrics.get("medium_shot_accuracy"))),
                 (f"few-shot accuracy (&lt; {few})", _fmt(metrics.get("few_shot_accuracy")))]
    if metrics.get("posthoc_tau") is not None:
        rows.append(("post-hoc logit adjustment \u03c4", _fmt(metrics["posthoc_tau"])))
    return rows


def _recall_cell(recall: float) -> str:
    pct = 100 * max(0.0, min(1.0, recall))
    return (f'<span style="display:block;background:linear-gradient(90deg,#cfe0f3 '
            f'{pct:.0f}%,transparent {pct:.0f}%)">{_fmt(recall)}</span>')


def _per_class_table(metrics: dict, train_counts) -> str:
    order, counts, what = _order(metrics, train_counts)
    has_train = what == "training count"
    header = ["class"] + (["train count", "shot"] if has_train else []) + [
        "support", "predicted", "precision", "recall", "F1"]
    rows = []
    for i in order:
        row = metrics["per_class"][i]
        cells = [_fmt(row["class"])]
        if has_train:
            cells += [_fmt(int(counts[i])), _fmt(row.get("shot"))]
        cells += [_few(row["support"]), _fmt(row["predicted"]), _fmt(row["precision"]),
                  _recall_cell(row["recall"]), _fmt(row["f1"])]
        rows.append(cells)
    return (f'<p class="note">Ordered by {what}, largest first. A class with fewer than '
            f"{MIN_SUPPORT} test samples is marked too few to judge: one sample moves its "
            "recall by 1/support.</p>" + _table(header, rows))


def write_report(out_dir, metrics: dict, *, history_csv=None, config: dict | None = None,
                 train_counts=None, title: str = "longtail report",
                 evaluated_on: dict | None = None) -> Path:
    """Writes ``report.html`` and its PNG plots into ``out_dir``.

    Args:
        out_dir: Output folder (created if needed).
        metrics: A ``metrics.json`` dict, as from
            :func:`longtail.metrics.compute_metrics`.
        history_csv: A Keras ``CSVLogger`` file for the training curves;
            default ``out_dir/history.csv`` when it exists.
        config: The resolved run configuration, shown as JSON.
        train_counts: Training samples per class, in class order; default the
            ``train_count`` of ``metrics["per_class"]``. Orders the per-class
            plots and table (without it: by evaluation support).
        title: Page title.
        evaluated_on: The data the metrics were measured on, named at the top
            of the page: ``{"split": "validation" | "test" | ..., "data":
            path, "samples": n}``; default ``metrics["evaluated_on"]``.

    Returns:
        The path of ``report.html``. Beside it: ``confusion_matrix.png``,
        ``per_class_recall.png``, ``class_distribution.png`` and, with a
        history, ``training_curves.png``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for key in ("classes", "per_class", "confusion_matrix", "true_distribution",
                "predicted_distribution"):
        if key not in metrics:
            raise DataError(f"`metrics` lacks {key!r}: pass a metrics.json dict")
    if history_csv is None and (out / "history.csv").is_file():
        history_csv = out / "history.csv"
    k = len(metrics["classes"])
    summarised = (f"{k:,} classes: too many to draw one bar each, so this plot "
                  "summarises; every class's values are in the per-class table below and "
                  "in metrics.json. ") if _summarised(metrics) else ""
    plots = {
        "per_class_recall.png": (
            "Per-class recall", summarised + (
                "Left: the recall of the classes of each shot group. Right: the mean "
                "recall of runs of consecutive classes, head classes first, with the "
                "10th to 90th percentile of the run. A curve that falls toward the tail "
                "means the model still favours frequent classes." if summarised else
                "Recall of each class, head classes first. Bars that fall toward the "
                "tail mean the model still favours frequent classes."),
            _plot_recall(metrics, train_counts)),
        "confusion_matrix.png": (
            "Confusion matrix", _confusion_note(metrics), _plot_confusion(metrics)),
        "class_distribution.png": (
            "Predicted versus true class distribution", summarised + (
                "Samples of runs of consecutive classes, head classes first: how often "
                "they are predicted against how often they occur." if summarised else
                "How often each class is predicted against how often it occurs."),
            _plot_distribution(metrics, train_counts)),
    }
    if history_csv is not None:
        curves = _plot_history(read_history(history_csv))
        if curves is not None:
            plots["training_curves.png"] = ("Training curves", "From the training "
                                            "history; dashed: validation.", curves)

    sections = [("Summary", _evaluated_on(evaluated_on or metrics.get("evaluated_on"))
                 + _table(["metric", "value"], _summary_rows(metrics)))]
    for name, (heading, note, data) in plots.items():
        _write_png(out, name, data)
        pairs = (f'<p class="note">The {_TOP_PAIRS} most confused pairs:</p>'
                 + _confused_pairs_table(metrics)
                 if name == "confusion_matrix.png" and isinstance(
                     metrics["confusion_matrix"], dict) else "")
        sections.append((heading, f'<p class="note">{note}</p>' + _img(data, heading)
                         + pairs))
    sections.append(("Per-class metrics", _per_class_table(metrics, train_counts)))
    for name, (heading, content, data) in _audit(metrics).items():
        if data is not None:
            _write_png(out, name, data)
        sections.append((heading, content))
    if config is not None:
        text = json.dumps(config, indent=2, sort_keys=True, default=str)
        sections.append(("Configuration", f"<pre>{html.escape(text)}</pre>"))
    path = out / "report.html"
    _io.write_text(path, _page(title, sections))
    return path


# --------------------------------------------------------------- the audit
_SHIFT_NOTE = ("Each strategy's metrics when the class mix of the test data moves from the "
               "training prior (left) through uniform (middle) to the reversed prior "
               "(right), computed by re-weighting the test samples (no re-training). "
               "Balanced accuracy is the same at every mix (it weighs classes equally), "
               "so only accuracy and macro F1 are drawn; its value is in the summary.")


def _plot_prior_shift(curves: dict[str, dict]) -> bytes:
    fig = Figure(figsize=(10, 3.8), dpi=100, layout="constrained")
    palette = colormaps["tab10"]
    for n, key in enumerate(("accuracy", "macro_f1"), start=1):
        ax = fig.add_subplot(1, 2, n)
        for j, (name, curve) in enumerate(curves.items()):
            ax.plot(curve["t"], curve[key], label=_label(str(name), 40), color=palette(j % 10))
        ax.set_xticks([-1, 0, 1], ["training prior", "uniform", "reversed"])
        ax.set_ylabel(key.replace("_", " "))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{key.replace('_', ' ')} under prior shift", fontsize=10)
    if len(curves) > 1:
        fig.legend(fontsize=8, loc="outside right upper")
    return _png(fig)


def _plot_reliability(calibration: dict) -> bytes | None:
    rel = calibration.get("reliability") or {}
    stages = [st for st in ("before", "after") if any(st in v for v in rel.values())]
    if not stages:
        return None
    fig = Figure(figsize=(4.6 * len(stages), 4), dpi=100, layout="constrained")
    for n, stage in enumerate(stages, start=1):
        ax = fig.add_subplot(1, len(stages), n)
        ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1)
        for name, color in (("head", _SHOT_COLORS["many"]), ("tail", _SHOT_COLORS["few"])):
            d = rel.get(name, {}).get(stage)
            if d:
                ax.plot(d["confidence"], d["frequency"], marker="o", color=color,
                        label=f"{name} classes")
        t = calibration.get("temperature")
        ax.set_title("before temperature scaling" if stage == "before" else
                     f"after temperature scaling (T = {t:.2f})", fontsize=10)
        ax.set_xlabel("predicted probability of the class")
        ax.set_ylabel("observed frequency")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    return _png(fig)


def _calibration_table(calibration: dict) -> str:
    stages = [st for st in ("before", "after") if st in calibration["ece_groups"]]
    rows = [[f"{g}-shot classes"] + [_fmt(calibration["ece_groups"][st][g]) for st in stages]
            for g in ("many", "medium", "few")]
    rows.append(["all classes"] + [_fmt(float(np.mean(calibration["ece_per_class"][st])))
                                   for st in stages])
    if calibration.get("val_nll"):
        rows.append(["validation NLL"] + [_fmt(calibration["val_nll"][st]) for st in stages])
    header = ["mean one-vs-rest ECE", "before"] + (["after temperature scaling"]
                                                   if "after" in stages else [])
    return _table(header, rows)


def _audit(metrics: dict) -> dict:
    """Sections of report.html beyond the basics: ``{png name: (heading, html, png)}``."""
    out = {}
    gc = metrics.get("group_confusion")
    if gc:
        out["group_confusion"] = ("Head-to-tail confusion", (
            '<p class="note">Test samples of each shot group (rows) by the group of the '
            "class they were predicted as (columns). Above the diagonal: head samples "
            "taken for rarer classes; below: tail samples taken for more frequent ones."
            "</p>" + _table(["true \\ predicted"] + gc["groups"],
                            [[g] + [_fmt(int(v)) for v in row]
                             for g, row in zip(gc["groups"], gc["matrix"])])), None)
    cal = metrics.get("calibration")
    if cal:
        data = _plot_reliability(cal)
        fitted = ("Temperature fitted on the validation split by minimising its negative "
                  "log-likelihood." if cal.get("temperature") else "No validation data: "
                  "no temperature fitted.")
        out["reliability.png"] = ("Calibration", (
            f'<p class="note">Expected calibration error of each class on its own '
            f'(one-vs-rest, {cal["bins"]} equal-width bins), averaged per shot group. '
            f"{fitted} The diagrams pool the head (many-shot) and tail classes.</p>"
            + _calibration_table(cal) + (_img(data, "Reliability diagram") if data else "")),
            data)
    shift = metrics.get("prior_shift")
    if shift:
        data = _plot_prior_shift({"model": shift})
        out["prior_shift.png"] = ("Prior shift", f'<p class="note">{_SHIFT_NOTE}</p>'
                                  + _img(data, "Prior-shift stress curve"), data)
    return out


# ---------------------------------------------------------------- comparison
def _check_summaries(summaries: Sequence[dict]) -> list[str]:
    if not summaries:
        raise ConfigError("`summaries` must hold at least one run; got none")
    classes = None
    for i, s in enumerate(summaries):
        missing = [key for key in ("strategy", "metrics") if key not in s]
        if missing:
            raise ConfigError(f"`summaries[{i}]` lacks {missing}; each summary needs "
                              "'strategy', 'metrics' and 'train_seconds'")
        if classes is None:
            classes = list(s["metrics"]["classes"])
        elif list(s["metrics"]["classes"]) != classes:
            raise DataError(f"`summaries[{i}]` ({s['strategy']!r}) was evaluated on other "
                            "classes than the first; compare runs on the same data")
    return classes


def _plot_compare(summaries: Sequence[dict], order: np.ndarray, names: list[str],
                  what: str) -> bytes:
    k, n = len(order), len(summaries)
    fig = _bar_figure(k * max(1, n // 2), height=5)
    ax = fig.add_subplot()
    palette = colormaps["tab10"]
    x = np.arange(k)
    many = k > SUMMARISE_CLASSES_ABOVE
    if many:  # one point per run of classes: the mean recall of the run
        edges = _rank_bins(k)
        x = (edges[:-1] + edges[1:] - 1) / 2
    for j, s in enumerate(summaries):
        recall = np.array([s["metrics"]["per_class"][i]["recall"] for i in order])
        label = _label(str(s["strategy"]), 40)
        if many:
            ax.plot(x, _binned(recall, edges, np.mean), label=label, color=palette(j % 10),
                    linewidth=1.2)
        elif k <= 40:  # one group per class, one bar per strategy
            width = 0.8 / n
            ax.bar(x - 0.4 + width * (j + 0.5), recall, width=width, label=label,
                   color=palette(j % 10))
        else:  # too many groups to read: one line per strategy
            ax.plot(x, recall, label=label, color=palette(j % 10), linewidth=1)
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    _class_axis(ax, names, what, counted=True, table=False)
    ax.set_title("Per-class recall by strategy" if not many else
                 f"{k:,} classes: too many to draw one point each, so this plot summarises: "
                 f"mean recall over runs of about {k // (len(edges) - 1):,} classes",
                 fontsize=10)
    fig.legend(fontsize=8, loc="outside right upper")
    return _png(fig)


def _duration(seconds) -> str:
    if seconds is None:
        return _fmt(None)
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _span(d: dict | None, sign: str = "") -> str:
    if not d or d.get("estimate") is None:
        return _fmt(None)
    return (f"{d['estimate']:{sign}.4f} <span class=\"note\">[{d['low']:{sign}.4f}, "
            f"{d['high']:{sign}.4f}]</span>")


def _evidence_table(summaries: Sequence[dict]) -> str:
    """Intervals, seed spread and paired differences from the baseline."""
    conf = summaries[0].get("confidence", 0.95)
    metrics = ("balanced_accuracy", "macro_f1", "many_shot_accuracy", "medium_shot_accuracy",
               "few_shot_accuracy")
    header = ["strategy", "seeds: mean \u00b1 sd"] + [
        m.replace("_", " ") for m in metrics] + ["balanced accuracy \u2212 baseline",
                                                 "few-shot \u2212 baseline"]
    rows = []
    for s in summaries:
        spread = "one seed" if "seed_mean" not in s else (
            f"{s['seed_mean']['balanced_accuracy']:.4f} \u00b1 "
            f"{s['seed_std']['balanced_accuracy']:.4f} ({len(s['seeds'])})")
        diff = s.get("difference")
        rows.append([_fmt(s["strategy"]), spread]
                    + [_span(s["intervals"].get(m)) for m in metrics]
                    + (["baseline", "baseline"] if diff is None else
                       [_span(diff.get("balanced_accuracy"), "+"),
                        _span(diff.get("few_shot_accuracy"), "+")]))
    return (f'<p class="note">Estimate on the whole test set, then its {conf:.0%} '
            "paired class-stratified bootstrap interval in brackets; a difference whose "
            "interval holds 0 is within the noise of this test set. With several seeds "
            "a value is the mean over the seeds.</p>" + _table(header, rows))


def _per_class_changes(summaries, order, counts) -> str | None:
    changed = [s for s in summaries if s.get("per_class_difference")]
    if not changed:
        return None
    classes = summaries[0]["metrics"]["classes"]
    header = ["class", "train count"]
    for s in changed:
        header += [f"{s['strategy']}: recall \u0394", f"{s['strategy']}: precision \u0394"]
    rows = []
    for i in order:
        cells = [_fmt(classes[i]), _fmt(int(counts[i]))]
        for s in changed:
            for m in ("recall", "precision"):
                d = s["per_class_difference"][m]
                cells.append(_span({"estimate": d["estimate"][i], "low": d["low"][i],
                                    "high": d["high"][i]}, "+"))
        rows.append(cells)
    base = next(s["strategy"] for s in summaries if s.get("difference") is None)
    return (f'<p class="note">Change of each class\'s recall and precision against the '
            f"baseline {html.escape(str(base))}, with its paired bootstrap interval; classes "
            "ordered by training count, largest first.</p>" + _table(header, rows))


def _compare_summary_note(k: int) -> str:
    """What a compare plot of ``k`` classes says when it summarises ('' when it does not)."""
    if k <= SUMMARISE_CLASSES_ABOVE:
        return ""
    return (f"{k:,} classes: too many to draw one point each, so this plot summarises "
            "runs of consecutive classes; every class's values are in the table and in "
            "each strategy's metrics.json. ")


def _plot_compare_distribution(summaries, order, names) -> bytes:
    k = len(order)
    fig = _bar_figure(k)
    ax = fig.add_subplot()
    x = np.arange(k)
    true = np.asarray(summaries[0]["metrics"]["true_distribution"])[order]
    many = k > SUMMARISE_CLASSES_ABOVE
    if many:  # summed over runs of classes
        edges = _rank_bins(k)
        x = (edges[:-1] + edges[1:] - 1) / 2
        ax.bar(edges[:-1] - 0.5, _binned(true, edges, np.sum), width=np.diff(edges),
               align="edge", label="true", color="#c8d3e6", linewidth=0)
    else:
        ax.bar(x, true, label="true", color="#c8d3e6", **_bar_style(k))
    palette = colormaps["tab10"]
    for j, s in enumerate(summaries):
        pred = np.asarray(s["metrics"]["predicted_distribution"])[order]
        if many:
            pred = _binned(pred, edges, np.sum)
        ax.plot(x, pred, marker="." if k <= 40 else None, color=palette(j % 10),
                label=_label(str(s["strategy"]), 40), linewidth=1.2)
    ax.set_xlim(-0.6, k - 0.4)
    _class_axis(ax, names, "training count", counted=True, table=False)
    ax.set_ylabel("test samples" if not many else "test samples in the run of classes")
    ax.set_title("Predicted class distribution of each strategy against the true one"
                 if not many else
                 f"{k:,} classes: too many to draw one bar each, so this plot summarises: "
                 f"true and predicted samples summed over runs of about "
                 f"{k // (len(edges) - 1):,} classes", fontsize=10)
    fig.legend(fontsize=8, loc="outside right upper")
    return _png(fig)


def _compare_audit(summaries, order, counts) -> dict:
    """The per-class audit of compare.html: ``{png name: (heading, html, png)}``."""
    out = {}
    classes = summaries[0]["metrics"]["classes"]
    table = _per_class_changes(summaries, order, counts)
    if table:
        out["per_class_change"] = ("Per-class change against the baseline", table, None)
    names = [f"{classes[i]} ({counts[i]})" for i in order]
    data = _plot_compare_distribution(summaries, order, names)
    note = _compare_summary_note(len(order))
    out["compare_distribution.png"] = ("Predicted class distributions", (
        f'<p class="note">{note}</p>' if note else "")
        + _img(data, "Predicted class distributions"), data)
    if all(s["metrics"].get("group_confusion") for s in summaries):
        groups = summaries[0]["metrics"]["group_confusion"]["groups"]
        pairs = [(a, b) for a in range(len(groups)) for b in range(len(groups)) if a != b]
        rows = [[_fmt(s["strategy"])] + [_fmt(int(s["metrics"]["group_confusion"]["matrix"][a][b]))
                                         for a, b in pairs] for s in summaries]
        out["group_confusion"] = ("Head-to-tail confusion", (
            '<p class="note">Test samples of one shot group predicted as a class of '
            "another group.</p>" + _table(
                ["strategy"] + [f"{groups[a]} \u2192 {groups[b]}" for a, b in pairs], rows)),
            None)
    if all(s["metrics"].get("calibration") for s in summaries):
        rows = []
        for s in summaries:
            cal = s["metrics"]["calibration"]
            for st in ("before", "after"):
                if st in cal["ece_groups"]:
                    rows.append([_fmt(s["strategy"]), st if st == "before" else
                                 f"after (T = {cal['temperature']:.2f})"]
                                + [_fmt(cal["ece_groups"][st][g])
                                   for g in ("many", "medium", "few")])
        out["calibration"] = ("Calibration", (
            '<p class="note">Mean one-vs-rest expected calibration error of each shot '
            "group, before and after temperature scaling fitted on the validation split."
            "</p>" + _table(["strategy", "", "many-shot ECE", "medium-shot ECE",
                             "few-shot ECE"], rows)), None)
    curves = {s["strategy"]: s["metrics"]["prior_shift"] for s in summaries
              if s["metrics"].get("prior_shift")}
    if curves:
        data = _plot_prior_shift(curves)
        out["compare_prior_shift.png"] = ("Prior shift", f'<p class="note">{_SHIFT_NOTE}</p>'
                                          + _img(data, "Prior-shift stress curves"), data)
    return out


def _few_shot_support(metrics: dict) -> int:
    """Test samples of the few-shot classes (0 when there are none)."""
    return int(sum(row["support"] for row in metrics["per_class"] if row.get("shot") == "few"))


def _run_link(summary: dict, out: Path) -> str:
    """The strategy's name, linked to its run's report.html when it has one."""
    name = _fmt(summary["strategy"])
    run_dir = summary.get("run_dir")
    if not run_dir:
        return name
    target = Path(run_dir) / "report.html"
    try:
        href = Path(os.path.relpath(target, out)).as_posix()
    except ValueError:  # another drive (Windows)
        href = target.resolve().as_uri()
    return f'<a href="{html.escape(href, quote=True)}">{name}</a>'


def _recall_table(summaries, order, counts, what: str) -> str:
    """Recall of every class by strategy; the best per class in bold, unless the class
    has too few test samples to tell strategies apart (then it is marked instead)."""
    metrics = summaries[0]["metrics"]
    if len(order) > 200:  # the per-run reports hold every class
        return ""
    rows = []
    for i in order:
        recalls = [s["metrics"]["per_class"][i]["recall"] for s in summaries]
        support = metrics["per_class"][i]["support"]
        judge = support >= MIN_SUPPORT and len(summaries) > 1
        top = max(recalls)
        rows.append([_fmt(metrics["classes"][i]), _fmt(int(counts[i])), _few(support)]
                    + [f"<strong>{_fmt(r)}</strong>" if judge and r == top else _fmt(r)
                       for r in recalls])
    header = ["class", what, "test samples"] + [str(s["strategy"]) for s in summaries]
    return (f'<p class="note">Best recall of each class in bold; a class with fewer than '
            f"{MIN_SUPPORT} test samples is marked too few to judge instead.</p>"
            + _table(header, rows))


def write_compare_report(out_dir, summaries: Sequence[dict], *, train_counts=None,
                         title: str = "longtail comparison", verdict: str | None = None) -> Path:
    """Writes ``compare.html`` and ``compare_recall.png`` into ``out_dir``.

    Args:
        out_dir: Output folder (created if needed).
        summaries: One dict per run: ``strategy`` (its name), ``metrics`` (its
            ``metrics.json`` dict, all on the same classes) and
            ``train_seconds`` (training time, or None); optionally
            ``run_dir`` (the strategy's run folder, whose ``report.html`` the
            page links). The data measured is named from the first run's
            ``metrics["evaluated_on"]``.
        train_counts: Training samples per class, to order the classes;
            default the first run's ``train_count`` values, else its support.
        title: Page title.
        verdict: A line shown above the summary (see
            :func:`longtail.intervals.verdict`). Summaries that carry
            ``intervals`` (as :func:`longtail.compare` writes them) also get a
            table of intervals and differences from the baseline.

    Returns:
        The path of ``compare.html``.
    """
    classes = _check_summaries(summaries)
    out = Path(out_dir)
    order, counts, what = _order(summaries[0]["metrics"], train_counts)
    names = [f"{classes[i]} ({counts[i]})" for i in order]
    plot = _plot_compare(summaries, order, names, what)
    _write_png(out, "compare_recall.png", plot)

    columns = ("accuracy", "balanced_accuracy", "macro_f1", "few_shot_accuracy")
    few_support = _few_shot_support(summaries[0]["metrics"])
    judged = [c for c in columns if c != "few_shot_accuracy" or few_support >= MIN_SUPPORT]
    best = {c: max((s["metrics"].get(c) for s in summaries
                    if s["metrics"].get(c) is not None), default=None) for c in judged}
    rows = []
    for s in summaries:
        cells = [_run_link(s, out)]
        for c in columns:
            v = s["metrics"].get(c)
            cells.append(f"<strong>{_fmt(v)}</strong>" if v is not None and c in best
                         and v == best[c] else _fmt(v))
        cells.append(_duration(s.get("train_seconds")))
        rows.append(cells)
    header = ["strategy", "accuracy", "balanced accuracy", "macro F1", "few-shot accuracy",
              "training time"]
    few_note = "" if "few_shot_accuracy" in judged else (
        f" Few-shot accuracy not bolded: its classes have {few_support} test samples in "
        f"all, fewer than {MIN_SUPPORT}, too few to judge.")
    links = "" if not any(s.get("run_dir") for s in summaries) else (
        " Each strategy links to its run's own report, which is measured on that run's "
        "validation split.")
    measured = summaries[0]["metrics"].get("evaluated_on")
    sections = [
        ("Summary", _evaluated_on(measured)
         + (f'<p><strong>{html.escape(verdict)}</strong></p>' if verdict else "")
         + _table(header, rows) + '<p class="note">Best value per column in '
         "bold. \u2014: no class in the few-shot group, or training counts unknown."
         f"{few_note}{links}</p>"),
        ("Per-class recall", f'<p class="note">{_compare_summary_note(len(order))}'
         f"Classes ordered by {what} "
         f"(shown in brackets), largest first.</p>" + _img(plot, "Per-class recall by strategy")
         + _recall_table(summaries, order, counts, what)),
    ]
    if all("intervals" in s for s in summaries):
        sections.insert(1, ("Is the difference real?", _evidence_table(summaries)))
    for name, (heading, content, data) in _compare_audit(summaries, order, counts).items():
        if data is not None:
            _write_png(out, name, data)
        sections.append((heading, content))
    path = out / "compare.html"
    _io.write_text(path, _page(title, sections))
    return path
