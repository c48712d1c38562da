"""The strategy registry: one contract over every entry, parameter records, options."""

import dataclasses
import json

import numpy as np
import pytest

from longtail.errors import ConfigError
from longtail.strategies import (
    STRATEGIES,
    parse_strategy_option,
    resolve_strategy,
    resolve_strategy_options,
)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_entry_keeps_the_registry_contract(name):
    strategy = STRATEGIES[name]
    assert resolve_strategy(name) is strategy and strategy.name == name
    assert strategy.description and strategy.loss is not None
    counts = np.array([50, 20, 5])
    share = strategy.trained_distribution(counts, {})
    assert share.shape == (3,) and share.sum() == pytest.approx(1.0)
    assert np.isfinite(strategy.output_bias(counts, {})).all()
    for epochs in (1, 2, 10, 100):
        first, second = strategy.stages(epochs)
        assert first >= 1 and second >= 0
        if strategy.second_stage is None or second == 0:
            assert (first, second) == (epochs, 0)
        elif epochs >= 2:
            assert first + second == epochs and second >= 1
    assert strategy.first_weight_decay(1e-4) > 0


@pytest.mark.parametrize("name", sorted(n for n, s in STRATEGIES.items() if s.params is not None))
def test_parameter_records_are_frozen_typed_and_json(name):
    strategy = STRATEGIES[name]
    params = strategy.params
    assert dataclasses.is_dataclass(params)
    first = dataclasses.fields(params)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(params, first, None)
    assert strategy.resolve_params({}) == params
    json.dumps(dataclasses.asdict(params))
    with pytest.raises(ConfigError, match="must be among"):
        strategy.resolve_params({"no_such_field": 1})


def test_options_override_defaults_and_are_checked():
    records = resolve_strategy_options({"crt": {"stage2_share": 0.5},
                                        "tau-norm": {"bias": "keep", "taus": [0, 1]}})
    assert records["crt"].stage2_share == 0.5 and records["crt"].stages(10) == (5, 5)
    assert records["tau-norm"].taus == (0.0, 1.0)
    assert STRATEGIES["crt"].params.stage2_share == 0.25  # the default is untouched
    with pytest.raises(ConfigError, match="takes no options"):
        resolve_strategy_options({"none": {"x": 1}})
    with pytest.raises(ConfigError, match="`balance` must be one of"):
        resolve_strategy_options({"nope": {}})
    with pytest.raises(ConfigError, match="strategy_options"):
        resolve_strategy_options({"crt": 0.5})


def test_parse_strategy_option():
    assert parse_strategy_option("crt.stage2_share=0.5") == ("crt", "stage2_share", 0.5)
    assert parse_strategy_option("tau-norm.bias=keep") == ("tau-norm", "bias", "keep")
    assert parse_strategy_option("weight-balancing.max_norm=null") == (
        "weight-balancing", "max_norm", None)
    for bad in ("crt=1", "crt.stage2_share", "crt.nope=1", "crt.stage2_share=2"):
        with pytest.raises(ValueError):
            parse_strategy_option(bad)


DECLARED = [(name, other, conditions) for name, s in sorted(STRATEGIES.items())
            for other, conditions, _ in s.same_objective]


def test_balanced_softmax_declares_logit_adjust_at_tau_1():
    assert ("balanced-softmax", "logit-adjust", {"tau": 1.0}) in DECLARED
    from longtail.strategies import same_objective_pairs

    names = ["none", "logit-adjust", "balanced-softmax"]
    pairs = same_objective_pairs(names, {"tau": 1.0, "gamma": 2.0})
    assert [p["strategies"] for p in pairs] == [["balanced-softmax", "logit-adjust"]]
    assert same_objective_pairs(names, {"tau": 0.5}) == []  # another tau: another objective
    assert same_objective_pairs(["balanced-softmax", "none"], {"tau": 1.0}) == []


@pytest.mark.parametrize("name,other,conditions", DECLARED)
def test_a_declared_same_objective_is_the_same_loss_sampling_and_bias(name, other, conditions):
    # Checked, not trusted: the two losses agree on random logits and labels,
    # and the strategies sample, weight and start alike.
    a, b = STRATEGIES[name], STRATEGIES[other]
    counts = np.array([300, 90, 30, 8, 2])
    params = {"tau": 1.0, "gamma": 2.0, "beta": 0.999, "drw_epoch": None, **conditions}
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (64, 5)).astype("float32")
    labels = rng.integers(0, 5, 64)
    la, lb = a.loss(counts, params), b.loss(counts, params)
    np.testing.assert_allclose(np.asarray(la(labels, logits)), np.asarray(lb(labels, logits)),
                               rtol=1e-5)
    assert (a.sampling, a.class_weight) == (b.sampling, b.class_weight)
    np.testing.assert_array_equal(a.output_bias(counts, params), b.output_bias(counts, params))
    # and at another tau the objectives differ (the condition is needed)
    if "tau" in conditions:
        lc = b.loss(counts, {**params, "tau": conditions["tau"] / 2})
        assert abs(float(la(labels, logits)) - float(lc(labels, logits))) > 1e-3
