"""Tests for longtail.options, and the options' path through Dataset.open and loader."""

import inspect

import numpy as np
import pytest
from conftest import make_tree
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight

import longtail as lt
from longtail.cli import main
from longtail.errors import ConfigError
from longtail.options import (ImageOptions, channels_of, color_mode_of, parse_image_size,
                              parse_max_pixels)


@pytest.mark.parametrize("value,expected", [
    (None, None), (64, (64, 64)), (np.int64(7), (7, 7)), ("64", (64, 64)),
    ("64x48", (64, 48)), ("64X48", (64, 48)), ((64, 48), (64, 48)), ([32, 16], (32, 16)),
    ([5], (5, 5)), (8192, (8192, 8192)),
])
def test_image_size_forms(value, expected):
    assert parse_image_size(value) == expected


@pytest.mark.parametrize("value", ["64y48", "", "x", "64x48x3", 0, -3, 8193, (64, 0),
                                   (1, 2, 3), True, 64.0, (64.0, 48), "big"])
def test_bad_image_sizes_are_refused_in_the_keras_form(value):
    with pytest.raises(ConfigError, match=r"^`image_size` must be N, \"HxW\" or a \(height, "
                                          r"width\) pair of ints in 1\.\.8192; got "):
        parse_image_size(value)


def test_colour_modes_and_their_channels():
    assert [channels_of(m) for m in ("rgb", "grayscale", "rgba")] == [3, 1, 4]
    assert [color_mode_of(c) for c in (3, 1, 4)] == ["rgb", "grayscale", "rgba"]
    with pytest.raises(ConfigError, match="`color_mode` must be one of rgb, grayscale, rgba"):
        channels_of("RGB")
    with pytest.raises(ConfigError, match="`channels` must be one of 1, 3, 4; got 2"):
        color_mode_of(2)


def test_image_options_are_frozen_and_checked():
    options = ImageOptions(image_size="16x8", color_mode="rgba", dtype="float32")
    assert options.image_size == (16, 8) and options.channels == 4
    with pytest.raises(AttributeError):
        options.dtype = "uint8"
    with pytest.raises(ConfigError, match="`dtype` must be one of uint8, float32; got 'f8'"):
        ImageOptions(dtype="f8")
    assert parse_max_pixels(None) is None
    with pytest.raises(ConfigError, match="`max_pixels` must be a positive int or None"):
        ImageOptions(max_pixels=1.5)


# ------------------------------------------- one parser for loader and training
@pytest.fixture
def tree(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 5, "b": 3}, nested=False)
    rng = np.random.default_rng(0)
    for path in lt.Dataset.from_directory(root).paths:
        Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(path)
    return root


def test_loader_and_training_take_the_same_image_size(tree):
    from longtail.training import TrainConfig

    ds = lt.Dataset.from_directory(tree)
    x, _ = next(iter(ds.loader(batch_size=2, image_size="12x9", sampling="sequential")))
    assert x.shape == (2, 12, 9, 3)
    assert TrainConfig(image_size="12x9").image_size == (12, 9)
    for bad in ("12y9", 0):
        with pytest.raises(ConfigError, match="`image_size` must be"):
            ds.loader(batch_size=2, image_size=bad)
        with pytest.raises(ConfigError, match="`image_size` must be"):
            TrainConfig(image_size=bad)


def test_loader_shows_its_real_signature():
    from longtail.loader import make_loader

    shown = inspect.signature(lt.Dataset.loader).parameters
    wanted = inspect.signature(make_loader).parameters
    assert list(shown)[1:] == [p for p in wanted if p != "dataset"]
    assert all(shown[p].default == wanted[p].default for p in list(shown)[2:])
    # make_loader hands every argument on to Loader by name: the same names and defaults.
    from longtail.loader import Loader

    built = inspect.signature(Loader.__init__).parameters
    assert list(built)[1:] == list(wanted)
    assert all(built[p].default == wanted[p].default for p in list(wanted)[2:])


def test_loader_arguments_reach_the_loader():
    ds = lt.Dataset.from_arrays(np.arange(12, dtype="float32").reshape(6, 2), [0, 1] * 3)
    loader = ds.loader(batch_size=4, label_mode="categorical", seed=7, num_workers=0,
                       prefetch=3, on_error="raise", sampling="sequential")
    assert (loader.batch_size, loader.label_mode, loader.seed) == (4, "categorical", 7)
    assert (loader.num_workers, loader.prefetch, loader.on_error) == (0, 3, "raise")
    assert loader.sampler_.name == "sequential"


# ---------------------------------------------- options that do not apply
def test_open_refuses_an_option_that_does_not_apply(tree, tmp_path):
    with pytest.raises(ConfigError, match=r"^`weight_column` does not apply here: .* is a "
                                          "folder with one sub-folder per class"):
        lt.Dataset.open(tree, weight_column="w")
    table = tmp_path / "rows.csv"
    table.write_text("f1,label\n0.5,x\n1.5,y\n")
    with pytest.raises(ConfigError, match="`extensions` does not apply here"):
        lt.Dataset.open(table, extensions=["png"])
    with pytest.raises(TypeError, match="unexpected options"):
        lt.Dataset.open(tree, weights_column="w")
    # what the CLI passes when a flag is not given is no option at all
    ds = lt.Dataset.open(tree, label_column="label", path_column="path", weight_column=None,
                         follow_symlinks=None, allow_outside_root=None)
    assert len(ds) == 8
    assert len(lt.Dataset.open(table, follow_symlinks=False, allow_outside_root=True)) == 2


def test_stats_weight_column_on_a_folder_is_one_line_and_status_2(tree, capsys):
    code = main(["stats", str(tree), "--weight-column", "w"])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "weight_column" in err and "Traceback" not in err


def test_describe_is_what_stats_prints(tree):
    ds = lt.Dataset.from_directory(tree)
    summary = ds.describe()
    assert summary["kind"] == "files" and summary["samples"] == 8 and summary["classes"] == 2
    assert [r["count"] for r in summary["per_class"]] == [5, 3]
    np.testing.assert_allclose([r["share"] for r in summary["per_class"]], [5 / 8, 3 / 8])
    reference = compute_class_weight("balanced", classes=np.arange(2), y=ds.labels)
    np.testing.assert_allclose([r["weights"]["balanced"] for r in summary["per_class"]],
                               reference)
    assert summary["imbalance_ratio"] == pytest.approx(5 / 3)
    assert summary["source"].startswith("image files under ")
