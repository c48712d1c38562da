"""Tests for longtail.cache: build, read, resume, parts, corruption, --check, kills."""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import simplejpeg
from PIL import Image

import longtail as lt
from longtail.cache import build_cache, check_cache, open_cache
from longtail.cli import main
from longtail.decode import DecodeOptions, read_image
from longtail.errors import ConfigError, DataError

COUNTS = {"ant": 13, "bee": 6, "cow": 3}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree(root, counts=COUNTS, seed=0):
    """Images of several sizes, PNG and JPEG (large enough for a DCT-scaled decode)."""
    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(counts.items()):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(n):
            shape = (40 + 3 * i, 48 + c, 3)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            ext = "jpg" if i % 2 else "png"
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i:03d}.{ext}"))
    return str(root)


@pytest.fixture
def data(tmp_path):
    root = _tree(tmp_path / "data")
    with open(os.path.join(root, "bee", "zz-broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


def _build(data, out, **kw):
    kw.setdefault("image_size", 16)
    kw.setdefault("rows_per_shard", 4)
    kw.setdefault("progress", False)
    with pytest.warns(UserWarning, match="1 unreadable source files were skipped"):
        return build_cache(data, out, **kw)


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _digests(cache_dir):
    with open(os.path.join(cache_dir, "cache.json"), encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------- building
def test_raw_rows_equal_the_decoded_sources_byte_for_byte(data, tmp_path):
    result = _build(data, tmp_path / "c", image_size=(16, 12))
    source = lt.Dataset.from_directory(data)
    assert result.complete and result.images == len(source) - 1
    (path, reason), = result.skipped
    assert path == os.path.join(data, "bee", "zz-broken.jpg") and "cannot decode JPEG" in reason
    ds = lt.Dataset.open(tmp_path / "c")
    assert ds.kind == "cache" and len(ds) == len(source) - 1
    assert ds.class_names == source.class_names
    good = [i for i, p in enumerate(source.paths) if not p.endswith("zz-broken.jpg")]
    np.testing.assert_array_equal(ds.labels, source.labels[good])
    np.testing.assert_array_equal(ds.paths, source.paths[good])
    x = ds.cache.read(ds.cache_rows)
    reference = np.stack([read_image(p, DecodeOptions(image_size=(16, 12)))
                          for p in source.paths[good]])
    assert x.dtype == np.uint8 and x.shape == (len(good), 16, 12, 3)
    np.testing.assert_array_equal(x, reference)
    # the shards are plain .npy files, memory-mapped without pickle
    shard = np.load(tmp_path / "c" / "shards" / "00000.npy", mmap_mode="r", allow_pickle=False)
    assert isinstance(shard, np.memmap)
    np.testing.assert_array_equal(shard, reference[:4])


def test_manifest_records_everything_the_issue_lists(data, tmp_path):
    _build(data, tmp_path / "c")
    m = _digests(tmp_path / "c")
    assert m["image_size"] == [16, 16] and m["format"] == "raw" and m["color_mode"] == "rgb"
    assert m["class_names"] == ["ant", "bee", "cow"] and m["num_rows"] == 22
    assert m["skipped"]["count"] == 1
    assert m["skipped"]["files"][0]["path"] == "bee/zz-broken.jpg"
    assert "cannot decode JPEG" in m["skipped"]["files"][0]["reason"]
    assert [s["rows"] for s in m["shards"]] == [4, 4, 4, 4, 3, 3]  # one row skipped in shard 4
    for shard in m["shards"]:
        (name, entry), = shard["files"].items()
        path = tmp_path / "c" / "shards" / name
        assert entry["bytes"] == os.path.getsize(path)
        assert entry["blake2b"] == hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    rows_path = tmp_path / "c" / m["rows_file"]["name"]
    assert m["rows_file"]["bytes"] == os.path.getsize(rows_path)
    assert m["rows_file"]["blake2b"] == hashlib.blake2b(rows_path.read_bytes(),
                                                        digest_size=16).hexdigest()
    assert m["rows_file"]["name"] == f"rows-{m['rows_file']['blake2b'][:16]}.parquet"
    assert not [e for e in os.listdir(tmp_path / "c") if e.startswith(".")]  # no temp left
    rows = pq.read_table(rows_path)
    first = os.path.join(data, rows.column("path")[0].as_py())
    st = os.stat(first)
    assert rows.column("size")[0].as_py() == st.st_size
    assert rows.column("mtime_ns")[0].as_py() == st.st_mtime_ns
    assert m["source"]["root"] == os.path.abspath(data)


def test_jpeg_rows_decode_the_stored_jpegs_and_stay_close_to_the_source(data, tmp_path):
    _build(data, tmp_path / "c", format="jpeg", quality=95)
    _build(data, tmp_path / "r", format="raw")
    ds, raw = lt.Dataset.open(tmp_path / "c"), lt.Dataset.open(tmp_path / "r")
    x, reference = ds.cache.read(ds.cache_rows), raw.cache.read(raw.cache_rows)
    offsets = np.load(tmp_path / "c" / "shards" / "00001.offsets.npy", allow_pickle=False)
    blob = (tmp_path / "c" / "shards" / "00001.jpegs").read_bytes()
    for j in range(4):
        np.testing.assert_array_equal(
            x[4 + j], simplejpeg.decode_jpeg(blob[offsets[j]:offsets[j + 1]]))
    error = np.abs(x.astype(int) - reference.astype(int))
    assert error.mean() < 12  # random noise pixels are JPEG's worst case
    assert error.mean() > 0   # and it really is lossy


def test_grayscale_and_option_errors(data, tmp_path):
    _build(data, tmp_path / "g", color_mode="grayscale", format="jpeg")
    ds = lt.Dataset.open(tmp_path / "g")
    assert ds.cache.read([0]).shape == (1, 16, 16, 1)
    with pytest.raises(ConfigError, match="cannot store an alpha channel"):
        build_cache(data, tmp_path / "x", image_size=8, format="jpeg", color_mode="rgba")
    with pytest.raises(ConfigError, match="quality.*format='jpeg' only"):
        build_cache(data, tmp_path / "x", image_size=8, quality=80)
    with pytest.raises(ConfigError, match="quality"):
        build_cache(data, tmp_path / "x", image_size=8, format="jpeg", quality=0)
    with pytest.raises(ConfigError, match="shard"):
        build_cache(data, tmp_path / "x", image_size=8, shard="2/2")
    with pytest.raises(ConfigError, match="inside DATA"):
        build_cache(data, os.path.join(data, "cache"), image_size=8)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a longtail cache"):
        build_cache(data, tmp_path / "busy", image_size=8)
    features = tmp_path / "f.csv"
    features.write_text("x,label\n1.0,a\n2.0,b\n")
    with pytest.raises(ConfigError, match="feature rows"):
        build_cache(str(features), tmp_path / "x2", image_size=8)


def test_a_table_with_weights_and_a_cache_can_be_cached(data, tmp_path):
    source = lt.Dataset.from_directory(data)
    weights = np.linspace(0.5, 2.0, len(source)).astype(np.float32)
    table = lt.Dataset.from_arrays(source.paths, np.array(source.class_names)[source.labels],
                                   weights=weights)
    table.save(tmp_path / "t.parquet")
    _build(str(tmp_path / "t.parquet"), tmp_path / "c")
    ds = lt.Dataset.open(tmp_path / "c")
    good = [i for i, p in enumerate(source.paths) if not p.endswith("zz-broken.jpg")]
    np.testing.assert_array_equal(ds.weights, weights[good])
    x, y, w = ds.loader(batch_size=len(ds), sampling="sequential").__iter__().__next__()
    np.testing.assert_array_equal(w, weights[good])
    np.testing.assert_array_equal(x, ds.cache.read(np.arange(len(ds))))
    # a cache is DATA too: re-cache it at another size, from its sources
    build_cache(str(tmp_path / "c"), tmp_path / "c8", image_size=8, progress=False)
    small = lt.Dataset.open(tmp_path / "c8")
    np.testing.assert_array_equal(small.weights, weights[good])
    np.testing.assert_array_equal(small.cache.read([3])[0],
                                  read_image(ds.paths[3], DecodeOptions(image_size=8)))


# --------------------------------------------------------------- cache as DATA
def test_loader_reads_the_cache_not_the_sources(data, tmp_path):
    _build(data, tmp_path / "c")
    ds = lt.Dataset.open(tmp_path / "c")
    expected = ds.cache.read(np.arange(len(ds))).copy()
    shutil.rmtree(data)  # the sources are gone; the cache still serves every row
    loader = ds.loader(batch_size=5, sampling="sequential", num_workers=2)
    xs, ys = zip(*[(x, y) for x, y in loader])
    np.testing.assert_array_equal(np.concatenate(xs), expected)
    np.testing.assert_array_equal(np.concatenate(ys), ds.labels)
    balanced = ds.loader(batch_size=6, sampling="balanced", seed=3, class_weight="balanced")
    x, y, w = next(iter(balanced))
    plan = balanced.plan(0)[:6]
    np.testing.assert_array_equal(x, expected[plan])
    np.testing.assert_array_equal(y, ds.labels[plan])
    assert loader.options.image_size == (16, 16)
    with pytest.raises(ConfigError, match=r"does not match the cache .*16x16.*--image-size 16x16"):
        ds.loader(batch_size=4, image_size=32)
    x, _ = next(iter(ds.loader(batch_size=4, sampling="sequential", image_size=16,
                                color_mode="grayscale", dtype="float32")))
    assert x.shape == (4, 16, 16, 1) and x.dtype == np.float32
    rgb = expected[:4].astype(np.float64)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114  # Pillow's "L"
    np.testing.assert_array_equal(x[..., 0], np.rint(luma))


def test_splits_of_a_cache_point_at_the_cache(data, tmp_path, capsys):
    _build(data, tmp_path / "c")
    code, out, _ = _cli(capsys, "split", tmp_path / "c", "--out", tmp_path / "s", "--val", "0.3")
    assert code == 0
    cache = lt.Dataset.open(tmp_path / "c")
    train, val = cache.split(val=0.3, seed=0)
    table = pq.read_table(tmp_path / "s" / "train.parquet")
    meta = json.loads(table.schema.metadata[b"longtail"])
    assert meta["kind"] == "cache" and meta["cache"] == os.path.join("..", "c")
    np.testing.assert_array_equal(table.column("row").to_numpy(), train.cache_rows)
    loaded = lt.Dataset.load(tmp_path / "s" / "train.parquet")
    assert loaded.kind == "cache" and loaded.equals(train) and not loaded.equals(val)
    x, y = next(iter(loaded.loader(batch_size=len(loaded), sampling="sequential")))
    np.testing.assert_array_equal(x, cache.cache.read(train.cache_rows))
    np.testing.assert_array_equal(y, train.labels)
    # moved together, cache and manifests stay valid (the cache path is relative)
    shutil.move(tmp_path / "c", tmp_path / "moved" / "c")
    shutil.move(tmp_path / "s", tmp_path / "moved" / "s")
    assert lt.Dataset.load(tmp_path / "moved" / "s" / "val.parquet").equals(
        lt.Dataset.open(tmp_path / "moved" / "c").subset(val.cache_rows))
    code, out, _ = _cli(capsys, "stats", tmp_path / "moved" / "s" / "train.parquet", "--json")
    assert code == 0 and json.loads(out)["kind"] == "cache"
    assert json.loads(out)["samples"] == len(train)


def test_class_names_select_and_order_classes(data, tmp_path):
    _build(data, tmp_path / "c")
    full = lt.Dataset.open(tmp_path / "c")
    two = lt.Dataset.open(tmp_path / "c", class_names=["cow", "ant"])
    assert two.class_names == ["cow", "ant"] and two.class_counts.tolist() == [3, 13]
    keep = np.isin(full.labels, [0, 2])
    np.testing.assert_array_equal(two.cache_rows, np.flatnonzero(keep))
    np.testing.assert_array_equal(two.labels, np.where(full.labels[keep] == 2, 0, 1))
    with pytest.raises(DataError, match="no class dog"):
        lt.Dataset.open(tmp_path / "c", class_names=["dog"])


@pytest.mark.slow
def test_train_and_evaluate_from_a_cache_split(data, tmp_path, capsys):
    _build(data, tmp_path / "c")
    assert _cli(capsys, "split", tmp_path / "c", "--out", tmp_path / "s", "--val", "0.3")[0] == 0
    shutil.rmtree(data)  # training must read the cache, not decode the sources
    code, out, err = _cli(capsys, "train", tmp_path / "s" / "train.parquet", "--val",
                          tmp_path / "s" / "val.parquet", "--out", tmp_path / "run",
                          "--epochs", "1", "--image-size", "16", "--batch-size", "4",
                          "--augment", "none")
    assert code == 0, err
    code, out, err = _cli(capsys, "evaluate", tmp_path / "run", tmp_path / "s" / "val.parquet",
                          "--out", tmp_path / "ev")
    assert code == 0, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    val = lt.Dataset.load(tmp_path / "s" / "val.parquet")
    assert sum(metrics["true_distribution"]) == len(val)


# ------------------------------------------------------------ resume, repair
def test_rerun_skips_complete_shards_and_repairs_damaged_ones(data, tmp_path):
    first = _build(data, tmp_path / "c")
    reference = _digests(tmp_path / "c")
    again = _build(data, tmp_path / "c")
    assert (again.shards_built, again.shards_reused, again.images) == (0, 6, 0)
    os.remove(tmp_path / "c" / "shards" / "00002.json")          # never committed
    with open(tmp_path / "c" / "shards" / "00004.npy", "r+b") as f:  # bit rot
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    (tmp_path / "c" / "shards" / ".00003.npy.abc.tmp").write_bytes(b"half")  # killed write
    repaired = _build(data, tmp_path / "c")
    assert (repaired.shards_built, repaired.shards_reused) == (2, 4)
    assert _digests(tmp_path / "c") == reference and first.complete
    assert not (tmp_path / "c" / "shards" / ".00003.npy.abc.tmp").exists()
    with pytest.raises(ConfigError, match=r"--image-size 16x16 \(this run: 8x8\)"):
        build_cache(data, tmp_path / "c", image_size=8)
    os.remove(os.path.join(data, "ant", "000.png"))
    with pytest.raises(ConfigError, match="different data"):
        build_cache(data, tmp_path / "c", image_size=16)


def test_build_and_resume_share_one_dataset_fingerprint(data, tmp_path):
    from longtail.dataset import fingerprint
    from longtail.training import checkpoint

    _build(data, tmp_path / "c")
    with open(tmp_path / "c" / "build.json", encoding="utf-8") as f:
        plan = json.load(f)
    ds = lt.Dataset.open(data)
    # The cache build and a resumed training run hash the same thing.
    assert plan["fingerprint"] == fingerprint(ds) == checkpoint.fingerprint(ds)
    assert _digests(tmp_path / "c")["source"]["fingerprint"] == plan["fingerprint"]
    os.rename(os.path.join(data, "cow", "000.png"), os.path.join(data, "cow", "00x.png"))
    assert fingerprint(lt.Dataset.open(data)) != plan["fingerprint"]
    with pytest.raises(ConfigError, match="different data"):
        build_cache(data, tmp_path / "c", image_size=16, rows_per_shard=4)


def test_a_corrupted_shard_is_refused_with_its_name(data, tmp_path, capsys):
    _build(data, tmp_path / "c")
    open_cache(tmp_path / "c")  # verified once: a stamp remembers the files' state
    stamp = json.loads((tmp_path / "c" / ".verified.json").read_text())
    assert sorted(stamp) == [f"{i:05d}.npy" for i in range(6)]
    path = tmp_path / "c" / "shards" / "00003.npy"
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and mtime
    with pytest.raises(DataError, match=r"00003\.npy: corrupted shard: checksum"):
        lt.Dataset.open(tmp_path / "c")
    code, out, err = _cli(capsys, "stats", tmp_path / "c")
    assert code == 2 and err.count("\n") == 1 and "00003.npy: corrupted shard" in err
    path.write_bytes(b"short")
    with pytest.raises(DataError, match=r"00003\.npy: corrupted shard: 5 bytes"):
        open_cache(tmp_path / "c")
    os.remove(path)
    with pytest.raises(DataError, match=r"00003\.npy: shard file missing"):
        open_cache(tmp_path / "c")


def test_incomplete_build_is_refused_with_what_to_do(data, tmp_path):
    _build(data, tmp_path / "c")
    os.remove(tmp_path / "c" / "cache.json")
    os.remove(tmp_path / "c" / "shards" / "00001.json")
    os.remove(tmp_path / "c" / "shards" / "00002.json")
    with pytest.raises(DataError, match=r"incomplete cache: 4 of 6 shards built \(missing "
                                        r"shards 1-2\); rerun `longtail cache DATA --out"):
        lt.Dataset.open(tmp_path / "c")


# ---------------------------------------------------------------------- parts
@pytest.mark.filterwarnings("ignore:1 unreadable source files")
def test_parts_build_disjoint_shards_that_combine_into_one_cache(data, tmp_path):
    _build(data, tmp_path / "one")
    reference = _digests(tmp_path / "one")
    part0 = build_cache(data, tmp_path / "c", image_size=16, rows_per_shard=4, shard="0/3",
                        progress=False)
    assert not part0.complete and part0.missing_shards == [1, 2, 4, 5]
    assert part0.shards_built == 2
    with pytest.raises(DataError, match=r"missing shards 1-2, 4-5; parts 1/3, 2/3"):
        open_cache(tmp_path / "c")
    with pytest.raises(ConfigError, match=r"--shard I/3 \(this run: I/2\)"):
        build_cache(data, tmp_path / "c", image_size=16, shard=(1, 2), progress=False)
    assert not build_cache(data, tmp_path / "c", image_size=16, shard=(2, 3),
                           progress=False).complete
    last = build_cache(data, tmp_path / "c", image_size=16, shard="1/3", progress=False)
    assert last.complete and _digests(tmp_path / "c") == reference
    # parts built on separate machines, then copied into one folder: opening combines
    for i in range(2):
        build_cache(data, tmp_path / f"m{i}", image_size=16, rows_per_shard=4, shard=(i, 2),
                    progress=False)
    shutil.copytree(tmp_path / "m1" / "shards", tmp_path / "m0" / "shards", dirs_exist_ok=True)
    assert not (tmp_path / "m0" / "cache.json").exists()
    ds = lt.Dataset.open(tmp_path / "m0")
    assert len(ds) == 22 and _digests(tmp_path / "m0") == reference


# ----------------------------------------------------------------- CLI, check
def test_cli_builds_checks_and_refuses_bad_arguments(data, tmp_path, capsys):
    code, out, err = _cli(capsys, "cache", data, "--out", tmp_path / "c", "--image-size",
                          "16x12", "--format", "jpeg", "--quality", "80", "--workers", "2")
    assert code == 0, err
    assert "22 rows, jpeg 16x12 rgb" in out
    assert err.startswith("longtail: warning: 1 unreadable source files were skipped")
    assert lt.Dataset.open(tmp_path / "c").cache.manifest["quality"] == 80
    code, out, _ = _cli(capsys, "cache", "--check", tmp_path / "c")
    assert code == 0 and "0 sources changed" in out and "0 missing" in out
    changed = os.path.join(data, "ant", "001.jpg")
    with open(changed, "ab") as f:
        f.write(b"\0")
    os.remove(os.path.join(data, "cow", "000.png"))
    code, out, _ = _cli(capsys, "cache", "--check", tmp_path / "c")
    assert code == 1
    assert f"changed: {changed}" in out and f"missing: {os.path.join(data, 'cow', '000.png')}" \
        in out
    result = check_cache(tmp_path / "c")
    assert (result.rows, result.changed, len(result.missing)) == (22, [changed], 1)
    for argv, message in (
            (["cache", data, "--out", tmp_path / "x"], "--image-size"),
            (["cache", "--out", tmp_path / "x", "--image-size", "8"], "DATA"),
            (["cache", data, "--out", tmp_path / "x", "--image-size", "8", "--shard", "1"],
             "--shard must be I/N"),
            (["cache", data, "--check", tmp_path / "c"], "--check CACHE takes no DATA"),
            (["cache", "--check", tmp_path / "nope"], "no such cache folder")):
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and message in err, err


# ---------------------------------------------------------------------- kills
def _kill_tool():
    spec = importlib.util.spec_from_file_location(
        "kill_cache", os.path.join(REPO, "tools", "kill_cache.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kill_setup(tmp_path_factory):
    tool = _kill_tool()
    work = str(tmp_path_factory.mktemp("kill"))
    data = tool.make_source(os.path.join(work, "data"), 120)
    reference, duration = tool.references(data, work)
    return tool, work, data, reference, duration


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_points_leaves_a_resumable_or_refused_cache(seed, kill_setup):
    """Real subprocesses, SIGKILLed at random moments (tools/kill_cache.py runs 24 seeds).

    Seed 1 builds two parts at once (raw), 2 one part (raw), 3 two parts (jpeg). After
    each kill the folder is refused with a clear message or opens identical to an
    uninterrupted build; the resumed build is identical to it (asserted in kill_seed).
    """
    tool, work, data, reference, duration = kill_setup
    outcomes = tool.kill_seed(seed, data, work, reference, duration, kills=3)
    assert len(outcomes) == 3
    assert all(o in ("refused", "opened") for _, o in outcomes)


def test_module_entry_point_runs_cache(data, tmp_path):
    done = subprocess.run([sys.executable, "-c", "import sys; from longtail.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "cache", data, "--out",
                           str(tmp_path / "c"), "--image-size", "8"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert len(lt.Dataset.open(tmp_path / "c")) == 22


def test_cli_counts_too_large_files_as_unreadable(data, tmp_path, capsys):
    with open(os.path.join(data, "bee", "huge.jpg"), "wb") as f:
        f.truncate(300 * 2**20)  # sparse: nothing big is written
    code, out, err = _cli(capsys, "cache", data, "--out", tmp_path / "c", "--image-size", "16")
    assert code == 0, err
    assert err.startswith("longtail: warning: 2 unreadable source files were skipped")
    assert f"huge.jpg: the file is {300 * 2**20:,} bytes, more than max_file_bytes=" \
           "268,435,456" in err
    # --max-file-bytes: a limit below the small images makes them unreadable too
    code, out, err = _cli(capsys, "cache", data, "--out", tmp_path / "d", "--image-size", "16",
                          "--max-file-bytes", "1K")
    assert code == 0 and "more than max_file_bytes=1,024" in err
    assert "unreadable source files were skipped" in err and "2 unreadable" not in err
    code, _, err = _cli(capsys, "cache", data, "--out", tmp_path / "e", "--image-size", "16",
                        "--max-file-bytes", "lots")
    assert code == 2 and err.strip().splitlines() == [
        "longtail: error: --max-file-bytes must be a positive number of bytes (e.g. "
        "268435456, 512M, 2G) or None; got 'lots'"]
    assert not (tmp_path / "e").exists()
