import os
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pytest
from conftest import make_tree

import longtail as lt
from longtail.dataset import fingerprint
from longtail.errors import DataError


def test_from_directory_counts_classes_and_paths(tree):
    ds = lt.Dataset.from_directory(tree)
    assert ds.class_names == sorted(["dog", "cat", "Zebra"]) == ["Zebra", "cat", "dog"]
    assert ds.class_counts.tolist() == [3, 6, 30]
    assert len(ds) == 39 and ds.kind == "files"
    np.testing.assert_allclose(ds.priors, np.array([3, 6, 30]) / 39)
    assert ds.imbalance_ratio == 10.0
    for i in range(len(ds)):
        path = ds.path(i)
        assert os.path.isfile(path)
        assert os.path.relpath(path, tree).split(os.sep)[0] == ds.class_names[ds.labels[i]]
    assert ds.paths.tolist() == [ds.path(i) for i in range(len(ds))]


def test_matches_keras_image_dataset_from_directory_indexing(tree):
    keras_utils = pytest.importorskip("tensorflow").keras.utils
    kds = keras_utils.image_dataset_from_directory(tree, shuffle=False, batch_size=4)
    ours = lt.Dataset.from_directory(tree)
    assert kds.class_names == ours.class_names
    assert sorted(kds.file_paths) == sorted(ours.paths.tolist())


def test_extension_filter_hidden_files_and_top_level(tmp_path):
    root = tmp_path / "d"
    for rel in ["a/x.JPG", "a/y.jpeg", "a/deep/er/z.webp", "a/notes.txt", "a/.hidden.png",
                "a/.cache/q.png", "b/1.npy", "b/2.TIFF", "top.png", ".hiddenclass/1.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    with pytest.warns(UserWarning, match="1 files at the top level are ignored.*top.png"):
        ds = lt.Dataset.from_directory(root)
    assert ds.class_names == ["a", "b"]
    rel = sorted(os.path.relpath(p, root) for p in ds.paths)
    assert rel == sorted(["a/x.JPG", "a/y.jpeg", "a/deep/er/z.webp", "b/1.npy", "b/2.TIFF"])
    only_png = lt.Dataset.from_directory(root, extensions=[".WEBP"])
    assert len(only_png) == 1


def test_empty_class_kept_with_warning(tmp_path):
    root = make_tree(tmp_path, {"a": 3, "c": 2})
    os.makedirs(os.path.join(root, "b"))
    with pytest.warns(UserWarning, match="no accepted files.*: b"):
        ds = lt.Dataset.from_directory(root)
    assert ds.class_names == ["a", "b", "c"] and ds.class_counts.tolist() == [3, 0, 2]
    assert ds.imbalance_ratio == 1.5


def test_symlinks_skipped_unless_requested_and_loops_end(tmp_path):
    root = make_tree(tmp_path / "d", {"a": 2, "b": 2}, nested=False)
    outside = make_tree(tmp_path / "o", {"x": 3}, nested=False)
    os.symlink(os.path.join(outside, "x"), os.path.join(root, "a", "linked"))
    os.symlink(os.path.join(root, "a"), os.path.join(root, "a", "loop"))
    os.symlink(os.path.join(root, "b", "0000.png"), os.path.join(root, "a", "l.png"))
    with pytest.warns(UserWarning, match="skipped 3 symbolic links"):
        ds = lt.Dataset.from_directory(root)
    assert ds.class_counts.tolist() == [2, 2]
    followed = lt.Dataset.from_directory(root, follow_symlinks=True)
    assert followed.class_counts.tolist() == [2 + 3 + 1, 2]  # loop entered never twice


@pytest.mark.parametrize("setup,msg", [
    (lambda p: None, "no such file or folder"),
    (lambda p: p.write_text("x"), "expected a folder"),
    (lambda p: (p.mkdir(), (p / "f.png").write_text("")), "no class sub-folders"),
])
def test_directory_errors(tmp_path, setup, msg):
    path = tmp_path / "data"
    setup(path)
    with pytest.raises(DataError, match=msg), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lt.Dataset.from_directory(path)


def test_from_table_csv_paths_labels_weights(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "t.csv").write_text(
        "path,label,weight\nimg/a.png,dog,1.5\nimg/b.png,cat,0\n/abs/c.png,dog,2\n")
    ds = lt.Dataset.from_table(tmp_path / "t.csv", weight_column="weight",
                               allow_outside_root=True)  # /abs/c.png: see test_security
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [1, 0, 1]
    assert ds.paths.tolist() == [str(tmp_path / "img/a.png"), str(tmp_path / "img/b.png"),
                                 "/abs/c.png"]
    np.testing.assert_array_equal(ds.weights, [1.5, 0.0, 2.0])


def test_from_table_features_parquet(tmp_path):
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y,
                             "note": ["s"] * 20}), tmp_path / "t.parquet")
    ds = lt.Dataset.from_table(tmp_path / "t.parquet", label_column="y")
    assert ds.kind == "features" and ds.feature_names == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.features, x)
    assert ds.labels.tolist() == y.tolist() and ds.class_names == ["0", "1", "2"]


@pytest.mark.parametrize("body,kw,msg", [
    ("path,lab\na.png,x\n", {}, "no label column 'label'"),
    ("path,label,w\na.png,x,nan\n", {"weight_column": "w"}, "row 1: weight nan"),
    ("path,label,w\na.png,x,1\nb.png,y,-2\n", {"weight_column": "w"}, "row 2: weight -2"),
    ("path,label,w\na.png,x,inf\n", {"weight_column": "w"}, "finite and >= 0"),
    ("path,label\na.png,x\nb.png,\n", {}, "row 2: missing label"),
    ("path,label\na.png,x\nb.png,q\n", {"class_names": ["x", "y"]}, "label q is not one of"),
    ("path,label\na.png,0\nb.png,5\n", {"class_names": ["x", "y"]}, "label 5 is outside"),
    ("path,label\na.png,x\n", {"weight_column": "w"}, "no weight column 'w'"),
    ("label,s\nx,hello\n", {}, "no path column 'path' and no numeric feature columns"),
])
def test_table_errors_name_the_file_and_row(tmp_path, body, kw, msg):
    (tmp_path / "t.csv").write_text(body)
    with pytest.raises(DataError, match=msg) as info:
        lt.Dataset.from_table(tmp_path / "t.csv", **kw)
    assert str(tmp_path / "t.csv") in str(info.value)


def test_from_arrays_paths_and_features():
    ds = lt.Dataset.from_arrays(["a/1.png", "b/2.png", "b/3.png"], ["b", "a", "a"], root="/r")
    assert ds.class_names == ["a", "b"] and ds.labels.tolist() == [1, 0, 0]
    assert ds.path(0) == "/r/a/1.png"
    ds2 = lt.Dataset.from_arrays(np.array(["/x/1.png", "/x/2.png"]), np.array([1, 1]),
                                 class_names=["neg", "pos"])
    assert ds2.class_counts.tolist() == [0, 2] and ds2.path(1) == "/x/2.png"
    feats = lt.Dataset.from_arrays(np.ones((4, 2)), [0, 1, 0, 1], weights=[1, 2, 3, 4])
    assert feats.kind == "features" and feats.features.dtype == np.float32
    with pytest.raises(DataError, match="label z is not one of the classes x, y"):
        lt.Dataset.from_arrays(["a", "b"], ["x", "z"], class_names=["x", "y"])
    with pytest.raises(DataError, match="has 2 rows but there are 3 labels"):
        lt.Dataset.from_arrays(["a", "b"], [0, 1, 1])
    with pytest.raises(DataError, match="finite"):
        lt.Dataset.from_arrays(["a"], [0], weights=[np.nan])


def test_immutable_and_subset(tree):
    ds = lt.Dataset.from_directory(tree)
    with pytest.raises(ValueError):
        ds.labels[0] = 2
    sub = ds.subset([0, 5, 38])
    assert len(sub) == 3 and sub.paths.tolist() == [ds.path(0), ds.path(5), ds.path(38)]
    assert sub.class_names == ds.class_names
    assert len(ds.subset(ds.labels == 1)) == 6


def test_save_load_round_trip_exact(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 4, "b": 2})
    os.makedirs(os.path.join(root, "empty"))
    with pytest.warns(UserWarning):
        ds = lt.Dataset.from_directory(root)
    weighted = lt.Dataset.from_arrays(ds.paths, ds.labels, ds.class_names,
                                      weights=np.linspace(0, 2, len(ds)))
    for d in (ds, weighted):
        d.save(tmp_path / "out" / "m.parquet")
        back = lt.Dataset.load(tmp_path / "out" / "m.parquet")
        assert back.equals(d) and back.class_names == ["a", "b", "empty"]
        assert (back.weights is None) == (d.weights is None)
    # Moving manifest and data together keeps the paths valid.
    ds.save(tmp_path / "data" / "m.parquet")
    shutil.move(tmp_path / "data", tmp_path / "moved")
    moved = lt.Dataset.load(tmp_path / "moved" / "m.parquet")
    assert all(os.path.isfile(p) for p in moved.paths)
    feats = lt.Dataset.from_arrays(np.random.default_rng(0).normal(size=(5, 2)), [0, 1, 0, 1, 1])
    feats.save(tmp_path / "f.parquet")
    assert lt.Dataset.load(tmp_path / "f.parquet").equals(feats)
    assert not [f for f in os.listdir(tmp_path / "out") if f.endswith(".tmp")]


def test_open_dispatches_on_form(tree, tmp_path):
    ds = lt.Dataset.open(tree)
    ds.save(tmp_path / "m.parquet")
    assert lt.Dataset.open(tmp_path / "m.parquet").equals(ds)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="expected a folder .* or a .csv or .parquet table"):
        lt.Dataset.open(tmp_path / "x.json")


def test_index_memory_per_sample_is_compact():
    n = 100_000
    paths = [f"class_{i % 100:03d}/image_{i:07d}.jpg" for i in range(n)]
    ds = lt.Dataset.from_arrays(paths, np.arange(n) % 100, root="/data")
    path_bytes = sum(len(p) for p in paths)
    overhead = ds.labels.nbytes + ds.relative_paths.nbytes - path_bytes
    assert overhead / n <= 150


def test_fingerprint_follows_labels_paths_rows_and_weights(tmp_path):
    paths = [f"c{i % 3}/{i}.png" for i in range(9)]
    labels = [f"c{i % 3}" for i in range(9)]
    ds = lt.Dataset.from_arrays(paths, labels, root=str(tmp_path))
    same = lt.Dataset.from_arrays(list(paths), list(labels), root=str(tmp_path))
    assert fingerprint(ds) == fingerprint(same)
    # What the manifest stores (a saved and reloaded index) has the same fingerprint.
    assert fingerprint(lt.Dataset.load(ds.save(tmp_path / "m.parquet"))) == fingerprint(ds)
    relabelled = labels[:-1] + ["c0"]
    renamed = paths[:-1] + ["c2/other.png"]
    changed = [
        lt.Dataset.from_arrays(paths, relabelled, root=str(tmp_path)),
        lt.Dataset.from_arrays(renamed, labels, root=str(tmp_path)),
        lt.Dataset.from_arrays(paths, labels, root=str(tmp_path), weights=np.ones(9)),
        ds.subset(np.arange(8)),
        lt.Dataset.from_arrays(np.zeros((9, 2), "float32"), labels),
    ]
    prints = {fingerprint(d) for d in changed}
    assert len(prints) == len(changed) and fingerprint(ds) not in prints
    # A feature row changed by one value changes it too.
    features = np.arange(18, dtype="float32").reshape(9, 2)
    edited = features.copy()
    edited[4, 1] += 1
    assert fingerprint(lt.Dataset.from_arrays(features, labels)) != fingerprint(
        lt.Dataset.from_arrays(edited, labels))
