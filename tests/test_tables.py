"""Tables: a weight-like feature column is warned about; in-memory tables are accepted."""

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
