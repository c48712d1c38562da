"""Kill ``longtail evaluate`` and ``longtail compare`` at random moments; check the folder.

Run: ``python tools/kill_command.py [--command evaluate|compare|both] [--kills 8]
[--rows 2000] [--work DIR]``

In the style of ``tools/kill_split.py``, for the two other commands that
write a set of files into a folder:

- ``evaluate``: the folder first holds an evaluation of model A (a complete
  ``metrics.json``, ``report.html`` and PNGs). Each round re-evaluates model
  B into it and SIGKILLs the process group after a random delay (uniform
  over the duration of an uninterrupted evaluate, process start included).
  The folder, as the next reader or writer sees it after
  :func:`longtail.runs.recover`, must hold exactly A's set or exactly B's
  (each file byte-equal to a reference), never ``metrics.json`` of one model
  beside ``report.html`` of the other. Then ``evaluate`` runs again into the
  folder and must end with B's set, with no temp or stage file left.
- ``compare``: a fresh folder; each round SIGKILLs a two-strategy compare,
  then runs it again (it resumes). The second run must exit 0 with every
  strategy's ``metrics.json`` equal to an uninterrupted compare's (timings
  aside), or be refused with one line (exit 2); nothing else.

Prints the count of each outcome; exits 1 on a mixed set or a bad resume.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CLI = "import sys; from longtail.cli import main; sys.exit(main(sys.argv[1:]))"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tools.kill_split import make_table  # noqa: E402

_HIDDEN = re.compile(r"\.(?!longtail\.lock$).*")  # temp files, stages, journal


def start(*argv) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
    return subprocess.Popen([sys.executable, "-c", CLI, *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def run(*argv) -> tuple[int, str]:
    proc = start(*argv)
    _, err = proc.communicate()
    return proc.returncode, err


def kill_after(proc: subprocess.Popen, delay: float) -> int:
    time.sleep(delay)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
    return proc.returncode


def files(folder: str) -> dict:
    """The folder's visible files (bytes), as a reader sees it after recovery."""
    from longtail import runs

    runs.recover(folder)
    out = {}
    for parent, folders, names in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]  # stages: never read
        for name in names:
            path = os.path.join(parent, name)
            if not name.startswith("."):
                with open(path, "rb") as f:
                    out[os.path.relpath(path, folder)] = f.read()
    return out


def hidden(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if _HIDDEN.fullmatch(name))


def _strip_timing(value):
    if isinstance(value, dict):
        return {k: _strip_timing(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_strip_timing(v) for v in value]
    return value


def kill_evaluate(work: str, data: str, kills: int, rng: random.Random) -> collections.Counter:
    models = {}
    for name, seed in (("A", 0), ("B", 1)):
        models[name] = os.path.join(work, f"run-{name}")
        code, err = run("train", data, "--out", models[name], "--epochs", "1", "--seed", seed)
        assert code == 0, err
    references = {}
    for name in models:
        folder = os.path.join(work, f"eval-{name}")
        started = time.perf_counter()
        code, err = run("evaluate", models[name], data, "--out", folder)
        assert code == 0, err
        references[name] = (files(folder), time.perf_counter() - started)
    duration = references["B"][1]
    outcomes = collections.Counter()
    for round_ in range(kills):
        folder = os.path.join(work, "eval")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(os.path.join(work, "eval-A"), folder)
        proc = start("evaluate", models["B"], data, "--out", folder)
        code = kill_after(proc, rng.uniform(0.2, 1.05) * duration)
        now = files(folder)
        if now == references["A"][0]:
            outcome = "old set"
        elif now == references["B"][0]:
            outcome = "new set" if code != 0 else "finished before the kill"
        else:
            outcome = "MIXED"
            print(f"evaluate round {round_}: mixed set: " + ", ".join(
                f"{name} {'A' if data == references['A'][0].get(name) else 'B' if data == references['B'][0].get(name) else '?'}"
                for name, data in sorted(now.items())), file=sys.stderr)
        code, err = run("evaluate", models["B"], data, "--out", folder)
        if code != 0 or files(folder) != references["B"][0] or hidden(folder):
            outcome += ", BAD RERUN"
            print(f"evaluate round {round_}: rerun exit {code}: {err.strip()[-300:]}; "
                  f"hidden {hidden(folder)}", file=sys.stderr)
        else:
            outcome += ", rerun complete"
        outcomes[outcome] += 1
    print(f"{kills} kills of `evaluate` re-evaluating into a finished folder "
          f"(uninterrupted: {duration:.1f} s): " +
          ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())), flush=True)
    return outcomes


def _compare_metrics(folder: str) -> dict:
    out = {}
    for parent, _, names in os.walk(folder):
        if "metrics.json" in names and ".longtail-stage" not in parent:
            with open(os.path.join(parent, "metrics.json")) as f:
                out[os.path.relpath(parent, folder)] = _strip_timing(json.load(f))
    return out


def kill_compare(work: str, data: str, kills: int, rng: random.Random) -> collections.Counter:
    argv = ["compare", data, "--strategies", "none,class-weight", "--epochs", "1"]
    reference = os.path.join(work, "compare-ref")
    started = time.perf_counter()
    code, err = run(*argv, "--out", reference)
    assert code == 0, err
    duration = time.perf_counter() - started
    expected = _compare_metrics(reference)
    outcomes = collections.Counter()
    for round_ in range(kills):
        folder = os.path.join(work, "compare")
        shutil.rmtree(folder, ignore_errors=True)
        code = kill_after(start(*argv, "--out", folder), rng.uniform(0.2, 1.05) * duration)
        state = "finished before the kill" if code == 0 else "killed"
        code, err = run(*argv, "--out", folder)
        lines = err.strip().splitlines()
        if code == 0 and _compare_metrics(folder) == expected and not hidden(folder):
            outcome = f"{state}, resumed identical"
        elif code == 2 and len(lines) == 1 and lines[0].startswith("longtail: error: "):
            outcome = f"{state}, refused: {lines[0][:80]}"
        else:
            outcome = f"{state}, BAD RESUME"
            print(f"compare round {round_}: exit {code}: {err.strip()[-300:]}; "
                  f"hidden {hidden(folder)}", file=sys.stderr)
        outcomes[outcome] += 1
    print(f"{kills} kills of `compare` (2 strategies, 1 epoch; uninterrupted: "
          f"{duration:.1f} s): " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())),
          flush=True)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", choices=("evaluate", "compare", "both"), default="both")
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="kill-command-")
    os.makedirs(work, exist_ok=True)
    data = make_table(os.path.join(work, "t.csv"), args.rows)
    rng = random.Random(args.seed)
    bad = 0
    if args.command in ("evaluate", "both"):
        outcomes = kill_evaluate(work, data, args.kills, rng)
        bad += sum(v for k, v in outcomes.items() if "MIXED" in k or "BAD" in k)
    if args.command in ("compare", "both"):
        outcomes = kill_compare(work, data, args.kills, rng)
        bad += sum(v for k, v in outcomes.items() if "BAD" in k)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
