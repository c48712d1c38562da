"""Decoding straight into a batch array gives the pixels a separate decode gives.

``FileSource.read`` allocates one batch array and each image is resized into
its row (``decode_image(..., out=row)``); these tests check the pixels
against the decode that allocates its own array and against an independent
reference (simplejpeg at the DCT scale, then OpenCV's bilinear resize).
"""

import io

import cv2
import numpy as np
import pyarrow as pa
import pytest
import simplejpeg
from PIL import Image

from longtail.decode import DecodeOptions, decode_image, read_image
from longtail.sources.files import FileSource


def _photo_like(h, w, seed):
    """Smooth colours plus some texture, so JPEG and the resize both matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / (w - 1), y * 255 / (h - 1), (x + y) * 127 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _jpeg(image, quality=90, **kw):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def _files(tmp_path):
    """Files of every decode path: JPEG (plain, EXIF-turned, grayscale), PNG, .npy."""
    files = []
    for k, (h, w) in enumerate([(75, 100), (90, 60), (64, 64), (120, 160)]):
        path = tmp_path / f"{k}.jpg"
        path.write_bytes(_jpeg(_photo_like(h, w, k)))
        files.append(path)
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = tmp_path / "turned.jpg"
    turned.write_bytes(_jpeg(_photo_like(80, 100, 7), exif=exif.tobytes()))
    gray = tmp_path / "gray.jpg"
    gray.write_bytes(_jpeg(_photo_like(70, 90, 8)[..., 0]))
    png = tmp_path / "p.png"
    Image.fromarray(_photo_like(50, 70, 9)).save(png)
    npy = tmp_path / "a.npy"
    np.save(npy, _photo_like(40, 30, 10).astype(np.float32) / 2)
    return files + [turned, gray, png, npy]


@pytest.mark.parametrize("size,resize,color_mode,dtype", [
    ((24, 24), "stretch", "rgb", "uint8"),
    ((40, 30), "crop", "rgb", "uint8"),
    ((40, 30), "pad", "rgb", "uint8"),
    ((24, 32), "stretch", "grayscale", "uint8"),
    ((24, 24), "stretch", "rgba", "float32"),
    ((75, 100), "stretch", "rgb", "uint8"),  # the first file needs no resize
])
def test_batch_read_equals_separate_decodes(tmp_path, size, resize, color_mode, dtype):
    files = _files(tmp_path)
    source = FileSource(pa.array([p.name for p in files], pa.string()), str(tmp_path))
    options = DecodeOptions(image_size=size, resize=resize, color_mode=color_mode, dtype=dtype)
    order = np.array([3, 0, 5, 7, 1, 6, 2, 4, 0])
    batch = source.read(order, options)
    expected = np.stack([read_image(str(files[i]), options) for i in order])
    assert batch.dtype == expected.dtype and batch.shape == expected.shape
    np.testing.assert_array_equal(batch, expected)


@pytest.mark.parametrize("size", [(64, 64), (224, 224), (100, 140), (30, 20)])
def test_jpeg_into_a_row_is_the_reference_resize(size):
    """simplejpeg at the smallest DCT scale covering the target, then bilinear (or area)."""
    image = _photo_like(375, 500, 0)
    data = _jpeg(image)
    options = DecodeOptions(image_size=size)
    batch = np.full((3, *size, 3), 7, np.uint8)
    got = decode_image(data, options, out=batch[1])
    assert got is batch[1] or np.shares_memory(got, batch)
    decoded = simplejpeg.decode_jpeg(data, "RGB", min_height=size[0], min_width=size[1])
    assert decoded.shape[0] >= size[0] and decoded.shape[1] >= size[1]  # never upscaled
    factor = max(decoded.shape[0] / size[0], decoded.shape[1] / size[1])
    mode = cv2.INTER_AREA if factor > 2 else cv2.INTER_LINEAR
    reference = cv2.resize(decoded, (size[1], size[0]), interpolation=mode)
    np.testing.assert_array_equal(batch[1], reference)
    np.testing.assert_array_equal(batch[1], decode_image(data, options))
    assert (batch[0] == 7).all() and (batch[2] == 7).all()  # neighbours untouched
    # and close to a full-size decode resized by area averaging (the scale is a low-pass)
    full = cv2.resize(simplejpeg.decode_jpeg(data, "RGB"), (size[1], size[0]),
                      interpolation=cv2.INTER_AREA)
    # (per-pixel noise of sd 20 in the source: bilinear and area weigh it differently)
    assert np.abs(batch[1].astype(int) - full).mean() < 6


def test_out_of_the_wrong_shape_is_refused():
    data = _jpeg(_photo_like(30, 40, 1))
    with pytest.raises(ValueError, match="`out` must be an array of shape"):
        decode_image(data, DecodeOptions(image_size=(8, 8)), out=np.empty((8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="`out` must be"):
        decode_image(data, DecodeOptions(), out=np.empty((30, 40, 3), np.uint8))
