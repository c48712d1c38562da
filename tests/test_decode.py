"""Tests for longtail.decode: every format and mode, orientation, errors."""

import io
import warnings
from concurrent.futures import ThreadPoolExecutor
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from longtail.decode import DecodeOptions, decode_image, read_image, sniff_format
from longtail.errors import ConfigError, DecodeError


def _gradient(h=60, w=80):
    """A smooth RGB image (JPEG keeps it close)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1),
                     (x + y) * 255 // (h + w - 2)], -1).astype(np.uint8)


def _save(tmp_path, name, image, fmt, **kw):
    path = tmp_path / name
    image.save(path, fmt, **kw)
    return str(path)


def _close(a, b, tol):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() <= tol


RGB = _gradient()


@pytest.mark.parametrize("fmt,ext,tol", [
    ("PNG", "png", 0), ("BMP", "bmp", 0), ("TIFF", "tif", 0),
    ("WEBP", "webp", 3), ("JPEG", "jpg", 3), ("GIF", "gif", 12)])
def test_formats_decode_to_native_rgb(tmp_path, fmt, ext, tol):
    kw = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    path = _save(tmp_path, f"a.{ext}", Image.fromarray(RGB), fmt, **kw)
    out = read_image(path, DecodeOptions())
    assert out.dtype == np.uint8 and out.shape == (60, 80, 3)
    _close(out, RGB, tol)


def test_format_is_decided_by_content_not_extension(tmp_path):
    path = _save(tmp_path, "really_a_png.jpg", Image.fromarray(RGB), "PNG")
    assert sniff_format(open(path, "rb").read()) == "png"
    np.testing.assert_array_equal(read_image(path, DecodeOptions()), RGB)


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = str(tmp_path / "anim.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = read_image(path, DecodeOptions())
    assert tuple(out[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P+transparency", "RGBA", "CMYK", "I;16", "1"])
@pytest.mark.parametrize("color_mode", ["rgb", "grayscale", "rgba"])
def test_input_modes_convert_like_pillow(tmp_path, mode, color_mode):
    if mode == "I;16":
        src = Image.fromarray((RGB[..., 0].astype(np.uint16) * 257))
        reference = Image.fromarray(RGB[..., 0])  # 16-bit full range -> 8-bit
    elif mode == "P+transparency":
        src = Image.fromarray(RGB).convert("P")
        src.info["transparency"] = 0
        reference = src
    else:
        src = Image.fromarray(RGB).convert(mode)
        reference = src
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    path = _save(tmp_path, f"m.{fmt.lower()}", src, fmt)
    out = read_image(path, DecodeOptions(color_mode=color_mode))
    want = {"rgb": "RGB", "grayscale": "L", "rgba": "RGBA"}[color_mode]
    ref = reference
    if ref.mode in ("P", "LA") and want != "RGBA":
        ref = ref.convert("RGBA")
    expected = np.asarray(ref.convert(want))
    expected = expected[..., None] if expected.ndim == 2 else expected
    channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[color_mode]
    assert out.shape == (60, 80, channels) and out.dtype == np.uint8
    _close(out, expected, 1)


def test_16bit_png_scales_to_8bit(tmp_path):
    arr16 = (RGB[..., 1].astype(np.uint16) * 257)
    path = _save(tmp_path, "deep.png", Image.fromarray(arr16), "PNG")
    out = read_image(path, DecodeOptions(color_mode="grayscale"))
    np.testing.assert_array_equal(out[..., 0], RGB[..., 1])


def test_cmyk_jpeg_matches_pillow(tmp_path):
    src = Image.fromarray(RGB).convert("CMYK")
    path = _save(tmp_path, "cmyk.jpg", src, "JPEG", quality=95)
    out = read_image(path, DecodeOptions())
    _close(out, np.asarray(Image.open(path).convert("RGB")), 1)


def test_grayscale_jpeg_to_rgb_and_gray(tmp_path):
    path = _save(tmp_path, "g.jpg", Image.fromarray(RGB).convert("L"), "JPEG", quality=95)
    rgb = read_image(path, DecodeOptions())
    gray = read_image(path, DecodeOptions(color_mode="grayscale"))
    assert rgb.shape == (60, 80, 3) and gray.shape == (60, 80, 1)
    np.testing.assert_array_equal(rgb[..., 0], gray[..., 0])


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_honoured(tmp_path, orientation, fmt):
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = Image.fromarray(RGB)
    path = _save(tmp_path, f"o.{fmt.lower()}", src, fmt, exif=exif,
                 **({"quality": 95} if fmt == "JPEG" else {}))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    out = read_image(path, DecodeOptions())
    _close(out, expected, 1)
    # reduced-scale decode of a rotated JPEG still lands on the target size
    small = read_image(path, DecodeOptions(image_size=(12, 20)))
    assert small.shape == (12, 20, 3)
    ref = np.asarray(Image.fromarray(expected).resize((20, 12), Image.Resampling.BILINEAR))
    _close(small, ref, 6)


def test_reduced_dct_scale_resize_is_close_to_full_decode(tmp_path):
    big = np.asarray(Image.fromarray(_gradient(375, 500)))
    path = _save(tmp_path, "big.jpg", Image.fromarray(big), "JPEG", quality=90)
    out = read_image(path, DecodeOptions(image_size=(64, 64)))
    ref = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    assert out.shape == (64, 64, 3)
    _close(out, ref, 3)


@pytest.mark.parametrize("size,resize,decoded", [
    ((224, 224), "crop", (375, 500)),     # from full size: a 1.67x bilinear downscale
    ((300, 300), "stretch", (375, 500)),  # 1.67x: full size, not the scalar 7/8
    ((224, 224), "stretch", (235, 313)),  # full size would need 2.2x (area): 5/8
    ((64, 64), "stretch", (94, 125)),     # 2/8, the smallest that covers 64
    ((160, 160), "crop", (188, 250)),     # 4/8 (SIMD) covers it
])
def test_the_jpeg_scale_is_the_cheaper_measured_one_and_never_below_the_target(
        tmp_path, monkeypatch, size, resize, decoded):
    import simplejpeg

    import longtail.decode as decode

    path = _save(tmp_path, "big.jpg", Image.fromarray(_gradient(375, 500)), "JPEG",
                 quality=90)
    shapes, original = [], simplejpeg.decode_jpeg

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        shapes.append(out.shape[:2])
        return out

    monkeypatch.setattr(decode.simplejpeg, "decode_jpeg", recording)
    out = read_image(path, DecodeOptions(image_size=size, resize=resize))
    assert shapes == [decoded]
    assert out.shape == (*size, 3)
    full = np.asarray(Image.open(path).convert("RGB"))
    if resize == "crop":
        side = min(full.shape[:2])
        left = (full.shape[1] - side) // 2
        full = full[:, left:left + side]
    ref = np.asarray(Image.fromarray(full).resize(size[::-1], Image.Resampling.BILINEAR))
    _close(out, ref, 3)


def test_resize_modes(tmp_path):
    src = np.zeros((40, 80, 3), np.uint8)
    src[:, 16:64] = 200  # a centred square (20:60) with a margin for the filter
    path = _save(tmp_path, "wide.png", Image.fromarray(src), "PNG")
    stretch = read_image(path, DecodeOptions(image_size=(20, 20)))
    crop = read_image(path, DecodeOptions(image_size=(20, 20), resize="crop"))
    pad = read_image(path, DecodeOptions(image_size=20, resize="pad"))
    assert stretch.shape == crop.shape == pad.shape == (20, 20, 3)
    assert crop.min() == 200  # the crop is the square only
    assert stretch[:, 0].max() == 0 and stretch[:, 10].min() == 200
    # pad: 80x40 fits as 20x10, rows 5..14 hold content, the rest is zero
    assert pad[:5].max() == 0 and pad[15:].max() == 0
    assert pad[5:15, 10].min() == 200


def test_float32_output_keeps_0_255(tmp_path):
    path = _save(tmp_path, "a.png", Image.fromarray(RGB), "PNG")
    out = read_image(path, DecodeOptions(dtype="float32"))
    assert out.dtype == np.float32 and out.max() == 255.0
    np.testing.assert_array_equal(out, RGB.astype(np.float32))


@pytest.mark.parametrize("shape", [(60, 80), (60, 80, 1), (60, 80, 3), (60, 80, 4)])
def test_npy_arrays(tmp_path, shape):
    arr = RGB[..., 0] if len(shape) == 2 else (
        RGB[..., :1] if shape[-1] == 1 else RGB if shape[-1] == 3
        else np.concatenate([RGB, np.full((60, 80, 1), 9, np.uint8)], -1))
    path = tmp_path / "a.npy"
    np.save(path, arr)
    out = read_image(path, DecodeOptions(color_mode="rgba"))
    assert out.shape == (60, 80, 4)
    resized = read_image(path, DecodeOptions(image_size=(30, 40), color_mode="grayscale"))
    assert resized.shape == (30, 40, 1)


def test_float_npy_resized_and_range_checked(tmp_path):
    path = tmp_path / "f.npy"
    np.save(path, RGB.astype(np.float32) / 2)
    out = read_image(path, DecodeOptions(image_size=(30, 40), dtype="float32"))
    assert out.shape == (30, 40, 3) and out.dtype == np.float32
    np.save(path, RGB.astype(np.float32) * 4)
    with pytest.raises(DecodeError, match="f.npy.*dtype='float32'"):
        read_image(path, DecodeOptions())


def test_pickled_npy_is_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DecodeError, match="obj.npy"):
        read_image(path, DecodeOptions())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_truncated_files_raise_decode_error_naming_the_file(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(_gradient(120, 160)).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError) as info:
        read_image(str(path), DecodeOptions(image_size=(32, 32)))
    assert info.value.path == str(path) and str(path) in str(info.value)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff" + bytes(64), b"hello world" * 50,
                                  np.random.default_rng(0).bytes(4096)])
def test_garbage_raises_decode_error(tmp_path, data):
    path = tmp_path / "junk.png"
    path.write_bytes(data)
    with pytest.raises(DecodeError, match="junk.png"):
        read_image(str(path), DecodeOptions())


def test_missing_file_raises_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="nope.jpg.*cannot read"):
        read_image(str(tmp_path / "nope.jpg"), DecodeOptions())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decompression_bomb_guard(tmp_path, fmt):
    path = _save(tmp_path, "bomb." + fmt.lower(), Image.fromarray(RGB), fmt)
    with pytest.raises(DecodeError, match="max_pixels=1000"):
        read_image(path, DecodeOptions(max_pixels=1000))
    assert read_image(path, DecodeOptions(max_pixels=None)).shape == (60, 80, 3)


def test_bytes_input():
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, "PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue(), DecodeOptions()), RGB)


@pytest.mark.parametrize("kw,arg", [
    ({"color_mode": "RGB"}, "`color_mode` must be one of rgb, grayscale, rgba; got 'RGB'"),
    ({"resize": "fit"}, "`resize` must be one of stretch, crop, pad; got 'fit'"),
    ({"dtype": "float64"}, "`dtype` must be one of uint8, float32"),
    ({"image_size": (0, 3)}, "`image_size` must be"),
    ({"image_size": "64y"}, "`image_size` must be"),
    ({"max_pixels": 0}, "`max_pixels` must be"),
])
def test_options_are_checked(kw, arg):
    with pytest.raises(ConfigError, match=arg.replace("(", r"\(").replace(")", r"\)")):
        DecodeOptions(**kw)


def test_options_normalise_image_size():
    assert DecodeOptions(image_size=64).image_size == (64, 64)
    assert DecodeOptions(image_size=[32, 48]).image_size == (32, 48)
    assert DecodeOptions(color_mode="rgba").channels == 4


def _png_with_truncated_exif() -> bytes:
    """A PNG whose eXIf chunk ends inside a tag's data: Pillow warns 'Truncated File Read'."""
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010E] = "x" * 40
    out = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).save(out, "PNG",
                                                           exif=exif.tobytes()[:-30])
    return out.getvalue()


def test_pillow_metadata_warnings_are_hidden_only_while_decoding():
    data = _png_with_truncated_exif()
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decode_image(data, DecodeOptions(image_size=(4, 4))).mean() == 90
        assert caught == []
        with ThreadPoolExecutor(8) as pool:  # decodes that overlap in time
            assert all(a.mean() == 90 for a in pool.map(
                lambda _: decode_image(data, DecodeOptions(image_size=(4, 4))), range(64)))
        assert caught == []
        # Outside longtail's decode the same warning reaches the user.
        Image.open(io.BytesIO(data)).getexif()
        assert [str(w.message) for w in caught] == ["Truncated File Read"]
    assert warnings.filters == before


# ------------------------------------------------------------- file-size limit
def _sparse(path, size):
    """A file of ``size`` bytes that takes no disk space (nothing big is written)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def test_a_file_far_larger_than_any_image_is_not_read(tmp_path):
    import tracemalloc

    from longtail.options import MAX_FILE_BYTES

    big = _sparse(tmp_path / "huge.jpg", MAX_FILE_BYTES + 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as e:
            read_image(big, DecodeOptions(image_size=8))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # refused from its size: not read into memory
    assert e.value.path == big
    assert f"the file is {MAX_FILE_BYTES + 2**20:,} bytes, more than max_file_bytes=" \
           f"{MAX_FILE_BYTES:,}" in str(e.value)


def test_max_file_bytes_is_an_option(tmp_path):
    from longtail.decode import read_file
    from longtail.options import file_size_limit

    path = _save(tmp_path, "g.png", Image.fromarray(_gradient()), "PNG")
    size = os.path.getsize(path)
    assert read_image(path, DecodeOptions(max_file_bytes=size)).shape == (60, 80, 3)
    with pytest.raises(DecodeError, match=rf"more than max_file_bytes={size - 1:,}"):
        read_image(path, DecodeOptions(max_file_bytes=size - 1))
    with file_size_limit(size - 1):  # what --max-file-bytes sets around a command
        assert DecodeOptions().max_file_bytes == size - 1
        with pytest.raises(DecodeError, match=rf"more than max_file_bytes={size - 1:,}"):
            read_file(path)
    with file_size_limit("1K"):
        assert DecodeOptions().max_file_bytes == 1024
    assert DecodeOptions().max_file_bytes == 256 * 2**20
    assert DecodeOptions(max_file_bytes=None).max_file_bytes is None  # no limit
    assert DecodeOptions(max_file_bytes="2G").max_file_bytes == 2 * 2**30
    for bad in (0, -1, "lots", 1.5, True):
        with pytest.raises(ConfigError, match=r"`max_file_bytes` must be a positive number"):
            DecodeOptions(max_file_bytes=bad)


def test_too_large_files_are_unreadable_files_in_the_loader(tmp_path):
    import longtail as lt

    paths = []
    for i in range(4):
        paths.append(_save(tmp_path, f"{i}.png", Image.fromarray(_gradient()), "PNG"))
    paths.append(_sparse(tmp_path / "big.jpg", 300 * 2**20))
    ds = lt.Dataset.from_arrays(paths, [0, 1, 0, 1, 1])
    loader = ds.loader(batch_size=5, image_size=8, sampling="sequential", num_workers=0,
                       drop_remainder=False)
    with pytest.warns(UserWarning, match="big.jpg: the file is 314,572,800 bytes"):
        x, _ = next(iter(loader))
    assert x.shape == (5, 8, 8, 3)  # the big file replaced, as an unreadable one is
    assert [e.path for e in loader.errors] == [paths[4]]
    assert "more than max_file_bytes=268,435,456" in loader.errors[0].reason
    strict = ds.loader(batch_size=5, image_size=8, sampling="sequential", num_workers=0,
                       on_error="raise", max_file_bytes=2**30)
    assert strict.options.max_file_bytes == 2**30
