"""Fuzzing the decode path: mutated files decode or raise DecodeError, nothing else.

The full run (10,000+ cases) is ``python tools/fuzz_decode.py``; here a
smaller run of the same tool, the regressions it found, a check that the
tool itself catches a crash and a hang, and mutated files through the Loader.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from longtail.decode import DecodeOptions, decode_image, read_image
from longtail.errors import DecodeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "fuzz_decode.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import fuzz_decode  # noqa: E402


def _run_tool(tmp_path, *args, timeout=300):
    proc = subprocess.run([sys.executable, TOOL, "--json", "--out", str(tmp_path / "found"),
                           *args], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_mutated_files_decode_or_raise_decode_error(tmp_path):
    rc, summary, stderr = _run_tool(tmp_path, "--cases", "2000", "--seed", "1",
                                    "--chunk", "1000", "--memory-mb", "2048")
    assert summary["bugs"] == 0, summary["bug_list"][:5]
    assert summary["crashes"] == 0 and summary["hangs"] == 0, summary["fatal"]
    assert rc == 0, stderr
    assert summary["ok"] + summary["decode_error"] == 2000
    # the mutations are neither all harmless nor all fatal: both paths are exercised
    assert summary["ok"] > 200 and summary["decode_error"] > 1000
    formats = {r.split()[-1] for r in summary["decode_error_reasons"]
               if r.startswith("cannot decode")}
    assert {"JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"} <= formats
    assert summary["peak_rss_mb"] < summary["memory_limit_mb"]
    assert not os.path.exists(tmp_path / "found")  # nothing to save


def test_the_fuzzer_catches_and_saves_a_crash_and_a_hang(tmp_path):
    rc, summary, _ = _run_tool(tmp_path, "--cases", "30", "--chunk", "30", "--timeout", "2",
                               "--inject", "crash@4,hang@17")
    assert rc == 1
    fatal = {f["index"]: f for f in summary["fatal"]}
    assert set(fatal) == {4, 17}
    assert fatal[4]["what"] == "crash" and "SIGABRT" in fatal[4]["detail"]
    assert fatal[17]["what"] == "hang"
    assert summary["ok"] + summary["decode_error"] == 28  # the chunk went on after each
    corpus = fuzz_decode.seed_corpus()
    for index, found in fatal.items():
        with open(found["saved"], "rb") as f:
            assert f.read() == fuzz_decode.make_case(corpus, 0, index)[0]


def test_cases_are_a_pure_function_of_seed_and_index():
    corpus = fuzz_decode.seed_corpus()
    a = [fuzz_decode.make_case(corpus, 3, i)[0] for i in range(50)]
    b = [fuzz_decode.make_case(corpus, 3, i)[0] for i in range(50)]
    assert a == b and len(set(a)) > 45


# ------------------------------------------------- regressions the fuzzer found
def _npy(header_shape, descr="|u1", data=b"\x00" * 16):
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {header_shape}, }}"
    pad = 64 - (10 + len(header) + 1) % 64
    return (b"\x93NUMPY\x01\x00" + (len(header) + pad + 1).to_bytes(2, "little")
            + header.encode() + b" " * pad + b"\n" + data)


def _decode_capped(data: bytes, memory_mb: int = 1024) -> str:
    """Decodes in a subprocess under RLIMIT_AS; returns the exception's type and text."""
    code = (
        "import resource, sys\n"
        "from longtail.decode import DecodeOptions, decode_image\n"
        f"cap = {memory_mb} * 2**20\n"
        "resource.setrlimit(resource.RLIMIT_AS, (cap, cap))\n"
        "try:\n"
        "    decode_image(sys.stdin.buffer.read(), DecodeOptions(), path='bomb.npy')\n"
        "    print('ok')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n")
    proc = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                          timeout=60)
    return proc.stdout.decode().strip()


@pytest.mark.parametrize("shape,descr", [
    ("(9000, 9000, 3)", "|u1"),        # under max_pixels: 243 MB promised by 16 bytes
    ("(100000, 100000, 3)", "<f4"),    # over max_pixels
    ("(9000, 9000, 3)", "<U8"),        # a string dtype
    ("(100000, 100000, 3)", "|V3"),    # raw bytes
])
def test_npy_header_cannot_make_the_decoder_allocate(shape, descr):
    out = _decode_capped(_npy(shape, descr))
    assert out.startswith("DecodeError bomb.npy:"), out


def test_npy_header_errors_name_the_file():
    cases = {
        _npy("(9000, 9000, 3)"): "truncated .npy",
        _npy("(0, 0, 3)"): "no pixels",
        _npy("(-1, 4, 3)"): "no pixels",
        _npy("(4, 4, 2)"): "expected an (h, w) or (h, w, c) array",
        _npy("(2, 2, 3)", "<U8"): "expected a numeric array",
        _npy("(100000, 100000, 3)"): "max_pixels",
        _npy("(2, 2, 3)")[:-20].replace(b"}", b""): "bad header",
    }
    for data, reason in cases.items():
        with pytest.raises(DecodeError, match=r"^x\.npy: ") as info:
            decode_image(data, DecodeOptions(), path="x.npy")
        assert reason in info.value.reason, (reason, info.value.reason)


def test_npy_with_nan_is_refused_and_valid_npy_still_decodes():
    bad = np.full((4, 4), np.nan, np.float32)
    buf = io.BytesIO()
    np.save(buf, bad)
    with pytest.raises(DecodeError, match="NaN or infinite"):
        decode_image(buf.getvalue(), DecodeOptions(dtype="float32"), path="nan.npy")
    good = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    buf = io.BytesIO()
    np.save(buf, good)
    np.testing.assert_array_equal(decode_image(buf.getvalue(), DecodeOptions()), good)


# ------------------------------------------------------------ through the Loader
def test_loader_epoch_over_mutated_files_skips_and_lists_the_bad_ones(tmp_path):
    import longtail as lt

    corpus = fuzz_decode.seed_corpus()
    options = DecodeOptions(image_size=(16, 16))
    paths, labels, bad = [], [], set()
    for i, (name, data) in enumerate(corpus):  # one valid file of every kind per class
        for c in range(2):
            path = str(tmp_path / f"seed-{c}-{i}.{fuzz_decode.EXTENSIONS[name.split('-')[0]]}")
            with open(path, "wb") as f:
                f.write(data)
            paths.append(path)
            labels.append(c)
    for i in range(150):
        data, info = fuzz_decode.make_case(corpus, 7, i)
        path = str(tmp_path / f"mutated-{i}.bin")
        with open(path, "wb") as f:
            f.write(data)
        try:
            read_image(path, options)
        except DecodeError:
            bad.add(path)
        paths.append(path)
        labels.append(i % 2)
    assert 50 < len(bad) < 150

    ds = lt.Dataset.from_arrays(paths, labels)
    loader = ds.loader(batch_size=8, image_size=(16, 16), on_error="skip", num_workers=2,
                       seed=0)
    batches = 0
    with pytest.warns(UserWarning, match="skipping unreadable file"):
        for x, y in loader:
            assert x.shape == (8, 16, 16, 3) and x.dtype == np.uint8 and y.shape == (8,)
            batches += 1
    assert batches == len(loader) == len(paths) // 8
    listed = {e.path for e in loader.errors}
    # every file of the epoch was tried: the bad ones among them are listed, once each
    tried = {paths[i] for i in loader.plan(0)[:batches * 8]}
    assert bad & tried <= listed <= bad
    assert len(loader.errors) == len(listed)
    assert loader.skipped >= len(bad & tried)
