"""The feature store: backbone embeddings of DATA as a Parquet DATA."""

import json
import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Tiny images, a fixed Lite0 weights file, and a store written in parts of 5 rows."""
    from conftest import make_images

    from longtail.backbones.lite0 import efficientnet_lite0
    from longtail.features import write_features

    root = tmp_path_factory.mktemp("features")
    data = make_images(root / "data", (9, 5, 3), size=32, seed=0)
    weights = str(root / "lite0.weights.h5")
    efficientnet_lite0((224, 224, 3)).save_weights(weights)
    out = str(root / "feats.parquet")
    write_features(data, out, model="efficientnet-lite0", weights=weights, image_size=32,
                   batch_size=4, rows_per_part=5, progress=False)
    return data, weights, out


@pytest.mark.slow
def test_features_are_the_backbone_outputs_with_labels_and_identity(store):
    import pyarrow.parquet as pq

    import longtail as lt
    from longtail.backbones import build_backbone
    from longtail.features import read_identity

    data, weights, out = store
    ds = lt.Dataset.open(data)
    table = pq.read_table(out)
    columns = [c for c in table.column_names if c.startswith("f")]
    assert len(columns) == 1280 and table.schema.field(columns[0]).type == "halffloat"
    features = np.stack([table[c].to_numpy() for c in columns], axis=1).astype("float32")
    images = np.concatenate([b[0] for b in ds.loader(batch_size=len(ds), image_size=32,
                                                     sampling="sequential")])[: len(ds)]
    backbone, record = build_backbone("efficientnet-lite0", (32, 32, 3), weights)
    expected = np.asarray(backbone.predict(images, verbose=0))
    np.testing.assert_allclose(features, expected, rtol=2e-3, atol=2e-3)  # float16 storage
    assert table["label"].to_pylist() == [ds.class_names[i] for i in ds.labels]
    identity = read_identity(out)
    assert identity["weights_sha256"] == record["weights_sha256"]
    assert identity["class_names"] == ds.class_names and identity["rows"] == [0, len(ds)]
    assert not os.path.exists(out + ".parts")


@pytest.mark.slow
def test_a_feature_store_is_data(store):
    import longtail as lt

    data, _, out = store
    source, feats = lt.Dataset.open(data), lt.Dataset.open(out)
    assert feats.kind == "embeddings" and feats.features.shape == (len(source), 1280)
    assert feats.class_names == source.class_names
    assert feats.class_counts.tolist() == source.class_counts.tolist()


@pytest.mark.slow
def test_an_interrupted_store_resumes_to_the_same_file(store, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    import longtail.features as features

    data, weights, out = store
    real, calls = features._table, []

    def fail_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(features, "_table", fail_on_third)
    cut = str(tmp_path / "cut.parquet")
    options = dict(model="efficientnet-lite0", weights=weights, image_size=32, batch_size=4,
                   rows_per_part=5, progress=False)
    with pytest.raises(KeyboardInterrupt):
        features.write_features(data, cut, **options)
    assert not os.path.exists(cut) and len(os.listdir(cut + ".parts")) == 3  # identity + 2
    with pytest.raises(features.ConfigError, match="--resume"):
        features.write_features(data, cut, **options)
    with pytest.raises(features.ConfigError, match="image_size"):
        features.write_features(data, cut, resume=True, **dict(options, image_size=48))
    monkeypatch.setattr(features, "_table", real)
    features.write_features(data, cut, resume=True, **options)
    assert pq.read_table(cut).equals(pq.read_table(out))
    assert json.loads(pq.read_schema(cut).metadata[b"longtail_features"]) == \
        features.read_identity(out)


def test_features_refuses_bad_arguments(tmp_path):
    from longtail.errors import ConfigError
    from longtail.features import write_features

    with pytest.raises(ConfigError, match=r"\.parquet"):
        write_features("data", str(tmp_path / "feats"), model="efficientnet-lite0")
    with pytest.raises(ConfigError, match="dtype"):
        write_features("data", str(tmp_path / "f.parquet"), model="x", dtype="int8")


@pytest.fixture(scope="module")
def tiny_data(tiny_backbone):
    from conftest import make_images

    root, weights = tiny_backbone
    data = make_images(root / "shards-data", (7, 4, 3), size=32, seed=1)
    return data, weights


def _tiny_options(weights, **kw):
    from conftest import TINY

    return dict(model=TINY, weights=weights, image_size=32, batch_size=4, rows_per_part=3,
                dtype="float32", progress=False, **kw)


def test_shards_written_apart_join_into_the_unsharded_store(tiny_data, tmp_path):
    import pyarrow.parquet as pq

    from longtail.errors import DataError
    from longtail.features import check_features, read_identity, shard_path, write_features

    data, weights = tiny_data
    whole = write_features(data, str(tmp_path / "whole.parquet"), **_tiny_options(weights))
    out = str(tmp_path / "feats.parquet")
    for i in (2, 0):
        assert write_features(data, out, **_tiny_options(weights, shard=(i, 3))) == \
            shard_path(out, i, 3)
    assert not os.path.exists(out)
    with pytest.raises(DataError, match="shards 1/3 are missing"):
        check_features(out)
    assert write_features(data, out, **_tiny_options(weights, shard=(1, 3))) == out
    assert not os.path.exists(out + ".shards")
    joined, reference = pq.read_table(out), pq.read_table(whole)
    assert joined.schema.equals(reference.schema)  # the identity is compared below
    for name in joined.column_names:  # rows in the same order, labels and weights exact
        a = joined.column(name).to_numpy(zero_copy_only=False)
        b = reference.column(name).to_numpy(zero_copy_only=False)
        if name.startswith("f"):
            # a shard's last batch is smaller, and XLA may compile a batch of another size
            # with another summation order: equal to the last float32 bit or two
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        else:
            assert np.array_equal(a, b), name
    assert read_identity(out) == read_identity(whole)
    assert check_features(out)["rows"] == [0, 14]


def test_a_shard_written_with_other_options_is_refused_in_one_line(tiny_data, tmp_path,
                                                                   capsys):
    from conftest import TINY

    from longtail.cli import main
    from longtail.features import shard_path, write_features

    data, weights = tiny_data
    out = str(tmp_path / "feats.parquet")
    write_features(data, out, **_tiny_options(weights, shard=(0, 2)))
    base = ["features", data, "--model", TINY, "--weights", weights, "--out", out]
    assert main(base + ["--image-size", "40", "--shard", "1/2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image_size" in err and "0-of-2.parquet" in err
    assert main(base + ["--image-size", "32", "--shard", "1/3"]) == 2
    assert "shard 0 of 2" in capsys.readouterr().err
    assert sorted(os.listdir(out + ".shards")) == [os.path.basename(shard_path(out, 0, 2))]


def test_unreadable_images_are_skipped_counted_and_listed(tiny_data, tmp_path, capsys):
    import shutil

    from longtail.cli import main
    from longtail.features import check_features, write_features

    data, weights = tiny_data
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    (broken / "class_1" / "0001.png").write_bytes(b"not an image")
    out = str(tmp_path / "feats.parquet")
    with pytest.warns(UserWarning, match="1 unreadable images were skipped"):
        write_features(str(broken), out, **_tiny_options(weights))
    identity = check_features(out)
    assert [s["path"].endswith(os.path.join("class_1", "0001.png"))
            for s in identity["skipped"]] == [True]
    import longtail as lt

    feats, images = lt.Dataset.open(out), lt.Dataset.open(str(broken))
    assert len(feats) == len(images) - 1
    assert feats.class_counts.tolist() == [7, 3, 3]
    assert main(["features", "--check", out]) == 0
    assert "1 unreadable images skipped" in capsys.readouterr().out
