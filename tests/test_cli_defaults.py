"""CLI: --version, arguments that mean nothing are refused, help gives defaults, JSON rounding."""

import json
import os
from importlib.metadata import version

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from longtail.cli import build_parser, main
from longtail.evaluation import rounded


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"longtail {version('longtail')}"


@pytest.mark.parametrize("argv", [
    ["predict", "m.keras", "x.png", "--top-k", "0"],
    ["demo", "--epochs", "-1"],
    ["train", "d", "--out", "r", "--epochs", "0"],
    ["train", "d", "--out", "r", "--batch-size", "0"],
])
def test_meaningless_numbers_are_refused_before_any_work(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and f"{argv[-2]} must be an integer >= 1; got {argv[-1]}" in \
        capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # nothing built


def test_drw_epoch_beyond_epochs_is_refused(tmp_path, capsys):
    pacsv.write_csv(pa.table({"x": [0.0, 1.0] * 10, "label": ["a", "b"] * 10}),
                    str(tmp_path / "t.csv"))
    code = main(["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "run"),
                 "--balance", "ldam-drw", "--epochs", "3", "--drw-epoch", "5"])
    assert code == 2 and "--drw-epoch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_help_gives_each_option_its_default():
    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0].choices
    wanted = {"split": ["--val", "--test", "--seed"],
              "train": ["--epochs", "--batch-size", "--seed", "--learning-rate", "--label-mode"],
              "predict": ["--top-k"], "cache": ["--resize"]}
    for command, options in wanted.items():
        actions = {a.option_strings[-1]: a for a in subparsers[command]._actions
                   if a.option_strings}
        for option in options:
            text = actions[option].help or ""
            assert "default" in text and len(text.split()) > 3, (command, option)


def test_metrics_floats_are_rounded_once():
    assert json.dumps(rounded({"a": [0.1 + 0.2, 2], "b": 0.8160000000000001})) == \
        '{"a": [0.3, 2], "b": 0.816}'
