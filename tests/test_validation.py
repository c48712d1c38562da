"""longtail._validation: one validator, one message shape, and where it is used."""

import numpy as np
import pytest

from longtail import _validation as v
from longtail.errors import ConfigError
from longtail.training import TrainConfig


@pytest.mark.parametrize("call,message", [
    (lambda: v.integer("epochs", True, min=1), "`epochs` must be an integer >= 1; got True"),
    (lambda: v.integer("epochs", 0, min=1), "`epochs` must be an integer >= 1; got 0"),
    (lambda: v.integer("epochs", 2.0, min=1), "`epochs` must be an integer >= 1; got 2.0"),
    (lambda: v.integer("k", 11, min=1, max=10), "`k` must be an integer in [1, 10]; got 11"),
    (lambda: v.integer("n", "3"), "`n` must be an integer; got '3'"),
    (lambda: v.number("lr", 0, min=0, min_open=True), "`lr` must be a finite number > 0; got 0"),
    (lambda: v.number("lr", float("nan")), "`lr` must be a finite number; got nan"),
    (lambda: v.number("g", -1, min=0, max=5),
     "`g` must be a finite number >= 0 and <= 5; got -1"),
    (lambda: v.one_of("mode", "rbg", ("rgb", "grayscale")),
     "`mode` must be one of rgb, grayscale; got 'rbg'"),
    (lambda: v.fraction("val", 1.0), "`val` must be a fraction in [0, 1); got 1.0"),
    (lambda: v.fraction("val", 0, allow_zero=False), "`val` must be a fraction in (0, 1); got 0"),
    (lambda: v.class_vector("w", [1.0], 2), "`w` must be 2 numbers, one per class; got '1 values'"),
    (lambda: v.counts("c", [0, 0]), "`c` must be counts with at least one sample; got [0, 0]"),
    (lambda: v.counts("c", [1.5, 2]), "`c` must be counts (integers >= 0); got [1.5, 2]"),
    (lambda: v.priors("p", [-1, 2]), "`p` must be priors (values >= 0 with a positive sum)"),
])
def test_one_message_shape(call, message):
    with pytest.raises(ConfigError) as caught:
        call()
    assert str(caught.value).startswith(message)


def test_accepted_values_come_back_canonical():
    assert v.integer("n", np.int64(3), min=1) == 3 and type(v.integer("n", np.int64(3))) is int
    assert v.integer("n", None, allow_none=True) is None
    assert v.number("x", 2) == 2.0 and v.fraction("f", 0) == 0.0
    np.testing.assert_allclose(v.priors("p", [1, 3]), [0.25, 0.75])
    assert v.counts("c", [2, 0]).tolist() == [2, 0]


@pytest.mark.parametrize("options,name", [
    ({"epochs": True}, "epochs"), ({"batch_size": 0}, "batch_size"),
    ({"learning_rate": float("inf")}, "learning_rate"), ({"seed": -1}, "seed"),
    ({"beta": 1.0}, "beta"), ({"num_workers": -1}, "num_workers"),
    ({"early_stopping": False}, "early_stopping"), ({"gamma": -0.5}, "gamma"),
])
def test_train_config_refuses_through_the_validator(options, name):
    with pytest.raises(ConfigError, match=f"^`{name}` must be "):
        TrainConfig(**options)


def test_the_command_line_names_flags_not_parameters(tmp_path, capsys):
    from conftest import make_tree

    from longtail.cli import main

    data = make_tree(tmp_path / "d", {"a": 4, "b": 4})
    code = main(["train", data, "--out", str(tmp_path / "run"), "--workers", "-1"])
    err = capsys.readouterr().err.strip()
    # 0 workers decodes on the calling thread, as the loader allows
    assert code == 2 and err == "longtail: error: --workers must be an integer >= 0 or None; got -1"
