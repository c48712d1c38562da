"""Image options, parsed in one place: size, colour mode, resize, dtype, pixel limit.

The loader, training, the cache, evaluation, prediction and the PyTorch
adapter all take the same options with the same spellings; each is parsed
here, once, so ``Dataset.loader(image_size="64x48")`` and
``train(image_size="64x48")`` mean the same thing and fail the same way.

Example:
    >>> parse_image_size("64x48")
    (64, 48)
    >>> ImageOptions(image_size=32, color_mode="grayscale").channels
    1
"""

from __future__ import annotations

import contextlib
import dataclasses
import re

import numpy as np

from longtail.errors import ConfigError

__all__ = ["COLOR_MODES", "DTYPES", "MAX_FILE_BYTES", "MAX_PIXELS", "MAX_SIDE", "RESIZE_MODES",
           "ImageOptions",
           "channels_of", "color_mode_of", "file_size_limit", "parse_image_size",
           "parse_max_file_bytes", "parse_max_pixels", "parse_one_of"]

COLOR_MODES = {"rgb": 3, "grayscale": 1, "rgba": 4}  # colour mode -> channel count
RESIZE_MODES = ("stretch", "crop", "pad")
DTYPES = ("uint8", "float32")
MAX_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit
MAX_SIDE = 8192
#: Files larger than this are not read (no image file is near it; a 2 GB file
#: named .jpg would otherwise be read whole into memory). ``--max-file-bytes``.
MAX_FILE_BYTES = 256 * 2**20
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_file_bytes_default = [MAX_FILE_BYTES]  # what ImageOptions() uses; see file_size_limit


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def parse_one_of(name: str, value, accepted):
    """Returns ``value`` if it is one of ``accepted``, else raises ConfigError."""
    if not isinstance(value, str) or value not in accepted:
        raise ConfigError(f"`{name}` must be one of {', '.join(accepted)}; got {value!r}")
    return value


def parse_image_size(value, name: str = "image_size") -> tuple[int, int] | None:
    """Parses an image size into ``(height, width)``.

    Args:
        value: None (keep each image's own size), an int ``N`` (square), a
            string ``"N"`` or ``"HxW"`` (height first, as ``--image-size``),
            or a ``(height, width)`` pair; sides in 1..8192.
        name: The parameter named in the error message.

    Returns:
        ``(height, width)`` as ints, or None.

    Raises:
        ConfigError: Anything else, e.g. ``"64y48"``, ``0`` or ``(64, 48, 3)``.
    """
    if value is None:
        return None
    expected = (f"`{name}` must be N, \"HxW\" or a (height, width) pair of ints in "
                f"1..{MAX_SIDE}; got {value!r}")
    size = value
    if isinstance(value, str):
        try:
            size = [int(p) for p in value.lower().split("x")]
        except ValueError:
            raise ConfigError(expected) from None
    if _is_int(size):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) in (1, 2)
            and all(_is_int(s) for s in size)):
        raise ConfigError(expected)
    size = tuple(int(s) for s in size) * (2 if len(size) == 1 else 1)
    if min(size) < 1 or max(size) > MAX_SIDE:
        raise ConfigError(expected)
    return size


def channels_of(color_mode: str) -> int:
    """The channel count of a colour mode: rgb 3, grayscale 1, rgba 4."""
    return COLOR_MODES[parse_one_of("color_mode", color_mode, tuple(COLOR_MODES))]


def color_mode_of(channels: int) -> str:
    """The colour mode with ``channels`` channels (what a model's input shape implies)."""
    for mode, count in COLOR_MODES.items():
        if count == channels:
            return mode
    raise ConfigError(f"`channels` must be one of 1, 3, 4; got {channels!r}")


def parse_max_pixels(value, name: str = "max_pixels") -> int | None:
    """Checks the decompression-bomb limit: a positive int, or None for none."""
    if value is not None and (not _is_int(value) or value < 1):
        raise ConfigError(f"`{name}` must be a positive int or None; got {value!r}")
    return None if value is None else int(value)


def parse_max_file_bytes(value, name: str = "max_file_bytes") -> int | None:
    """The file-size limit: a positive int of bytes, a string such as ``"512M"``
    or ``"2G"`` (K, M, G, T: powers of 1024), or None for no limit."""
    size = value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)i?b?\s*", value.lower())
        size = int(match[1]) * _UNITS[match[2]] if match else None
    if value is not None and (not _is_int(size) or size < 1):
        raise ConfigError(f"`{name}` must be a positive number of bytes (e.g. 268435456, "
                          f"512M, 2G) or None; got {value!r}")
    return None if value is None else int(size)


@contextlib.contextmanager
def file_size_limit(value):
    """Sets the default ``max_file_bytes`` of every :class:`ImageOptions` made inside.

    The command line's ``--max-file-bytes`` is this, around the whole command,
    so the loader, the cache, evaluation and prediction all apply it.
    """
    previous = _file_bytes_default[0]
    _file_bytes_default[0] = parse_max_file_bytes(value)
    try:
        yield
    finally:
        _file_bytes_default[0] = previous


_DEFAULT = "default"


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How a sample becomes an array (``longtail.decode.DecodeOptions`` is this class).

    Args:
        image_size: ``(height, width)`` of the output, an int for a square,
            ``"HxW"``, or None to keep each image's own size.
        color_mode: ``"rgb"`` (3 channels, alpha dropped as Keras does),
            ``"grayscale"`` (1 channel, ITU-R 601 luma) or ``"rgba"``
            (4 channels, opaque alpha added where missing).
        resize: ``"stretch"`` (default, like Keras: ignore the aspect ratio),
            ``"crop"`` (centre crop to the target aspect ratio, then resize)
            or ``"pad"`` (resize to fit, centre, pad with zeros).
        dtype: ``"uint8"`` or ``"float32"``; values stay in 0..255 either
            way (scaling belongs in the model).
        max_pixels: refuse images with more pixels than this (decompression
            bomb guard); None for no limit. Pillow's own limit
            (``PIL.Image.MAX_IMAGE_PIXELS``) still applies to non-JPEG files.
        max_file_bytes: files larger than this are not read: they are
            unreadable files, with a message naming the file and the limit
            (default :data:`MAX_FILE_BYTES`, 256 MiB, or the limit of an
            enclosing :func:`file_size_limit`); None for no limit.
    """

    image_size: tuple[int, int] | None = None
    color_mode: str = "rgb"
    resize: str = "stretch"
    dtype: str = "uint8"
    max_pixels: int | None = MAX_PIXELS
    max_file_bytes: int | None = _DEFAULT

    def __post_init__(self):
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        parse_one_of("color_mode", self.color_mode, tuple(COLOR_MODES))
        parse_one_of("resize", self.resize, RESIZE_MODES)
        parse_one_of("dtype", self.dtype, DTYPES)
        object.__setattr__(self, "max_pixels", parse_max_pixels(self.max_pixels))
        limit = self.max_file_bytes
        object.__setattr__(self, "max_file_bytes", _file_bytes_default[0] if limit == _DEFAULT
                           else parse_max_file_bytes(limit))

    @property
    def channels(self) -> int:
        """Number of output channels: 3, 1 or 4."""
        return COLOR_MODES[self.color_mode]
