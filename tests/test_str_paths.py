"""Paths as NumPy ``str`` built in Arrow (``Dataset.paths``, ``FileSource.paths``)."""

import os

import numpy as np
import pyarrow as pa
import pytest

import longtail as lt
import longtail.sources.files as files
from longtail.sources.files import FileSource, arrow_to_str


def _reference(array):
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return np.array([str(v) for v in array.to_pylist()], dtype=str)


@pytest.mark.parametrize("values", [
    ["a", "bb/ccc", "", "d" * 40, "e"],
    ["été/x.jpg", "y.jpg"],            # not ASCII: the Python way
    ["x.png"] * 7,
    ["only"],
])
def test_arrow_to_str_equals_python_strings_across_chunks(monkeypatch, values):
    monkeypatch.setattr(files, "_STR_CHUNK", 3)  # several chunks, a short last one
    got = arrow_to_str(pa.array(values, pa.string()))
    expected = _reference(pa.array(values, pa.string()))
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_arrow_to_str_of_slices_chunked_and_empty_arrays(monkeypatch):
    monkeypatch.setattr(files, "_STR_CHUNK", 2)
    array = pa.array(["q", "abc", "de", "fgh", "ij"])
    for part in (array.slice(1), array.slice(2, 2),
                 pa.chunked_array([array.slice(0, 2), array.slice(3)])):
        got = arrow_to_str(part)
        assert got.dtype == np.dtype("<U3")
        np.testing.assert_array_equal(got, _reference(part))
    empty = arrow_to_str(pa.array([], pa.string()))
    assert empty.shape == (0,) and empty.dtype.kind == "U"


def test_dataset_paths_join_the_root_like_os_path_join(monkeypatch):
    monkeypatch.setattr(files, "_STR_CHUNK", 4)
    rel = [f"class_{i % 3}/img_{i}.jpg" for i in range(11)] + ["/elsewhere/z.jpg"]
    ds = lt.Dataset.from_arrays(rel, [i % 3 for i in range(12)], root="/data/set")
    expected = np.array([os.path.join("/data/set", p) for p in rel])
    np.testing.assert_array_equal(ds.paths, expected)
    assert ds.paths.dtype == expected.dtype
    source = FileSource(pa.array(rel), "/data/set")
    np.testing.assert_array_equal(source.paths(), expected)
    np.testing.assert_array_equal(FileSource(pa.array(rel)).paths(), np.array(rel))
