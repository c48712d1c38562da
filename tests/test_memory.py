"""A dataset several times larger than a memory cap streams through the loader and `cache`.

Each probe is a subprocess of ``tools/memory_cap.py``: after its imports and
one warm-up batch it caps the growth of its own address space with
``RLIMIT_AS`` (see that file for why this cap and not another), then streams
6,000 PNG files decoded to 256x256 RGB: 1.1 GB of pixels against a 256 MB
cap. Peak resident memory (the kernel's high-water mark) must stay within the
cap too. The control keeps every batch and must be stopped by the cap.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tools"))

import memory_cap  # noqa: E402

IMAGES, SIZE, BUDGET_MB = 6000, 256, 256


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return memory_cap.make_data(str(tmp_path_factory.mktemp("mem") / "data"), IMAGES)


def _streamed_within_cap(r):
    assert r["ok"], r.get("error")
    assert r["images"] == IMAGES and r["seen"] == IMAGES
    assert r["decoded_bytes"] >= 4 * r["budget_bytes"]  # the data are 4x the cap
    assert r["peak_rss"] - r["rss_before"] <= r["budget_bytes"], r
    assert r["vm_peak"] >= r["vm_before"]


def test_loader_streams_four_times_the_cap(data, tmp_path):
    r = memory_cap.run_probe("loader", data, str(tmp_path / "unused"), SIZE, BUDGET_MB)
    _streamed_within_cap(r)
    assert r["errors"] == 0


def test_cache_build_streams_four_times_the_cap(data, tmp_path):
    r = memory_cap.run_probe("cache", data, str(tmp_path / "cache"), SIZE, BUDGET_MB)
    _streamed_within_cap(r)
    assert r["shard_bytes"] >= r["decoded_bytes"]  # every pixel went to disk, not RAM


def test_the_cap_stops_a_loop_that_keeps_every_batch(data, tmp_path):
    r = memory_cap.run_probe("hoard", data, str(tmp_path / "unused"), SIZE, BUDGET_MB)
    assert not r["ok"] and "MemoryError" in r["error"], r
    # stopped near the budget, far from holding the data set (the address space
    # reserved before the cap lets it keep a little more than the budget)
    assert 0 < r["seen"] * SIZE * SIZE * 3 < 1.5 * r["budget_bytes"]
