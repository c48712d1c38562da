"""Kill ``longtail split`` (re-splitting a folder) at random moments; check the set.

Run: ``python tools/kill_split.py [--kills 20] [--rows 20000] [--work DIR]``

A folder first holds a complete split (seed 0, ``--test 0.2``). Then each
round starts a re-split with another seed and fraction (and no test split),
SIGKILLs it after a random delay (uniform over the duration of an
uninterrupted split), and checks what the folder holds, as a reader sees it
after :func:`longtail.runs.recover` (what ``train``, ``evaluate`` and the
next ``split`` do first): exactly the old set or exactly the new one, every
file equal to a reference split, never a new ``train.parquet`` beside old
``val``/``test`` files. A round whose kill came after the end is counted as
"finished". Prints the count of each outcome; exits 1 on any mixed set.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CLI = "import sys; from longtail.cli import main; sys.exit(main(sys.argv[1:]))"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_table(path: str, rows: int) -> str:
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.choice(8, size=rows, p=np.array([40, 20, 12, 10, 8, 5, 3, 2]) / 100)
    with open(path, "w") as f:
        f.write("x1,x2,label\n")
        for i, c in enumerate(labels):
            f.write(f"{rng.normal(c):.3f},{rng.normal(-c):.3f},c{c}\n")
    return path


def split(data: str, out: str, *args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-c", CLI, "split", data, "--out", out, *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def contents(folder: str) -> dict:
    from longtail import runs

    runs.recover(folder)
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder)) if name.endswith(".parquet")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="kill-split-")
    data = make_table(os.path.join(work, "t.csv"), args.rows)
    old_args, new_args = ["--val", "0.2", "--test", "0.2"], ["--val", "0.3", "--seed", "1"]
    references = {}
    for name, extra in (("old", old_args), ("new", new_args)):
        folder = os.path.join(work, f"ref-{name}")
        started = time.perf_counter()
        assert split(data, folder, *extra).wait() == 0
        references[name] = (contents(folder), time.perf_counter() - started)
    duration = references["new"][1]
    outcomes = collections.Counter()
    rng = random.Random(0)
    for round_ in range(args.kills):
        folder = os.path.join(work, "out")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(os.path.join(work, "ref-old"), folder)
        proc = split(data, folder, *new_args)
        time.sleep(rng.uniform(0.3, 1.05) * duration)  # start-up is most of it
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        now = contents(folder)
        if now == references["old"][0]:
            outcome = "old set"
        elif now == references["new"][0]:
            outcome = "new set" if code != 0 else "finished"
        else:
            outcome = "MIXED"
            print(f"round {round_}: mixed set {sorted(now)}", file=sys.stderr)
        outcomes[outcome] += 1
    print(f"{args.kills} kills of `split` re-splitting {args.rows} rows "
          f"(uninterrupted: {duration:.2f} s): " +
          ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    return 1 if outcomes["MIXED"] else 0


if __name__ == "__main__":
    sys.exit(main())
