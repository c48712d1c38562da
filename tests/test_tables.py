"""Tables: a weight-like feature column is warned about; in-memory tables are accepted."""

import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import longtail as lt
from longtail.cli import main


def _table(n=30):
    rng = np.random.default_rng(0)
    return pa.table({"x": rng.normal(size=n), "weight": rng.uniform(0.5, 2.0, n),
                     "label": [f"c{i % 3}" for i in range(n)]})


def test_weight_like_column_is_not_a_silent_feature(tmp_path):
    path = tmp_path / "t.csv"
    pacsv.write_csv(_table(), str(path))
    with pytest.warns(UserWarning, match="--weight-column weight"):
        ds = lt.Dataset.from_table(str(path))
    assert ds.feature_names == ["x", "weight"] and ds.weights is None
    ds = lt.Dataset.from_table(str(path), weight_column="weight")  # no warning now
    assert ds.feature_names == ["x"]
    np.testing.assert_allclose(ds.weights, _table().column("weight").to_numpy(), rtol=1e-6)


def test_stats_lists_features_and_weight_column(tmp_path, capsys):
    path = tmp_path / "t.csv"
    pacsv.write_csv(_table(), str(path))
    assert main(["stats", str(path), "--weight-column", "weight"]) == 0
    out = capsys.readouterr().out
    assert "feature columns (1): x" in out and "weight column: weight" in out


def test_from_table_accepts_a_pyarrow_table_like_the_file(tmp_path):
    table = _table()
    pacsv.write_csv(table, str(tmp_path / "t.csv"))
    from_file = lt.Dataset.from_table(str(tmp_path / "t.csv"), weight_column="weight")
    in_memory = lt.Dataset.from_table(table, weight_column="weight")
    assert in_memory.class_names == from_file.class_names
    np.testing.assert_array_equal(in_memory.labels, from_file.labels)
    np.testing.assert_allclose(in_memory.features, from_file.features)


def test_from_table_accepts_a_pandas_dataframe():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "label": ["a", "b", "a", "b"]})
    ds = lt.Dataset.from_table(frame)
    assert ds.class_names == ["a", "b"] and ds.labels.tolist() == [0, 1, 0, 1]


def test_from_table_refuses_other_objects():
    with pytest.raises(TypeError, match="pyarrow.Table or a pandas DataFrame"):
        lt.Dataset.from_table(42)


@pytest.mark.parametrize("bad, shown", [(float("nan"), "an empty cell or NaN"),
                                        (float("inf"), "value inf"),
                                        (-float("inf"), "value -inf"),
                                        # 1e39 overflows float32
                                        (1e39, r"value 1e\+39 \(beyond float32\)")])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_non_finite_feature_is_refused_with_row_and_column(tmp_path, capsys, bad, shown,
                                                          suffix):
    import pyarrow.parquet as pq

    x = np.arange(12, dtype=np.float64)
    x[4] = bad
    table = pa.table({"a": np.ones(12), "x": x, "label": [f"c{i % 2}" for i in range(12)]})
    path = tmp_path / f"t{suffix}"
    (pacsv.write_csv if suffix == ".csv" else pq.write_table)(table, str(path))
    with pytest.raises(lt.DataError, match=rf"row 5: {shown} in feature column 'x'"):
        lt.Dataset.from_table(str(path))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.fullmatch(rf"longtail: error: {re.escape(str(path))}: row 5: {shown} in feature "
                        r"column 'x'; feature values must be finite numbers", err[0])
    assert not out.exists()


def test_empty_feature_cell_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,x,label\n1,2,p\n1,,q\n1,3,p\n")
    with pytest.raises(lt.DataError, match=r"row 2: an empty cell or NaN in feature column 'x'"):
        lt.Dataset.from_table(str(path))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_from_arrays_refuses_non_finite_features(bad):
    features = np.zeros((6, 3))
    features[2, 1] = bad
    with pytest.raises(lt.DataError, match=r"`features` must be finite numbers; got .* in "
                                           r"row 3, column 2"):
        lt.Dataset.from_arrays(features, [0, 1, 0, 1, 0, 1])
