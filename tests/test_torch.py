"""longtail.torch: BalancedSampler and ImageDataset with the CPU build of torch."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import longtail as lt  # noqa: E402
from longtail.sampling import resolve_sampling  # noqa: E402
from longtail.torch import BalancedSampler, ImageDataset  # noqa: E402

from conftest import LT_COUNTS, make_images  # noqa: E402

LABELS = np.repeat(np.arange(len(LT_COUNTS)), LT_COUNTS)  # 461 samples, 8 classes


@pytest.mark.parametrize("sampling", ["balanced", "sqrt", "shuffle", "undersample",
                                      {"name": "power", "q": 0.3}])
@pytest.mark.parametrize("world", [1, 3, 4])
def test_ranks_are_disjoint_and_make_up_the_plan(sampling, world):
    samplers = [BalancedSampler(LABELS, sampling=sampling, num_replicas=world, rank=r,
                                seed=7, remainder="drop") for r in range(world)]
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        parts = [list(s) for s in samplers]
        plan = resolve_sampling(sampling).plan(LABELS, seed=7, epoch=epoch)
        usable = len(plan) - len(plan) % world
        assert all(len(p) == len(s) == usable // world for p, s in zip(parts, samplers))
        # rank r holds positions r, r + world, ...: disjoint positions, and their
        # union is the single-replica plan
        union = np.empty(usable, np.int64)
        for r, p in enumerate(parts):
            union[r::world] = p
        np.testing.assert_array_equal(union, plan[:usable])
        if sampling in ("shuffle", "undersample"):  # each sample at most once per epoch
            flat = np.concatenate(parts)
            assert len(set(flat.tolist())) == len(flat)


def test_balanced_shares_of_the_union():
    world = 4
    samplers = [BalancedSampler(LABELS, num_replicas=world, rank=r, seed=3,
                                epoch_length=8000) for r in range(world)]
    assert sum(len(s) for s in samplers) == 8000
    union = np.concatenate([list(s) for s in samplers])
    counts = np.bincount(LABELS[union], minlength=len(LT_COUNTS))
    np.testing.assert_array_equal(counts, np.full(len(LT_COUNTS), 1000))
    # each rank alone is close to balanced too (an interleaved slice of a shuffle)
    for s in samplers:
        s.set_epoch(0)
        shares = np.bincount(LABELS[list(s)], minlength=len(LT_COUNTS)) / len(s)
        assert np.abs(shares - 1 / len(LT_COUNTS)).max() < 0.03


def test_sqrt_shares_and_padding():
    world = 3
    samplers = [BalancedSampler(LABELS, sampling="sqrt", num_replicas=world, rank=r)
                for r in range(world)]
    parts = [list(s) for s in samplers]
    assert {len(p) for p in parts} == {-(-len(LABELS) // world)}  # padded to equal
    plan = resolve_sampling("sqrt").plan(LABELS, seed=0, epoch=0)
    union = np.concatenate([p[i:i + 1] for i in range(len(parts[0])) for p in parts])
    np.testing.assert_array_equal(union[:len(plan)], plan)
    np.testing.assert_array_equal(union[len(plan):], plan[:len(union) - len(plan)])
    expected = np.sqrt(LT_COUNTS) / np.sqrt(LT_COUNTS).sum() * len(plan)
    got = np.bincount(LABELS[plan], minlength=len(LT_COUNTS))
    assert np.abs(got - expected).max() < 1


def test_epochs_and_seeds():
    s = BalancedSampler(LABELS, seed=1)
    first, second = list(s), list(s)  # no set_epoch: a new epoch per iteration
    assert first != second and s.epoch == 2
    s.set_epoch(0)
    assert list(s) == first and list(s) == first  # set_epoch pins the epoch
    assert list(BalancedSampler(LABELS, seed=2)) != first
    # pinned literal plans: a change to the plans or to sharding shows up here
    tiny = [BalancedSampler([0, 0, 0, 0, 1, 1, 2], seed=0, num_replicas=2, rank=r)
            for r in (0, 1)]
    assert [list(t) for t in tiny] == [[4, 1, 3, 6], [6, 4, 5, 4]]  # 4 pads the end


def test_accepts_a_dataset_and_refuses_bad_arguments(tmp_path):
    ds = lt.Dataset.from_arrays([f"{i}.png" for i in range(len(LABELS))], LABELS)
    assert len(BalancedSampler(ds)) == len(LABELS)
    with pytest.raises(lt.ConfigError, match="rank"):
        BalancedSampler(LABELS, num_replicas=2, rank=2)
    with pytest.raises(lt.ConfigError, match="sampling"):
        BalancedSampler(LABELS, sampling="balance")
    with pytest.raises(lt.ConfigError, match="epoch_length"):
        BalancedSampler(LABELS, sampling="shuffle", epoch_length=10)
    with pytest.raises(lt.ConfigError, match="labels"):
        BalancedSampler(np.eye(3))
    with pytest.raises(lt.ConfigError, match="remainder"):
        BalancedSampler(LABELS, remainder="wrap")


def test_defaults_come_from_torch_distributed(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}",
                            rank=0, world_size=1)
    try:
        s = BalancedSampler(LABELS)
        assert (s.num_replicas, s.rank) == (1, 0)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_yields_decoded_images_with_their_labels(tmp_path, num_workers):
    root = make_images(tmp_path / "imgs", (9, 4, 2), size=10, spread=0.1)
    ds = lt.Dataset.from_directory(root)
    sampler = BalancedSampler(ds, num_replicas=2, rank=1, seed=4, epoch_length=30)
    data = ImageDataset(ds, image_size=(6, 5))
    loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=sampler,
                                         num_workers=num_workers)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.uint8 and x.shape == (15, 3, 6, 5)
    plan = sampler.plan(0)
    np.testing.assert_array_equal(y.numpy(), ds.labels[plan])
    # every image is the file at that index of the plan, decoded (as
    # test_decode checks against Pillow) and transposed to channels-first
    from longtail.decode import DecodeOptions, read_image

    for j in (0, 7, 14):
        path = ds.path(int(plan[j]))
        ref = read_image(path, DecodeOptions(image_size=(6, 5)))
        np.testing.assert_array_equal(x[j].permute(1, 2, 0).numpy(), ref)
        assert os.path.basename(os.path.dirname(path)) == ds.class_names[int(y[j])]


def test_image_dataset_options(tmp_path):
    root = make_images(tmp_path / "imgs", (2, 1), size=8)
    ds = lt.Dataset.from_directory(root)
    gray = ImageDataset(ds, image_size=4, color_mode="grayscale",
                        transform=lambda t: t.float() / 255, target_transform=str)
    x, y = gray[-1]
    assert x.shape == (1, 4, 4) and x.dtype == torch.float32 and y == "1"
    with pytest.raises(IndexError):
        gray[3]
    features = lt.Dataset.from_arrays(np.eye(2, 3), [0, 1])
    x, y = ImageDataset(features)[1]
    assert x.dtype == torch.float32 and x.tolist() == [0.0, 1.0, 0.0] and y == 1
    with pytest.raises(lt.ConfigError, match="longtail.Dataset"):
        ImageDataset([1, 2, 3])
