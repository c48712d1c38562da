"""Cost of one epoch's index plan: class-share plans against the ``shuffle`` plan.

Run: ``python -m benchmarks.sampling [--labels 100000000] [--classes 1000]
[--plans shuffle,balanced,sqrt,progressive,undersample] [--rounds 1]
[--baseline /work/main]``

Labels are long-tailed (imbalance ratio 100). Each plan is computed in a fresh
process, once, after the labels exist; the figures are CPU seconds and the
peak resident memory above the labels (Linux ``VmHWM``, reset before the
call). ``--baseline`` runs the same plans against another longtail checkout in
the same run, so before/after ratios come from one machine state.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

PLANS = ("shuffle", "balanced", "sqrt", "progressive", "undersample")


def _case(plan: str, n: int, classes: int) -> None:
    """One plan in this fresh process; prints ``cpu_s peak_mib``."""
    from _measure import peak_above, reset_peak  # run as a script: benchmarks/ on sys.path

    from longtail.sampling import resolve_sampling

    shares = 100.0 ** (-np.arange(classes) / max(classes - 1, 1))
    counts = np.maximum(1, np.floor(n * shares / shares.sum())).astype(np.int64)
    counts[0] += n - counts.sum()
    labels = np.repeat(np.arange(classes, dtype=np.int32), counts)
    np.random.default_rng(0).shuffle(labels)
    sampler = resolve_sampling(plan)
    base = reset_peak()
    start = time.process_time()
    out = sampler.plan(labels, seed=0, epoch=3)
    cpu = time.process_time() - start
    print(f"{cpu:.3f} {peak_above(base):.1f} {len(out)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=100_000_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--baseline", default=None, help="another longtail checkout")
    parser.add_argument("--plans", default=",".join(PLANS),
                        help="comma-separated plans; shuffle is always measured")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every case, interleaved; the cheapest run counts")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        return _case(args.case, args.labels, args.classes)

    trees = {"this tree": os.getcwd()}
    if args.baseline:
        trees["baseline"] = os.path.abspath(args.baseline)
    plans = ["shuffle"] + [p for p in args.plans.split(",") if p != "shuffle"]
    results = {}
    for _ in range(args.rounds):
        for tree, path in trees.items():
            for plan in plans:
                out = subprocess.run(  # this file as a script, longtail from `path`
                    [sys.executable, os.path.abspath(__file__), "--case", plan,
                     "--labels", str(args.labels), "--classes", str(args.classes)],
                    env=dict(os.environ, PYTHONPATH=path), cwd=os.path.dirname(path),
                    capture_output=True, text=True, check=True)
                cpu, mib, _ = out.stdout.split()[-3:]
                old = results.get((tree, plan), (float("inf"), float("inf")))
                results[tree, plan] = min(old[0], float(cpu)), min(old[1], float(mib))
    print(f"\n{args.labels:,} labels, {args.classes} classes (imbalance 100); "
          "CPU s, peak MiB above the labels, and each over shuffle's\n")
    print(f"{'plan':<14}" + "".join(f"{t + ' s':>13}{'/shuffle':>9}{t + ' MiB':>15}"
                                      f"{'/shuffle':>9}" for t in trees))
    print(f"load average {os.getloadavg()[0]:.1f}; best of {args.rounds} interleaved rounds")
    for plan in plans:
        row = f"{plan:<14}"
        for tree in trees:
            (s, m), (s0, m0) = results[tree, plan], results[tree, "shuffle"]
            row += f"{s:>13.2f}{s / s0:>8.2f}x{m:>15.0f}{m / max(m0, 1):>8.2f}x"
        print(row)


if __name__ == "__main__":
    main()
