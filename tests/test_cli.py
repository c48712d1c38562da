import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_tree

import longtail as lt
from longtail.cli import main
from longtail.weights import class_weights


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_table_and_json(tree, capsys):
    code, out, err = run(capsys, "stats", tree)
    assert code == 0
    assert "imbalance ratio 10.0" in out and "Zebra" in out and "total" in out
    code, out, _ = run(capsys, "stats", tree, "--json")
    summary = json.loads(out)
    ds = lt.Dataset.from_directory(tree)
    assert summary["samples"] == 39 and summary["imbalance_ratio"] == 10.0
    assert [r["count"] for r in summary["per_class"]] == ds.class_counts.tolist()
    for strategy in ("balanced", "inverse", "sqrt", "effective"):
        expected = class_weights(ds, strategy)
        got = [r["weights"][strategy] for r in summary["per_class"]]
        np.testing.assert_allclose(got, list(expected.values()))


def test_split_writes_manifests_every_command_accepts(tree, tmp_path, capsys):
    out_dir = tmp_path / "splits"
    code, out, _ = run(capsys, "split", tree, "--out", out_dir, "--val", "0.2", "--test", "0.1",
                       "--seed", "3")
    assert code == 0
    assert sorted(os.listdir(out_dir)) == ["test.parquet", "train.parquet", "val.parquet"]
    parts = [lt.Dataset.open(out_dir / f"{n}.parquet") for n in ("train", "val", "test")]
    full = lt.Dataset.from_directory(tree)
    expected = full.split(val=0.2, test=0.1, seed=3)
    for got, want in zip(parts, expected):
        assert got.equals(want)
    code, out, _ = run(capsys, "stats", out_dir / "val.parquet", "--json")
    assert code == 0 and json.loads(out)["samples"] == len(parts[1])


def test_stats_on_table_with_weight_column(tmp_path, capsys):
    (tmp_path / "rows.csv").write_text("x,y,label,w\n1,2,a,1\n3,4,b,2\n5,6,b,0.5\n")
    code, out, _ = run(capsys, "stats", tmp_path / "rows.csv", "--weight-column", "w", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["kind"] == "features" and summary["weighted_rows"]


def single_class(tmp_path):
    return make_tree(tmp_path / "one", {"only": 3})


def table(tmp_path, body):
    (tmp_path / "t.csv").write_text(body)
    return tmp_path / "t.csv"


@pytest.mark.parametrize("argv,needle", [
    (lambda p: ["stats", p / "missing"], "missing: no such file or folder"),
    (lambda p: ["stats", table(p, "a,b\n")], "no label column 'label'"),
    (lambda p: ["stats", (p / "f.png").write_text("x") and p / "f.png"], "expected a folder"),
    (lambda p: ["stats", (p / "e").mkdir() or p / "e"], "no class sub-folders"),
    (lambda p: ["split", single_class(p), "--out", p / "o"], "found 1 class"),
    (lambda p: ["stats", table(p, "path,label,w\na,x,-1\n"), "--weight-column", "w"],
     "weight -1"),
    (lambda p: ["stats", table(p, "path,label,w\na,x,nan\n"), "--weight-column", "w"],
     "weight nan"),
    (lambda p: ["split", p, "--out", p / "o", "--val", "1.5"], "argument --val"),
    (lambda p: ["split", p, "--out", p / "o", "--val", "0.6", "--test", "0.6"], "below 1"),
    (lambda p: ["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, needle):
    make_tree(tmp_path, {"a": 2, "b": 2})
    args = argv(tmp_path)
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("longtail: error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written


def test_console_script_and_debug_traceback(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "longtail")
    result = subprocess.run([exe, "stats", str(tmp_path / "nope")], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = subprocess.run([exe, "stats", str(tmp_path / "nope"), "--debug"],
                            capture_output=True, text=True)
    assert "Traceback" in result.stderr and "DataError" in result.stderr


def test_bad_input_is_refused_before_keras_is_imported(tmp_path):
    """A bad weight column ends before Keras (and TensorFlow) start up."""
    (tmp_path / "t.csv").write_text("x1,x2,label,w\n1,2,a,1\n3,4,b,-1\n5,6,b,1\n")
    script = ("import sys\nfrom longtail.cli import main\n"
              "code = main(sys.argv[1:])\n"
              "print(code, sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))")
    result = subprocess.run(
        [sys.executable, "-c", script, "train", str(tmp_path / "t.csv"), "--out",
         str(tmp_path / "run"), "--weight-column", "w"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.stdout.strip() == "2 []", result.stderr
    assert "weight -1.0 in column 'w'" in result.stderr
    assert not (tmp_path / "run").exists()
