"""What seeding costs a JAX run: ``keras.utils.set_random_seed`` against ``seed_everything``.

Run: ``KERAS_BACKEND=jax python -m benchmarks.seed``

Each way runs in a fresh process after ``import keras, longtail``; the
figures are the CPU seconds and the peak resident memory of the seeding call
(Linux ``VmHWM``, reset before the call), and whether TensorFlow got imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

WAYS = ("keras.utils.set_random_seed", "longtail._seed.seed_everything")


def _case(way: str) -> None:
    from _measure import peak_above, reset_peak  # run as a script: benchmarks/ on sys.path

    import keras

    import longtail  # noqa: F401
    from longtail._seed import seed_everything

    fn = keras.utils.set_random_seed if way == WAYS[0] else seed_everything
    base = reset_peak()
    start = time.process_time()
    fn(0)
    cpu = time.process_time() - start
    print(f"{cpu:.3f} {peak_above(base):.1f} {int('tensorflow' in sys.modules)}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--case":
        return _case(sys.argv[2])
    results = {}
    for way in WAYS:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", way],
                             env=dict(os.environ, KERAS_BACKEND="jax"),
                             capture_output=True, text=True, check=True)
        cpu, mib, tf = out.stdout.split()[-3:]
        results[way] = float(cpu), float(mib), tf == "1"
    print(f"\n{'seeding (JAX backend)':<34}{'CPU s':>8}{'peak MiB':>10}  TensorFlow imported")
    for way, (cpu, mib, tf) in results.items():
        print(f"{way:<34}{cpu:>8.2f}{mib:>10.0f}  {'yes' if tf else 'no'}")
    (c0, m0, _), (c1, m1, _) = results.values()
    print(f"saved: {c0 - c1:.2f} CPU s and {m0 - m1:.0f} MiB per run")


if __name__ == "__main__":
    main()
