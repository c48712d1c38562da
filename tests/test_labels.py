"""The label normaliser gives the labels and classes of the per-label Python loop it replaced."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import longtail as lt
from longtail._labels import encode_labels
from longtail.errors import DataError


def reference(labels, class_names=None):
    """The encoding ``Dataset.from_arrays`` did before, one Python lookup per label."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "US" or labels.dtype == object:
        strings = labels.astype(str)
        names = sorted(set(strings.tolist())) if class_names is None else list(class_names)
        lookup = {name: i for i, name in enumerate(names)}
        return np.array([lookup[s] for s in strings.tolist()], np.int32), names
    k = int(labels.max()) + 1 if labels.size else 0
    names = [str(i) for i in range(k)] if class_names is None else list(class_names)
    return labels.astype(np.int32), names


def check(labels, class_names=None):
    got, names = encode_labels(labels, class_names)
    want, want_names = reference(labels, class_names)
    assert names == want_names
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


# NumPy's fixed-width str drops trailing NULs, so the old loop merged "a\x00" with
# "a"; the normaliser keeps them apart, and the comparison leaves NUL out.
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(names, max_size=40))
def test_string_labels_match_the_python_loop(labels):
    check(labels)
    check(np.array(labels, dtype=object))
    if labels:
        check(np.array(labels))  # fixed-width numpy str


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(names, st.integers(-5, 50)), min_size=1, max_size=30))
def test_mixed_object_labels_are_their_str(labels):
    check(np.array(labels, dtype=object))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=50), st.integers(0, 5))
def test_integer_labels_keep_their_values(labels, extra):
    check(np.array(labels, dtype=np.int64))
    k = (max(labels) + 1 if labels else 0) + extra
    check(np.array(labels, dtype=np.uint8), [f"c{i}" for i in range(k)])


def test_explicit_class_names_keep_their_order_and_empty_classes():
    labels = ["dog", "cat", "dog", "dog"]
    check(labels, ["dog", "bird", "cat"])
    got, names = encode_labels(labels, ["dog", "bird", "cat"])
    assert got.tolist() == [0, 2, 0, 0] and names == ["dog", "bird", "cat"]


def test_arrow_columns_give_the_same_labels_as_numpy():
    strings = ["b", "a", "c", "a", "b"]
    want = reference(strings)
    chunked = pa.chunked_array([pa.array(strings[:2]), pa.array(strings[2:])])
    for column in (pa.array(strings), chunked, chunked.dictionary_encode(),
                   pa.array(strings, pa.large_string())):
        got, names = encode_labels(column)
        assert names == want[1] and got.tolist() == want[0].tolist()


def test_a_stored_dictionary_with_unused_entries_adds_no_class():
    column = pa.DictionaryArray.from_arrays(pa.array([2, 0, 2], pa.int32()),
                                            pa.array(["x", "unused", "a"]))
    got, names = encode_labels(column)
    assert names == ["a", "x"] and got.tolist() == [0, 1, 0]
    ints = pa.DictionaryArray.from_arrays(pa.array([1, 0, 1], pa.int8()), pa.array([3, 1]))
    got, names = encode_labels(ints)
    assert names == ["0", "1", "2", "3"] and got.tolist() == [1, 3, 1]


@pytest.mark.parametrize("labels,class_names,message", [
    (["x", "z"], ["x", "y"], "`labels`: row 2: label z is not one of the classes x, y"),
    ([0, 3, -1], None, "`labels`: row 3: negative label -1"),
    ([0, 2], ["a", "b"], r"`labels`: row 2: label 2 is outside the classes 0..1"),
    ([0.5, 1.0], None, "`labels` must be class names or integer class indices; got dtype"),
    ([True, False], None, "got dtype bool"),
    ([[0, 1]], None, "must be one-dimensional"),
    (pa.array(["a", None]), None, "`labels`: row 2: missing label"),
    (pa.array([0.5]), None, "class names or integer class indices; got double"),
])
def test_bad_labels_name_the_row(labels, class_names, message):
    with pytest.raises(DataError, match=message):
        encode_labels(labels, class_names)


def test_from_arrays_and_tables_share_the_normaliser(tmp_path):
    labels = np.array(["dog", "cat", "emu", "cat"])
    ds = lt.Dataset.from_arrays([f"{i}.png" for i in range(4)], labels, root=tmp_path)
    assert ds.class_names == ["cat", "dog", "emu"] and ds.labels.tolist() == [1, 0, 2, 0]
    (tmp_path / "t.csv").write_text("path,label\n" + "".join(
        f"{i}.png,{c}\n" for i, c in enumerate(labels)))
    table = lt.Dataset.from_table(tmp_path / "t.csv")
    assert table.class_names == ds.class_names
    np.testing.assert_array_equal(table.labels, ds.labels)
    ds.save(tmp_path / "m.parquet")  # labels stored as an Arrow dictionary
    assert lt.Dataset.load(tmp_path / "m.parquet").equals(ds)


def test_paths_from_arrow_numpy_and_lists_are_the_same(tmp_path):
    import pathlib

    rel = ["a/1.png", "b/2.png", "/abs/3.png"]
    want = [str(tmp_path / "a/1.png"), str(tmp_path / "b/2.png"), "/abs/3.png"]
    for items in (rel, np.array(rel), pa.array(rel), [pathlib.Path(p) for p in rel]):
        ds = lt.Dataset.from_arrays(items, [0, 1, 1], root=tmp_path)
        assert ds.paths.tolist() == want and ds.absolute_paths.to_pylist() == want
        assert ds.paths.dtype.kind == "U"
    absolute = lt.Dataset.from_arrays(np.array(want), [0, 0, 1])
    assert absolute.root is None and absolute.paths.tolist() == want
