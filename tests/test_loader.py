"""Tests for longtail.loader: batches, weights, epochs, state, errors, Keras."""

import json
import os
import re
import warnings

import numpy as np
import pytest
from _backends import BACKENDS, require_backend, start_script
from PIL import Image

import longtail as lt
from longtail.decode import DecodeOptions, read_image
from longtail.errors import ConfigError, DecodeError
from longtail.loader import make_loader

COUNTS = {"a": 14, "b": 7, "c": 3}


def _images(root, counts=COUNTS, size=(10, 12), fmt="png"):
    rng = np.random.default_rng(0)
    root.mkdir(exist_ok=True)
    paths, labels = [], []
    for name, n in counts.items():
        for i in range(n):
            path = root / f"{name}_{i:02d}.{fmt}"
            Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
            paths.append(str(path))
            labels.append(name)
    return paths, labels


@pytest.fixture
def files(tmp_path):
    return _images(tmp_path / "img")


@pytest.fixture
def ds(files):
    return lt.Dataset.from_arrays(*files)


def _all(loader):
    return [tuple(np.copy(a) for a in batch) for batch in loader]


def test_batches_have_the_promised_shapes_and_dtypes(ds):
    loader = make_loader(ds, 5, image_size=(8, 9), num_workers=2)
    assert len(loader) == 24 // 5  # drop_remainder by default for training plans
    batches = _all(loader)
    assert len(batches) == 4 and all(len(b) == 2 for b in batches)
    x, y = batches[0]
    assert x.shape == (5, 8, 9, 3) and x.dtype == np.uint8
    assert y.shape == (5,) and y.dtype == np.int32
    cat = next(iter(make_loader(ds, 5, image_size=8, label_mode="categorical",
                                color_mode="grayscale", dtype="float32")))
    assert cat[0].shape == (5, 8, 8, 1) and cat[0].dtype == np.float32
    assert cat[1].shape == (5, 3) and cat[1].dtype == np.float32
    np.testing.assert_array_equal(cat[1].sum(1), 1.0)


def test_sequential_epoch_is_every_sample_in_order_with_a_partial_batch(ds):
    loader = make_loader(ds, 5, image_size=(10, 12), sampling="sequential")
    batches = _all(loader)
    assert len(loader) == len(batches) == 5 and len(batches[-1][1]) == 4
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(y, ds.labels)
    for i in (0, 13, 23):
        np.testing.assert_array_equal(x[i], read_image(ds.path(i), DecodeOptions()))


def test_each_pass_is_the_next_epoch_with_its_own_plan(ds):
    loader = make_loader(ds, 4, image_size=6, sampling="shuffle", seed=3)
    for epoch in range(3):
        assert loader.epoch == epoch
        y = np.concatenate([b[1] for b in _all(loader)])
        np.testing.assert_array_equal(y, ds.labels[loader.plan(epoch)])
    assert not np.array_equal(loader.plan(0), loader.plan(1))


def test_balanced_plan_reaches_the_batches(ds):
    loader = make_loader(ds, 4, image_size=6, sampling="balanced", epoch_length=300)
    y = np.concatenate([b[1] for b in _all(loader)])
    assert np.all(np.abs(np.bincount(y) - 100) <= 2)


def test_weights_are_class_weight_times_row_weight(files):
    paths, labels = files
    rows = np.linspace(0.5, 2.0, len(paths))
    weighted = lt.Dataset.from_arrays(paths, labels, weights=rows)
    cw = {"a": 1.0, "b": 2.0, "c": 5.0}
    table = np.array([1.0, 2.0, 5.0])
    x, y, w = next(iter(make_loader(weighted, 24, image_size=4, sampling="sequential",
                                    class_weight=cw)))
    np.testing.assert_allclose(w, table[y] * rows, rtol=1e-6)
    assert w.dtype == np.float32
    _, y, w = next(iter(make_loader(weighted, 24, image_size=4, sampling="sequential")))
    np.testing.assert_allclose(w, rows, rtol=1e-6)
    plain = lt.Dataset.from_arrays(paths, labels)
    _, y, w = next(iter(make_loader(plain, 24, image_size=4, sampling="sequential",
                                    class_weight="balanced")))
    counts = np.bincount(plain.labels)
    np.testing.assert_allclose(w, (24 / (3 * counts))[y], rtol=1e-6)


def test_state_restores_the_identical_remaining_batches(ds):
    kw = dict(batch_size=3, image_size=7, sampling="balanced", seed=11, num_workers=2)
    loader = make_loader(ds, **kw)
    next(iter(loader))  # finish epoch 0 partially, then move to epoch 1
    loader.set_epoch(1)
    stream = iter(loader)
    for _ in range(3):
        next(stream)
    state = json.loads(json.dumps(loader.get_state()))
    assert state["epoch"] == 1 and state["batch"] == 3
    rest = list(stream)
    fresh = make_loader(ds, **kw)
    fresh.set_state(state)
    again = _all(fresh)
    assert len(again) == len(rest) == len(loader) - 3
    for a, b in zip(rest, again):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert fresh.get_state()["epoch"] == 2
    with pytest.raises(ConfigError, match="seed=11"):
        make_loader(ds, **{**kw, "seed": 12}).set_state(state)


def test_threads_and_no_threads_give_the_same_batches(ds):
    kw = dict(batch_size=4, image_size=5, sampling="sqrt", seed=2)
    a = _all(make_loader(ds, num_workers=0, **kw))
    b = _all(make_loader(ds, num_workers=2, prefetch=3, **kw))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u[0], v[0])
        np.testing.assert_array_equal(u[1], v[1])


def test_shards_split_the_global_plan(ds):
    one = make_loader(ds, 2, image_size=4, sampling="shuffle", seed=1)
    halves = [make_loader(ds, 1, image_size=4, sampling="shuffle", seed=1, shard=(i, 2))
              for i in range(2)]
    assert len(halves[0]) == len(halves[1]) == 12
    ys = [np.concatenate([b[1] for b in _all(h)]) for h in halves]
    # local batch j of both hosts together is global batch j
    np.testing.assert_array_equal(np.stack(ys, 1).reshape(-1),
                                  np.concatenate([b[1] for b in _all(one)]))


def _corrupt(files, bad=(1, 15)):
    paths, labels = files
    for i in bad:
        with open(paths[i], "wb") as f:
            f.write(b"not an image at all")
    return lt.Dataset.from_arrays(paths + ["/nonexistent/a_99.png"], labels + ["a"])


def test_unreadable_files_are_skipped_replaced_and_reported(files):
    ds = _corrupt(files)
    kw = dict(batch_size=5, image_size=6, sampling="sequential", num_workers=2)
    with pytest.warns(UserWarning, match="skipping unreadable file"):
        loader = make_loader(ds, **kw)
        batches = _all(loader)
    assert sum(len(b[1]) for b in batches) == len(ds)  # batches stay full
    y = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(y, ds.labels)  # replacements come from the same class
    bad = sorted(e.path for e in loader.errors)
    assert bad == sorted([files[0][1], files[0][15], "/nonexistent/a_99.png"])
    assert loader.skipped >= 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = _all(make_loader(ds, **kw))
    for u, v in zip(batches, again):  # replacements are deterministic
        np.testing.assert_array_equal(u[0], v[0])


def test_on_error_raise_names_the_file(files):
    ds = _corrupt(files, bad=(2,))
    loader = make_loader(ds, 4, image_size=6, sampling="sequential", on_error="raise")
    with pytest.raises(DecodeError, match="a_02.png"):
        _all(loader)


def test_all_unreadable_raises_instead_of_hanging(tmp_path):
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        open(paths[-1], "wb").write(b"junk")
    ds = lt.Dataset.from_arrays(paths, [0, 0, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DecodeError, match="replacement samples also failed"):
            _all(make_loader(ds, 2, image_size=4, num_workers=2))


def test_features_stream_float32_rows():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 6)).astype(np.float64)
    ds = lt.Dataset.from_arrays(features, rng.integers(0, 3, 50))
    loader = make_loader(ds, 8, sampling="shuffle", seed=4)
    x, y = next(iter(loader))
    assert x.dtype == np.float32 and x.shape == (8, 6)
    np.testing.assert_allclose(x, features[loader.plan(0)[:8]], rtol=1e-6)
    np.testing.assert_array_equal(y, ds.labels[loader.plan(0)[:8]])


@pytest.mark.parametrize("kw,message", [
    ({"label_mode": "binary"}, "label_mode must be one of int, categorical; got 'binary'"),
    ({"on_error": "ignore"}, "on_error must be one of skip, raise; got 'ignore'"),
    ({"batch_size": 0}, "batch_size must be an int >= 1; got 0"),
    ({"epoch_length": 10}, "epoch_length applies to the sampling plans"),
    ({"sampling": "balance"}, "sampling must be one of"),
    ({"shard": (3, 2)}, "shard index"),
    ({"resize": "fit"}, "`resize` must be one of stretch, crop, pad; got 'fit'"),
    ({"image_size": "64y48"}, "`image_size` must be N, \"HxW\" or a"),
    ({"batch_size": 100}, "batch_size=100 leaves no batch"),
    ({"class_weight": [1.0]}, r"`class_weight` must have one weight per class \(3: a, b, c\); "
                              "got 1 weights"),
])
def test_bad_arguments_are_refused(ds, kw, message):
    args = {"batch_size": 4, "image_size": 8, **kw}
    with pytest.raises(ConfigError, match=message):
        make_loader(ds, **args)


def test_keras_takes_the_loader_as_its_data_adapter(ds):
    import keras
    from keras.src.trainers.data_adapters import get_data_adapter

    loader = ds.loader(batch_size=4, image_size=4)
    assert get_data_adapter(loader) is loader
    assert loader.num_batches == len(loader) == 6
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ConfigError, match="class_weight"):
        model.fit(loader, class_weight={0: 1.0, 1: 1.0, 2: 1.0}, verbose=0)


# ---------------------------------------------------------- real fits
@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """Starts tests/_fit_backend.py under the installed backends at once."""
    root = tmp_path_factory.mktemp("fit")
    rng = np.random.default_rng(0)
    for i in range(24):
        name = "abc"[0 if i < 14 else 1 if i < 20 else 2]
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            root / f"{name}_{i:02d}.png")
    runs = {b: start_script("_fit_backend.py", b, root) for b in BACKENDS}
    results = {}
    for backend, run in runs.items():
        if run is not None:
            code, out, err = run.result()
            lines = [line for line in out.splitlines() if line.startswith("{")]
            results[backend] = json.loads(lines[-1]) if lines else {"error": err[-3000:]}
    return results


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_on_every_backend_uses_weights_and_a_new_plan_each_epoch(fits, backend):
    require_backend(backend)
    result = fits[backend]
    assert "error" not in result, result.get("error")
    assert result["backend"] == backend
    # the weights reach the loss: Keras' logged loss is the hand-computed weighted mean
    assert result["weighted_loss"] == pytest.approx(result["expected_weighted_loss"], rel=1e-5)
    assert abs(result["weighted_loss"] - result["unweighted_loss"]) > 0.1
    # each Keras epoch trained on that epoch's plan, and only that
    assert result["balanced_losses"] == pytest.approx(result["expected_balanced_losses"],
                                                      rel=1e-5)
    assert len(set(np.round(result["balanced_losses"], 6))) == 3
    assert result["epochs_seen"] == 3
    assert result["val_loss"] == pytest.approx([result["expected_val_loss"]] * 3, rel=1e-5)


# ------------------------------------------------------- Keras internals
def test_keras_internals_live_in_one_module():
    import pathlib

    package = pathlib.Path(lt.__file__).parent
    users = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                   if "from keras.src" in p.read_text() or "import keras.src" in p.read_text())
    assert users == ["_keras.py"]


def test_keras_versions_outside_the_tested_range_warn():
    from longtail import _keras

    assert _keras.check_version("3.11.0") and _keras.check_version("3.15.1")
    for version in ("3.10.2", "3.16.0", "4.0.0.dev0"):
        with pytest.warns(UserWarning, match=f"tested with Keras 3.11 to 3.15; this is Keras "
                                             f"{re.escape(version)}"):
            assert not _keras.check_version(version)
