"""Which JPEG DCT scale to decode at, per target size: decode + resize cost of every scale.

Run: ``python -m benchmarks.dct_scale [--sizes 64,112,160,224] [--files 40]
[--rounds 3] [--resize stretch,crop] [--root DIR] [--photo-root DIR]``

libjpeg-turbo decodes at any scale M/8 (M = 1..8), never one below the
target followed by an upscale; which one longtail asks for is
``longtail.decode._min_decode_size`` (the full size when a bilinear resize
from it suffices and the smallest covering scale is above 4/8, else the
smallest covering scale). This measures, on one thread, the CPU milliseconds per image of decoding
``--files`` JPEGs of each set of :mod:`benchmarks.loader` (the synthetic and
the photo set, 500x375) at every scale that covers the target, plus the
OpenCV resize longtail does from there (bilinear up to a factor of 2, area
averaging beyond). Scales are alternated within each round and the cheapest
of ``--rounds`` counts. The last column names the cheapest scale and whether
it is the one longtail picks.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np


def _cost(fn, datas) -> float:
    start = time.process_time()
    for data in datas:
        fn(data)
    return 1e3 * (time.process_time() - start) / len(datas)


def _box(h, w, size, resize):
    """The part of an (h, w) image that is resized to size x size."""
    if resize == "crop":
        side = min(h, w)
        return side, side
    return h, w


def measure(datas, sizes, rounds, height=375, width=500, resize="stretch") -> dict:
    import cv2
    import simplejpeg

    cv2.setNumThreads(0)
    best = {}
    for _ in range(rounds):
        for size in sizes:
            for m in range(1, 9):
                h, w = -(-height * m // 8), -(-width * m // 8)
                if min(h, w) < size:
                    continue  # below the target: never decoded (it would need an upscale)
                bh, bw = _box(h, w, size, resize)
                mode = cv2.INTER_AREA if max(bh, bw) / size > 2 else cv2.INTER_LINEAR

                def decode(data, h=h, w=w):
                    return simplejpeg.decode_jpeg(data, "RGB", min_height=h, min_width=w)

                def both(data, mode=mode):
                    image = decode(data)
                    ih, iw = image.shape[:2]
                    bh, bw = _box(ih, iw, size, resize)
                    top, left = (ih - bh) // 2, (iw - bw) // 2
                    cv2.resize(np.ascontiguousarray(image[top:top + bh, left:left + bw]),
                               (size, size), interpolation=mode)

                cost = (_cost(both, datas), _cost(decode, datas))
                old = best.get((size, m), (np.inf, np.inf))
                best[size, m] = (min(old[0], cost[0]), min(old[1], cost[1]))
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,112,160,224")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", default=None)
    parser.add_argument("--photo-root", default=None)
    parser.add_argument("--resize", default="stretch,crop")
    args = parser.parse_args(argv)
    from longtail.decode import DecodeOptions, _min_decode_size

    from benchmarks.loader import make_photo_tree, make_tree

    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = tempfile.gettempdir()
    for name, root, make in (
            ("synthetic", args.root or os.path.join(tmp, "longtail-bench-jpeg"), make_tree),
            ("photos", args.photo_root or os.path.join(tmp, "longtail-bench-photos"),
             make_photo_tree)):
        if not os.path.isdir(root) or not os.listdir(root):
            make(root, 3000, 5)
        files = sorted(glob.glob(os.path.join(root, "*", "*.jpg")))
        files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:args.files]]
        datas = [open(f, "rb").read() for f in files]
        kb = sum(map(len, datas)) / len(datas) / 1024
        for resize in args.resize.split(","):
            best = measure(datas, sizes, args.rounds, resize=resize)
            print(f"\n{name}, {resize}: {len(datas)} JPEGs of 500x375, {kb:.0f} KB each; "
                  "CPU ms per image, decode + resize (decode alone); "
                  f"load average {os.getloadavg()[0]:.1f}")
            _table(best, sizes, resize, DecodeOptions, _min_decode_size)


def _table(best, sizes, resize, options, min_size, height=375, width=500) -> None:
    for size in sizes:
        scales = sorted(m for s, m in best if s == size)
        cheapest = min(scales, key=lambda m: best[size, m][0])
        need = min_size(height, width, options(image_size=size, resize=resize))
        picked = next(m for m in scales  # what simplejpeg decodes for longtail's request
                      if -(-height * m // 8) >= need[0] and -(-width * m // 8) >= need[1])
        print(f"{size:>4}: " + "  ".join(
            f"{m}/8 {best[size, m][0]:.3f} ({best[size, m][1]:.3f})" for m in scales)
            + f"  | cheapest {cheapest}/8, "
            + ("longtail's pick" if cheapest == picked else f"longtail picks {picked}/8"))


if __name__ == "__main__":
    main()
