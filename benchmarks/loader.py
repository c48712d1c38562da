"""Loader throughput and memory: longtail vs tf.data, a hand-written PyDataset, a bare pipeline.

Run: ``python -m benchmarks.loader [--sets synthetic,photos] [--images 3000]
[--classes 5] [--root DIR] [--photo-root DIR] [--sizes 224,64]
[--batch-size 32] [--epochs 2] [--rounds 2] [--one-thread 1]
[--stream-epochs 8] [--plan-samples 10000000] [--plans-only]``

First times every sampling plan of :mod:`longtail.sampling` over 10 million
long-tailed labels (``--plan-samples 0`` skips it).

Two sets of long-tailed folder-per-class trees of 500x375 JPEGs at quality
90, generated unless their folder already holds one (nothing downloaded):

- ``synthetic`` (``--root``): random images with the 1/f spectrum of
  photographs, noise-heavy, about 90 KB each: entropy decoding dominates;
- ``photos`` (``--photo-root``): random crops (60-100% of the largest 4:3
  box), rescales and horizontal flips of the colour photographs that ship
  inside scikit-image (astronaut, chelsea, coffee, rocket,
  immunohistochemistry, hubble_deep_field, retina) and scikit-learn
  (``load_sample_images``: china, flower), about 44 KB each.

Then measures, each candidate in a fresh subprocess (``KERAS_BACKEND=jax``;
``tensorflow`` for tf.data) on a warm page cache:

- ``longtail``: ``Dataset.from_directory(root).loader(batch_size,
  image_size=(s, s), sampling="shuffle")``, its default threads;
- ``tf.data``: ``keras.utils.image_dataset_from_directory(root,
  image_size=(s, s), batch_size)`` then ``.prefetch(tf.data.AUTOTUNE)``;
- ``PyDataset``: a ``keras.utils.PyDataset`` whose ``__getitem__`` opens each
  file with Pillow, converts to RGB, resizes and stacks, as hand-written
  generators do, with ``workers`` = cores (threads), fed through Keras' own
  PyDataset adapter as ``fit`` does;
- ``bare``: a thread pool (as many threads as longtail's default) where each
  thread reads, decodes (simplejpeg at the smallest DCT scale covering the
  target) and resizes (OpenCV) a whole batch into one array, with the same
  read-ahead: longtail's JPEG path with nothing else.

Each candidate runs one warm-up epoch, then ``--epochs`` timed epochs, and
the whole comparison is repeated ``--rounds`` times, interleaved (every set,
size and candidate once per round); the table shows the best epoch of each
candidate (other work on a shared machine only ever slows an epoch down). It
reports images per second (wall clock), images per CPU-second of the whole
process (all its threads; robust to other load on the machine), ratios to
each peer, and the process' peak RSS. tf.data batches are consumed as TF
tensors (no NumPy conversion), which favours tf.data. ``--one-thread``
then compares the pipelines on one thread each (passes alternated). A last
run streams longtail for ``--stream-epochs`` epochs and samples RSS to show
it stays flat.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

CANDIDATES = ("longtail", "tf.data", "PyDataset", "bare")
IMPORTS = {"longtail": ("longtail.loader",), "tf.data": ("tensorflow", "keras"),
           "PyDataset": ("keras", "PIL.Image"), "bare": ("simplejpeg", "cv2")}


def natural_image(rng, height=375, width=500, beta=1.2) -> np.ndarray:
    """Random RGB image with a natural-image spectrum (amplitude ~ 1/f**beta)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(height, width)) ** beta
    amplitude[0, 0] = 0.0

    def field():
        phase = np.exp(2j * np.pi * rng.random(amplitude.shape))
        return np.fft.irfft2(amplitude * phase, s=(height, width))

    shared = field()  # colour channels are strongly correlated in photos
    channels = [0.8 * shared + 0.2 * field() for _ in range(3)]
    image = np.stack([(c - c.mean()) / c.std() for c in channels], -1)
    return np.clip(image * 50 + rng.uniform(80, 176, 3), 0, 255).astype(np.uint8)


def _write_tree(root: str, images: int, classes: int, rng, image) -> None:
    """Long-tailed folder tree (10x head to tail) of JPEGs at quality 90 from ``image()``."""
    from PIL import Image

    shares = 10.0 ** (-np.arange(classes) / max(classes - 1, 1))
    counts = np.maximum(1, np.round(images * shares / shares.sum())).astype(int)
    for c, n in enumerate(counts):
        folder = os.path.join(root, f"class_{c}")
        os.makedirs(folder, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.ascontiguousarray(image())).save(
                os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def make_tree(root: str, images: int, classes: int, seed: int = 0) -> None:
    """Long-tailed folder tree of 500x375 JPEGs at quality 90 (~90 KB each)."""
    rng = np.random.default_rng(seed)
    _write_tree(root, images, classes, rng, lambda: natural_image(rng))


def photo_sources() -> list:
    """The colour photographs that ship inside scikit-image and scikit-learn (no download)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
             "hubble_deep_field", "retina")
    images = [getattr(skimage.data, n)()[..., :3] for n in names]
    return images + list(load_sample_images().images)  # china, flower


def photo(rng, sources, height=375, width=500) -> np.ndarray:
    """A random crop (60-100% of the largest 4:3 box), rescale and flip of a real photograph."""
    import cv2

    src = sources[rng.integers(len(sources))]
    sh, sw = src.shape[:2]
    box_h = min(sh, sw * height // width)
    scale = rng.uniform(0.6, 1.0)
    ch = max(32, int(box_h * scale))
    cw = min(sw, ch * width // height)
    top, left = rng.integers(sh - ch + 1), rng.integers(sw - cw + 1)
    crop = np.ascontiguousarray(src[top:top + ch, left:left + cw])
    shrink = ch > height
    out = cv2.resize(crop, (width, height),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return out[:, ::-1] if rng.random() < 0.5 else out


def make_photo_tree(root: str, images: int, classes: int, seed: int = 0) -> None:
    """Long-tailed tree of 500x375 JPEGs (quality 90) cut from real photographs."""
    rng = np.random.default_rng(seed)
    sources = photo_sources()
    _write_tree(root, images, classes, rng, lambda: photo(rng, sources))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_s() -> float:
    """CPU seconds of this process, all threads, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _longtail(root, size, batch_size):
    import longtail as lt

    loader = lt.Dataset.from_directory(root, progress=False).loader(
        batch_size=batch_size, image_size=(size, size), sampling="shuffle",
        drop_remainder=False)
    return lambda: iter(loader)


def _tfdata(root, size, batch_size):
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(
        root, image_size=(size, size), batch_size=batch_size, verbose=False)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return lambda: iter(ds)


def _pydataset(root, size, batch_size, workers=None, paths=None):
    import keras
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
    from PIL import Image

    if paths is None:
        paths, labels = [], []
        for c, name in enumerate(sorted(os.listdir(root))):
            for file in sorted(os.listdir(os.path.join(root, name))):
                paths.append(os.path.join(root, name, file))
                labels.append(c)
        labels = np.array(labels)
    else:
        labels = np.zeros(len(paths), np.int32)

    class Generator(keras.utils.PyDataset):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.order = np.random.default_rng(0).permutation(len(paths))

        def __len__(self):
            return -(-len(paths) // batch_size)

        def __getitem__(self, i):
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            x = np.stack([np.asarray(Image.open(paths[j]).convert("RGB").resize((size, size)))
                          for j in idx])
            return x, labels[idx]

    if workers == 1:
        return Generator(workers=1)
    adapter = PyDatasetAdapter(Generator(workers=os.cpu_count()), shuffle=False)

    def epoch():
        adapter.on_epoch_begin()
        yield from adapter.get_numpy_iterator()
        adapter.on_epoch_end()

    return epoch


def _list_tree(root):
    paths, labels = [], []
    for c, name in enumerate(sorted(os.listdir(root))):
        for file in sorted(os.listdir(os.path.join(root, name))):
            paths.append(os.path.join(root, name, file))
            labels.append(c)
    return paths, np.array(labels, np.int32)


def bare_batch(paths, size):
    """Read, decode (simplejpeg, smallest DCT scale covering ``size``), resize into one array."""
    import cv2
    import simplejpeg

    out = np.empty((len(paths), size, size, 3), np.uint8)
    for j, path in enumerate(paths):
        with open(path, "rb") as f:
            data = f.read()
        image = simplejpeg.decode_jpeg(data, "RGB", min_height=size, min_width=size)
        factor = max(image.shape[0], image.shape[1]) / size
        cv2.resize(image, (size, size), dst=out[j],
                   interpolation=cv2.INTER_AREA if factor > 2 else cv2.INTER_LINEAR)
    return out


def _bare(root, size, batch_size, workers=None):
    """The bare threaded pipeline: a thread pool, each thread a whole batch, bounded read-ahead.

    The same work as longtail's JPEG path (same decoder and DCT scale, same
    resize, same threads: twice the cores, ``workers + 2`` batches ahead)
    without anything else: no plan, no Grain, no error handling, no EXIF.
    """
    import collections
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    cv2.setNumThreads(0)
    paths, labels = _list_tree(root)
    workers = workers or min(32, 2 * (os.cpu_count() or 1))
    pool = ThreadPoolExecutor(workers)
    epochs = [0]

    def batch(idx):
        return bare_batch([paths[i] for i in idx], size), labels[idx]

    def epoch():
        order = np.random.default_rng(epochs[0]).permutation(len(paths))
        epochs[0] += 1
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        pending = collections.deque()
        for chunk in chunks:
            pending.append(pool.submit(batch, chunk))
            if len(pending) > workers + 2:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    return epoch


def run_one(candidate: str, root: str, size: int, batch_size: int, epochs: int) -> dict:
    build = {"longtail": _longtail, "tf.data": _tfdata, "PyDataset": _pydataset,
             "bare": _bare}[candidate]
    for module in IMPORTS[candidate]:  # libraries count in "before", pipelines not
        importlib.import_module(module)
    before = rss_mb()
    epoch = build(root, size, batch_size)
    for _ in epoch():  # warm-up epoch: imports, thread pools, page cache
        pass
    best, best_cpu = 0.0, 0.0
    for _ in range(epochs):
        start, cpu, images = time.perf_counter(), cpu_s(), 0
        for batch in epoch():
            images += len(batch[1])
        best = max(best, images / (time.perf_counter() - start))
        best_cpu = max(best_cpu, images / (cpu_s() - cpu))
    return {"candidate": candidate, "size": size, "images": images, "images_per_s": best,
            "images_per_cpu_s": best_cpu, "rss_before_mb": before, "peak_rss_mb": peak_mb()}


def one_core(root: str, size: int, batch_size: int, rounds: int, images: int = 320) -> dict:
    """CPU cost per image on one thread, passes of the pipelines alternated.

    Each candidate decodes the same ``images`` files without worker threads:
    longtail with ``num_workers=0``; tf.data mapping the function
    ``image_dataset_from_directory`` maps (``_load_image_tf``) sequentially,
    TF limited to one inter-op and one intra-op thread, no prefetch; the
    PyDataset called directly; the bare pipeline's batch function on the
    calling thread. Passes alternate between candidates
    ``rounds`` times and the cheapest pass of each counts, so all see the
    same machine conditions; the process CPU time (all threads) is charged.
    """
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    from keras.src.utils.image_dataset_utils import _load_image_tf

    import longtail as lt

    full = lt.Dataset.from_directory(root, progress=False)
    pick = np.random.default_rng(0).permutation(len(full))[:images]
    ds = full.subset(pick)
    loader = ds.loader(batch_size=batch_size, image_size=(size, size), num_workers=0,
                       sampling="sequential")
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_optimization.map_parallelization = False
    options.experimental_optimization.inject_prefetch = False
    tfds = tf.data.Dataset.from_tensor_slices((ds.paths, ds.labels)).map(
        tf.autograph.experimental.do_not_convert(
            lambda p, y: (_load_image_tf(p, (size, size), 3, "bilinear", "channels_last"), y))
    ).batch(batch_size).with_options(options)
    generator = _pydataset(root, size, batch_size, workers=1, paths=list(ds.paths))
    paths = list(ds.paths)

    def bare():
        for i in range(0, len(paths), batch_size):
            yield bare_batch(paths[i:i + batch_size], size), ds.labels[i:i + batch_size]

    passes = {"longtail": lambda: iter(loader), "tf.data": lambda: iter(tfds),
              "PyDataset": lambda: (generator[i] for i in range(len(generator))),
              "bare": bare}
    best = {c: (float("inf"), float("inf")) for c in CANDIDATES}
    for round_ in range(rounds + 1):  # round 0 warms up
        for c in CANDIDATES:
            start, start_cpu, n = time.perf_counter(), cpu_s(), 0
            for batch in passes[c]():
                n += len(batch[1])
            cost = (1e3 * (cpu_s() - start_cpu) / n, 1e3 * (time.perf_counter() - start) / n)
            if round_:
                best[c] = min(best[c], cost)
    return {c: {"cpu_ms": best[c][0], "wall_ms": best[c][1]} for c in CANDIDATES}


def stream(root: str, size: int, batch_size: int, epochs: int) -> dict:
    """RSS while longtail streams many epochs (far more pixels than RAM it uses)."""
    import longtail as lt

    ds = lt.Dataset.from_directory(root, progress=False)
    loader = ds.loader(batch_size=batch_size, image_size=(size, size), sampling="balanced")
    samples, images = [], 0
    for _ in range(epochs):
        for x, y in loader:
            images += len(y)
        samples.append(rss_mb())
    return {"images": images, "rss_mb": samples,
            "decoded_gb": images * size * size * 3 / 2**30,
            "loader_budget_mb": loader.prefetch * batch_size * size * size * 3 / 2**20}


def plan_times(samples: int, classes: int = 1000) -> dict:
    """Seconds to build one epoch's plan of every sampler over ``samples`` labels."""
    from longtail.sampling import SAMPLERS, resolve_sampling

    rng = np.random.default_rng(0)
    shares = 1.0 / np.arange(1, classes + 1) ** 1.2  # a long tail, imbalance ~4000
    labels = rng.choice(classes, size=samples, p=shares / shares.sum())
    times = {}
    for name in SAMPLERS:
        sampler = resolve_sampling(name)
        sampler.plan(labels, seed=0, epoch=0)  # first touch of the memory
        start = time.perf_counter()
        sampler.plan(labels, seed=0, epoch=1)
        times[name] = time.perf_counter() - start
    return times


def _child(args) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "KERAS_BACKEND": "tensorflow" if args[0] in ("tf.data", "one_core") else "jax"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.loader", "--child", json.dumps(args)],
                         env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--root", default=None, help="the synthetic set's folder")
    parser.add_argument("--photo-root", default=None, help="the photo set's folder")
    parser.add_argument("--sets", default="synthetic,photos")
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help="a subset of longtail,tf.data,PyDataset,bare (ratios to the "
                        "ones measured)")
    parser.add_argument("--one-thread", type=int, default=1,
                        help="0 skips the one-thread comparison")
    parser.add_argument("--sizes", default="224,64")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stream-epochs", type=int, default=8)
    parser.add_argument("--plan-samples", type=int, default=10_000_000)
    parser.add_argument("--plans-only", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        kind = spec[0]
        result = (stream(*spec[1:]) if kind == "stream" else
                  one_core(*spec[1:]) if kind == "one_core" else run_one(*spec))
        print(json.dumps(result))
        return
    if args.plan_samples:
        times = plan_times(args.plan_samples)
        print(f"sampling plans over {args.plan_samples:,} labels in 1000 long-tailed classes, "
              "seconds per epoch: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    if args.plans_only:
        return
    sets = {}
    for name in args.sets.split(","):
        if name not in ("synthetic", "photos"):
            raise SystemExit(f"--sets: expected synthetic and/or photos; got {name!r}")
        default = "longtail-bench-jpeg" if name == "synthetic" else "longtail-bench-photos"
        root = (args.root if name == "synthetic" else args.photo_root) or os.path.join(
            tempfile.gettempdir(), default)
        if not os.path.isdir(root) or not os.listdir(root):
            print(f"generating {args.images} {name} JPEGs in {root} ...", flush=True)
            (make_tree if name == "synthetic" else make_photo_tree)(
                root, args.images, args.classes)
        files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        size_mb = sum(os.path.getsize(f) for f in files) / 2**20
        for f in files:  # warm the page cache for every candidate alike
            with open(f, "rb") as handle:
                handle.read()
        sets[name] = root
        print(f"{name}: {len(files)} JPEGs, {size_mb:.0f} MB "
              f"({1024 * size_mb / len(files):.0f} KB each), in {root}")
    print(f"{os.cpu_count()} cores; batch size {args.batch_size}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    sizes = [int(s) for s in args.sizes.split(",")]
    chosen = [c for c in CANDIDATES if c in args.candidates.split(",")]
    rows = {}
    for _ in range(args.rounds):  # interleaved: every candidate once per round
        for name, root in sets.items():
            for size in sizes:
                for c in chosen:
                    r = _child([c, root, size, args.batch_size, args.epochs])
                    best = rows.setdefault((name, size, c), r)
                    for key in ("images_per_s", "images_per_cpu_s"):
                        best[key] = max(best[key], r[key])
                    best["peak_rss_mb"] = min(best["peak_rss_mb"], r["peak_rss_mb"])
    header = (f"{'set':<10}{'size':>5} {'loader':<10} {'images/s':>9} {'/tf.data':>9} "
              f"{'/PyDataset':>10} {'/bare':>7} {'img/CPU-s':>10} {'/tf.data':>9} "
              f"{'/PyDataset':>10} {'/bare':>7} {'peak RSS MB':>11}")
    print(header)
    print("-" * len(header))
    for name in sets:
        for size in sizes:
            ref = {c: rows.get((name, size, c)) for c in CANDIDATES}
            for c in chosen:
                r = ref[c]
                line = f"{name:<10}{size:>5} {c:<10} {r['images_per_s']:>9.0f} "
                for key in ("images_per_s", "images_per_cpu_s"):
                    if key == "images_per_cpu_s":
                        line += f"{r[key]:>10.0f} "
                    line += "".join(f"{r[key] / ref[o][key]:>{w}.2f}x" if ref[o] else
                                    f"{'-':>{w + 1}}"
                                    for o, w in (("tf.data", 8), ("PyDataset", 9),
                                                 ("bare", 6)))
                    line += " "
                print(line + f"{r['peak_rss_mb']:>11.0f}", flush=True)
    if args.one_thread:
        print(f"\none thread each, same 320 files, passes alternated, best of {args.rounds}: "
              "CPU ms per image (wall ms per image)")
        for name, root in sets.items():
            for size in sizes:
                r = _child(["one_core", root, size, args.batch_size, args.rounds])
                cost = {c: r[c]["cpu_ms"] for c in CANDIDATES}
                print(f"{name:<10}{size:>5} "
                      + "  ".join(f"{c} {r[c]['cpu_ms']:.2f} ({r[c]['wall_ms']:.2f})"
                                  for c in CANDIDATES)
                      + "  | longtail " + ", ".join(
                          f"{cost[c] / cost['longtail']:.2f}x {c}" for c in CANDIDATES[1:]),
                      flush=True)
    if args.stream_epochs:
        size = int(args.sizes.split(",")[0])
        root = next(iter(sets.values()))
        s = _child(["stream", root, size, args.batch_size, args.stream_epochs])
        rss = s["rss_mb"]
        print(f"\nstream: longtail, balanced, {size}x{size}, {args.stream_epochs} epochs, "
              f"{s['images']} images = {s['decoded_gb']:.1f} GB of decoded pixels "
              f"(prefetch budget {s['loader_budget_mb']:.0f} MB)")
        print("RSS after each epoch, MB: " + ", ".join(f"{v:.0f}" for v in rss))
        print(f"growth from epoch 1 to epoch {len(rss)}: {rss[-1] - rss[0]:+.0f} MB")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
