"""Tests for longtail.sources: the Source protocol and its three implementations."""

import ast
import os
import pathlib
import re

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import longtail as lt
from longtail.cache import build_cache
from longtail.decode import read_image
from longtail.errors import ConfigError, DecodeError
from longtail.options import ImageOptions
from longtail.sources import CacheSource, FeatureSource, FileSource, Source

PACKAGE = pathlib.Path(lt.__file__).parent
COUNTS = {"ant": 5, "bee": 3, "cow": 2}


def _tree(root, seed=0):
    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(COUNTS.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (20 + i, 18 + c, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def files(tmp_path):
    return lt.Dataset.from_directory(_tree(tmp_path / "data"))


@pytest.fixture
def cached(files, tmp_path):
    build_cache(files, tmp_path / "cache", image_size=(8, 6), progress=False)
    return lt.Dataset.open(tmp_path / "cache")


@pytest.fixture
def features():
    x = np.random.default_rng(1).normal(size=(10, 4))
    return lt.Dataset.from_arrays(x, [0, 1, 2, 0, 0, 1, 0, 2, 1, 0]), x


# ------------------------------------------------------------- the protocol
def test_each_dataset_has_the_source_of_its_data(files, cached, features):
    assert isinstance(files.source, FileSource) and files.kind == "files"
    assert isinstance(cached.source, CacheSource) and cached.kind == "cache"
    assert isinstance(features[0].source, FeatureSource) and features[0].kind == "features"
    for ds in (files, cached, features[0]):
        assert isinstance(ds.source, Source) and len(ds.source) == len(ds)


def test_file_source_reads_what_decode_reads(files):
    options = ImageOptions(image_size=(7, 5), color_mode="grayscale")
    rows = np.array([9, 0, 4])
    x = files.source.read(rows, options)
    reference = np.stack([read_image(files.path(i), options) for i in rows])
    np.testing.assert_array_equal(x, reference)
    assert x.shape == (3, *files.source.item_shape(options)) == (3, 7, 5, 1)
    taken = files.source.take(rows)
    np.testing.assert_array_equal(taken.read(np.arange(3), options), reference)


def test_feature_source_reads_rows(features):
    ds, x = features
    rows = np.array([3, 3, 7])
    np.testing.assert_allclose(ds.source.read(rows, ImageOptions()), x[rows], rtol=1e-6)
    assert ds.source.item_shape(ImageOptions()) == (4,)
    assert not ds.source.is_image and ds.source.default_model == "mlp"


def test_cache_source_reads_the_cache_rows(cached):
    rows = np.array([1, 8, 2])
    x = cached.source.read(rows, cached.source.resolve(ImageOptions()))
    np.testing.assert_array_equal(x, cached.cache.read(cached.cache_rows[rows]))
    assert cached.source.image_size == (8, 6)
    assert cached.source.resolve(ImageOptions()).image_size == (8, 6)
    with pytest.raises(ConfigError, match="does not match the cache"):
        cached.source.resolve(ImageOptions(image_size=9))


def test_a_file_that_fails_is_substituted_by_what_the_caller_picks(files):
    broken = files.path(2)
    with open(broken, "wb") as f:
        f.write(b"not an image")
    options = ImageOptions(image_size=4)
    with pytest.raises(DecodeError, match=re.escape(broken)):
        files.source.read(np.array([1, 2]), options)
    asked = []
    x = files.source.read(np.array([1, 2]), options,
                          substitute=lambda j, i, e: asked.append((j, i)) or 0)
    assert asked == [(1, 2)]
    np.testing.assert_array_equal(x[1], read_image(files.path(0), options))


@pytest.mark.parametrize("which", ["files", "cached", "features"])
def test_subsets_and_manifests_round_trip(which, files, cached, features, tmp_path):
    ds = {"files": files, "cached": cached, "features": features[0]}[which]
    part = ds.subset([4, 0, 2])
    assert len(part.source) == 3 and np.array_equal(part.labels, ds.labels[[4, 0, 2]])
    options = part.source.resolve(ImageOptions(image_size=(8, 6)))
    np.testing.assert_array_equal(part.source.read(np.arange(3), options),
                                  ds.source.read(np.array([4, 0, 2]), options))
    back = lt.Dataset.load(part.save(tmp_path / "part.parquet"))
    assert back.equals(part) and back.kind == ds.kind and not back.equals(ds)


# ------------------------------------------------ a cache is read, not decoded
def test_torch_image_dataset_on_a_cache_reads_the_cache(cached, files):
    torch_module = pytest.importorskip("torch")
    from longtail.torch import ImageDataset

    for path in files.paths:  # the originals change after caching: the cache must win
        Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(path, format="PNG")
    items = ImageDataset(cached)
    assert items.options.image_size == (8, 6)
    for i in range(len(cached)):
        x, y = items[i]
        assert isinstance(x, torch_module.Tensor) and y == cached.labels[i]
        np.testing.assert_array_equal(x.numpy(), cached.cache.read([cached.cache_rows[i]])[0]
                                      .transpose(2, 0, 1))
    for path in files.paths:
        os.remove(path)
    np.testing.assert_array_equal(items[3][0].numpy().transpose(1, 2, 0),
                                  cached.cache.read([cached.cache_rows[3]])[0])


# ------------------------------------------------------------- extensibility
class _Constant(Source):
    """A source of vectors (what a feature store of embeddings is): sample i is i * ones."""

    kind = "constant"
    is_image = False
    default_model = "mlp"

    def __init__(self, values):
        self.values = np.asarray(values, np.float32)

    def __len__(self):
        return len(self.values)

    def take(self, indices):
        return _Constant(self.values[indices])

    def read(self, indices, options, substitute=None):
        return np.repeat(self.values[indices, None], 3, axis=1)

    def item_shape(self, options):
        return (3,)

    def to_columns(self, relative_to=None):
        return ["value"], [pa.array(self.values)], {"kind": self.kind}

    def same_samples(self, other):
        return type(other) is _Constant and np.array_equal(self.values, other.values)

    def describe(self):
        return "constant vectors"


def test_a_new_source_is_one_class(tmp_path):
    labels = np.array([0, 1] * 10)
    ds = lt.Dataset(class_names=["x", "y"], labels=labels,
                    source=_Constant(np.arange(20)))
    train, val = ds.split(val=0.3, seed=0)
    x, y = next(iter(train.loader(batch_size=4, sampling="sequential")))
    expected = train.source.values[:4]
    np.testing.assert_array_equal(x, np.repeat(expected[:, None], 3, axis=1))
    np.testing.assert_array_equal(y, labels[expected.astype(int)])
    assert ds.describe()["source"] == "constant vectors"
    meta = train.to_table().schema.metadata[b"longtail"]
    assert b'"kind": "constant"' in meta


# --------------------------------------------------------------- structure
def _modules(folder):
    return [p for p in folder.rglob("*.py")]


def test_no_module_outside_sources_switches_on_a_kind():
    switch = re.compile(r"""\.kind\s*(==|!=|in\b)|_kind\b|kind\s*(==|!=)\s*["'](files|features|cache)""")
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in _modules(PACKAGE)
                 if "sources" not in p.parts
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if switch.search(line) and "dtype.kind" not in line]
    assert offenders == []


def _imports(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_sources_do_not_import_the_dataset_and_the_dataset_not_the_cache_builder():
    for path in _modules(PACKAGE / "sources"):
        imported = _imports(path)
        assert "longtail.dataset" not in imported, path
        assert not {"longtail.cache.build", "longtail.cache.reader"} & imported, path
    assert not any(m.startswith("longtail.cache") for m in _imports(PACKAGE / "dataset.py"))
