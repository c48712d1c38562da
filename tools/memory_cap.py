"""Stream a dataset several times larger than a memory cap through the loader and `cache`.

    python tools/memory_cap.py                          # 20,000 images: 3.9 GB decoded, cap 512 MB
    python tools/memory_cap.py --images 5000 --budget-mb 256 --json   # tests/test_memory.py

The data are tiny PNG files (8x8 pixels, a few hundred bytes on disk) decoded
and resized to ``--image-size`` (default 256x256 RGB, 192 KiB each), so the
decoded pixels total ``images x 192 KiB`` while the disk holds little.

Each probe runs in a fresh subprocess: it imports longtail (Keras, JAX, Grain:
about 1.2 GB of address space and 370 MB resident before any image), builds
the loader and pulls one batch (so the decode threads exist), then caps its
own address space with ``RLIMIT_AS`` at *what it uses now + the budget*, and
streams:

- ``loader``: one epoch of ``Dataset.loader(batch_size, image_size)``,
  every batch checksummed and dropped, as ``fit`` would;
- ``cache``: ``longtail cache DATA --out CACHE --image-size ...`` (raw
  shards written to disk);
- ``hoard``: the loader again, but every batch kept in a list: the control,
  which must fail against the cap.

Why ``RLIMIT_AS`` over the baseline: the container has no writable cgroup,
and an absolute ``RLIMIT_AS`` would mostly measure JAX's and the thread
stacks' reserved-but-unused address space. A cap on the *growth* of the
address space is strict (any allocation past it fails at once, resident or
not, so it over-counts rather than under-counts) and independent of what the
imports reserve. ``MALLOC_ARENA_MAX=2`` keeps glibc from reserving 64 MB of
address space per decode thread, which would count against the cap without
ever being used. The peak resident size (``VmHWM``, the kernel's high-water
mark of the process's memory, so no spike between samples is missed; not
``ru_maxrss``, which a process started by ``fork`` and ``exec`` inherits from
its parent) is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def make_data(folder: str, images: int, classes: int = 4, seed: int = 0) -> str:
    """``images`` 8x8 PNG files, long-tailed over ``classes`` sub-folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    shares = 0.5 ** np.arange(classes)
    counts = np.floor(images * shares / shares.sum()).astype(int)
    counts[0] += images - counts.sum()
    for c, n in enumerate(counts):
        sub = os.path.join(folder, f"class_{c}")
        os.makedirs(sub, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(sub, f"{i:06d}.png"))
    return folder


def _status() -> dict:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("Vm", "Rss")))
    return {k: int(v.split()[0]) * 1024 for k, v in fields.items()}


def probe(mode: str, data: str, out: str, image_size: int, budget_mb: int,
          batch_size: int, workers: int) -> dict:
    """Runs in the capped subprocess; returns what it measured."""
    import resource

    import longtail as lt
    from longtail.cli import main as cli

    ds = lt.Dataset.open(data)
    row = image_size * image_size * 3
    loader = ds.loader(batch_size=batch_size, image_size=image_size, num_workers=workers,
                       sampling="sequential", drop_remainder=False)
    loader[0]  # decode once, outside the cap
    for _ in zip(range(1), iter(loader)):  # threads started once
        pass
    loader.set_epoch(0)
    before = _status()
    cap = before["VmSize"] + budget_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    rss0 = before["VmHWM"]
    t0 = time.perf_counter()
    result = {"mode": mode, "images": len(ds), "decoded_bytes": len(ds) * row,
              "budget_bytes": budget_mb * 2**20, "vm_before": before["VmSize"],
              "rss_before": before["VmRSS"], "peak_rss_before": rss0, "ok": True}
    try:
        if mode in ("loader", "hoard"):
            kept, total = [], 0
            result["seen"] = 0
            for x, y in loader:
                total += int(x[:, ::37, ::37].sum())  # touch the batch, then drop it
                result["seen"] += len(x)
                if mode == "hoard":
                    kept.append(x)
            result["checksum"] = total
        else:
            rc = cli(["cache", data, "--out", out, "--image-size", str(image_size),
                      "--workers", str(workers)])
            if rc != 0:
                raise RuntimeError(f"longtail cache exited with {rc}")
            from longtail.cache import open_cache

            cache = open_cache(out)
            result.update(seen=len(cache),
                          shard_bytes=sum(f["bytes"] for s in cache.manifest["shards"]
                                          for f in s["files"].values()))
    except MemoryError as e:
        result.update(ok=False, error=f"MemoryError: {e}")
    except Exception as e:  # noqa: BLE001 - a capped allocation may surface as anything
        result.update(ok=False, error=f"{type(e).__name__}: {str(e)[:200]}")
    after = _status()
    result.update(seconds=time.perf_counter() - t0, vm_peak=after["VmPeak"],
                  peak_rss=after["VmHWM"],
                  errors=len(loader.errors))
    return result


def run_probe(mode, data, out, image_size, budget_mb, batch_size=64, workers=2,
              timeout=600) -> dict:
    """Runs :func:`probe` in a fresh subprocess and returns its JSON result."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "KERAS_BACKEND": "jax",
           "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", mode, "--data", data,
           "--out", out, "--image-size", str(image_size), "--budget-mb", str(budget_mb),
           "--batch-size", str(batch_size), "--workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:  # killed outright: still an answer
        return {"mode": mode, "ok": False, "error": f"exit status {proc.returncode}: "
                + " | ".join(proc.stderr.strip().splitlines()[-3:])}
    return json.loads(lines[-1])


def _mb(n) -> str:
    return f"{n / 2**20:,.0f} MB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--budget-mb", type=int, default=512,
                        help="address space a probe may add after its imports")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="loader,cache,hoard")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, args.data, args.out, args.image_size,
                               args.budget_mb, args.batch_size, args.workers)))
        return 0

    with tempfile.TemporaryDirectory(prefix="memory-cap-") as tmp:
        data = make_data(os.path.join(tmp, "data"), args.images)
        on_disk = sum(os.path.getsize(os.path.join(d, f))
                      for d, _, files in os.walk(data) for f in files)
        results = [run_probe(m, data, os.path.join(tmp, f"cache-{m}"), args.image_size,
                             args.budget_mb, args.batch_size, args.workers)
                   for m in args.modes.split(",")]
    summary = {"images": args.images, "image_size": args.image_size,
               "bytes_on_disk": on_disk, "budget_mb": args.budget_mb, "probes": results}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        h = args.image_size
        print(f"{args.images} PNG files ({_mb(on_disk)} on disk) decoded to {h}x{h} RGB; "
              f"cap: address space after imports + {args.budget_mb} MB (RLIMIT_AS)")
        for r in results:
            if "decoded_bytes" not in r:
                print(f"  {r['mode']:<7} FAILED: {r['error']}")
                continue
            grow = r["peak_rss"] - r["rss_before"]
            print(f"  {r['mode']:<7} {'ok' if r['ok'] else 'REFUSED BY THE CAP'}: "
                  f"{r.get('seen', 0)} images, {_mb(r['decoded_bytes'])} decoded "
                  f"({r['decoded_bytes'] / r['budget_bytes']:.1f}x the cap) in "
                  f"{r['seconds']:.1f} s; peak RSS {_mb(r['peak_rss'])} "
                  f"(+{_mb(grow)} over {_mb(r['rss_before'])} after imports); address "
                  f"space peak +{_mb(r['vm_peak'] - r['vm_before'])}"
                  + ("" if r["ok"] else f"; {r['error'][:80]}"))
    ok = all(r["ok"] == (r["mode"] != "hoard") for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
