"""Cache throughput: longtail from a cache vs tf.data, longtail and PyDataset over JPEGs.

Run: ``python -m benchmarks.cache [--images 3000] [--classes 5] [--root DIR]
[--configs 64:raw,64:jpeg,224:jpeg,224:raw] [--batch-size 32] [--epochs 2]
[--rounds 2] [--cache-dir DIR]``

Uses the JPEG tree and the peers of ``benchmarks.loader`` (same generator,
same ``run_one`` measurement, same subprocess per candidate): ``tf.data``
(``image_dataset_from_directory`` + prefetch), ``longtail`` decoding the
JPEG tree, ``PyDataset``. Beside them, in the same run, it builds one cache
per ``size:format`` of ``--configs`` with :func:`longtail.cache.build_cache`
(all cores; timed; disk size recorded) and measures
``Dataset.open(cache).loader(batch_size, sampling="shuffle")``. Every
candidate runs in a fresh process on a warm page cache, one warm-up epoch
then ``--epochs`` timed epochs; the comparison is repeated ``--rounds``
times, interleaved, and the best epoch of each candidate is shown.

Targets (issue 6): at 64x64, longtail from a raw cache >= 10x tf.data; at
224x224, longtail from a jpeg cache >= 2x tf.data.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import loader as peers

TARGETS = {(64, "raw"): 10.0, (224, "jpeg"): 2.0}


def _cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_cache(candidate: str, cache_dir: str, size: int, batch_size: int, epochs: int) -> dict:
    """``benchmarks.loader.run_one``'s protocol, for a loader reading a cache."""
    import longtail as lt

    importlib.import_module("longtail.loader")
    before = peers.rss_mb()
    loader = lt.Dataset.open(cache_dir).loader(batch_size=batch_size, sampling="shuffle",
                                               drop_remainder=False)
    for _ in loader:  # warm-up epoch: thread pools, memory maps
        pass
    best, best_cpu, images = 0.0, 0.0, 0
    cpu_s = getattr(peers, "cpu_s", _cpu_s)
    for _ in range(epochs):
        start, cpu, images = time.perf_counter(), cpu_s(), 0
        for batch in loader:
            images += len(batch[1])
        best = max(best, images / (time.perf_counter() - start))
        best_cpu = max(best_cpu, images / max(cpu_s() - cpu, 1e-9))
    return {"candidate": candidate, "size": size, "images": images, "images_per_s": best,
            "images_per_cpu_s": best_cpu, "rss_before_mb": before,
            "peak_rss_mb": peers.peak_mb()}


def _run_peer(candidate, root, size, batch_size, epochs) -> dict:
    params = inspect.signature(peers.run_one).parameters
    args = [candidate, root, size, batch_size] + ([epochs] if "epochs" in params else [])
    result = peers.run_one(*args)
    result.setdefault("images_per_cpu_s", float("nan"))
    return result


def _child(spec: list) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "KERAS_BACKEND": "tensorflow" if spec[0] == "tf.data" else "jax"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.cache", "--child", json.dumps(spec)],
                         env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{spec[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def _folder_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(path) for f in files) / 2**20


def build_caches(root: str, cache_dir: str, configs) -> dict:
    """Builds (or reuses) one cache per (size, format); returns their facts."""
    from longtail.cache import build_cache

    facts = {}
    for size, fmt in configs:
        out = os.path.join(cache_dir, f"{fmt}-{size}")
        start = time.perf_counter()
        result = build_cache(root, out, image_size=size, format=fmt, progress=False)
        seconds = time.perf_counter() - start
        shards = sum(e["bytes"] for s in result.manifest["shards"] for e in s["files"].values())
        facts[(size, fmt)] = {
            "dir": out, "rows": result.manifest["num_rows"],
            "build_s": seconds if result.shards_built else None,
            "shard_mb": shards / 2**20, "folder_mb": _folder_mb(out)}
    return facts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--root", default=None)
    parser.add_argument("--configs", default="64:raw,64:jpeg,224:jpeg,224:raw")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache-dir", default=None,
                        help="where the caches go (default: a temporary folder, removed)")
    parser.add_argument("--peers", default=",".join(peers.CANDIDATES),
                        help="peer candidates of benchmarks.loader to run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        run = _run_peer if spec[0] in peers.CANDIDATES else run_cache
        print(json.dumps(run(*spec)))
        return
    configs = [(int(c.split(":")[0]), c.split(":")[1]) for c in args.configs.split(",")]
    root = args.root or os.path.join(tempfile.gettempdir(), "longtail-bench-jpeg")
    if not os.path.isdir(root) or not os.listdir(root):
        print(f"generating {args.images} JPEGs in {root} ...", flush=True)
        peers.make_tree(root, args.images, args.classes)
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    for f in files:  # warm the page cache for every candidate alike
        with open(f, "rb") as handle:
            handle.read()
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="longtail-bench-cache-")
    facts = build_caches(root, cache_dir, configs)
    tree_mb = sum(os.path.getsize(f) for f in files) / 2**20
    print(f"{len(files)} JPEGs, {tree_mb:.0f} MB, in {root}; {os.cpu_count()} cores; batch size "
          f"{args.batch_size}; load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'cache':<10} {'MB on disk':>10} {'bytes/image':>11} {'vs JPEG tree':>12} "
          f"{'build s':>8} {'build img/s':>11}")
    for (size, fmt), f in facts.items():
        build = f"{f['build_s']:>8.1f} {f['rows'] / f['build_s']:>11.0f}" if f["build_s"] \
            else f"{'(kept)':>8} {'':>11}"
        print(f"{fmt + ' ' + str(size):<10} {f['folder_mb']:>10.1f} "
              f"{f['shard_mb'] * 2**20 / f['rows']:>11.0f} {f['folder_mb'] / tree_mb:>11.2f}x "
              f"{build}")
    print()
    header = (f"{'size':>5} {'loader':<19} {'images/s':>9} {'vs tf.data':>10} "
              f"{'vs longtail':>11} {'img/CPU-s':>9} {'vs tf.data':>10} {'peak RSS MB':>11}")
    print(header)
    print("-" * len(header))
    chosen_peers = [c for c in args.peers.split(",") if c]
    verdicts = []
    for size in dict.fromkeys(s for s, _ in configs):
        specs = {c: [c, root, size, args.batch_size, args.epochs] for c in chosen_peers}
        for s, fmt in configs:
            if s == size:
                name = f"longtail-cache-{fmt}"
                specs[name] = [name, facts[(s, fmt)]["dir"], size, args.batch_size, args.epochs]
        rows = {}
        for _ in range(args.rounds):
            for name, spec in specs.items():
                r = _child(spec)
                if name not in rows or r["images_per_s"] > rows[name]["images_per_s"]:
                    rows[name] = r
        tf_ = rows.get("tf.data")
        lt_ = rows.get("longtail")
        for name, r in rows.items():
            vs_tf = r["images_per_s"] / tf_["images_per_s"] if tf_ else float("nan")
            vs_lt = r["images_per_s"] / lt_["images_per_s"] if lt_ else float("nan")
            cpu_tf = r["images_per_cpu_s"] / tf_["images_per_cpu_s"] if tf_ else float("nan")
            print(f"{size:>5} {name:<19} {r['images_per_s']:>9.0f} {vs_tf:>9.2f}x "
                  f"{vs_lt:>10.2f}x {r['images_per_cpu_s']:>9.0f} {cpu_tf:>9.2f}x "
                  f"{r['peak_rss_mb']:>11.0f}", flush=True)
            fmt = name.rsplit("-", 1)[-1]
            if (size, fmt) in TARGETS and name.startswith("longtail-cache") and tf_:
                verdicts.append(f"{size}x{size} {fmt} cache vs tf.data: {vs_tf:.1f}x (target "
                                f">= {TARGETS[(size, fmt)]:g}x): "
                                f"{'met' if vs_tf >= TARGETS[(size, fmt)] else 'NOT met'}")
    print()
    for line in verdicts:
        print(line)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    if not args.cache_dir:
        import shutil

        shutil.rmtree(cache_dir)


if __name__ == "__main__":
    main()
