"""longtail compare: intervals, seeds, baseline, --require (tiny tables, 1 epoch)."""
import csv
import json

import numpy as np
import pytest

from longtail.cli import main

COUNTS = (120, 40, 10)


def _table(path, counts, seed):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["f0", "f1", "label"])
        for c, n in enumerate(counts):
            for x in rng.normal(size=(n, 2)) + [2.0 * c, -c]:
                w.writerow([*x, f"c{c}"])
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    return (_table(root / "train.csv", COUNTS, 0), _table(root / "test.csv", (40, 40, 40), 1),
            root)


def _compare(root, *extra):
    return main(["compare", root[0], "--test", root[1], "--out", str(root[2] / "out"),
                 "--strategies", "none,logit-adjust", "--epochs", "1", "--seeds", "0,1",
                 "--resamples", "300", "--shot-thresholds", "50,20", *extra])


@pytest.mark.slow
def test_compare_writes_intervals_and_gates_on_require(data, capsys):
    rc = _compare(data, "--require", "logit-adjust>none", "--require", "none>logit-adjust")
    out = capsys.readouterr()
    summary = json.loads((data[2] / "out" / "summary.json").read_text())
    runs = {r["strategy"]: r for r in summary["runs"]}
    assert summary["bootstrap"]["baseline"] == "none"
    assert summary["bootstrap"]["resamples"] == 300
    for run in runs.values():
        assert [s["seed"] for s in run["seeds"]] == [0, 1]
        ba = run["intervals"]["balanced_accuracy"]
        # the estimate is the mean over the seeds of each run's sklearn value
        assert ba["estimate"] == pytest.approx(run["seed_mean"]["balanced_accuracy"])
        assert run["seed_std"]["balanced_accuracy"] == pytest.approx(np.std(
            [s["balanced_accuracy"] for s in run["seeds"]], ddof=1))
        assert ba["low"] <= ba["estimate"] <= ba["high"]
        assert run["metrics"]["shot_thresholds"] == [50, 20]
    diff = runs["logit-adjust"]["difference"]["balanced_accuracy"]
    assert diff["estimate"] == pytest.approx(
        runs["logit-adjust"]["seed_mean"]["balanced_accuracy"]
        - runs["none"]["seed_mean"]["balanced_accuracy"])
    assert runs["none"]["difference"] is None
    reqs = summary["requirements"]
    assert [r["expression"] for r in reqs] == ["logit-adjust>none", "none>logit-adjust"]
    assert reqs[1]["estimate"] == pytest.approx(-reqs[0]["estimate"])
    assert all(r["passed"] == (r["low"] > 0) for r in reqs)
    assert not (reqs[0]["passed"] and reqs[1]["passed"])
    assert rc == (0 if all(r["passed"] for r in reqs) else 1)
    assert summary["verdict"].startswith("verdict: ")
    assert summary["verdict"] in out.out
    assert summary["verdict"] in (data[2] / "out" / "summary.md").read_text()
    import html
    assert html.escape(summary["verdict"]) in (data[2] / "out" / "compare.html").read_text()

    # the runs are complete: a second call only re-evaluates, and gates on the new rule
    rc = _compare(data, "--require", "none>none")
    assert rc == 1  # a strategy never beats itself: the interval is [0, 0]


@pytest.mark.parametrize("extra,needle", [
    (["--require", "logit-adjust"], "--require must read"),
    (["--require", "focal>none"], "'focal', which is not among"),
    (["--baseline", "focal"], "--baseline must be one of"),
    (["--seeds", "0,x"], "--seeds"),
    (["--shot-thresholds", "5"], "--shot-thresholds"),
    (["--confidence", "1.5"], "confidence"),
])
def test_bad_evidence_options_exit_2_before_training(data, tmp_path, capsys, extra, needle):
    try:
        rc = main(["compare", data[0], "--out", str(tmp_path / "o"), "--strategies",
                   "none,logit-adjust", *extra])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def _synthetic(seed=0, n=2000, k=5):
    """Predictions of a baseline, a better, a same-as-baseline and a harmful strategy."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    noisy = lambda acc: np.where(rng.random(n) < acc, y, rng.integers(0, k, n))  # noqa: E731
    return y, {"none": noisy(0.7), "good": noisy(0.85), "hurts": noisy(0.45)}


def test_verdict_names_a_strategy_worse_than_the_baseline_as_harmful():
    from sklearn.metrics import balanced_accuracy_score

    from longtail.comparison import comparison_verdict
    from longtail.intervals import BootstrapOptions, bootstrap_intervals

    y, preds = _synthetic()
    preds["same"] = preds["none"].copy()
    iv = bootstrap_intervals(y, preds, 5, baseline="none",
                             options=BootstrapOptions(resamples=300))
    judged = comparison_verdict(iv)
    assert [h["strategy"] for h in judged["harmful"]] == ["hurts"]
    h = judged["harmful"][0]
    assert h["estimate"] == pytest.approx(balanced_accuracy_score(y, preds["hurts"])
                                          - balanced_accuracy_score(y, preds["none"]))
    assert h["low"] <= h["estimate"] <= h["high"] < 0
    assert judged["text"].startswith("verdict: good beats none")
    assert "harmful: hurts is worse than none on balanced accuracy by -0." in judged["text"]
    assert "good" not in {x["strategy"] for x in judged["harmful"]}
    assert "same" not in judged["text"].split("harmful")[1]  # noise is not harm

    # a strategy within noise of the baseline is not harmful, however low its estimate
    rng = np.random.default_rng(3)
    slight = np.where(rng.random(y.size) < 0.02, (y + 1) % 5, preds["none"])
    iv = bootstrap_intervals(y, {"none": preds["none"], "slight": slight}, 5, baseline="none",
                             options=BootstrapOptions(resamples=300))
    d = iv["differences"]["slight"]["balanced_accuracy"]
    assert (comparison_verdict(iv)["harmful"] != []) == (d["high"] < 0)


def test_verdict_says_when_two_strategies_are_one_objective():
    from longtail.comparison import comparison_verdict, summary_markdown
    from longtail.intervals import BootstrapOptions, bootstrap_intervals
    from longtail.strategies import same_objective_pairs

    y, preds = _synthetic(1)
    preds = {"none": preds["none"], "logit-adjust": preds["good"],
             "balanced-softmax": preds["good"].copy()}
    iv = bootstrap_intervals(y, preds, 5, baseline="none",
                             options=BootstrapOptions(resamples=300))
    pairs = same_objective_pairs(list(preds), {"tau": 1.0})
    judged = comparison_verdict(iv, pairs)
    assert judged["same_objective"] == pairs
    assert ("same objective: balanced-softmax trains exactly what logit-adjust does"
            in judged["text"])
    assert comparison_verdict(iv, same_objective_pairs(list(preds), {"tau": 2.0}))[
        "same_objective"] == []
    # the Markdown table marks the rows
    rows = [{"strategy": n, "metrics": {}, "train_seconds": 0.0, "confidence": 0.95,
             "intervals": {m: iv["metrics"][n][m] for m in ("balanced_accuracy", "macro_f1")},
             "difference": (None if n == "none" else iv["differences"][n]),
             "harmful": False} for n in preds]
    rows[2]["same_objective_as"] = "logit-adjust"
    rows[1]["harmful"] = True  # as _add_intervals sets it
    md = summary_markdown(rows, "validation split", judged["text"])
    assert "| balanced-softmax (= logit-adjust) |" in md
    assert md.count("**harmful**") == 1


@pytest.mark.system
def test_compare_a_backbone_on_images(tiny_backbone, tmp_path, capsys):
    """compare --model <backbone> trains head then top block for every strategy, on images."""
    from conftest import TINY, make_images

    from longtail.cli import main

    data = make_images(tmp_path / "data", (12, 6, 4), size=32, seed=2)
    out = tmp_path / "cmp"
    code = main(["compare", data, "--strategies", "none,crt", "--model", TINY, "--weights",
                 "none", "--finetune", "top:1", "--epochs", "2", "--image-size", "32",
                 "--batch-size", "8", "--out", str(out)])
    capsys.readouterr()
    assert code == 0
    summary = json.load(open(out / "summary.json"))
    assert [r["strategy"] for r in summary["runs"]] == ["none", "crt"]
    for name in ("none", "crt"):
        config = json.load(open(out / name / "config.json"))
        assert config["backbone"]["backbone"] == TINY
        assert config["options"]["finetune"] == "top:1"
        history = open(out / name / "history.csv").read().splitlines()
        assert len(history) >= 3  # header, head epoch, fine-tuning epoch
