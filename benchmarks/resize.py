"""Resize after a DCT-scaled JPEG decode: Pillow vs OpenCV, one thread.

Run: ``python -m benchmarks.resize [--root DIR] [--images 320] [--sizes 224,64]``

Uses the JPEG tree of :mod:`benchmarks.loader` (generated there when
missing). Each image is decoded once with simplejpeg at the reduced DCT scale
longtail picks for the target (``min_height``/``min_width``), then resized to
the target square by each candidate; the table shows CPU milliseconds per
image (best of 3 passes) and how far each result is from Pillow's
antialiased bilinear resize (mean and max absolute difference in 0..255
levels over all pixels):

- ``Pillow BILINEAR``: ``Image.fromarray(a).resize(size, BILINEAR)`` then
  ``np.asarray`` (what longtail used before OpenCV);
- ``OpenCV INTER_LINEAR``: ``cv2.resize(a, size, INTER_LINEAR)`` (longtail's
  choice when the remaining downscale factor is at most 2, which the DCT
  scale guarantees for JPEGs);
- ``OpenCV INTER_AREA``: ``cv2.resize(a, size, INTER_AREA)`` (longtail's
  choice past a factor of 2).
"""

from __future__ import annotations

import argparse
import glob
import os
import time

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from benchmarks.loader import make_tree

CANDIDATES = {
    "Pillow BILINEAR": lambda a, s: np.asarray(
        Image.fromarray(a).resize((s, s), Image.Resampling.BILINEAR)),
    "OpenCV INTER_LINEAR": lambda a, s: cv2.resize(a, (s, s), interpolation=cv2.INTER_LINEAR),
    "OpenCV INTER_AREA": lambda a, s: cv2.resize(a, (s, s), interpolation=cv2.INTER_AREA),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/tmp/longtail-bench-jpeg")
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--sizes", default="224,64")
    args = parser.parse_args(argv)
    if not glob.glob(os.path.join(args.root, "*", "*.jpg")):
        make_tree(args.root, 3000, 5)
    files = sorted(glob.glob(os.path.join(args.root, "*", "*.jpg")))[:args.images]
    data = [open(f, "rb").read() for f in files]
    cv2.setNumThreads(0)
    print(f"{len(files)} JPEGs from {args.root}; one thread; OpenCV {cv2.__version__}, "
          f"Pillow {Image.__version__}")
    print(f"\n{'size':>5} {'resize':<20} {'decoded as':>11} {'CPU ms/img':>10} "
          f"{'vs Pillow':>9} {'mean |diff|':>11} {'max |diff|':>10}")
    for size in (int(s) for s in args.sizes.split(",")):
        decoded = [simplejpeg.decode_jpeg(d, min_height=size, min_width=size) for d in data]
        shape = "x".join(map(str, decoded[0].shape[1::-1]))
        reference = [CANDIDATES["Pillow BILINEAR"](a, size).astype(np.int16) for a in decoded]
        base = None
        for name, fn in CANDIDATES.items():
            best = float("inf")
            for _ in range(3):
                started = time.process_time()
                for a in decoded:
                    fn(a, size)
                best = min(best, time.process_time() - started)
            ms = best / len(decoded) * 1e3
            base = base or ms
            diff = np.concatenate([np.abs(fn(a, size).astype(np.int16) - r).ravel()
                                   for a, r in zip(decoded, reference)])
            print(f"{size:>5} {name:<20} {shape:>11} {ms:>10.3f} {base / ms:>8.1f}x "
                  f"{diff.mean():>11.2f} {diff.max():>10d}")


if __name__ == "__main__":
    main()
