import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from PIL import Image

from longtail.errors import ConfigError, DataError
from longtail.metrics import compute_metrics
from longtail.report import read_history, write_compare_report, write_report

NAMES = ["ant", "<b>x</b>", "mid & co", "tail"]
COUNTS = [150, 900, 5, 40]
PLOTS = ["class_distribution.png", "confusion_matrix.png", "per_class_recall.png",
         "prior_shift.png"]
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)


def _metrics(seed=0, k=len(NAMES), names=NAMES, counts=COUNTS, shift=0.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, 200)
    scores = rng.normal(size=(200, k))
    scores[np.arange(200), y] += 1.5
    scores -= shift * np.log(np.asarray(counts, dtype=float))
    return compute_metrics(y, scores, names, train_counts=counts)


def _history(path):
    with open(path, "w") as f:
        f.write("epoch,balanced_accuracy,loss,val_balanced_accuracy,val_loss\n")
        for e in range(5):
            f.write(f"{e},{0.3 + e / 10},{2 - e / 5},{0.25 + e / 10},{2.1 - e / 6}\n")
    return path


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"',
                                                    page)]


@pytest.fixture
def report(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    _history(out / "history.csv")  # found in out_dir by default
    config = {"model": "<script>alert(1)</script>", "epochs": 3}
    path = write_report(out, _metrics(), config=config, title="run <1>")
    return out, path


def test_report_embeds_every_plot_it_writes(report):
    out, path = report
    assert path == out / "report.html"
    assert sorted(os.listdir(out)) == sorted(PLOTS + ["history.csv", "report.html",
                                                      "training_curves.png"])
    page = path.read_text()
    embedded = _images(page)
    files = [(out / name).read_bytes() for name in
             ("per_class_recall.png", "confusion_matrix.png", "class_distribution.png",
              "training_curves.png", "prior_shift.png")]
    assert embedded == files
    for data in files:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and min(im.size) > 200
    # Self-contained: no reference to any other file or URL.
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_user_strings_are_escaped(report):
    page = report[1].read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "mid &amp; co" in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>run &lt;1&gt;</title>" in page


def test_per_class_table_is_ordered_by_training_count_and_shows_values(report):
    page = report[1].read_text()
    page = page[page.index("Per-class metrics"):]
    page = page[:page.index("</table>")]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td><td>(\w+)</td>", page)
    assert rows == [("&lt;b&gt;x&lt;/b&gt;", "900", "many"), ("ant", "150", "many"),
                    ("tail", "40", "medium"), ("mid &amp; co", "5", "few")]


def test_no_history_means_no_training_curves(tmp_path):
    write_report(tmp_path, _metrics())
    assert sorted(os.listdir(tmp_path)) == sorted(PLOTS + ["report.html"])
    assert "Training curves" not in (tmp_path / "report.html").read_text()


def test_many_classes_and_a_class_without_samples(tmp_path):
    k = 130
    names = [f"c{i}" for i in range(k)]
    counts = np.round(3000 * 0.96 ** np.arange(k)).astype(int)
    y = np.arange(500) % (k - 1)  # the last class never occurs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = compute_metrics(y, np.random.default_rng(0).normal(size=(500, k)), names,
                            train_counts=counts)
    write_report(tmp_path, m)
    with Image.open(tmp_path / "confusion_matrix.png") as im:
        assert im.size[0] < 1600  # capped: the pattern, not unreadable names
    # no prior-shift curve: it needs every class in the test data
    assert len(_images((tmp_path / "report.html").read_text())) == 3


def test_read_history_and_its_errors(tmp_path):
    hist = read_history(_history(tmp_path / "h.csv"))
    np.testing.assert_allclose(hist["loss"], [2, 1.8, 1.6, 1.4, 1.2])
    with pytest.raises(DataError, match="missing.csv"):
        read_history(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("step,loss\n0,1\n")
    with pytest.raises(DataError, match="epoch"):
        read_history(tmp_path / "bad.csv")


def test_compare_report(tmp_path):
    summaries = [{"strategy": "none", "metrics": _metrics(), "train_seconds": 12.34},
                 {"strategy": "<i>logit</i>", "metrics": _metrics(shift=1.0),
                  "train_seconds": 200}]
    path = write_compare_report(tmp_path, summaries)
    page = path.read_text()
    pngs = ["compare_recall.png", "compare_distribution.png", "compare_prior_shift.png"]
    assert sorted(os.listdir(tmp_path)) == sorted(["compare.html"] + pngs)
    assert _images(page) == [(tmp_path / name).read_bytes() for name in pngs]
    assert "&lt;i&gt;logit&lt;/i&gt;" in page and "<i>" not in page
    summary = page[:page.index("</table>")]
    cells = re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", summary)
    assert [c[0] for c in cells] == ["none", "&lt;i&gt;logit&lt;/i&gt;"]
    for (_, row), s in zip(cells, summaries):
        values = re.findall(r"<td>(?:<strong>)?([^<]*)", row)
        m = s["metrics"]
        assert values[:4] == [f"{m[c]:.4f}" for c in ("accuracy", "balanced_accuracy",
                                                      "macro_f1", "few_shot_accuracy")]
    assert "12.3 s" in page and "3 min 20 s" in page


def test_compare_rejects_bad_summaries(tmp_path):
    with pytest.raises(ConfigError, match="summaries"):
        write_compare_report(tmp_path, [])
    with pytest.raises(ConfigError, match=r"summaries\[0\]"):
        write_compare_report(tmp_path, [{"metrics": _metrics()}])
    other = _metrics(names=["a", "b", "c", "d"])
    with pytest.raises(DataError, match="other classes"):
        write_compare_report(tmp_path, [{"strategy": "a", "metrics": _metrics()},
                                        {"strategy": "b", "metrics": other}])


# ------------------------------------------------------------------ browser
_PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images: Array.from(document.images).map(i => [i.complete, i.naturalWidth]),
    bold: document.querySelectorAll("b").length,
    scripts: document.scripts.length - 1,  // other than this probe
    text: document.body.textContent.includes("<b>x</b>"),
  });
  document.body.appendChild(out);
});
</script>"""


def _open_in_chromium(page_path, tmp_path):
    """Loads the page with a probe script; returns (probe result, console lines)."""
    probe = page_path.with_name("probe_" + page_path.name)
    probe.write_text(page_path.read_text().replace("</body>", _PROBE + "</body>"))
    profile = tmp_path / f"profile_{page_path.stem}"
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=60)
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, f"no probe result; chromium said: {run.stderr[-2000:]}"
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH "
                    "(apt-get install chromium)")
def test_report_renders_in_chromium(report, tmp_path):
    result, console = _open_in_chromium(report[1], tmp_path)
    assert len(result["images"]) == 5
    assert all(done and width > 0 for done, width in result["images"]), result
    assert result["bold"] == 0 and result["text"]  # the class name shows as text
    assert result["scripts"] == 0  # nor did the config's <script> become one
    assert console == []


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH "
                    "(apt-get install chromium)")
def test_chromium_probe_detects_a_broken_image_and_console_errors(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><b>x</b><img src="missing.png">'
                    '<script>console.error("boom")</script></body></html>')
    result, console = _open_in_chromium(page, tmp_path)
    assert result["images"] == [[True, 0]]
    assert result["bold"] == 1 and result["scripts"] == 1
    assert any('"boom"' in line for line in console)


def test_audit_sections_show_calibration_confusion_and_changes(tmp_path):
    from longtail.calibration import calibration_summary
    from longtail.intervals import BootstrapOptions, bootstrap_intervals

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) * 3
    logits[np.arange(200), y] += 2
    m = compute_metrics(y, logits, NAMES, train_counts=COUNTS)
    groups = [row["shot"] for row in m["per_class"]]
    m["calibration"] = calibration_summary(logits, y, groups, val_logits=logits, val_true=y)
    write_report(tmp_path / "r", m)
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Head-to-tail confusion" in page and "reliability.png" in os.listdir(tmp_path / "r")
    few = m["calibration"]["ece_groups"]["after"]["few"]
    assert f"<td>{few:.4f}</td>" in page
    assert f"T = {m['calibration']['temperature']:.2f}" not in page  # in the PNG only

    other = compute_metrics(y, logits - np.log(COUNTS), NAMES, train_counts=COUNTS)
    iv = bootstrap_intervals(y, {"none": logits.argmax(1),
                                 "<la>": (logits - np.log(COUNTS)).argmax(1)}, 4,
                             baseline="none", options=BootstrapOptions(resamples=200))
    summaries = [{"strategy": "none", "metrics": m, "train_seconds": 1,
                  "intervals": {"balanced_accuracy": iv["metrics"]["none"]["balanced_accuracy"]},
                  "difference": None, "per_class_difference": None},
                 {"strategy": "<la>", "metrics": other, "train_seconds": 1,
                  "intervals": {"balanced_accuracy": iv["metrics"]["<la>"]["balanced_accuracy"]},
                  "difference": iv["differences"]["<la>"],
                  "per_class_difference": iv["differences"]["<la>"]}]
    write_compare_report(tmp_path / "c", summaries, verdict="verdict: <la> beats none")
    page = (tmp_path / "c" / "compare.html").read_text()
    assert "verdict: &lt;la&gt; beats none" in page and "<la>" not in page
    tail = NAMES.index("mid & co")  # fewest training samples: the last row
    cells = [f"{d['estimate'][tail]:+.4f} <span class=\"note\">[{d['low'][tail]:+.4f}, "
             f"{d['high'][tail]:+.4f}]</span>" for d in (iv["differences"]["<la>"]["recall"],
                                                         iv["differences"]["<la>"]["precision"])]
    assert f"<td>{cells[0]}</td><td>{cells[1]}</td></tr></tbody>" in page


# ------------------------------------------------- what a page measured (issue 16)
def _support_metrics(support, recalls_shift=0.0, counts=COUNTS, seed=0):
    """Metrics whose test data holds ``support[c]`` samples of class ``c``."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(support)), support)
    scores = rng.normal(size=(len(y), len(support)))
    scores[np.arange(len(y)), y] += 1.0
    scores -= recalls_shift * np.log(np.asarray(counts, dtype=float))
    return compute_metrics(y, scores, NAMES, train_counts=counts)


def test_pages_name_the_data_they_measured(tmp_path):
    m = _metrics()
    m["evaluated_on"] = {"split": "validation", "data": "run/val.parquet", "samples": 200}
    page = write_report(tmp_path / "r", m).read_text()
    assert ("<strong>Measured on the validation data</strong> (<code>run/val.parquet</code>, "
            "200 samples)") in page
    page = write_report(tmp_path / "t", _metrics(), evaluated_on={
        "split": "test", "data": "<t>.csv", "samples": 1234}).read_text()
    assert "Measured on the test data</strong> (<code>&lt;t&gt;.csv</code>, 1,234 samples)" in page
    summaries = [{"strategy": "none", "metrics": m, "train_seconds": 1}]
    page = write_compare_report(tmp_path / "c", summaries).read_text()
    assert "Measured on the validation data</strong> (<code>run/val.parquet</code>" in page


def test_compare_links_each_strategy_to_its_run_report(tmp_path):
    summaries = [{"strategy": s, "metrics": _metrics(), "train_seconds": 1,
                  "run_dir": str(tmp_path / "cmp" / s)} for s in ("none", "logit-adjust")]
    page = write_compare_report(tmp_path / "cmp", summaries).read_text()
    assert '<td><a href="none/report.html">none</a></td>' in page
    assert '<td><a href="logit-adjust/report.html">logit-adjust</a></td>' in page
    assert "measured on that run's validation split" in page


def test_classes_with_too_few_test_samples_are_marked_not_bolded(tmp_path):
    from longtail.report import MIN_SUPPORT

    support = [40, 40, MIN_SUPPORT - 1, 40]  # "mid & co" has 4 test samples
    summaries = [{"strategy": "a", "metrics": _support_metrics(support), "train_seconds": 1},
                 {"strategy": "b", "metrics": _support_metrics(support, 1.0, seed=1),
                  "train_seconds": 1}]
    page = write_compare_report(tmp_path, summaries).read_text()
    table = page[page.index("Best recall of each class"):]
    rows = dict(re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", table[:table.index("</table>")]))
    assert set(rows) == {"ant", "&lt;b&gt;x&lt;/b&gt;", "mid &amp; co", "tail"}
    few = rows["mid &amp; co"]
    assert "too few to judge" in few and "<strong>" not in few
    for name in ("ant", "tail"):  # judged: the best recall of the row in bold
        cells = re.findall(r"<td>(<strong>)?(\d\.\d{4})", rows[name])
        best = max(float(v) for _, v in cells)
        assert [float(v) for b, v in cells if b] == [best]
    # The few-shot group ("mid & co", 5 training samples) has 4 test samples: not bolded.
    summary = page[:page.index("</table>")]
    few_shot = [re.findall(r"<td>(?:<strong>)?[^<]*", row)[4]
                for row in re.findall(r"<tr>(.*?)</tr>", summary)[1:]]
    assert all("<strong>" not in cell for cell in few_shot)
    assert "too few to judge" in page[:page.index("Per-class recall")]
    # The run report's per-class table marks the class too.
    page = write_report(tmp_path / "r", summaries[0]["metrics"]).read_text()
    rows = re.findall(r"<tr><td>([^<]*)</td><td>\d+</td><td>\w+</td><td>(.*?)</td>", page)
    marked = [name for name, cell in rows if "too few to judge" in cell]
    assert marked == ["mid &amp; co"]


def test_epoch_seconds_get_their_own_panel(tmp_path):
    from longtail.report import _history_panels

    path = tmp_path / "history.csv"
    with open(path, "w") as f:
        f.write("epoch,accuracy,loss,val_accuracy,val_loss,epoch_seconds,learning_rate\n")
        for e in range(4):
            f.write(f"{e},{0.5 + e / 10},{1 - e / 5},{0.4 + e / 10},{1.1 - e / 6},{16 + e},0.001\n")
    panels = dict(_history_panels(read_history(path)))
    assert panels == {"loss": ["loss", "val_loss"], "metrics": ["accuracy", "val_accuracy"],
                      "time per epoch": ["epoch_seconds"]}
    write_report(tmp_path, _metrics(), history_csv=path)
    with Image.open(tmp_path / "training_curves.png") as im:
        assert im.size[0] == 3 * 550  # three panels side by side


def test_a_sparse_confusion_matrix_is_drawn_as_its_most_confused_pairs(tmp_path):
    from longtail.metrics import SPARSE_CONFUSION_ABOVE

    k = SPARSE_CONFUSION_ABOVE + 1
    names = [f"class-{i}" for i in range(k)]
    rng = np.random.default_rng(0)
    y = np.arange(3 * k) % k
    pred = np.where(rng.random(y.size) < 0.7, y, rng.integers(0, k, y.size))
    pred[y == 7] = 9  # the most confused pair: every sample of class-7 called class-9
    counts = rng.integers(1, 300, k)
    metrics = compute_metrics(y, pred, names, train_counts=counts)
    assert metrics["confusion_matrix"]["format"] == "sparse"
    path = write_report(tmp_path, json.loads(json.dumps(metrics)), title="many")
    page = path.read_text()
    assert f"{k:,} classes: too many for a matrix" in page
    picture = Image.open(tmp_path / "confusion_matrix.png")
    assert picture.width <= 1300 and picture.height <= 1000  # not k x k cells
    assert len(_images(page)) == len(PLOTS)
    # the pairs drawn are the largest off-diagonal cells, the planted one first
    from sklearn.metrics import confusion_matrix

    from longtail.report import _TOP_PAIRS, _most_confused

    true, predicted, count, cells = _most_confused(metrics, _TOP_PAIRS)
    dense = confusion_matrix(y, pred, labels=range(k))
    np.fill_diagonal(dense, 0)
    assert cells == np.count_nonzero(dense)
    assert (true[0], predicted[0], count[0]) == (7, 9, 3)
    assert list(count) == sorted(dense.ravel(), reverse=True)[:_TOP_PAIRS]
    assert all(dense[t, q] == c for t, q, c in zip(true, predicted, count))


def test_many_classes_are_summarised_and_the_page_says_so(tmp_path):
    from longtail.report import SUMMARISE_CLASSES_ABOVE, _binned, _rank_bins

    k = SUMMARISE_CLASSES_ABOVE + 500
    names = [f"class-{i}" for i in range(k)]
    rng = np.random.default_rng(1)
    counts = np.maximum(2, (5000 / np.arange(1, k + 1)).astype(int))
    y = np.arange(4 * k) % k
    pred = np.where(rng.random(y.size) < 0.6, y, rng.integers(0, k, y.size))
    pred[y == 3] = 11  # the most confused pair
    metrics = json.loads(json.dumps(compute_metrics(y, pred, names, train_counts=counts)))
    page = write_report(tmp_path, metrics, title="many").read_text()
    assert page.count(f"{k:,} classes: too many to draw one bar each, so this plot "
                      "summarises") == 2  # recall and distribution
    for name in ("per_class_recall.png", "class_distribution.png"):
        with Image.open(tmp_path / name) as im:
            assert im.width <= 1300  # one picture, not one bar per class
    # the most confused pairs as a table, the planted pair first
    assert re.search(r"<td>class-3</td><td>class-11</td><td>4</td>", page)
    assert "class-1499" in page  # the per-class table still lists every class
    # the runs of ranks the summaries draw: every class once, sums as numpy's
    edges = _rank_bins(k)
    assert edges[0] == 0 and edges[-1] == k and len(edges) == 101
    order = np.argsort(-counts, kind="stable")
    true = np.asarray(metrics["true_distribution"])[order]
    assert _binned(true, edges, np.sum).sum() == y.size
    np.testing.assert_array_equal(_binned(true, edges, np.sum),
                                  np.add.reduceat(true, edges[:-1]))
    # below the limit, one bar per class as before
    small = compute_metrics(y % 50, pred % 50, names[:50], train_counts=counts[:50])
    assert "summarises" not in write_report(tmp_path / "small", small).read_text()


def test_a_compare_report_of_many_classes_summarises_its_plots(tmp_path):
    from longtail.report import SUMMARISE_CLASSES_ABOVE

    k = SUMMARISE_CLASSES_ABOVE + 1
    names = [f"class-{i}" for i in range(k)]
    counts = np.maximum(1, np.round(500 * 0.995 ** np.arange(k))).astype(int)
    rng = np.random.default_rng(0)
    y = np.arange(2 * k) % k
    summaries = []
    for strategy, keep in (("none", 0.5), ("logit-adjust", 0.7)):
        pred = np.where(rng.random(y.size) < keep, y, rng.integers(0, k, y.size))
        summaries.append({"strategy": strategy, "metrics": json.loads(json.dumps(
            compute_metrics(y, pred, names, train_counts=counts)))})
    page = write_compare_report(tmp_path, summaries, train_counts=counts).read_text()
    assert page.count(f"{k:,} classes: too many to draw one point each, so this plot "
                      "summarises") == 2  # recall and distributions
    for png in ("compare_recall.png", "compare_distribution.png"):
        with Image.open(tmp_path / png) as im:
            assert im.size[0] <= 1300
    small = [dict(s, metrics=_metrics()) for s in summaries]
    assert "summarises" not in write_compare_report(tmp_path / "small", small).read_text()
