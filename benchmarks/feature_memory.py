"""Peak memory of ``compare`` on a feature store as the store grows: rows read whole vs a batch at a time.

A generated feature store (random float16 rows, ``--width`` columns as
EfficientNet-Lite0 gives, long-tailed labels over 10 classes; no backbone
needed) at each ``--rows`` size; on each, in a fresh process per case,
``compare`` of two strategies x one seed, one epoch each (the split saved as
two stores, two heads trained, each evaluated), with:

* **before**: the code of another checkout (``--before DIR``, e.g. ``git
  archive fc3f146 | tar -x -C /tmp/before``), which reads a store's rows
  whole into a float32 array (through float64 columns);
* **after**: this checkout, which converts each store's rows once into a
  row file beside it and reads them a batch at a time
  (:mod:`longtail.sources.rows`).

Printed: peak resident memory above the process after its imports (MiB),
wall seconds, and the before/after ratios. Linux only (``/proc``).

Run: ``python -m benchmarks.feature_memory --before /tmp/before [--rows 20000,80000,320000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_store(path: str, rows: int, width: int, seed: int = 0) -> None:
    """A store of ``rows`` random float16 rows, written a part at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(10)]
    priors = 0.6 ** np.arange(10)
    priors /= priors.sum()
    identity = {"format": 1, "backbone": "generated", "class_names": names,
                "dtype": "float16", "rows": [0, rows], "shard": [0, 1], "skipped": []}
    meta = {b"longtail_features": json.dumps(identity).encode()}
    schema = pa.schema([(f"f{j:04d}", pa.float16()) for j in range(width)]
                       + [("label", pa.string())]).with_metadata(meta)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 4096):
            n = min(4096, rows - start)
            labels = rng.choice(10, size=n, p=priors)
            x = (rng.normal(size=(n, width)) + labels[:, None] * 0.05).astype(np.float16)
            columns = [pa.array(x[:, j]) for j in range(width)]
            columns.append(pa.array([names[i] for i in labels], pa.string()))
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))


def _case(store: str, out: str) -> dict:
    """Runs in the measured process: compare on ``store``, its peak memory and time.

    The process is started as a script (``python benchmarks/feature_memory.py
    --case``) with ``PYTHONPATH`` naming the checkout measured, so
    ``longtail`` is that checkout's; ``_measure`` sits beside this file.
    """
    from _measure import peak_above, reset_peak

    import keras  # noqa: F401  (imported before the baseline)

    import longtail
    from longtail.comparison import compare

    base = reset_peak()
    started = time.perf_counter()
    compare(store, ["none", "logit-adjust"], out, epochs=1, batch_size=256, verbose=0,
            seeds=[0])
    return {"peak_mib": peak_above(base), "seconds": time.perf_counter() - started,
            "code": os.path.dirname(os.path.dirname(os.path.abspath(longtail.__file__)))}


def _measure(code: str, store: str, out: str) -> dict:
    env = {**os.environ, "PYTHONPATH": code, "KERAS_BACKEND": "jax",
           "MALLOC_ARENA_MAX": "2"}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", store, out],
                          env=env, capture_output=True, text=True, cwd=code)
    if done.returncode != 0:
        raise SystemExit(f"{code}: the case failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == os.path.abspath(code), (result["code"], code)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a checkout of the code to compare against")
    parser.add_argument("--rows", default="20000,80000,320000")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--case", nargs=2, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(_case(*args.case)))
        return
    sizes = [int(r) for r in args.rows.split(",")]
    print(f"compare none,logit-adjust x seed 0, 1 epoch, batch 256, on a store of "
          f"{args.width} float16 columns (peak MiB above the imports; seconds)")
    print(f"{'rows':>8} {'store MB':>9} | {'before MiB':>10} {'s':>6} | {'after MiB':>9} "
          f"{'s':>6} | {'memory':>7} {'time':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            store = os.path.join(tmp, f"feats-{rows}.parquet")
            write_store(store, rows, args.width)
            mb = os.path.getsize(store) / 1e6
            before = (_measure(os.path.abspath(args.before), store,
                               os.path.join(tmp, f"before-{rows}"))
                      if args.before else None)
            after = _measure(ROOT, store, os.path.join(tmp, f"after-{rows}"))
            b = (f"{before['peak_mib']:>10.0f} {before['seconds']:>6.1f}" if before
                 else f"{'-':>10} {'-':>6}")
            ratio = (f"{before['peak_mib'] / after['peak_mib']:>6.1f}x "
                     f"{before['seconds'] / after['seconds']:>5.2f}x" if before else "")
            print(f"{rows:>8} {mb:>9.0f} | {b} | {after['peak_mib']:>9.0f} "
                  f"{after['seconds']:>6.1f} | {ratio}", flush=True)
            for name in os.listdir(tmp):  # keep the disk small between sizes
                shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.remove(os.path.join(tmp, name))


if __name__ == "__main__":
    main()
