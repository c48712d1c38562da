"""Peak memory of ``train`` and ``evaluate`` as the number of classes grows.

A tiny features table (``--rows`` rows of 8 numbers, classes long-tailed
by a Zipf-like law, each class at least 2 rows) is trained for one epoch
(``train`` also evaluates its validation split and writes the report), then
``longtail evaluate`` runs on ``--eval-rows`` of its rows (with the
temperature calibration on the run's validation split), at 10, 1,000 and
10,000 classes. Each step runs in a fresh
process; its peak resident memory above the process after imports
(``VmHWM`` reset through ``/proc/self/clear_refs``) is printed.

Peer, in the same run: the dense confusion matrix that ``metrics.json``
held before (``sklearn.metrics.confusion_matrix`` and its JSON list) for the
same labels, to show what the sparse form avoids. Its ratio to longtail's
evaluate is printed.

Run: ``KERAS_BACKEND=jax python -m benchmarks.many_classes [--classes 10,1000,10000]
[--rows 20000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

_STEP = r"""
import json, os, sys, time, warnings
os.environ.setdefault("KERAS_BACKEND", "jax")
warnings.simplefilter("ignore")
step, table, work = sys.argv[1:4]
import numpy as np
import longtail as lt
from longtail.cli import main
from sklearn import metrics as skm
from benchmarks._measure import peak_above, reset_peak
run, evaluation = os.path.join(work, "run"), os.path.join(work, "eval")
base = reset_peak()
cpu = time.process_time()
if step == "train":
    lt.train(table, run, epochs=1, batch_size=256, verbose=0)
elif step == "evaluate":
    code = main(["evaluate", run, table.replace(".csv", "-eval.csv"), "--out", evaluation])
    assert code == 0, code
else:  # the dense matrix metrics.json held before, for the same labels
    k = len(lt.Dataset.from_table(table).class_names)
    labels = lt.Dataset.from_table(table.replace(".csv", "-eval.csv")).labels
    pred = np.random.default_rng(0).integers(0, k, labels.size)
    json.dumps(skm.confusion_matrix(labels, pred, labels=range(k)).tolist())
out = {"peak_mib": peak_above(base), "cpu_s": time.process_time() - cpu}
if step == "evaluate":
    with open(os.path.join(evaluation, "metrics.json")) as f:
        m = json.load(f)
    cm = m["confusion_matrix"]
    out["form"] = "sparse" if isinstance(cm, dict) else "dense"
    out["json_mib"] = os.path.getsize(os.path.join(evaluation, "metrics.json")) / 2**20
print("RESULT " + json.dumps(out))
"""


def _table(path: str, classes: int, rows: int, eval_rows: int, seed: int = 0) -> None:
    """Long-tailed: class c gets a share ~ 1/(c+1), at least 2 rows; beside it
    ``-eval.csv``, ``eval_rows`` of those rows drawn at random."""
    rng = np.random.default_rng(seed)
    share = 1.0 / np.arange(1, classes + 1)
    counts = np.maximum(2, np.floor(share / share.sum() * rows)).astype(int)
    labels = np.repeat(np.arange(classes), counts)
    x = rng.normal(size=(labels.size, 8)) + (labels[:, None] % 7)
    picked = np.sort(rng.permutation(labels.size)[:eval_rows])
    for name, rows_of in ((path, np.arange(labels.size)),
                          (path.replace(".csv", "-eval.csv"), picked)):
        with open(name, "w") as f:
            f.write(",".join(f"x{i}" for i in range(8)) + ",label\n")
            for row, label in zip(x[rows_of], labels[rows_of]):
                f.write(",".join(f"{v:.3f}" for v in row) + f",c{label}\n")


def _step(step: str, table: str, work: str) -> dict:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
    done = subprocess.run([sys.executable, "-c", _STEP, step, table, work], env=env, cwd=repo,
                          capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="10,1000,10000")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--eval-rows", type=int, default=2000)
    args = parser.parse_args(argv)
    print(f"{'classes':>8} {'rows':>7} {'train MiB':>10} {'evaluate MiB':>13} "
          f"{'metrics.json':>13} {'dense CM MiB':>13} {'dense/eval':>10}")
    for k in [int(c) for c in args.classes.split(",")]:
        with tempfile.TemporaryDirectory() as work:
            table = os.path.join(work, "t.csv")
            _table(table, k, args.rows, args.eval_rows)
            with open(table) as f:
                rows = sum(1 for _ in f) - 1
            train = _step("train", table, work)
            evaluate = _step("evaluate", table, work) if "error" not in train else train
            dense = _step("dense", table, work)
        if "error" in evaluate:
            print(f"{k:>8} {rows:>7} {evaluate['error']}")
            continue
        print(f"{k:>8} {rows:>7} {train['peak_mib']:>10.0f} {evaluate['peak_mib']:>13.0f} "
              f"{evaluate['json_mib']:>6.1f} MiB {evaluate['form'][:6]:>1} "
              f"{dense.get('peak_mib', float('nan')):>13.0f} "
              f"{dense.get('peak_mib', float('nan')) / max(evaluate['peak_mib'], 1):>10.2f}",
              flush=True)


if __name__ == "__main__":
    main()
