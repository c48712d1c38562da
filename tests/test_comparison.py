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
