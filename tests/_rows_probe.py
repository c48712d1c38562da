"""Reads a feature store under a cap on the growth of the address space (tests/test_rows.py).

    python tests/_rows_probe.py SMALL_STORE BIG_STORE OUT_DIR BUDGET_MB MODE

MODE ``stream``: after a warm-up on SMALL_STORE (imports, Arrow's memory
pool, the loader), caps ``RLIMIT_AS`` at what the process uses now plus
BUDGET_MB, then opens BIG_STORE (its rows converted to a row file), reads
one epoch through the loader, takes the column moments and the fingerprint,
saves a split and opens it again. MODE ``whole``: the control, which reads
the store's features whole, as reading a store did before (the table, then
float64 columns, then float32 rows), and must be stopped by the cap. Prints one JSON line.
"""

import json
import os
import resource
import sys

os.environ.setdefault("MALLOC_ARENA_MAX", "2")


def _status() -> dict:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in
                (line.split(":", 1) for line in f) if k in ("VmSize", "VmHWM", "VmRSS")}


def _work(store: str, out: str) -> int:
    import numpy as np

    import longtail as lt
    from longtail.dataset import fingerprint

    ds = lt.Dataset.open(store)
    seen = 0
    for batch in ds.loader(batch_size=256, sampling="sequential", label_mode="int"):
        x = batch[0]
        seen += len(x)
        if seen >= len(ds):
            break
    mean, var = ds.source.moments()
    assert np.isfinite(mean).all() and np.isfinite(var).all()
    fingerprint(ds)
    _, val = ds.split(val=0.5, seed=0)
    val.save(os.path.join(out, os.path.basename(store) + ".val.parquet"))
    assert lt.Dataset.open(os.path.join(out, os.path.basename(store) + ".val.parquet")).equals(val)
    return seen


def main(small: str, big: str, out: str, budget_mb: int, mode: str) -> None:
    import pyarrow.parquet as pq

    _work(small, out)
    pq.read_table(small)
    with open("/proc/self/clear_refs", "w") as f:  # the peak from here on
        f.write("5")
    before = _status()
    cap = before["VmSize"] + budget_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    result = {"budget_bytes": budget_mb * 2**20, "rss_before": before["VmRSS"]}
    try:
        if mode == "stream":
            result["seen"] = _work(big, out)
        else:
            from longtail.sources.table import read_table

            names = [n for n in pq.read_schema(big).names if n.startswith("f")]
            result["rows"] = len(read_table(big, feature_columns=names).features)
        result["ok"] = True
    except MemoryError as e:
        import traceback; traceback.print_exc()
        result.update(ok=False, error=f"MemoryError: {e}")
    except Exception as e:  # noqa: BLE001 - reported to the test
        result.update(ok=False, error=f"{type(e).__name__}: {e}")
    result["peak_rss"] = _status()["VmHWM"]
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
