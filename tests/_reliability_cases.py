"""Broken and unusual inputs for tests/test_reliability.py.

Each maker writes one file (or link) at the path it is given and returns
nothing; the images are tiny so a whole folder of them decodes in
milliseconds.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image


def _rgb(seed=0, size=8):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


def zero_byte(path):
    _write(path, b"")


def truncated_jpeg(path):
    data = _encoded(_rgb(1, 32), "JPEG", quality=90)
    _write(path, data[: len(data) // 2])


def truncated_png(path):
    data = _encoded(_rgb(2, 32), "PNG")
    _write(path, data[: len(data) // 2])


def random_bytes(path):
    _write(path, np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def text_file(path):
    _write(path, b"this is not an image\n" * 20)


def png_named_jpg(path):
    _write(path, _encoded(_rgb(4), "PNG"))


def jpeg_named_png(path):
    _write(path, _encoded(_rgb(5), "JPEG"))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _png_claiming(path, side):
    """A grayscale PNG whose header claims ``side`` x ``side`` pixels; 4 rows of data."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 4, 9)
    _write(path, b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows)
           + _chunk(b"IEND", b""))


def decompression_bomb(path):
    """100000 x 100000 pixels claimed (past Pillow's hard limit); ~300 bytes on disk."""
    _png_claiming(path, 100_000)


def decompression_bomb_over_max_pixels(path):
    """10000 x 10000 claimed: past ``max_pixels``, under Pillow's hard limit."""
    _png_claiming(path, 10_000)


def cmyk_jpeg(path):
    _rgb(6).convert("CMYK").save(path, "JPEG")


def png_16bit(path):
    values = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(values).save(path, "PNG")  # mode I;16
    assert Image.open(path).mode.startswith("I")


def palette_png(path):
    _rgb(7).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path, "PNG")


def rgba_png(path):
    rgba = np.dstack([np.asarray(_rgb(8)), np.full((8, 8), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(path, "PNG")


def la_png(path):
    Image.fromarray(np.asarray(_rgb(9))[..., :2].copy(), "LA").save(path, "PNG")


def grayscale_jpeg(path):
    _rgb(10).convert("L").save(path, "JPEG")


def animated_gif(path):
    frames = [_rgb(11 + i).convert("P") for i in range(3)]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(path), "n_frames", 1) == 3


def exif_rotated_jpeg(path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(np.asarray(_rgb(12, 16))[:8]).save(path, "JPEG", exif=exif.tobytes())


def self_link(path):
    """A symbolic link to itself: opening it fails with ELOOP."""
    os.symlink(os.path.basename(path), path)


def unreadable(path):
    _rgb(13).save(path, "PNG")
    os.chmod(path, 0)


def good_png(path, seed=0):
    _rgb(seed).save(path, "PNG")


def named_pipe(path):
    """A FIFO: opening it for reading would wait for a writer forever."""
    os.mkfifo(path)


def dangling_link(path):
    os.symlink("no-such-file.png", path)

