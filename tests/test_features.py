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
