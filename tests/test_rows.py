"""The rows of a feature store are read a batch at a time from a row file beside it.

Stores here are written directly (random float16 rows, no backbone), with the
metadata ``longtail features`` gives them.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

NAMES = ["a", "b", "c"]


def write_store(path, x, labels, *, weights=None, row_group_size=None):
    """A feature store of rows ``x`` (its dtype) and class indices ``labels``."""
    columns = {f"f{j:04d}": pa.array(x[:, j]) for j in range(x.shape[1])}
    columns["label"] = pa.array([NAMES[i] for i in labels], pa.string())
    if weights is not None:
        columns["weight"] = pa.array(weights, pa.float32())
    identity = {"format": 1, "backbone": "made-up", "class_names": NAMES,
                "dtype": str(x.dtype), "rows": [0, len(x)], "shard": [0, 1], "skipped": []}
    table = pa.table(columns).replace_schema_metadata(
        {b"longtail_features": json.dumps(identity).encode()})
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def data(n=500, d=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float16)
    labels = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    return x, labels


def sidecars(path):
    folder, name = os.path.split(path)
    return sorted(f for f in os.listdir(folder) if f.startswith(f".{name}.rows-"))


def test_a_store_is_read_through_a_row_file_and_take_copies_indices(tmp_path):
    import longtail as lt

    x, labels = data()
    store = write_store(tmp_path / "feats.parquet", x, labels, row_group_size=64)
    ds = lt.Dataset.open(store)
    src = ds.source
    assert ds.kind == "embeddings" and ds.labels.tolist() == labels.tolist()
    assert src.row_file.path == os.path.join(tmp_path, sidecars(store)[0])
    rows = src.row_file.mmap()
    assert isinstance(rows, np.memmap) and rows.dtype == np.float16
    np.testing.assert_array_equal(rows, x)
    first = np.array([5, 400, 3, 3, 499, 0, 7])
    second = np.array([6, 1, 1, 4])
    sub = src.take(first).take(second)
    assert sub.row_file is src.row_file  # the rows were not copied
    assert sub.row_index.tolist() == first[second].tolist()
    want = x[first[second]].astype(np.float32)
    got = sub.read(np.arange(4), None)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(sub.features, want)
    # what reading a store gave before: the table read whole, as float32
    table = pq.read_table(store)
    old = np.stack([table[f"f{j:04d}"].to_numpy().astype(np.float32) for j in range(24)], 1)
    np.testing.assert_array_equal(src.read(np.arange(len(x))[::-1], None), old[::-1])


def test_moments_and_fingerprint_match_the_whole_array(tmp_path, monkeypatch):
    import longtail as lt
    import longtail.sources.rows as rows
    from longtail.dataset import fingerprint

    monkeypatch.setattr(rows, "BLOCK_VALUES", 24 * 70)  # blocks of 70 rows: several
    x, labels = data(n=300)
    weights = np.linspace(0.5, 2, 300).astype(np.float32)
    ds = lt.Dataset.open(write_store(tmp_path / "f.parquet", x, labels, weights=weights))
    sub = ds.subset(np.arange(299, -1, -2))
    mean, var = sub.source.moments()
    ref = x[np.arange(299, -1, -2)].astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(var, ref.var(0), rtol=1e-5)
    digest = hashlib.blake2b(digest_size=16)  # the digest of the rows read whole
    digest.update(json.dumps(["embeddings", NAMES]).encode())
    digest.update(sub.labels.astype("<i4").tobytes())
    digest.update(ref.astype("<f4").tobytes())
    digest.update(sub.weights.astype("<f4").tobytes())
    assert fingerprint(sub) == digest.hexdigest()


def test_a_split_saved_in_parts_is_a_store_with_the_same_rows(tmp_path, monkeypatch):
    import longtail as lt
    import longtail.sources.rows as rows

    monkeypatch.setattr(rows, "BLOCK_VALUES", 24 * 64)  # manifest written 128 rows at a time
    x, labels = data(n=400)
    ds = lt.Dataset.open(write_store(tmp_path / "f.parquet", x, labels))
    train, val = ds.split(val=0.4, seed=3)
    train.save(tmp_path / "train.parquet")
    assert pq.ParquetFile(tmp_path / "train.parquet").metadata.num_row_groups > 1
    back = lt.Dataset.open(tmp_path / "train.parquet")
    assert back.kind == "embeddings" and back.equals(train) and not back.equals(val)
    np.testing.assert_array_equal(back.source.row_file.mmap(),
                                  x[train.source.row_index])
    assert back.source.row_file.mmap().dtype == np.float16  # the store's dtype kept
    changed = x.copy()
    changed[train.source.row_index[7], 3] += 1
    other = lt.Dataset.open(write_store(tmp_path / "g.parquet", changed, labels))
    assert not other.subset(train.source.row_index).equals(back)


@pytest.mark.parametrize("value, what", [(np.nan, "NaN"), (np.inf, "value inf")])
def test_a_store_with_a_non_finite_value_is_refused_naming_row_and_column(tmp_path, value,
                                                                         what):
    import longtail as lt
    from longtail.errors import DataError

    x, labels = data(n=300)
    x[217, 5] = value
    store = write_store(tmp_path / "f.parquet", x, labels, row_group_size=100)
    with pytest.raises(DataError, match=rf"f.parquet: row 218: .*{what}.* column 'f0005'"):
        lt.Dataset.open(store)
    assert sidecars(store) == []  # nothing half written beside it


def test_check_names_the_first_non_finite_value_reading_a_row_group_at_a_time(tmp_path):
    from longtail.errors import DataError
    from longtail.features import check_features

    x, labels = data(n=300)
    store = write_store(tmp_path / "ok.parquet", x, labels, row_group_size=50)
    assert check_features(store)["rows"] == [0, 300]
    x[123, 20] = -np.inf
    store = write_store(tmp_path / "f.parquet", x, labels, row_group_size=50)
    with pytest.raises(DataError, match=r"f.parquet: row 124: value -inf in feature column "
                                        r"'f0020'"):
        check_features(store)
    assert sidecars(store) == []  # a check writes nothing


def test_a_changed_store_is_not_read_from_its_old_row_file(tmp_path):
    import longtail as lt

    x, labels = data(n=200)
    store = write_store(tmp_path / "f.parquet", x, labels)
    np.testing.assert_array_equal(lt.Dataset.open(store).source.read(np.arange(200), None), x)
    old = sidecars(store)
    stat = os.stat(store)
    y = x.copy()
    y[10] = -y[10]
    write_store(store, y, labels)  # same size, and the same modification time
    os.utime(store, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(store).st_size == stat.st_size
    got = lt.Dataset.open(store).source.read(np.arange(200), None)
    np.testing.assert_array_equal(got, y)
    assert len(sidecars(store)) == 1 and sidecars(store) != old  # the old one removed


def test_an_unwritable_folder_reads_the_rows_into_memory_with_a_warning(tmp_path,
                                                                        monkeypatch):
    import longtail as lt
    import longtail.runs

    x, labels = data(n=100)
    store = write_store(tmp_path / "f.parquet", x, labels)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(longtail.runs, "locked", refuse)
    with pytest.warns(UserWarning, match="cannot write its row file.*into memory"):
        ds = lt.Dataset.open(store)
    assert ds.source.row_file.path is None and sidecars(store) == []
    np.testing.assert_array_equal(ds.source.read(np.arange(100), None), x)


def test_reading_a_store_stays_within_a_cap_that_reading_it_whole_does_not(tmp_path):
    """134 MB of float32 rows (67 MB as float16) opened, read, split under a 128 MB cap.

    The cap leaves room for what does not grow with the features: Arrow's
    buffers for one row group, the loader's threads, the labels.
    """
    rng = np.random.default_rng(0)
    n, d = 131072, 256  # more float32 rows than the cap; the whole read needs 4x that
    labels = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    big = write_store(tmp_path / "big.parquet",
                      rng.normal(size=(n, d)).astype(np.float16), labels,
                      row_group_size=16384)
    small = write_store(tmp_path / "small.parquet",
                        rng.normal(size=(600, d)).astype(np.float16), labels[:600])
    probe = os.path.join(os.path.dirname(__file__), "_rows_probe.py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "MALLOC_ARENA_MAX": "2"}

    def run(mode):
        out = subprocess.run([sys.executable, probe, small, big, str(tmp_path), "128", mode],
                             capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    r = run("stream")
    assert r["ok"], r
    assert r["seen"] == n
    assert r["peak_rss"] - r["rss_before"] <= r["budget_bytes"], r
    control = run("whole")
    assert not control["ok"] and "Error" in control["error"], control
