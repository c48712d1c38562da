"""Decoding one sample file into a fixed-size NumPy image.

JPEG goes through simplejpeg (libjpeg-turbo) and, when the target is at most
half the source, is decoded at a reduced DCT scale (1/2, 1/4 or 1/8) so most
of the pixels are never computed; OpenCV then resizes the array (bilinear,
area averaging past a factor of 2). PNG, BMP, GIF
(first frame), WebP, TIFF and CMYK JPEGs go through Pillow; ``.npy`` arrays
through ``np.load(allow_pickle=False)``. The format is decided by the file's
first bytes, not its extension.

Every failure raises :class:`longtail.errors.DecodeError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import threading
import tokenize
import warnings

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from longtail.errors import DecodeError
from longtail.options import COLOR_MODES, DTYPES, RESIZE_MODES  # noqa: F401 (re-exported)
from longtail.options import ImageOptions as DecodeOptions

__all__ = ["DecodeOptions", "decode_image", "opencv_on_calling_thread", "read_file", "read_image",
           "sniff_format"]

_PIL_MODE = {"rgb": "RGB", "grayscale": "L", "rgba": "RGBA"}
_JPEG_COLORSPACE = {"rgb": "RGB", "grayscale": "GRAY", "rgba": "RGBA"}
# EXIF orientation -> the same transposition on an (h, w, c) array (as
# PIL.ImageOps.exif_transpose does on an image).
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
           7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
           8: lambda a: a.transpose(1, 0, 2)[::-1]}
# Pillow warns about damaged EXIF/TIFF metadata once per distinct message,
# and the byte counts in the message make each file distinct: on a large
# dataset that is thousands of lines about metadata whose pixels decode fine.
# (Files whose pixels fail raise DecodeError and are reported as such.) The
# warnings are hidden while Pillow decodes (see _quiet_metadata), not by a
# filter that importing longtail would install.


def opencv_on_calling_thread() -> None:
    """Runs OpenCV's functions on the thread that calls them.

    Called where longtail starts its own decoding threads (the loader's
    workers, the cache builder, ``longtail predict``), never at import:
    OpenCV's internal thread pool would only compete with those threads for
    the cores (measured: 4 loader threads used 0.76 cores with it, 1.0
    without), as PyTorch data loaders usually set. The setting is OpenCV's,
    for the whole process, and stays after the pool ends.
    """
    cv2.setNumThreads(0)


_METADATA_FILTER = ("ignore", None, UserWarning, re.compile(r"PIL\.TiffImagePlugin"), 0)
_METADATA_LOCK = threading.Lock()
_quiet_decodes = 0


@contextlib.contextmanager
def _quiet_metadata():
    """Hides Pillow's warnings about damaged EXIF/TIFF metadata while Pillow decodes.

    One filter entry stays in ``warnings.filters`` while any Pillow decode
    of longtail runs, and is taken out when the last one ends. It is not
    ``warnings.catch_warnings``: that swaps the process-wide list, so threads
    that enter and leave it in turn restore each other's lists; and the
    entry is put in place directly, without the notice ``filterwarnings``
    gives, after which Python would forget which warnings it has shown once.
    """
    global _quiet_decodes
    with _METADATA_LOCK:
        _quiet_decodes += 1
        if _quiet_decodes == 1:
            warnings.filters.insert(0, _METADATA_FILTER)
    try:
        yield
    finally:
        with _METADATA_LOCK:
            _quiet_decodes -= 1
            if _quiet_decodes == 0:
                with contextlib.suppress(ValueError):  # a catch_warnings exit took it out
                    warnings.filters.remove(_METADATA_FILTER)


# Downscale factor above which a plain bilinear resize would skip source
# pixels (aliasing); past it OpenCV's area averaging is used instead.
_LINEAR_MAX_FACTOR = 2.0


def sniff_format(data: bytes) -> str:
    """Names the format from the first bytes.

    Returns:
        One of ``"jpeg"``, ``"png"``, ``"gif"``, ``"bmp"``, ``"webp"``,
        ``"tiff"``, ``"npy"`` or ``"unknown"``.
    """
    head = bytes(data[:12])
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    return "unknown"


def _open_nonblocking(path, flags):
    # A named pipe opened for reading would wait for a writer forever.
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def read_file(path, max_bytes="default") -> tuple[bytes, os.stat_result]:
    """The bytes and ``os.stat`` of a regular file, or a :class:`DecodeError`.

    A named pipe, device or socket is refused without waiting on it, and a
    file larger than ``max_bytes`` (default: ``ImageOptions().max_file_bytes``;
    None for no limit) without reading it.
    """
    if max_bytes == "default":
        max_bytes = DecodeOptions().max_file_bytes
    try:
        with open(path, "rb", opener=_open_nonblocking) as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DecodeError(path, "not a regular file (a named pipe, device or "
                                  "socket); expected an image file")
            if max_bytes is None:
                return f.read(), info
            if info.st_size > max_bytes:
                raise DecodeError(path, _too_large(info.st_size, max_bytes))
            # Read what fstat promised (read(n) reserves n bytes up front, so never the
            # limit itself), then, for a file that grew since, the rest up to the limit.
            data = f.read(info.st_size + 1)
            if len(data) > info.st_size:
                chunks, total = [data], len(data)
                while total <= max_bytes:
                    chunk = f.read(min(1 << 20, max_bytes + 1 - total))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
                data = b"".join(chunks)
            if len(data) > max_bytes:
                raise DecodeError(path, _too_large(max(info.st_size, len(data)), max_bytes))
            return data, info
    except OSError as e:
        raise DecodeError(path, f"cannot read the file ({e.strerror or e})") from e


def _too_large(size: int, limit: int) -> str:
    return (f"the file is {size:,} bytes, more than max_file_bytes={limit:,} (no image file "
            "is that large); not read; raise max_file_bytes (--max-file-bytes) if the file "
            "is trusted")


def read_image(path, options: DecodeOptions, out: np.ndarray | None = None) -> np.ndarray:
    """Reads and decodes the file at ``path``; see :func:`decode_image`."""
    data, _ = read_file(path, options.max_file_bytes)
    return decode_image(data, options, path=path, out=out)


def decode_image(data: bytes, options: DecodeOptions, path="<bytes>",
                 out: np.ndarray | None = None) -> np.ndarray:
    """Decodes encoded bytes to an array of shape ``(h, w, channels)``.

    Args:
        data: the file's bytes (JPEG, PNG, BMP, GIF, WebP, TIFF or ``.npy``).
        options: a :class:`DecodeOptions`.
        path: the file name used in error messages.
        out: optional array of the result's shape and dtype (a row of a
            batch array, say) to write the pixels into; the resize then
            writes there directly, without an array of its own and a copy.
            Needs ``options.image_size``.

    Returns:
        ``uint8`` or ``float32`` array, values in 0..255 (``out`` when given).

    Raises:
        DecodeError: empty, truncated, corrupt, unsupported or too large.
    """
    if not data:
        raise DecodeError(path, "the file is empty")
    if out is not None:
        shape = (*(options.image_size or ("h", "w")), options.channels)
        if out.shape != shape or out.dtype != np.dtype(options.dtype):
            raise ValueError(f"`out` must be an array of shape {shape} and dtype "
                             f"{options.dtype}; got shape {out.shape} and dtype {out.dtype}")
    # Decoders that end in a uint8 resize write straight into a uint8 ``out``.
    into = out if out is not None and out.dtype == np.uint8 else None
    kind = sniff_format(data)
    try:
        if kind == "jpeg":
            image = _decode_jpeg(data, options, path, into)
        elif kind == "npy":
            image = _decode_npy(data, options, path)
        else:
            image = _decode_pillow(data, options, path, into)
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise DecodeError(path, f"too many pixels for Pillow ({_reason(e)})") from e
    except (ValueError, OSError, SyntaxError, EOFError, struct.error, IndexError,
            TypeError, cv2.error) as e:
        what = kind.upper() if kind != "unknown" else "image"
        raise DecodeError(path, f"cannot decode {what}: {_reason(e)}") from e
    if out is not None:
        if image is not out:
            np.copyto(out, image, casting="unsafe")  # uint8 -> float32 is exact
        return out
    if options.dtype == "float32":
        return image.astype(np.float32)
    return image


# What a decoder's message may quote from the file: quoted text, byte values, reprs.
_QUOTED = re.compile(r"""b?'[^']*'?|b?"[^"]*"?|0x[0-9A-Fa-f]+|\{.*\}|\\x[0-9A-Fa-f]{2}""")


def _reason(error: BaseException) -> str:
    """A decoder's message without anything it quotes from the file.

    Messages end up in warnings, ``cache.json``, ``metrics.json`` and
    predict's CSV; a file that is not an image (a password file named
    ``.jpg``) must not have its first bytes copied there.
    """
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = _QUOTED.sub("...", text)
    return text if len(text) <= 160 else text[:157] + "..."


def _check_pixels(height, width, options, path):
    if options.max_pixels is not None and height * width > options.max_pixels:
        raise DecodeError(
            path, f"image has {height}x{width} = {height * width} pixels, more than "
            f"max_pixels={options.max_pixels}; raise max_pixels if the file is trusted"
        )


def _min_decode_size(height, width, options):
    """Smallest (h, w) a scaled JPEG decode may produce and still resize exactly.

    libjpeg-turbo decodes at any scale M/8; M = 8 (and 1, 2, 4) use its SIMD
    inverse DCT, the others scalar code that costs as much as or more than a
    full-size decode. So when the smallest scale covering the target is
    above 4/8 and the resize from the full size would still be bilinear
    (a downscale of at most 2), the full size is asked for: measured 25-50%
    cheaper per image than 5/8-7/8 (``benchmarks/dct_scale.py``, docs/performance.md).
    Otherwise the smallest covering scale, never one below the target.
    """
    if options.image_size is None:
        return height, width
    th, tw = options.image_size
    if options.resize == "stretch":
        need, factor = (th, tw), max(height / th, width / tw)
    else:
        if options.resize == "crop":
            scale = max(th / height, tw / width)
            factor = min(height / th, width / tw)  # of the crop box, whose aspect is the target's
        else:  # pad
            scale = min(th / height, tw / width)
            factor = 1 / scale
        need = (int(np.ceil(height * scale)), int(np.ceil(width * scale)))
    covering = next((m for m in range(1, 9)
                     if -(-height * m // 8) >= need[0] and -(-width * m // 8) >= need[1]), 8)
    if covering > 4 and factor <= _LINEAR_MAX_FACTOR:
        return height, width
    return need


def _jpeg_orientation(data: bytes) -> int:
    """EXIF orientation (1..8) from a JPEG's APP1 segment, 1 if absent."""
    i, n = 2, len(data)
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            break
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[i + 10:i + 2 + length])
        i += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    try:
        end = {b"II": "<", b"MM": ">"}[bytes(tiff[:2])]
        (ifd,) = struct.unpack_from(end + "I", tiff, 4)
        (count,) = struct.unpack_from(end + "H", tiff, ifd)
        for k in range(count):
            tag, _, _, value = struct.unpack_from(end + "HHIH", tiff, ifd + 2 + 12 * k)
            if tag == 0x0112:
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1


def _decode_jpeg(data, options, path, out=None):
    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    _check_pixels(height, width, options, path)
    if colorspace not in ("YCbCr", "Gray", "RGB"):  # CMYK, YCCK: Pillow knows Adobe's
        return _decode_pillow(data, options, path, out)
    orientation = _jpeg_orientation(data)
    turned = orientation >= 5
    if turned:
        height, width = width, height
    min_h, min_w = _min_decode_size(height, width, options)
    if turned:
        min_h, min_w = min_w, min_h
    arr = simplejpeg.decode_jpeg(
        data, colorspace=_JPEG_COLORSPACE[options.color_mode],
        min_height=min_h, min_width=min_w)
    if orientation != 1:
        arr = _ORIENT[orientation](arr)
    return _resize(arr, options, out)


def _resize(arr: np.ndarray, options, out=None) -> np.ndarray:
    """Resizes an ``(h, w, c)`` array per ``options`` with OpenCV.

    Bilinear while the downscale factor is at most 2 (the reduced-scale JPEG
    decode leaves at most that), area averaging beyond, so no source pixel is
    skipped. ``crop`` cuts the centred box of the target's aspect ratio
    (rounded to whole pixels) before resizing; ``pad`` resizes to fit and
    centres the result on zeros. With ``out`` (uint8, the target's shape)
    the resized pixels are written there and ``out`` is returned.
    """
    if options.image_size is None or arr.shape[:2] == options.image_size:
        return arr
    th, tw = options.image_size
    height, width = arr.shape[:2]
    if options.resize == "stretch":
        return _cv_resize(arr, th, tw, out)
    if options.resize == "crop":
        ch = min(height, max(1, round(width * th / tw)))
        cw = min(width, max(1, round(height * tw / th)))
        top, left = (height - ch) // 2, (width - cw) // 2
        return _cv_resize(arr[top:top + ch, left:left + cw], th, tw, out)
    scale = min(th / height, tw / width)
    nh = min(th, max(1, round(height * scale)))
    nw = min(tw, max(1, round(width * scale)))
    out = np.zeros((th, tw, arr.shape[-1]), arr.dtype)
    top, left = (th - nh) // 2, (tw - nw) // 2
    out[top:top + nh, left:left + nw] = _cv_resize(arr, nh, nw)
    return out


def _cv_resize(arr, th, tw, out=None):
    height, width = arr.shape[:2]
    if (height, width) == (th, tw):
        return np.ascontiguousarray(arr)
    factor = max(height / th, width / tw)
    mode = cv2.INTER_AREA if factor > _LINEAR_MAX_FACTOR else cv2.INTER_LINEAR
    src = np.ascontiguousarray(arr)
    if (out is not None and out.flags.c_contiguous and out.dtype == arr.dtype
            and out.shape == (th, tw, arr.shape[-1])):
        # OpenCV writes into a destination of the right size and type in place
        # (a single channel goes through its (h, w) view).
        dst = out if out.shape[-1] > 1 else out[..., 0]
        cv2.resize(src if src.shape[-1] > 1 else src[..., 0], (tw, th), dst=dst,
                   interpolation=mode)
        return out
    resized = cv2.resize(src, (tw, th), interpolation=mode)
    return resized.reshape(th, tw, arr.shape[-1])


def _to_mode(im: Image.Image, color_mode: str) -> Image.Image:
    """Converts any Pillow mode (16-bit, palette, CMYK, alpha) to the target."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        scale = 1.0 if mode == "F" else 257.0  # 16-bit full range -> 8-bit
        im = Image.fromarray(np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8))
    elif mode == "P" or mode == "PA":
        im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa", "RGBX"):
        im = im.convert("RGBA" if mode in ("La", "RGBa") else
                        "L" if mode == "1" else "RGB")
    target = _PIL_MODE[color_mode]
    return im if im.mode == target else im.convert(target)


def _decode_pillow(data, options, path, out=None):
    with _quiet_metadata():
        return _decode_pillow_image(data, options, path, out)


def _decode_pillow_image(data, options, path, out=None):
    try:
        im = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError as e:
        raise DecodeError(
            path, "not a recognised image (expected JPEG, PNG, BMP, GIF, WebP, TIFF "
            "or .npy)") from e
    width, height = im.size
    _check_pixels(height, width, options, path)
    if im.format == "JPEG" and options.image_size is not None:
        turned = im.getexif().get(0x0112, 1) >= 5
        min_h, min_w = _min_decode_size(*((width, height) if turned else (height, width)),
                                        options)
        im.draft(im.mode, (min_h, min_w) if turned else (min_w, min_h))
    im.load()
    im = ImageOps.exif_transpose(im)
    arr = np.asarray(_to_mode(im, options.color_mode))
    return _resize(arr[..., None] if arr.ndim == 2 else arr, options, out)


def _check_npy_header(data, options, path):
    """Checks shape, dtype and size from the header before anything is allocated.

    ``np.load`` allocates what the header claims before it reads the data, so
    a 100-byte file claiming a 100000x100000 array would ask for 30 GB.
    """
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise DecodeError(path, f"unsupported .npy format version {version}")
    except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as e:
        raise DecodeError(path, f"cannot decode NPY: bad header ({_reason(e)})") from e
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] not in (1, 3, 4)):
        raise DecodeError(
            path, f"expected an (h, w) or (h, w, c) array with c in 1, 3, 4; got shape {shape}")
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise DecodeError(path, f"expected a numeric array; got dtype {dtype}")
    if min(shape) < 1:
        raise DecodeError(path, f"the array has no pixels (shape {shape})")
    _check_pixels(shape[0], shape[1], options, path)
    need, have = int(np.prod(shape, dtype=object)) * dtype.itemsize, len(data) - f.tell()
    if have < need:
        raise DecodeError(path, f"truncated .npy: the header promises {need} bytes of "
                          f"data, the file holds {have}")


def _decode_npy(data, options, path):
    _check_npy_header(data, options, path)
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise DecodeError(path, "the array holds NaN or infinite values")
        if options.dtype == "uint8" and arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DecodeError(
                path, "array values outside 0..255 do not fit uint8; use dtype='float32'")
    arr = _convert_channels(arr, options.channels)
    arr = _resize(arr, options)  # uint8 or float32; OpenCV takes both
    if arr.dtype != np.uint8 and options.dtype == "uint8":
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


def _convert_channels(arr, channels):
    have = arr.shape[-1]
    if have == channels:
        return arr
    if have == 4:
        arr, have = arr[..., :3], 3
        if channels == 3:
            return arr
    if channels == 1:  # 3 -> 1, ITU-R 601-2 luma as Pillow's "L"
        luma = arr[..., :1] * 0.299 + arr[..., 1:2] * 0.587 + arr[..., 2:3] * 0.114
        return np.rint(luma).astype(arr.dtype) if arr.dtype == np.uint8 else luma
    if have == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if channels == 4:
        alpha = np.full(arr.shape[:2] + (1,), 255, arr.dtype)
        arr = np.concatenate([arr, alpha], axis=-1)
    return arr
