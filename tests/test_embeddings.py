"""A feature store (``longtail features``) is a DATA every command accepts.

A tiny backbone registered for these tests (one convolution, pooled) keeps
them fast; tests/test_features.py covers EfficientNet-Lite0 itself.
"""

import json
import os

import numpy as np
import pytest
from conftest import TINY


@pytest.fixture(scope="module")
def store(tiny_backbone):
    from conftest import make_images

    from longtail.features import write_features

    root, weights = tiny_backbone
    data = make_images(root / "data", (24, 10, 6), size=32, seed=0, spread=0.5)
    out = str(root / "feats.parquet")
    write_features(data, out, model=TINY, weights=weights, image_size=32, batch_size=8,
                   dtype="float32", progress=False)
    return data, weights, out


def run(capsys, *argv):
    from longtail.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _images(data):
    import longtail as lt

    ds = lt.Dataset.open(data)
    x = np.concatenate([b[0] for b in ds.loader(batch_size=len(ds), image_size=32,
                                                sampling="sequential")])[: len(ds)]
    return ds, x


def test_a_feature_store_opens_as_embeddings_of_its_backbone(store):
    import longtail as lt
    from longtail.backbones import build_backbone

    data, weights, out = store
    ds, images = _images(data)
    feats = lt.Dataset.open(out)
    assert feats.kind == "embeddings" and not feats.source.is_image
    assert feats.class_names == ds.class_names and feats.labels.tolist() == ds.labels.tolist()
    backbone, record = build_backbone(TINY, (32, 32, 3), weights)
    np.testing.assert_allclose(feats.features, backbone.predict(images, verbose=0), rtol=1e-5,
                               atol=1e-6)
    assert feats.source.identity["weights_sha256"] == record["weights_sha256"]
    assert "tiny-test embeddings at 32x32 (12 columns)" in feats.source.describe()


def test_a_saved_split_of_a_store_is_a_store(store, tmp_path):
    import longtail as lt

    _, _, out = store
    feats = lt.Dataset.open(out)
    train, val = feats.split(val=0.3, seed=1)
    val.save(tmp_path / "val.parquet")
    back = lt.Dataset.open(tmp_path / "val.parquet")
    assert back.kind == "embeddings" and back.equals(val)
    assert back.source.identity["backbone"] == TINY


def test_stats_and_split_take_a_store(store, tmp_path, capsys):
    import longtail as lt

    _, _, out = store
    code, text, _ = run(capsys, "stats", out, "--json")
    summary = json.loads(text)
    assert code == 0 and summary["kind"] == "embeddings"
    assert [r["count"] for r in summary["per_class"]] == [24, 10, 6]
    code, _, _ = run(capsys, "split", out, "--out", tmp_path / "s", "--val", "0.25", "--seed", "2")
    assert code == 0
    want = lt.Dataset.open(out).split(val=0.25, seed=2)
    for name, part in zip(("train", "val"), want):
        got = lt.Dataset.open(tmp_path / "s" / f"{name}.parquet")
        assert got.kind == "embeddings" and got.equals(part)


@pytest.fixture(scope="module")
def head_run(store, tmp_path_factory):
    """A head trained on the store through the CLI: (run folder, captured stdout)."""
    from longtail.cli import main

    _, _, out = store
    run_dir = tmp_path_factory.mktemp("head") / "run"
    assert main(["train", out, "--out", str(run_dir), "--epochs", "3", "--batch-size", "8",
                 "--balance", "logit-adjust"]) == 0
    return str(run_dir)


def test_a_head_run_hands_over_backbone_plus_head(store, head_run):
    import keras

    from longtail.backbones import build_backbone

    data, weights, _ = store
    config = json.load(open(os.path.join(head_run, "config.json")))
    assert config["feature_store"]["backbone"] == TINY
    assert config["feature_store"]["image_size"] == [32, 32]
    model = keras.saving.load_model(os.path.join(head_run, "model.keras"))  # plain Keras
    assert tuple(model.inputs[0].shape[1:]) == (32, 32, 3)
    _, images = _images(data)
    backbone, _ = build_backbone(TINY, (32, 32, 3), weights)
    head = model.get_layer("head")
    assert len(head.inputs[0].shape) == 2  # the head takes feature rows
    expected = head.predict(backbone.predict(images, verbose=0), verbose=0)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_evaluate_a_head_run_on_its_validation_store(head_run, tmp_path, capsys):
    code, _, _ = run(capsys, "evaluate", head_run, os.path.join(head_run, "val.parquet"),
                     "--out", tmp_path / "ev")
    assert code == 0
    got = json.load(open(tmp_path / "ev" / "metrics.json"))
    want = json.load(open(os.path.join(head_run, "metrics.json")))
    assert got["confusion_matrix"] == want["confusion_matrix"]
    assert got["balanced_accuracy"] == pytest.approx(want["balanced_accuracy"], abs=1e-4)


def test_predict_images_through_a_head_run(store, head_run, tmp_path, capsys):
    import csv

    import keras

    data, _, _ = store
    ds, images = _images(data)
    code, _, _ = run(capsys, "predict", head_run, data, "--out", tmp_path / "p.csv")
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    model = keras.saving.load_model(os.path.join(head_run, "model.keras"))
    expected = model.predict(images, verbose=0).argmax(axis=1)
    by_path = {os.path.abspath(r["path"]): r["predicted"] for r in rows}
    assert [by_path[os.path.abspath(ds.path(i))] for i in range(len(ds))] == \
        [ds.class_names[c] for c in expected]


@pytest.mark.slow
def test_compare_strategies_on_a_store(store, tmp_path, capsys):
    _, _, out = store
    code, text, _ = run(capsys, "compare", out, "--strategies", "none,crt",
                        "--epochs", "2", "--batch-size", "8", "--out", tmp_path / "cmp",
                        )
    assert code == 0
    summary = json.load(open(tmp_path / "cmp" / "summary.json"))
    assert {r["strategy"] for r in summary["runs"]} == {"none", "crt"}


def test_predict_feature_rows_with_a_head_run(store, head_run, tmp_path, capsys):
    import csv

    import keras

    import longtail as lt

    _, _, out = store
    code, _, _ = run(capsys, "predict", head_run, out, "--out", tmp_path / "p.csv",
                     "--top-k", "2")
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    feats = lt.Dataset.open(out)
    head = keras.saving.load_model(os.path.join(head_run, "model.keras")).get_layer("head")
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(head.predict(feats.features,
                                                                      verbose=0)))
    assert [r["predicted"] for r in rows] == [feats.class_names[c] for c in probs.argmax(1)]
    np.testing.assert_allclose([float(r["probability"]) for r in rows], probs.max(1),
                               atol=2e-6)
    assert [r["label"] for r in rows] == [feats.class_names[c] for c in feats.labels]
