"""Kill ``longtail cache`` with SIGKILL at random moments; check what it leaves.

Run: ``python tools/kill_cache.py [--seeds 24] [--kills 4] [--images 240]
[--work DIR]``

For each seed, a fresh cache folder is built by real ``longtail cache``
subprocesses that are SIGKILLed several times in a row. Half the kills come
after a random delay (uniform over the duration of an uninterrupted build);
the other half wait for a random moment of the build to be reached (the plan
written, the k-th shard committed for a random k, every shard committed) and
then kill after a random 0-20 ms, so the narrow windows between commit points
are hit too. A kill that leaves a complete cache (checked like the others)
is followed by a fresh build, so the next kill interrupts real work. After every kill
the folder must either open as a complete cache identical to a reference
build, or be refused by ``open_cache`` with a message that says what to do
(an incomplete build names its missing shards and says to rerun). Then one
more run finishes the build, and the result must be identical to the
reference: the same ``cache.json`` (so the same rows and shard checksums),
every shard re-hashed. The source files are hashed before and after: no byte
may change. Odd seeds build in two parts (``--shard 0/2`` and
``1/2``) running at the same time, each killed at its own moment; seeds that
are multiples of 3 use ``--format jpeg``.

The states the kills left are counted and printed (not started, plan only,
k of n shards, all shards but no manifest, complete), to show the kills
landed all along the build.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

CLI = "import sys; from longtail.cli import main; sys.exit(main(sys.argv[1:]))"
ROWS_PER_SHARD = 6


def make_source(root: str, images: int, seed: int = 0) -> str:
    """A long-tailed tree of small PNG and JPEG files, plus one unreadable file."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    counts = np.maximum(2, np.round(images * np.array([0.5, 0.25, 0.15, 0.1]))).astype(int)
    for c, n in enumerate(counts):
        folder = os.path.join(root, f"class_{c}")
        os.makedirs(folder, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
            ext = "jpg" if i % 3 == 0 else "png"
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:04d}.{ext}"))
    with open(os.path.join(root, "class_1", "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    return root


def checksums(root: str) -> dict:
    """sha256 of every file under ``root``: the source must not change."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = \
                    hashlib.sha256(f.read()).hexdigest()
    return out


def command(data: str, out: str, fmt: str, part: str | None = None) -> list[str]:
    cmd = [sys.executable, "-c", CLI, "cache", data, "--out", out, "--image-size", "16",
           "--rows-per-shard", str(ROWS_PER_SHARD), "--workers", "2", "--format", fmt]
    return cmd + (["--shard", part] if part else [])


def run(cmd: list[str]) -> tuple[int, float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return done.returncode, time.perf_counter() - start, done.stderr


def classify(out: str) -> str:
    from longtail.cache import layout

    if not os.path.exists(os.path.join(out, layout.PLAN)):
        return "not started"
    if os.path.exists(os.path.join(out, layout.MANIFEST)):
        return "complete"
    plan = layout.read_plan(out)
    k, n = len(layout.committed_shards(out, plan["num_shards"])), plan["num_shards"]
    if k == 0:
        return "plan only"
    if k == n:
        return "all shards, no manifest"
    return "some shards" if k < n else "?"


def _committed(out: str) -> int:
    try:
        return sum(name.endswith(".json") for name in os.listdir(os.path.join(out, "shards")))
    except FileNotFoundError:
        return 0


def trigger(rng, out: str, num_shards: int):
    """A random moment of the build, as a test of the folder's state."""
    kind = rng.integers(3)
    if kind == 0:
        return "plan", lambda: os.path.exists(os.path.join(out, "build.json"))
    k = int(rng.integers(1, num_shards)) if kind == 1 else num_shards
    return f"{k} shards", lambda: _committed(out) >= k


def kill_when(procs, deadline: float, test=None, jitter: float = 0.0) -> bool:
    """SIGKILLs every process once ``test()`` holds (or at ``deadline`` s), + jitter.

    Returns:
        Whether a process was still running when the kill came.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < deadline:
        if test is not None and test():
            time.sleep(jitter)
            break
        if all(p.poll() is not None for p in procs):
            break
        time.sleep(0.001)
    alive = any(p.poll() is None for p in procs)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
    return alive


def check_killed(out: str, reference: dict) -> str:
    """The folder either opens as the reference cache or is refused clearly."""
    from longtail.cache import open_cache
    from longtail.errors import DataError

    try:
        open_cache(out, verify="always")
    except DataError as e:
        message = str(e)
        clear = (("incomplete cache" in message and "rerun `longtail cache" in message)
                 or "not a longtail cache" in message or "no such cache folder" in message)
        if not clear:
            raise AssertionError(f"unclear refusal after a kill: {message}") from e
        return "refused"
    with open(os.path.join(out, "cache.json"), encoding="utf-8") as f:
        got = json.load(f)
    if got != reference:
        raise AssertionError(f"{out}: opened after a kill but differs from the reference")
    return "opened"


def kill_seed(seed: int, data: str, work: str, reference: dict, duration: dict,
              kills: int = 4) -> list[tuple[str, str]]:
    """Kills builds of one fresh cache ``kills`` times, then finishes it.

    Returns:
        ``(state after the kill, open outcome)`` for each kill.
    """
    from longtail.cache import open_cache

    rng = np.random.default_rng(seed)
    fmt = "jpeg" if seed % 3 == 0 else "raw"
    parts = ["0/2", "1/2"] if seed % 2 else [None]
    out = os.path.join(work, f"cache-{seed}")
    shutil.rmtree(out, ignore_errors=True)
    num_shards = len(reference[fmt]["shards"])
    outcomes = []
    for i in range(kills):
        procs = [subprocess.Popen(command(data, out, fmt, p), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for p in parts]
        if i % 2 == 0:
            alive = kill_when(procs, rng.uniform(0, duration[fmt]))
        else:
            _, test = trigger(rng, out, num_shards)
            alive = kill_when(procs, 4 * duration[fmt], test, jitter=rng.uniform(0, 0.02))
        state = classify(out) if alive else "finished before the kill"
        outcomes.append((state, check_killed(out, reference[fmt])))
        if classify(out) == "complete":  # the next kill starts a fresh build
            shutil.rmtree(out)
    for p in parts:
        code, _, err = run(command(data, out, fmt, p))
        if code != 0:
            raise AssertionError(f"resumed build failed (seed {seed}, part {p}): {err}")
    open_cache(out, verify="always")
    with open(os.path.join(out, "cache.json"), encoding="utf-8") as f:
        if json.load(f) != reference[fmt]:
            raise AssertionError(f"seed {seed}: the resumed cache differs from the reference")
    shutil.rmtree(out)
    return outcomes


def references(data: str, work: str) -> tuple[dict, dict]:
    """Two uninterrupted builds per format: they must be identical; manifest, best time."""
    manifests, durations = {}, {}
    for fmt in ("raw", "jpeg"):
        times = []
        for attempt in range(2):
            out = os.path.join(work, f"reference-{fmt}-{attempt}")
            code, seconds, err = run(command(data, out, fmt))
            if code != 0:
                raise AssertionError(f"reference build failed: {err}")
            times.append(seconds)
            with open(os.path.join(out, "cache.json"), encoding="utf-8") as f:
                manifest = json.load(f)
            if manifests.setdefault(fmt, manifest) != manifest:
                raise AssertionError(f"two uninterrupted {fmt} builds differ")
        durations[fmt] = min(times)
    return manifests, durations


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--kills", type=int, default=4, help="kills per seed")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="longtail-kill-")
    data = make_source(os.path.join(work, "data"), args.images)
    source = checksums(data)
    reference, duration = references(data, work)
    print(f"{args.images} source images; an uninterrupted build takes "
          f"{duration['raw']:.2f} s (raw), {duration['jpeg']:.2f} s (jpeg), process start "
          "included; timed kills come after a delay uniform in [0, that]", flush=True)
    states, outcomes = collections.Counter(), collections.Counter()
    for seed in range(args.seeds):
        results = kill_seed(seed, data, work, reference, duration, args.kills)
        states.update(s for s, _ in results)
        outcomes.update(o for _, o in results)
        print(f"seed {seed:>3} ({'2 parts' if seed % 2 else '1 part '}, "
              f"{'jpeg' if seed % 3 == 0 else 'raw '}): "
              + ", ".join(f"{s} -> {o}" for s, o in results) + "; resumed: identical",
              flush=True)
    if checksums(data) != source:
        raise AssertionError(f"{data}: a source file changed")
    total = sum(states.values())
    print(f"\n{total} kills over {args.seeds} seeds; every killed cache was refused with a "
          "clear message or opened identical to the reference, every resumed build "
          f"was identical to it, and none of the {len(source)} source files changed "
          "(sha256 before and after)")
    print("state left by the kill: " + ", ".join(f"{k} {v}" for k, v in states.most_common()))
    print("open after the kill: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    if not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
