"""Fuzz the decode path: every mutated image file must decode or raise DecodeError.

    python tools/fuzz_decode.py                      # 10,000 cases, seed 0
    python tools/fuzz_decode.py --cases 1500 --json  # the size tests/test_fuzz.py runs

A seed corpus of small valid files (JPEG: baseline, progressive, grayscale,
EXIF-rotated, CMYK; PNG: RGB, RGBA, palette, 16-bit, grayscale; GIF, animated
GIF, BMP, palette BMP, WebP lossy, lossless and animated, TIFF raw, LZW,
deflate, packbits and 16-bit; ``.npy`` uint8, float32 and int16) is made in
memory with Pillow and NumPy. Case ``i`` is a pure function of ``(seed, i)``:
one to three mutations (bit flips, byte overwrites with boundary values,
inserts, deletes, truncation, duplicated runs, a splice with another seed
file, and header edits: image dimensions set to 0, 1, 65535, 2**31 - 1 ...
with the PNG chunk CRC fixed so the edit reaches the decoder, JPEG SOF
fields, GIF screen and frame sizes, BMP size, depth and compression, TIFF
tags, the ``.npy`` header's shape and dtype). Each case is decoded with one of
several :class:`longtail.decode.DecodeOptions` (native size, stretch, crop,
pad; rgb, grayscale, rgba; uint8, float32), one case in eight through
:func:`longtail.decode.read_image` from a file.

Outcomes: ``ok`` (an array of the promised shape and dtype), ``DecodeError``
(counted by reason; the message must name the file) or a **bug**: any other
exception, a wrong output, a crash of the process (segfault, abort), a hang
past ``--timeout`` seconds, or running out of the ``--memory-mb`` address
space (``RLIMIT_AS``; MemoryError is a bug too: a small file must not make
the decoder allocate gigabytes). Cases run in chunks, each in a subprocess
that records the case it is on, so a crash or a hang names its case; its
input is saved under ``--out`` and the chunk goes on after it.

Exit status 0 when no case found a bug, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

INTERESTING = (0, 1, 2, 7, 8, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 100_000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
OPTIONS = (  # (image_size, color_mode, resize, dtype); cycled over the cases
    (None, "rgb", "stretch", "uint8"),
    ((16, 16), "rgb", "stretch", "uint8"),
    ((24, 40), "grayscale", "crop", "uint8"),
    ((32, 32), "rgba", "pad", "float32"),
    ((8, 12), "rgb", "crop", "float32"),
    (None, "grayscale", "stretch", "uint8"),
)
EXTENSIONS = {"jpeg": "jpg", "png": "png", "gif": "gif", "bmp": "bmp", "webp": "webp",
              "tiff": "tif", "npy": "npy"}


# -------------------------------------------------------------- seed corpus
def seed_corpus() -> list[tuple[str, bytes]]:
    """Small valid files of every format and mode the decoder takes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([x * 4, y * 5, (x + y) * 2], -1) + rng.integers(0, 24, (48, 64, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    base = Image.fromarray(rgb)

    def save(im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(rgb[..., 0]))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    sixteen = Image.fromarray(rgb[..., 0].astype("<u2") * 257)
    corpus = [
        ("jpeg-baseline", save(base, "JPEG", quality=90)),
        ("jpeg-progressive", save(base, "JPEG", quality=80, progressive=True)),
        ("jpeg-gray", save(base.convert("L"), "JPEG")),
        ("jpeg-exif6", save(base, "JPEG", exif=exif.tobytes())),
        ("jpeg-cmyk", save(base.convert("CMYK"), "JPEG")),
        ("jpeg-444-restart", save(base, "JPEG", subsampling=0, restart_marker_blocks=2)),
        ("png-rgb", save(base, "PNG")),
        ("png-rgba", save(rgba, "PNG")),
        ("png-palette-transparency", save(palette, "PNG", transparency=0)),
        ("png-16bit", save(sixteen, "PNG")),
        ("png-gray", save(base.convert("L"), "PNG", optimize=True)),
        ("gif", save(palette, "GIF")),
        ("gif-animated", save(frames[0], "GIF", save_all=True, append_images=frames[1:],
                              duration=50, loop=0)),
        ("bmp", save(base, "BMP")),
        ("bmp-palette", save(palette, "BMP")),
        ("webp-lossy", save(base, "WEBP", quality=70)),
        ("webp-lossless", save(rgba, "WEBP", lossless=True)),
        ("webp-animated", save(frames[0], "WEBP", save_all=True, append_images=frames[1:])),
        ("tiff-raw", save(base, "TIFF")),
        ("tiff-lzw", save(base, "TIFF", compression="tiff_lzw")),
        ("tiff-deflate", save(rgba, "TIFF", compression="tiff_adobe_deflate")),
        ("tiff-packbits", save(base.convert("L"), "TIFF", compression="packbits")),
        ("tiff-16bit", save(sixteen, "TIFF")),
    ]
    for name, array in (("npy-uint8", rgb), ("npy-float32", rgb[..., 0].astype(np.float32)),
                        ("npy-int16", rgb[..., :1].astype(np.int16))):
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        corpus.append((name, buf.getvalue()))
    return corpus


# ---------------------------------------------------------------- mutations
def _int(rng: random.Random) -> int:
    return rng.choice(INTERESTING) if rng.random() < 0.8 else rng.getrandbits(32)


def _put(data: bytearray, offset: int, fmt: str, value: int) -> None:
    size = struct.calcsize(fmt)
    if 0 <= offset and offset + size <= len(data):
        mask = (1 << (8 * size)) - 1
        signed = fmt[-1].islower()
        value &= mask
        if signed and value >= 1 << (8 * size - 1):
            value -= 1 << (8 * size)
        struct.pack_into(fmt, data, offset, value)


def _header_png(data: bytearray, rng) -> str:
    # IHDR: width, height (>I), bit depth, colour type, ..., interlace; CRC fixed.
    if len(data) < 33 or data[12:16] != b"IHDR":
        return "png-header (no IHDR)"
    field = rng.choice(("width", "height", "depth", "colour", "interlace"))
    if field in ("width", "height"):
        _put(data, 16 if field == "width" else 20, ">I", _int(rng))
    else:
        data[{"depth": 24, "colour": 25, "interlace": 28}[field]] = rng.choice(
            (0, 1, 2, 3, 4, 6, 8, 16, 255))
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return f"png-ihdr-{field}"


def _header_jpeg(data: bytearray, rng) -> str:
    sofs = [m.start() for m in re.finditer(rb"\xff[\xc0-\xc2]", bytes(data))]
    if not sofs:
        return "jpeg-header (no SOF)"
    at = rng.choice(sofs)
    field = rng.choice(("height", "width", "components", "sampling", "precision"))
    if field in ("height", "width"):
        _put(data, at + (5 if field == "height" else 7), ">H", _int(rng))
    elif at + 11 < len(data):
        offset = {"components": 9, "sampling": 11, "precision": 4}[field]
        data[at + offset] = rng.choice((0, 1, 3, 4, 0x11, 0x22, 0x44, 0xFF))
    return f"jpeg-sof-{field}"


def _header_gif(data: bytearray, rng) -> str:
    field = rng.choice(("screen", "frame", "flags"))
    if field == "screen":
        _put(data, rng.choice((6, 8)), "<H", _int(rng))
    elif field == "frame":
        at = data.find(b"\x2c")
        if at >= 0:
            _put(data, at + rng.choice((1, 3, 5, 7)), "<H", _int(rng))
    else:
        data[10 if len(data) > 10 else 0] = rng.getrandbits(8)
    return f"gif-{field}"


def _header_bmp(data: bytearray, rng) -> str:
    field, offset, fmt = rng.choice((("width", 18, "<i"), ("height", 22, "<i"),
                                     ("bpp", 28, "<H"), ("compression", 30, "<I"),
                                     ("offset", 10, "<I"), ("colours", 46, "<I")))
    value = _int(rng)
    _put(data, offset, fmt, -value if field == "height" and rng.random() < 0.3 else value)
    return f"bmp-{field}"


def _header_tiff(data: bytearray, rng) -> str:
    end = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(end + "I", data, 4)
        (count,) = struct.unpack_from(end + "H", data, ifd)
    except struct.error:
        return "tiff-header (no IFD)"
    entries = []
    for k in range(min(count, 64)):
        at = ifd + 2 + 12 * k
        if at + 12 > len(data):
            break
        entries.append(at)
    if not entries:
        return "tiff-header (empty IFD)"
    at = rng.choice(entries)
    (tag,) = struct.unpack_from(end + "H", data, at)
    part = rng.choice(("value", "count", "type"))
    if part == "value":
        _put(data, at + 8, end + "I", _int(rng))
    elif part == "count":
        _put(data, at + 4, end + "I", _int(rng))
    else:
        _put(data, at + 2, end + "H", rng.choice((0, 1, 3, 4, 5, 12, 13, 16, 0xFFFF)))
    return f"tiff-tag{tag}-{part}"


def _header_webp(data: bytearray, rng) -> str:
    # RIFF size, the VP8/VP8L/VP8X chunk size and the bytes that hold the canvas size
    offset = rng.choice((4, 16, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29))
    _put(data, offset, "<H" if offset > 20 else "<I", _int(rng))
    return f"webp-byte{offset}"


def _header_npy(data: bytearray, rng) -> bytes | str:
    import numpy as np

    shapes = ("(100000, 100000, 3)", "(48, 64, 3)", "(0, 0, 3)", "(-1, 64, 3)",
              "(9000, 9000, 3)", "(48, 64, 2)", "(2, 2, 2, 2)", "()", "(48,)",
              "(4611686018427387904, 4, 3)")
    dtypes = ("'|u1'", "'<f4'", "'|O'", "'<U8'", "'|V3'", "'<c8'", "'>i8'", "'|b1'",
              "'<M8[s]'", "[('a', '<i4')]")
    shape, dtype = rng.choice(shapes), rng.choice(dtypes)
    fortran = rng.choice(("False", "True"))
    header = f"{{'descr': {dtype}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    try:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                                   "shape": (1,)})
        old_len = len(buf.getvalue())
    except Exception:  # noqa: BLE001 - numpy internals moved: keep the data
        return "npy-header (skipped)"
    pad = 64 - (10 + len(header) + 1) % 64
    new = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header) + pad + 1) + \
        header.encode() + b" " * pad + b"\n"
    data[:] = new + bytes(data[old_len if len(data) > old_len else len(data):])
    return f"npy-header shape={shape} descr={dtype} fortran={fortran}"


_HEADERS = {"png": _header_png, "jpeg": _header_jpeg, "gif": _header_gif,
            "bmp": _header_bmp, "tiff": _header_tiff, "webp": _header_webp,
            "npy": _header_npy}


def mutate(data: bytes, kind: str, corpus, rng: random.Random) -> tuple[bytes, list[str]]:
    """One to three random mutations of ``data``; returns the bytes and their names."""
    out = bytearray(data)
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.choice(("bitflip", "bytes", "insert", "delete", "truncate", "splice",
                         "repeat", "header", "header"))
        n = len(out)
        if op == "header":
            done.append(_HEADERS[kind](out, rng) if kind in _HEADERS else "header (none)")
        elif op == "bitflip" and n:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                out[i] ^= 1 << rng.randrange(8)
            done.append("bitflip")
        elif op == "bytes" and n:
            for _ in range(rng.randint(1, 4)):
                out[rng.randrange(n)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.getrandbits(8)))
            done.append("bytes")
        elif op == "insert":
            at = rng.randint(0, n)
            out[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
            done.append("insert")
        elif op == "delete" and n:
            at = rng.randrange(n)
            del out[at:at + rng.randint(1, 64)]
            done.append("delete")
        elif op == "truncate":
            # mostly a cut deep in the data; sometimes within the header
            cut = rng.randint(0, n) if rng.random() < 0.3 else rng.randint(n // 2, n)
            del out[cut:]
            done.append(f"truncate@{cut}")
        elif op == "splice":
            _, other = rng.choice(corpus)
            a, b = rng.randint(0, n), rng.randint(0, len(other))
            out[a:] = other[b:]
            done.append("splice")
        elif op == "repeat" and n:
            a = rng.randrange(n)
            chunk = out[a:a + rng.randint(1, 256)]
            out[a:a] = chunk * rng.randint(1, 8)
            done.append("repeat")
    return bytes(out), done


def make_case(corpus, seed: int, index: int):
    """Case ``index``: (bytes, description); a pure function of its arguments."""
    from longtail.decode import sniff_format

    rng = random.Random(f"{seed}:{index}")
    name, data = corpus[rng.randrange(len(corpus))]
    mutated, ops = mutate(data, sniff_format(data), corpus, rng)
    return mutated, {"index": index, "seed_file": name, "mutations": ops,
                     "options": OPTIONS[index % len(OPTIONS)]}


# ------------------------------------------------------------------ worker
def _reason(reason: str) -> str:
    """A DecodeError reason without the numbers and library text that vary."""
    if reason.startswith("image has "):
        return "more pixels than max_pixels"
    if reason.startswith("not a recognised image"):
        return "not a recognised image"
    if reason.startswith("too many pixels for Pillow"):
        return "too many pixels for Pillow"
    match = re.match(r"(cannot decode \w+|cannot read the file)", reason)
    if match:
        return match.group(1)
    return re.sub(r"\d+", "N", reason.split(";")[0].split(":")[0])[:70]


def _check_output(out, opts):
    """Why ``out`` breaks the decoder's promise, or None."""
    import numpy as np

    if not isinstance(out, np.ndarray) or out.ndim != 3:
        return f"output is not an (h, w, c) array: {type(out)} {getattr(out, 'shape', '')}"
    if out.dtype != np.dtype(opts.dtype) or out.shape[-1] != opts.channels:
        return f"output {out.dtype} {out.shape}, expected {opts.dtype} with {opts.channels} channels"
    if opts.image_size is not None and out.shape[:2] != opts.image_size:
        return f"output size {out.shape[:2]}, expected {opts.image_size}"
    if 0 in out.shape:
        return f"empty output {out.shape}"
    return None


def _peak_rss_kb() -> int:
    """The process's peak resident size (VmHWM; ``ru_maxrss`` would include the
    parent's, inherited through fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_worker(seed: int, start: int, stop: int, progress: str, memory_mb: int,
               inject: dict | None = None) -> None:
    """Decodes cases ``start..stop-1``, printing one JSON record per case as it ends.

    Each case index is written to ``progress`` before the case starts, so the
    driver knows which case a crash or a hang happened in. ``inject``
    (``{index: "crash" | "hang"}``) makes a case abort or sleep, to test that
    the driver catches both.
    """
    import resource
    import traceback
    import warnings

    from longtail.decode import DecodeOptions, decode_image, read_image
    from longtail.errors import DecodeError

    corpus = seed_corpus()
    options = [DecodeOptions(image_size=s, color_mode=c, resize=r, dtype=d)
               for s, c, r, d in OPTIONS]
    print(json.dumps({"rss_before_cases_kb": _peak_rss_kb()}), flush=True)
    cap = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    folder = tempfile.mkdtemp(prefix="fuzz-decode-")
    try:
        for i in range(start, stop):
            os.pwrite(fd, f"{i:>12}\n".encode(), 0)
            if inject and inject.get(i) == "crash":
                os.abort()
            if inject and inject.get(i) == "hang":
                time.sleep(3600)
            data, info = make_case(corpus, seed, i)
            opts = options[i % len(options)]
            name = f"case-{i}.{EXTENSIONS.get(info['seed_file'].split('-')[0], 'bin')}"
            record = {"index": i}
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    if i % 8 == 0:  # through read_image, from a file
                        path = os.path.join(folder, name)
                        with open(path, "wb") as f:
                            f.write(data)
                        out = read_image(path, opts)
                    else:
                        path = name
                        out = decode_image(data, opts, path=path)
                wrong = _check_output(out, opts)
                record["outcome"] = "ok" if wrong is None else "bug"
                if wrong:
                    record["bug"] = {**info, "error": "WrongOutput", "message": wrong}
            except DecodeError as e:
                record.update(outcome="DecodeError", reason=_reason(e.reason))
                if path not in str(e):
                    record.update(outcome="bug", bug={
                        **info, "error": "DecodeError without the file name",
                        "message": str(e)})
            except Exception as e:  # noqa: BLE001 - anything else is what we look for
                record.update(outcome="bug", bug={
                    **info, "error": type(e).__name__, "message": str(e)[:300],
                    "where": traceback.format_exc().strip().splitlines()[-3:]})
            record["seconds"] = time.perf_counter() - t0
            record["rss_kb"] = _peak_rss_kb()
            record["warnings"] = [f"{w.category.__name__}: {str(w.message)[:60]}"
                                  for w in caught]
            if i % 8 == 0 and os.path.exists(os.path.join(folder, name)):
                os.unlink(os.path.join(folder, name))
            print(json.dumps(record, default=str), flush=True)
    finally:
        os.close(fd)
        for leftover in os.listdir(folder):
            os.unlink(os.path.join(folder, leftover))
        os.rmdir(folder)


# ------------------------------------------------------------------ driver
class Tally:
    """What the workers reported, case by case."""

    def __init__(self):
        self.counts = collections.Counter()
        self.reasons = collections.Counter()
        self.warnings = collections.Counter()
        self.bugs, self.fatal = [], []
        self.slowest, self.peak = (0.0, None), (0, None)
        self.rss_before_cases_kb = 0

    def add(self, record: dict, corpus, seed) -> None:
        if "rss_before_cases_kb" in record:
            self.rss_before_cases_kb = max(self.rss_before_cases_kb,
                                           record["rss_before_cases_kb"])
            return
        i = record["index"]
        self.counts[record["outcome"]] += 1
        if "reason" in record:
            self.reasons[record["reason"]] += 1
        if "bug" in record:
            self.bugs.append(record["bug"])
        self.warnings.update(record["warnings"])
        if record["seconds"] > self.slowest[0]:
            self.slowest = (record["seconds"], make_case(corpus, seed, i)[1])
        if record["rss_kb"] > self.peak[0]:
            self.peak = (record["rss_kb"], make_case(corpus, seed, i)[1])


def _read_progress(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            text = f.read().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _save_finding(out_dir, corpus, seed, index, what, detail) -> str:
    os.makedirs(out_dir, exist_ok=True)
    data, info = make_case(corpus, seed, index)
    ext = EXTENSIONS.get(info["seed_file"].split("-")[0], "bin")
    path = os.path.join(out_dir, f"{what}-{seed}-{index}.{ext}")
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".json", "w") as f:
        json.dump({**info, "what": what, "detail": detail}, f, indent=1, default=str)
    return path


def run_chunk(seed, start, stop, args, corpus, tally, lock) -> None:
    """Runs cases ``start..stop-1`` in subprocesses; a crash or a hang skips its case."""
    while start < stop:
        with tempfile.NamedTemporaryFile(prefix="fuzz-progress-", delete=False) as f:
            progress = f.name
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--seed", str(seed),
               "--start", str(start), "--stop", str(stop), "--progress", progress,
               "--memory-mb", str(args.memory_mb)] + \
            (["--inject", args.inject] if args.inject else [])
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err)
            current, since, hung = None, time.monotonic(), False
            while proc.poll() is None:
                time.sleep(0.05)
                now = _read_progress(progress)
                if now != current:
                    current, since = now, time.monotonic()
                elif time.monotonic() - since > args.timeout:
                    proc.kill()
                    proc.wait()
                    hung = True
            out.seek(0)
            err.seek(0)
            lines, stderr = out.read().decode().splitlines(), err.read().decode(errors="replace")
        last = _read_progress(progress)
        os.unlink(progress)
        done = set()
        with lock:
            for line in lines:
                record = json.loads(line)
                tally.add(record, corpus, seed)
                done.add(record.get("index"))
        if proc.returncode == 0 and not hung:
            return
        index = last if last is not None and last not in done else start
        if hung:
            what, detail = "hang", f"no progress for {args.timeout:g} s"
        elif proc.returncode < 0:
            what, detail = "crash", f"killed by {signal.Signals(-proc.returncode).name}"
        else:
            what = "crash"
            detail = f"exit status {proc.returncode}: " + \
                " | ".join(stderr.strip().splitlines()[-3:])
        path = _save_finding(args.out, corpus, seed, index, what, detail)
        with lock:
            tally.fatal.append({"index": index, "what": what, "detail": detail, "saved": path})
        print(f"case {index}: {what} ({detail}); input saved to {path}", file=sys.stderr)
        start = index + 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=1000, help="cases per subprocess")
    parser.add_argument("--jobs", type=int, default=1, help="subprocesses at a time")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds one case may take before it counts as a hang")
    parser.add_argument("--memory-mb", type=int, default=2048,
                        help="address-space limit (RLIMIT_AS) of each subprocess")
    parser.add_argument("--out", default="fuzz-findings",
                        help="folder for the inputs of failing cases")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--progress", help=argparse.SUPPRESS)
    parser.add_argument("--inject", default=None, help=argparse.SUPPRESS)  # "crash@3,hang@7"
    args = parser.parse_args(argv)
    if args.worker:
        inject = {int(i): what for what, i in
                  (item.split("@") for item in args.inject.split(","))} if args.inject else None
        run_worker(args.seed, args.start, args.stop, args.progress, args.memory_mb, inject)
        return 0

    import threading
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.monotonic()
    corpus = seed_corpus()
    tally, lock = Tally(), threading.Lock()
    bounds = [(s, min(s + args.chunk, args.cases)) for s in range(0, args.cases, args.chunk)]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for future in [pool.submit(run_chunk, args.seed, a, b, args, corpus, tally, lock)
                       for a, b in bounds]:
            future.result()
    bugs, fatal = sorted(tally.bugs, key=lambda b: b["index"]), \
        sorted(tally.fatal, key=lambda f: f["index"])
    for bug in bugs:
        bug["saved"] = _save_finding(args.out, corpus, args.seed, bug["index"], "bug",
                                     f"{bug['error']}: {bug['message']}")
    slowest, peak = tally.slowest, tally.peak
    summary = {
        "cases": args.cases, "seed": args.seed, "seed_files": len(corpus),
        "ok": tally.counts["ok"], "decode_error": tally.counts["DecodeError"],
        "decode_error_reasons": dict(tally.reasons.most_common()),
        "bugs": len(bugs), "crashes": sum(f["what"] == "crash" for f in fatal),
        "hangs": sum(f["what"] == "hang" for f in fatal),
        "warnings": dict(tally.warnings.most_common()),
        "max_seconds_per_file": round(slowest[0], 4), "slowest_case": slowest[1],
        "peak_rss_mb": round(peak[0] / 1024, 1), "peak_case": peak[1],
        "rss_before_cases_mb": round(tally.rss_before_cases_kb / 1024, 1),
        "memory_limit_mb": args.memory_mb, "timeout_s": args.timeout,
        "wall_seconds": round(time.monotonic() - t0, 1),
        "bug_list": bugs[:50], "fatal": fatal,
    }
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return 0 if not bugs and not fatal else 1

    def case(info):
        return "-" if info is None else \
            f"case {info['index']}: {info['seed_file']} {', '.join(info['mutations'])}"

    print(f"{args.cases} mutated files from {len(corpus)} seed files, seed {args.seed}, "
          f"in {summary['wall_seconds']} s")
    print(f"  decoded ok:   {summary['ok']}")
    print(f"  DecodeError:  {summary['decode_error']}")
    for reason, n in tally.reasons.most_common():
        print(f"    {n:>6}  {reason}")
    print(f"  bugs (other exceptions, wrong output): {summary['bugs']}")
    print(f"  crashes: {summary['crashes']}, hangs (> {args.timeout:g} s): {summary['hangs']}")
    print(f"  slowest file: {summary['max_seconds_per_file']} s ({case(slowest[1])})")
    print(f"  peak RSS of a worker: {summary['peak_rss_mb']} MB, "
          f"{summary['rss_before_cases_mb']} MB of it after imports; RLIMIT_AS "
          f"{args.memory_mb} MB ({case(peak[1])})")
    for message, n in tally.warnings.most_common(8):
        print(f"  warning x{n}: {message}")
    for bug in bugs[:20]:
        print(f"  BUG {case(bug)}: {bug['error']}: {bug['message'][:160]} -> {bug['saved']}")
    for f in fatal:
        print(f"  {f['what'].upper()} case {f['index']}: {f['detail']} -> {f['saved']}")
    return 0 if not bugs and not fatal else 1


if __name__ == "__main__":
    sys.exit(main())
