"""Indexing speed and memory: longtail vs the indexing Keras' image_dataset_from_directory does.

Run: ``python -m benchmarks.index [--files 200000] [--classes 100] [--root DIR]``

Generates a tree of empty files (no pixels are read by either side), then
times, in the same run and on the same warm file-system cache:

- ``lt.Dataset.from_directory`` (os.scandir walk, paths into one Arrow array);
- ``keras.src.utils.dataset_utils.index_directory``, the function
  ``keras.utils.image_dataset_from_directory`` calls to index a folder
  (``shuffle=False``, the same extensions).

Memory: bytes of the finished index per sample beyond the UTF-8 path bytes,
for longtail's arrays and for Keras' Python lists (measured with tracemalloc),
and the peak traced allocation while indexing.

``python -m benchmarks.index --arrays 10000000 [--baseline /work/main] [--cases
Dataset.paths] [--rounds 2]`` times
the in-memory side instead: ``Dataset.from_arrays`` with integer and with
class-name labels, ``Dataset.paths`` and ``Dataset.load`` of a saved manifest,
each in a fresh process, in CPU seconds and peak resident memory above the
inputs (Linux ``VmHWM``, reset before the call). ``--baseline`` runs the same
cases against another checkout of longtail in the same run and prints ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
import tracemalloc
import warnings

import numpy as np

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".npy")


def make_tree(root: str, files: int, classes: int, seed: int = 0) -> None:
    """Long-tailed tree of empty .jpg files, imbalance ratio 100."""
    shares = 100.0 ** (-np.arange(classes) / max(classes - 1, 1))
    counts = np.maximum(1, np.round(files * shares / shares.sum())).astype(int)
    for c, n in enumerate(counts):
        folder = os.path.join(root, f"class_{c:03d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(n):
            open(os.path.join(folder, f"img_{i:07d}.jpg"), "wb").close()


def best_of(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def traced(fn):
    """Result, retained and peak bytes (Python heap traced, plus Arrow's allocator)."""
    import pyarrow as pa

    gc.collect()
    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = fn()
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrow = pa.total_allocated_bytes() - arrow_before
    return result, retained - before + arrow, peak - before + arrow


_CASES = ("from_arrays int labels", "from_arrays str labels", "Dataset.paths",
          "Dataset.load")


def _case(name: str, rows: int, folder: str) -> None:
    """Runs one case in this (fresh) process; prints ``cpu_s peak_mb``."""
    import longtail as lt

    classes = 1000
    rng = np.random.default_rng(0)
    ints = rng.integers(0, classes, rows)
    paths = np.char.add(np.char.add("class_", (ints % classes).astype(str)),
                        np.char.add("/img_", np.arange(rows).astype(str)))
    paths = np.char.add(paths, ".jpg")
    strings = np.char.add("class_", ints.astype(str))
    manifest = os.path.join(folder, "m.parquet")
    ds = None
    if name in ("Dataset.paths", "Dataset.load"):
        ds = lt.Dataset.from_arrays(paths, ints, root="/data")
        if name == "Dataset.load":
            ds.save(manifest)
            del ds
    from _measure import peak_above, reset_peak  # run as a script: benchmarks/ on sys.path

    gc.collect()
    base = reset_peak()
    start = time.process_time()
    if name == "from_arrays int labels":
        out = lt.Dataset.from_arrays(paths, ints, root="/data")
    elif name == "from_arrays str labels":
        out = lt.Dataset.from_arrays(paths, strings, root="/data")
    elif name == "Dataset.paths":
        out = ds.paths
    else:
        out = lt.Dataset.load(manifest)
    cpu = time.process_time() - start
    peak = peak_above(base)
    assert len(out) == rows
    print(f"{cpu:.3f} {peak:.1f}")


def arrays_main(rows: int, baseline: str | None, cases=_CASES, rounds: int = 1) -> None:
    import subprocess
    import sys

    trees = {"this tree": os.getcwd()}
    if baseline:
        trees["baseline"] = os.path.abspath(baseline)
    results = {}
    with tempfile.TemporaryDirectory(prefix="lt-arrays-") as folder:
        for _ in range(rounds):  # interleaved; the cheapest run of each case counts
            for name in cases:
                for tree, path in trees.items():
                    env = dict(os.environ, PYTHONPATH=path)
                    out = subprocess.run(  # this file as a script: longtail from `path`
                        [sys.executable, os.path.abspath(__file__), "--case", name,
                         "--arrays", str(rows), "--root", folder],
                        env=env, cwd=folder, capture_output=True, text=True, check=True)
                    got = tuple(map(float, out.stdout.split()[-2:]))
                    old = results.get((tree, name), (float("inf"), float("inf")))
                    results[tree, name] = min(old[0], got[0]), min(old[1], got[1])
    print(f"\n{rows:,} rows, 1000 classes; CPU s and peak MB above the inputs; best of "
          f"{rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f}\n")
    header = f"{'case':<26}" + "".join(f"{t + ' s':>14}{t + ' MB':>14}" for t in trees)
    print(header + ("   ratio s   ratio MB" if baseline else ""))
    for name in cases:
        row = f"{name:<26}" + "".join(
            f"{results[t, name][0]:>14.2f}{results[t, name][1]:>14.0f}" for t in trees)
        if baseline:
            (s, m), (bs, bm) = results["this tree", name], results["baseline", name]
            row += f"{bs / s:>9.2f}x{bm / max(m, 1):>10.2f}x"
        print(row)
    for tree in trees if set(_CASES[:2]) <= set(cases) else ():
        (si, mi), (ss, ms) = (results[tree, c] for c in _CASES[:2])
        print(f"{tree}: str labels / int labels: {ss / si:.2f}x CPU, "
              f"{ms / max(mi, 1):.2f}x peak memory")
    if baseline:
        print("ratio = baseline / this tree (above 1: this tree is cheaper)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrays", type=int, default=None, metavar="ROWS",
                        help="time from_arrays, paths and load at ROWS rows instead")
    parser.add_argument("--baseline", default=None,
                        help="with --arrays: another longtail checkout to compare")
    parser.add_argument("--cases", default=",".join(_CASES),
                        help="with --arrays: comma-separated cases to run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --arrays: repeat every case, interleaved")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--root", default=None, help="reuse or create the tree here")
    args = parser.parse_args(argv)
    if args.case:
        return _case(args.case, args.arrays, args.root)
    if args.arrays:
        cases = [c.strip() for c in args.cases.split(",")]
        unknown = sorted(set(cases) - set(_CASES))
        if unknown:
            raise SystemExit(f"--cases must name some of {', '.join(_CASES)}; got {unknown}")
        return arrays_main(args.arrays, args.baseline, cases, args.rounds)

    import longtail as lt
    from keras.src.utils.dataset_utils import index_directory

    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.mkdtemp(prefix="lt-index-")
        root = tmp
    os.makedirs(root, exist_ok=True)
    if not os.listdir(root):
        t = time.perf_counter()
        make_tree(root, args.files, args.classes)
        print(f"generated {args.files} empty files in {args.classes} classes "
              f"in {time.perf_counter() - t:.1f}s at {root}")
    try:
        def ours():
            return lt.Dataset.from_directory(root, progress=False)

        def keras():
            return index_directory(root, labels="inferred", formats=EXTENSIONS,
                                   shuffle=False, verbose=False)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours(), keras()  # warm the directory cache for both
            t_ours, ds = best_of(ours, args.repeat)
            t_keras, (paths, labels, names) = best_of(keras, args.repeat)
        n = len(ds)
        assert n == len(paths) and ds.class_names == names
        assert sorted(ds.paths.tolist()) == sorted(paths)

        path_bytes = int(ds.relative_paths.buffers()[2].size)  # the UTF-8 data buffer
        index_bytes = ds.labels.nbytes + ds.relative_paths.nbytes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kept_ours, ours_retained, ours_peak = traced(ours)
            kept_keras, keras_retained, keras_peak = traced(keras)
        keras_path_bytes = sum(len(p.encode()) for p in paths)

        print(f"\n{n} files, {len(names)} classes, mean relative path "
              f"{path_bytes / n:.1f} bytes\n")
        print(f"{'':<34}{'longtail':>12}{'keras':>12}{'ratio':>9}")
        print(f"{'index time (best of %d), s' % args.repeat:<34}{t_ours:>12.3f}{t_keras:>12.3f}"
              f"{t_keras / t_ours:>8.2f}x")
        print(f"{'files per second':<34}{n / t_ours:>12,.0f}{n / t_keras:>12,.0f}")
        print(f"{'index bytes/sample beyond paths':<34}{(index_bytes - path_bytes) / n:>12.1f}"
              f"{(keras_retained - keras_path_bytes) / n:>12.1f}")
        print(f"{'retained bytes/sample (traced)':<34}{ours_retained / n:>12.1f}"
              f"{keras_retained / n:>12.1f}")
        print(f"{'peak bytes/sample while indexing':<34}{ours_peak / n:>12.1f}"
              f"{keras_peak / n:>12.1f}")
        print("\nkeras' paths are absolute; longtail stores paths relative to the root "
              "(the path bytes above are longtail's).")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
