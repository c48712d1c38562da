"""longtail.tf: class weights for tf.data pipelines.

The TensorFlow checks run in a subprocess under ``KERAS_BACKEND=tensorflow``
(tests/_tf_backend.py); path counting is checked here without TensorFlow.
"""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from _backends import run_script
from sklearn.utils.class_weight import compute_class_weight

import longtail as lt
from longtail.tf import class_weights_from



@pytest.fixture(scope="module")
def tf_run(tmp_path_factory):
    code, out, err = run_script("_tf_backend.py", "tensorflow",
                                tmp_path_factory.mktemp("tf"))
    assert code == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["int", "categorical", "binary"])
def test_weights_equal_sample_weights_per_element(tf_run, mode):
    result = tf_run["modes"][mode]
    assert tf_run["backend"] == "tensorflow"
    assert result["samples"] == (17 if mode == "binary" else 23)
    assert result["max_weight_error"] < 1e-6
    assert result["class_weights"] == result["reference"]


@pytest.mark.parametrize("mode", ["int", "categorical", "binary"])
def test_fit_loss_is_the_weighted_mean(tf_run, mode):
    result = tf_run["modes"][mode]
    assert result["fit_loss"] == pytest.approx(result["expected_loss"], rel=1e-5)
    assert abs(result["fit_loss"] - result["unweighted_loss"]) > 1e-2


def test_class_weight_forms_agree(tf_run):
    by_name = tf_run["dict_by_name"]
    assert by_name == tf_run["dict_by_index"] == tf_run["array"]
    table = np.array([1.0, 2.5, 7.0])
    np.testing.assert_allclose(by_name["w"], table[by_name["y"]])
    np.testing.assert_allclose(tf_run["times_existing"], 2 * table[by_name["y"]])
    np.testing.assert_allclose(tf_run["soft"]["w"], tf_run["soft"]["expected"], rtol=1e-6)
    assert tf_run["unbatched"]["unbatched"] == tf_run["unbatched"]["batched"]


def test_refused_inputs_and_warnings(tf_run):
    errors = tf_run["errors"]
    assert "file_paths" in errors["strategy_after_map"]
    assert "2 entries" in errors["wrong_length"] and "3 classes" in errors["wrong_length"]
    assert "class_9" in errors["unknown_name"] and "class_0" in errors["unknown_name"]
    assert "binary" in errors["binary_three_classes"]
    assert any("all class weights are equal" in w for w in tf_run["warnings"])
    assert any("class_1, class_2" in w for w in tf_run["warnings"])


# ------------------------------------------------ counting without TensorFlow
def _fake(paths, names):
    return SimpleNamespace(file_paths=[str(p) for p in paths], class_names=names)


def test_class_weights_from_counts_class_folders(tmp_path):
    names = ["cat", "dog", "emu"]
    counts = [5, 2, 9]
    paths, labels = [], []
    for c, (name, n) in enumerate(zip(names, counts)):
        for i in range(n):  # some files in sub-folders of the class folder
            sub = "deep/er" if i % 3 == 0 else ""
            paths.append(tmp_path / "data" / name / sub / f"{i}.png")
            labels.append(c)
    weights = class_weights_from(_fake(paths, names), "balanced")
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array(labels))
    np.testing.assert_allclose([weights[i] for i in range(3)], expected)
    assert class_weights_from(_fake(paths, names), "inverse") == lt.class_weights(
        np.array(labels), "inverse")


def test_class_weights_from_one_class_and_relative_paths():
    # a subset with one class present: the data folder is still found
    paths = [os.path.join("data", "b", f"{i}.jpg") for i in range(4)]
    with pytest.warns(UserWarning, match="a"):
        weights = class_weights_from(_fake(paths, ["a", "b"]), "balanced")
    assert weights == {0: 0.0, 1: 1.0}


def test_class_weights_from_refuses_what_it_cannot_count():
    with pytest.raises(lt.ConfigError, match="file_paths"):
        class_weights_from(SimpleNamespace(class_names=["a"]), "balanced")
    with pytest.raises(lt.ConfigError, match="class_names"):
        class_weights_from(SimpleNamespace(file_paths=["x/a/1.png"]), "balanced")
    with pytest.raises(lt.ConfigError, match="class names a, b"):
        class_weights_from(_fake(["x/c/1.png", "x/d/2.png"], ["a", "b"]), "balanced")
    with pytest.raises(lt.ConfigError, match="strategy"):
        class_weights_from(_fake(["x/a/1.png", "x/b/2.png"], ["a", "b"]), "balance")
