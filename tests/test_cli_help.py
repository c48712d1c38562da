"""CLI help explains itself: a sentence and a default for every option, what longtail is
for, --quiet wherever progress is printed; stats explains its weight columns."""

import argparse
import json
import re

import numpy as np
import pytest

from longtail.cli import build_parser, main

PROGRESS_COMMANDS = ("stats", "split", "train", "evaluate", "predict", "compare", "cache",
                     "features", "demo")


def _commands():
    parser = build_parser()
    return parser, parser._subparsers._group_actions[0].choices


def test_every_option_has_a_sentence_and_its_default():
    parser, commands = _commands()
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    for name, p in [("longtail", parser), *commands.items()]:
        for action in p._actions:
            if isinstance(action, skip):
                continue
            text = action.help or ""
            assert len(text.split()) >= 4, (name, action.dest, text)
            if action.option_strings:
                assert re.search(r"\((default|required)\b|default: ", text), \
                    (name, action.option_strings, text)


def test_top_level_help_says_what_longtail_is_for(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "class-imbalanced" in out and "too large for memory" in out
    assert "longtail stats DATA" in out and "longtail COMMAND --help" in out


def test_quiet_wherever_progress_is_printed():
    _, commands = _commands()
    for name in PROGRESS_COMMANDS:
        assert "--quiet" in commands[name]._option_string_actions, name


def test_cache_help_and_docstring_agree_on_jpeg_size():
    from longtail.cache import build_cache

    _, commands = _commands()
    help_text = commands["cache"]._option_string_actions["--format"].help
    claim = re.search(r"about (\d+-\d+)x smaller", help_text).group(1)
    assert f"about {claim}x" in " ".join(build_cache.__doc__.split())


def test_stats_explains_how_each_weight_column_is_normalised(tree, capsys):
    assert main(["stats", tree]) == 0
    out = capsys.readouterr().out
    legend = out[out.index("weight columns:"):]
    for name, claim in (("balanced", "mean weight over the samples is 1"),
                        ("inverse", "largest class weighs 1"),
                        ("sqrt", "largest class weighs 1"),
                        ("effective", "sum to k")):
        assert re.search(rf"^  {name} .*{claim}", legend, re.M), name
    # The claims hold on the numbers stats prints.
    main(["stats", tree, "--json"])
    rows = json.loads(capsys.readouterr().out)["per_class"]
    n = np.array([r["count"] for r in rows], float)
    w = {s: np.array([r["weights"][s] for r in rows]) for s in rows[0]["weights"]}
    assert (n * w["balanced"]).sum() / n.sum() == pytest.approx(1)
    assert w["inverse"][n.argmax()] == pytest.approx(1) and w["inverse"].min() == pytest.approx(1)
    assert w["sqrt"][n.argmax()] == pytest.approx(1)
    assert w["effective"].sum() == pytest.approx(len(n))


def test_shot_thresholds_are_an_option_of_train(capsys, tmp_path):
    from longtail.errors import ConfigError
    from longtail.training import TrainConfig

    assert TrainConfig(shot_thresholds=[50, 5]).shot_thresholds == (50, 5)
    assert TrainConfig().shot_thresholds == (100, 20)  # unchanged default
    with pytest.raises(ConfigError, match=r"`shot_thresholds` must be two integers"):
        TrainConfig(shot_thresholds=(5, 50))
    code = main(["train", "d.csv", "--out", str(tmp_path / "r"), "--shot-thresholds", "5,50"])
    assert code == 2 and "--shot-thresholds" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
