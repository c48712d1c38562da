"""Broken and unusual inputs through stats, split, train, cache and evaluate.

Every case is a file, link, folder or table generated here. Each command runs
once over a folder holding many cases (or once per table case), in process
through ``longtail.cli.main`` and, for a few commands, as a real subprocess
with a timeout. Every run is checked for the contract of README / DESIGN.md:
exit status 0 or 2, no traceback, one line per message, exit 2 with a single
``longtail: error:`` line naming the file and no output folder left behind,
and the source files unchanged (checksums before and after). Then each case
is checked on its own and its observed outcome recorded; when every case of
the module has run, the "Broken inputs" section of ``docs/reliability.md``
is rewritten from those observations.

Regenerate the doc: ``python tools/reliability_doc.py`` (the test only compares). As root, run it
under ``setpriv --bounding-set=-dac_override,-dac_read_search`` so that a
chmod 000 file is unreadable and that case runs too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import _reliability_cases as make
from longtail.cli import main

pytestmark = pytest.mark.system

COMMANDS = ("stats", "split", "train", "cache", "evaluate")
TIMEOUT_S = 300  # a hang ends the run rather than the whole suite
DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "reliability.md")
START, END = "<!-- broken-inputs:start -->", "<!-- broken-inputs:end -->"


def _reads_unreadable() -> bool:
    """Whether this process reads a chmod 000 file anyway (root, CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "probe")
        open(path, "w").close()
        os.chmod(path, 0)
        try:
            open(path, "rb").close()
        except PermissionError:
            return False
        return True


AS_ROOT = _reads_unreadable()
ROOT_REASON = ("not run: the suite ran as root with CAP_DAC_OVERRIDE, which reads chmod 000 "
               "files (run it under `setpriv --bounding-set=-dac_override,-dac_read_search`)")
TRAIN = ("--epochs", "1", "--image-size", "8", "--batch-size", "4", "--workers", "1")


@dataclasses.dataclass(frozen=True)
class FileCase:
    id: str
    label: str
    name: str
    maker: object
    decodes: bool


# Files put in class "a" of one folder; every command runs once over it.
FILE_CASES = [
    FileCase("zero-byte", "zero-byte file", "zero.jpg", make.zero_byte, False),
    FileCase("truncated-jpeg", "truncated JPEG", "truncated.jpg", make.truncated_jpeg, False),
    FileCase("truncated-png", "truncated PNG", "truncated.png", make.truncated_png, False),
    FileCase("random-bytes", "random bytes named .png", "random.png", make.random_bytes, False),
    FileCase("text", "text named .jpg", "text.jpg", make.text_file, False),
    FileCase("png-as-jpg", "PNG named .jpg", "png-named.jpg", make.png_named_jpg, True),
    FileCase("jpeg-as-png", "JPEG named .png", "jpeg-named.png", make.jpeg_named_png, True),
    FileCase("bomb", "decompression bomb: PNG claiming 100000x100000, ~300 bytes",
             "bomb.png", make.decompression_bomb, False),
    FileCase("bomb-max-pixels", "PNG claiming 10000x10000 (past max_pixels, under "
             "Pillow's hard limit)", "bomb-10k.png", make.decompression_bomb_over_max_pixels,
             False),
    FileCase("cmyk", "CMYK JPEG", "cmyk.jpg", make.cmyk_jpeg, True),
    FileCase("png16", "16-bit grayscale PNG", "sixteen.png", make.png_16bit, True),
    FileCase("palette", "palette PNG", "palette.png", make.palette_png, True),
    FileCase("rgba", "RGBA PNG", "rgba.png", make.rgba_png, True),
    FileCase("la", "LA (grayscale + alpha) PNG", "la.png", make.la_png, True),
    FileCase("grayscale", "grayscale JPEG", "gray.jpg", make.grayscale_jpeg, True),
    FileCase("gif", "animated GIF (3 frames)", "anim.gif", make.animated_gif, True),
    FileCase("exif", "EXIF-rotated JPEG (orientation 6)", "exif.jpg", make.exif_rotated_jpeg,
             True),
    FileCase("space", "name with spaces", "with space.png", make.good_png, True),
    FileCase("unicode", "unicode name", "ünïcødé 名前.png", make.good_png, True),
    FileCase("newline", "newline in the name", "new\nline.png", make.good_png, True),
    FileCase("newline-broken", "truncated PNG with a newline in its name", "broken\nname.png",
             make.truncated_png, False),
    FileCase("fifo", "named pipe (FIFO) named .png", "pipe.png", make.named_pipe, False),
    FileCase("unreadable", "unreadable file (chmod 000)", "unreadable.png", make.unreadable,
             False),
]
# Links: in class "a" (or at the top) of the same folder; not followed by default.
LINK_CASES = [
    ("self-link", "symbolic link to itself (loop)", "a/loop.png", make.self_link),
    ("parent-link", "link to the parent folder (loop)", "a/up", lambda p: os.symlink("..", p)),
    ("dangling-link", "dangling link", "a/dangling.png", make.dangling_link),
    ("top-link", "class folder that links to the top folder", "zz-top",
     lambda p: os.symlink(".", p)),
]
CLASS_CASES = [("one-sample", "class with one sample"), ("empty-class", "empty class")]
TABLE_CASES = [  # id, label, rows (path, label, w) after the good ones, needs the weight column
    ("missing-label", "missing label", [("a/0.png", None, 1.0)], False),
    ("nan-weight", "NaN weight", [("a/0.png", "a", float("nan"))], True),
    ("negative-weight", "negative weight", [("a/0.png", "a", -1.0)], True),
    ("inf-weight", "infinite weight", [("a/0.png", "a", float("inf"))], True),
    ("label-outside", "label outside the class list", [("a/0.png", "zebra", 1.0)], False),
    ("missing-file", "path to a missing file", [("a/gone.png", "a", 1.0)], False),
]
ROWS = ([(c.id, c.label) for c in FILE_CASES]
        + [(i, label) for i, label, _, _ in LINK_CASES]
        + [(i + "+follow", label + ", `--follow-symlinks`") for i, label, _, _ in LINK_CASES]
        + CLASS_CASES
        + [("all-empty", "every class empty"),
           ("single-class", "one class with samples, the others empty")]
        + [(f"{i}-{fmt}", f"{fmt.upper()} table: {label}")
           for i, label, _, _ in TABLE_CASES for fmt in ("csv", "parquet")
           if not (i == "missing-file" and fmt == "parquet")])
FIXES = [  # what this suite found, and where it was fixed
    "`cache`, `train`, `evaluate`: a named pipe named like an image hung the command "
    "forever on `open`; `decode.read_file` now opens without blocking and refuses "
    "anything but a regular file (`decode.py`, `cache/build.py`).",
    "`evaluate` (and the final validation metrics of `train`): an unreadable file was replaced "
    "by another sample of its class and counted twice; it is now left out of the "
    "metrics, counted in a warning and listed in `metrics.json` `unreadable_files` "
    "(`evaluation.py`, `loader.py`).",
    "`train`: unreadable files were only warned about one by one; the run now ends with "
    "one warning counting and listing them (`training.py`).",
    "every command: warnings came out as two lines (`file:line: UserWarning: ...` and the "
    "source line) and a newline in a file name split an error over two lines; each "
    "warning and error is now one `longtail: ...` line, newlines shown as `\\n` (`cli.py`).",
    "`stats` on a folder whose classes are all empty failed with a message that named "
    "no file; `split` wrote empty manifests and exited 0; both now exit 2 naming DATA "
    "(`cli.py`).",
    "`evaluate` on DATA without samples advised lowering `batch_size`; it now names DATA "
    "(`cli.py`).",
    "a PNG past `max_pixels` also printed Pillow's warning, which names no file; the "
    "CLI hides it, the error naming the file stays (`cli.py`).",
    "`--follow-symlinks`: a class folder linking to the top folder indexed every other "
    "class's files a second time under its own label; such a class now stays empty "
    "with a warning, and dangling or looping links are counted "
    "(`sources/directory.py`).",
    "a top-level link to a folder (a class folder not followed) was ignored silently; "
    "it is counted with the other skipped links (`sources/directory.py`).",
]

OUTCOMES: dict[str, dict[str, str]] = {}


def record(case: str, command: str, text: str) -> None:
    OUTCOMES.setdefault(case, {})[command] = text


# ------------------------------------------------------------------ running
@dataclasses.dataclass
class Run:
    argv: list
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def error(self) -> str:
        return [line for line in self.lines if line.startswith("longtail: error: ")][0]

    def warnings(self, needle: str = "") -> list[str]:
        return [line for line in self.lines
                if line.startswith("longtail: warning: ") and needle in line]


def _snapshot(folder) -> str:
    """Digest of every entry under ``folder``: names, types, modes, sizes, times, bytes."""
    digest = hashlib.blake2b()
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            st = os.lstat(path)
            digest.update(repr((os.path.relpath(path, folder), st.st_mode, st.st_size,
                                st.st_mtime_ns)).encode())
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o444:
                with open(path, "rb") as f:
                    digest.update(f.read())
            elif stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode())
    return digest.hexdigest()


_NATIVE_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


def _check(run: Run, out, sources, before) -> Run:
    """The contract every run keeps, whatever its input."""
    assert run.code in (0, 2), run
    assert "Traceback" not in run.err, run.err
    ours = [line for line in run.lines if not _NATIVE_LOG.match(line)]  # C++ logs of jax/TF
    assert all(line.startswith("longtail: ") for line in ours), run.err
    if run.code == 2:
        errors = [line for line in ours if line.startswith("longtail: error: ")]
        assert len(errors) == 1 and ours[-1] == errors[0], run.err
        if out is not None:
            assert not os.path.exists(out), f"exit 2 left {os.listdir(out)} in {out}"
    assert [_snapshot(s) for s in sources] == before, f"{run.argv} changed its sources"
    return run


def cli(*argv, sources=(), out=None) -> Run:
    """``longtail ARGV`` in this process; a hang past TIMEOUT_S ends the test run."""
    argv = [str(a) for a in argv]
    before = [_snapshot(s) for s in sources]
    stdout, stderr = io.StringIO(), io.StringIO()
    faulthandler.dump_traceback_later(TIMEOUT_S, exit=True)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse
                code = e.code
    finally:
        faulthandler.cancel_dump_traceback_later()
    return _check(Run(argv, code, stdout.getvalue(), stderr.getvalue()), out, sources, before)


def cli_process(*argv, sources=(), out=None) -> Run:
    """``python -m longtail.cli ARGV`` as a subprocess, killed after TIMEOUT_S."""
    argv = [str(a) for a in argv]
    before = [_snapshot(s) for s in sources]
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONWARNINGS="")
    proc = subprocess.run([sys.executable, "-m", "longtail.cli", *argv], capture_output=True,
                          text=True, timeout=TIMEOUT_S, env=env)
    return _check(Run(argv, proc.returncode, proc.stdout, proc.stderr), out, sources, before)


def _short(text: str, base: str) -> str:
    """A message for the table: temporary folders dropped, at most ~110 characters."""
    text = text.replace(base + os.sep, "").replace(base, "")
    text = text.removeprefix("longtail: error: ").removeprefix("longtail: warning: ")
    return text if len(text) <= 110 else text[:107] + "..."


def _exit2(run: Run, base: str) -> str:
    return f"exit 2: `{_short(run.error, base)}`"


def _escaped(path: str) -> str:
    return path.replace("\n", "\\n")


# ------------------------------------------------------------------ folders
def _good(folder, n, seed=0):
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        make.good_png(os.path.join(folder, f"g{i}.png"), seed + i)


def _classes(root, extra_a=0):
    """Classes a, b (6 images each), one (1 image) and empty, as the model knows them."""
    _good(os.path.join(root, "a"), 6 + extra_a)
    _good(os.path.join(root, "b"), 6, seed=50)
    _good(os.path.join(root, "one"), 1, seed=90)
    os.makedirs(os.path.join(root, "empty"))
    return str(root)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return str(tmp_path_factory.mktemp("reliability"))


@pytest.fixture(scope="module")
def src(base):
    """One folder with every file and link case (class a), plus a 1-sample and an empty class."""
    root = _classes(os.path.join(base, "src"))
    for case in FILE_CASES:
        if case.id == "unreadable" and AS_ROOT:
            continue
        case.maker(os.path.join(root, "a", case.name))
    for _, _, rel, maker in LINK_CASES:
        maker(os.path.join(root, rel))
    yield root
    if not AS_ROOT:  # let pytest remove it
        os.chmod(os.path.join(root, "a", "unreadable.png"), 0o644)


@pytest.fixture(scope="module")
def links(base):
    """The link cases alone, for --follow-symlinks."""
    root = _classes(os.path.join(base, "links"))
    for _, _, rel, maker in LINK_CASES:
        maker(os.path.join(root, rel))
    return root


@pytest.fixture(scope="module")
def model(base):
    """A tiny model trained once on clean data with the classes of the folders above."""
    root = _classes(os.path.join(base, "clean"), extra_a=2)
    out = os.path.join(base, "model")
    run = cli("train", root, "--out", out, *TRAIN, sources=[root])
    assert run.code == 0, run.err
    return out, run


def _bad(case: FileCase) -> bool:
    return not case.decodes


def _present(case: FileCase) -> bool:
    return not (case.id == "unreadable" and AS_ROOT)


# ------------------------------------------------------- the folder matrix
@pytest.fixture(scope="module")
def src_runs(src, links, model, base):
    runs = {}
    o = lambda name: os.path.join(base, "out", name)  # noqa: E731
    runs["stats"] = cli("stats", src, "--json", sources=[src])
    runs["split"] = cli("split", src, "--out", o("split"), sources=[src])
    # --val src: the validation pass decodes every file in order, so every
    # bad file is met within one epoch.
    runs["train"] = cli("train", src, "--val", src, "--out", o("train"), *TRAIN, sources=[src])
    runs["cache"] = cli_process("cache", src, "--out", o("cache"), "--image-size", "8",
                                sources=[src])
    runs["evaluate"] = cli("evaluate", model[0], src, "--out", o("evaluate"), sources=[src])
    follow = "--follow-symlinks"
    runs["stats+follow"] = cli_process("stats", links, "--json", follow, sources=[links])
    runs["split+follow"] = cli("split", links, "--out", o("split-f"), follow, sources=[links])
    runs["train+follow"] = cli("train", links, "--out", o("train-f"), *TRAIN, follow,
                               sources=[links])
    runs["cache+follow"] = cli("cache", links, "--out", o("cache-f"), "--image-size", "8",
                               follow, sources=[links])
    runs["evaluate+follow"] = cli("evaluate", model[0], links, "--out", o("evaluate-f"),
                                  follow, sources=[links])
    for name, run in runs.items():
        assert run.code == 0, (name, run.err)
    return runs, o


def _split_paths(folder):
    import longtail as lt

    paths = set()
    for name in ("train", "val"):
        paths |= set(lt.Dataset.load(os.path.join(folder, f"{name}.parquet")).paths)
    return paths


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_file_case(case, src, src_runs, base):
    if not _present(case):
        for command in COMMANDS:
            record(case.id, command, ROOT_REASON)
        pytest.skip(ROOT_REASON)
    runs, o = src_runs
    path = os.path.join(src, "a", case.name)

    stats = json.loads(runs["stats"].out)
    files = [c for c in FILE_CASES if _present(c)]
    assert stats["samples"] == 6 + len(files) + 6 + 1  # every accepted file, none decoded
    record(case.id, "stats", "counted (not decoded)")

    assert path in _split_paths(o("split"))
    record(case.id, "split", "in a manifest (not decoded)")

    line = f"skipping unreadable file {_escaped(path)}: "
    warned = runs["train"].warnings(line)
    run_metrics = json.load(open(os.path.join(o("train"), "metrics.json")))
    listed = {e["path"]: e["reason"] for e in run_metrics.get("unreadable_files", [])}
    if _bad(case):
        assert warned, runs["train"].err
        reason = warned[0].split(line, 1)[1].split("; a sample of the same class")[0]
        assert listed[path] == reason
        record(case.id, "train", f"skipped, warned, listed: {_short(reason, base)}")
    else:
        assert not warned and path not in listed
        record(case.id, "train", "trained on")

    manifest = json.load(open(os.path.join(o("cache"), "cache.json")))
    skipped = {os.path.join(src, e["path"]): e["reason"] for e in manifest["skipped"]["files"]}
    if _bad(case):
        assert path in skipped  # the warning counts them and shows the first five
        record(case.id, "cache", f"skipped, listed: {_short(skipped[path], base)}")
    else:
        assert path not in skipped
        record(case.id, "cache", "cached")

    metrics = json.load(open(os.path.join(o("evaluate"), "metrics.json")))
    listed = {e["path"]: e["reason"] for e in metrics.get("unreadable_files", [])}
    decoded = [c for c in files if c.decodes]
    assert metrics["n_samples"] == 6 + len(decoded) + 6 + 1
    if _bad(case):
        assert path in listed
        record(case.id, "evaluate", f"left out of the metrics, listed: "
                                    f"{_short(listed[path], base)}")
    else:
        assert path not in listed
        record(case.id, "evaluate", "evaluated")


def test_bad_files_counted_once_in_summaries(src, src_runs):
    runs, _ = src_runs
    bad = [c for c in FILE_CASES if _bad(c) and _present(c)]
    assert runs["train"].warnings(f"{len(bad)} unreadable files were skipped")
    assert runs["cache"].warnings(f"{len(bad)} unreadable source files were skipped")
    assert runs["evaluate"].warnings(f"{len(bad)} unreadable files were left out")


@pytest.mark.parametrize("case", LINK_CASES, ids=[c[0] for c in LINK_CASES])
def test_link_case(case, src, links, src_runs):
    case_id, _, rel, _ = case
    runs, o = src_runs
    # Not followed: every link is skipped and counted; nothing behind it is indexed.
    for command in COMMANDS:
        run = runs[command]
        assert run.warnings("skipped 4 symbolic links"), (command, run.err)
        record(case_id, command, "skipped, counted in a warning")
    assert not any(p.startswith(os.path.join(src, rel)) for p in _split_paths(o("split")))

    # Followed: loops end, dangling links are counted, a link to the top folder
    # does not index the other classes twice.
    stats = json.loads(runs["stats+follow"].out)
    counts = {r["class"]: r["count"] for r in stats["per_class"]}
    assert counts == {"a": 6, "b": 6, "empty": 0, "one": 1, "zz-top": 0}
    paths = _split_paths(o("split-f"))
    assert len(paths) == 13 and all(os.path.exists(p) for p in paths)
    follow = {
        "self-link": ("skipped 2 symbolic links that dangle or loop",
                      "skipped, counted in a warning"),
        "dangling-link": ("skipped 2 symbolic links that dangle or loop",
                          "skipped, counted in a warning"),
        "parent-link": (None, "not entered again (the top folder is indexed once)"),
        "top-link": ("lead to the top folder or to another class folder are not entered",
                     "kept as an empty class, warned"),
    }[case_id]
    for command in ("stats", "split", "train", "cache", "evaluate"):
        run = runs[command + "+follow"]
        text = follow[1]
        if case_id == "top-link" and command == "evaluate":  # the model's classes only
            assert not run.warnings(follow[0] or "\0")
            text = "not a class of the model: not read"
        elif follow[0]:
            assert run.warnings(follow[0]), (command, run.err)
        record(case_id + "+follow", command, text)


def test_one_sample_and_empty_class(src, src_runs, model):
    runs, o = src_runs
    stats = json.loads(runs["stats"].out)
    counts = {r["class"]: r["count"] for r in stats["per_class"]}
    assert counts["one"] == 1 and counts["empty"] == 0
    record("one-sample", "stats", "count 1")
    record("empty-class", "stats", "count 0, weights 0, warned")
    assert all(stats["per_class"][2]["weights"][s] == 0 for s in stats["per_class"][2]["weights"])
    for command in COMMANDS:
        assert runs[command].warnings("with zero samples): empty"), (command, runs[command].err)
    assert runs["split"].warnings("kept in training): one")
    record("one-sample", "split", "kept in training, warned")
    record("empty-class", "split", "class kept with 0 samples, warned")
    # train's own validation split (the model fixture) meets the same cases
    assert model[1].warnings("kept in training): one")
    assert model[1].warnings("with zero samples): empty")
    record("one-sample", "train", "kept in training, warned")
    record("empty-class", "train", "class kept (0 samples, weight 0), warned")
    manifest = json.load(open(os.path.join(o("cache"), "cache.json")))
    assert manifest["class_names"] == ["a", "b", "empty", "one"]
    record("one-sample", "cache", "cached")
    record("empty-class", "cache", "class kept with 0 rows, warned")
    metrics = json.load(open(os.path.join(o("evaluate"), "metrics.json")))
    support = {r["class"]: r["support"] for r in metrics["per_class"]}
    assert support["one"] == 1 and support["empty"] == 0
    assert runs["evaluate"].warnings("have no samples in `y_true`")
    record("one-sample", "evaluate", "evaluated (support 1)")
    record("empty-class", "evaluate", "support 0, left out of the means of recall, warned")


@pytest.mark.parametrize("layout", ["all-empty", "single-class"])
def test_too_few_samples_or_classes(layout, base, model):
    root = os.path.join(base, layout)
    for name in ("a", "b", "empty", "one"):  # the model's classes
        os.makedirs(os.path.join(root, name))
    if layout == "single-class":
        _good(os.path.join(root, "a"), 3)
    outs = {c: os.path.join(base, "out", f"{layout}-{c}") for c in COMMANDS}
    runs = {
        "stats": cli("stats", root, sources=[root]),
        "split": cli("split", root, "--out", outs["split"], sources=[root], out=outs["split"]),
        "train": cli("train", root, "--out", outs["train"], *TRAIN, sources=[root],
                     out=outs["train"]),
        "cache": cli("cache", root, "--out", outs["cache"], "--image-size", "8",
                     sources=[root], out=outs["cache"]),
        "evaluate": cli("evaluate", model[0], root, "--out", outs["evaluate"], sources=[root],
                        out=outs["evaluate"]),
    }
    expected = {"all-empty": {c: 2 for c in COMMANDS},
                "single-class": {"stats": 0, "split": 0, "train": 2, "cache": 0,
                                 "evaluate": 0}}[layout]
    for command, run in runs.items():
        assert run.code == expected[command], (command, run.err)
        if run.code == 2:
            assert root in run.error
            record(layout, command, _exit2(run, base))
        else:
            record(layout, command, "ok")


# --------------------------------------------------------- the table matrix
@pytest.fixture(scope="module")
def tables(base):
    root = os.path.join(base, "tables")
    _good(os.path.join(root, "a"), 6)
    _good(os.path.join(root, "b"), 6, seed=50)
    good = [(f"{c}/g{i}.png", c, 1.0) for c in ("a", "b") for i in range(6)]
    made = {}
    for case_id, _, rows, _ in TABLE_CASES:
        rows = good[:2] + rows + good[2:]  # the bad row is row 3
        columns = {"path": [r[0] for r in rows], "label": [r[1] for r in rows],
                   "w": [r[2] for r in rows]}
        table = pa.table(columns)
        csv_path = os.path.join(root, f"{case_id}.csv")
        with open(csv_path, "w", encoding="utf-8") as f:
            f.write("path,label,w\n")
            for p, label, w in rows:
                f.write(f"{p},{'' if label is None else label},{w}\n")  # nan, inf as text
        made[f"{case_id}-csv"] = csv_path
        if case_id == "missing-file":
            continue
        if case_id == "label-outside":  # a manifest with its class list in the metadata
            meta = {"version": 1, "kind": "files", "class_names": ["a", "b"]}
            table = table.replace_schema_metadata({b"longtail": json.dumps(meta).encode()})
        made[f"{case_id}-parquet"] = os.path.join(root, f"{case_id}.parquet")
        pq.write_table(table, made[f"{case_id}-parquet"])
    return root, made


TABLE_IDS = [f"{i}-{fmt}" for i, _, _, _ in TABLE_CASES for fmt in ("csv", "parquet")
             if not (i == "missing-file" and fmt == "parquet")]


@pytest.mark.parametrize("case", TABLE_IDS)
def test_table_case(case, tables, model, base):
    root, made = tables
    table = made[case]
    case_id, fmt = case.rsplit("-", 1)
    weighted = {i: w for i, _, _, w in TABLE_CASES}[case_id]
    extra = ["--weight-column", "w"] if weighted else []
    outs = {c: os.path.join(base, "out", f"{case}-{c}") for c in COMMANDS}
    runner = {("nan-weight", "csv"): cli_process}  # one real process: exit 2, one line
    runs = {}
    for command in COMMANDS:
        args = {"stats": ["stats", table], "split": ["split", table, "--out", outs["split"]],
                "train": ["train", table, "--out", outs["train"], *TRAIN,
                          *(["--val", table] if case_id == "missing-file" else [])],
                "cache": ["cache", table, "--out", outs["cache"], "--image-size", "8"],
                "evaluate": ["evaluate", model[0], table, "--out", outs["evaluate"]]}[command]
        run_one = runner.get((case_id, fmt), cli) if command == "train" else cli
        runs[command] = run_one(*args, *extra, sources=[root],
                                out=outs[command] if command != "stats" else None)

    name = os.path.basename(table)
    if case_id in ("missing-label", "nan-weight", "negative-weight", "inf-weight") or (
            case_id == "label-outside" and fmt == "parquet"):
        for command, run in runs.items():
            assert run.code == 2, (command, run.err)
            assert name in run.error and "row 3" in run.error, run.error
            record(case, command, _exit2(run, base))
    elif case_id == "label-outside":  # a CSV has no class list: "zebra" is a class
        for command in ("stats", "split", "train", "cache"):
            assert runs[command].code == 0, (command, runs[command].err)
            record(case, command, "ok: `zebra` becomes a class")
        assert "zebra" in runs["stats"].out
        run = runs["evaluate"]  # the model's classes are the class list
        assert run.code == 2 and name in run.error and "zebra" in run.error, run.err
        record(case, "evaluate", _exit2(run, base))
    else:  # missing-file
        gone = os.path.join(root, "a", "gone.png")
        for command, run in runs.items():
            assert run.code == 0, (command, run.err)
        record(case, "stats", "counted (not read)")
        record(case, "split", "in a manifest (not read)")
        assert runs["train"].warnings(f"skipping unreadable file {gone}: cannot read the file")
        record(case, "train", "skipped, warned, listed: cannot read the file "
                              "(No such file or directory)")
        manifest = json.load(open(os.path.join(outs["cache"], "cache.json")))
        assert [e["path"] for e in manifest["skipped"]["files"]] == ["a/gone.png"]
        record(case, "cache", "skipped, listed")
        metrics = json.load(open(os.path.join(outs["evaluate"], "metrics.json")))
        assert [e["path"] for e in metrics["unreadable_files"]] == [gone]
        assert metrics["n_samples"] == 12
        record(case, "evaluate", "left out of the metrics, listed")


# ------------------------------------------------------------- the report
def _table_markdown() -> str:
    head = "| case | " + " | ".join(f"`{c}`" for c in COMMANDS) + " |"
    lines = [head, "|" + "---|" * (len(COMMANDS) + 1)]
    existing = open(DOC, encoding="utf-8").read().splitlines() if os.path.exists(DOC) else []
    for case_id, label in ROWS:
        cells = [OUTCOMES[case_id][c].replace("|", "\\|") for c in COMMANDS]
        row = f"| {label} | " + " | ".join(cells) + " |"
        if all(OUTCOMES[case_id][c] == ROOT_REASON for c in COMMANDS):
            # Not run here (root reads chmod 000 files): keep the row a run
            # without that privilege recorded, if there is one.
            kept = [line for line in existing if line.startswith(f"| {label} | ")
                    and ROOT_REASON.split(":")[0] + ":" not in line]
            row = kept[0] if kept else row
        lines.append(row)
    return "\n".join(lines)


def _section() -> str:
    fixes = "\n".join(f"- {f}" for f in FIXES)
    return f"""## Broken inputs

Generated by `python tools/reliability_doc.py` from what the
commands did; do not edit by hand (as root, run it under `setpriv
--bounding-set=-dac_override,-dac_read_search` so that the unreadable-file
case runs). Each file case sits in one folder with
clean images (class `a`); the commands run once over that folder:
`stats --json`, `split`, `train --val DATA --epochs 1 --image-size 8`
(the validation pass reads every file in order), `cache --image-size 8` and
`evaluate` with a model trained on clean data. Link cases run once as they
are and once with `--follow-symlinks`; each table case is its own file, run
by every command (`--weight-column w` for the weight cases). `cache` over the
folder, `stats --follow-symlinks` and one `train` run as subprocesses with a
timeout; the rest run in process through `longtail.cli.main`.

Every run is checked for: exit status 0 or 2; no traceback; every message one
`longtail: warning: ...` or `longtail: error: ...` line (a newline in a file
name is shown as `\\n`); on exit 2 exactly one error line, naming the file,
and no output folder left behind; the source folder unchanged (a checksum of
every name, mode, size, time and byte before and after). `stats` and `split`
never decode: they index files, so a broken file is counted there and met by
the commands that read pixels.

{_table_markdown()}

Found and fixed by this suite:

{fixes}"""


def _doc_with(section: str) -> str:
    block = f"{START}\n{section}\n{END}"
    text = open(DOC, encoding="utf-8").read() if os.path.exists(DOC) else "# Reliability\n"
    if START in text and END in text:
        return text[:text.index(START)] + block + text[text.index(END) + len(END):]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def test_reliability_doc_states_what_the_commands_did():
    """Runs last: docs/reliability.md's section matches this run's observations.

    The test never writes the repository; ``python tools/reliability_doc.py``
    reruns this module with LONGTAIL_WRITE_RELIABILITY_DOC=1, which rewrites it.
    """
    complete = all(set(OUTCOMES.get(case_id, {})) == set(COMMANDS) for case_id, _ in ROWS)
    if not complete:
        pytest.skip("a partial run (-k, a failure): nothing to compare")
    text = _doc_with(_section())
    if os.environ.get("LONGTAIL_WRITE_RELIABILITY_DOC") == "1":
        from longtail._io import write_text

        write_text(DOC, text)
    current = open(DOC, encoding="utf-8").read() if os.path.exists(DOC) else ""
    assert current == text, ("docs/reliability.md differs from what the commands did; "
                             "regenerate it with `python tools/reliability_doc.py`")
