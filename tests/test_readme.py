"""Every command and Python block of the README runs (epochs and image size scaled down)."""

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images

README = Path(__file__).resolve().parent.parent / "README.md"
FAST = [(r"--epochs \d+", "--epochs 1"), (r"--image-size \d+", "--image-size 8"),
        (r"epochs=\d+", "epochs=1"), (r"image_size=64", "image_size=8"),
        (r"image_size=\(64, 64\)", "image_size=(8, 8)"), (r"batch_size=64", "batch_size=16")]


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def fast(text):
    for pattern, repl in FAST:
        text = re.sub(pattern, repl, text)
    return text


@pytest.fixture
def photos(tmp_path):
    root = tmp_path
    make_images(root / "photos", (40, 12, 6), seed=0)
    os.rename(root / "photos" / "class_0", root / "photos" / "cat")
    return root


def test_readme_has_exactly_two_setup_commands():
    setup = README.read_text().split("## Set up")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
    assert len(commands) == 2
    assert "longtail demo" in commands[0] and "pytest" in commands[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci


def test_cli_examples_run(photos, monkeypatch, capsys):
    """Each line runs through the entry point the ``longtail`` script calls (test_cli
    runs the installed script itself), in one process to spare a Keras start-up each."""
    from longtail.cli import main

    cli = [b for b in blocks("bash") if b.lstrip().startswith("longtail ")]
    assert cli
    lines = fast(cli[0]).replace("\\\n", " ").splitlines()
    monkeypatch.chdir(photos)
    ran = 0
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        argv = shlex.split(line)
        assert argv[0] == "longtail", line
        code = main(argv[1:])
        assert code == 0, (line, capsys.readouterr().err[-1500:])
        ran += 1
    assert ran >= 8  # stats, split, stats, train, evaluate, predict, compare, cache
    assert (photos / "preds.csv").is_file() and (photos / "runs" / "cmp").is_dir()


def test_python_examples_run(photos, monkeypatch):
    monkeypatch.chdir(photos)
    import longtail as lt

    ds = lt.Dataset.from_directory("photos")
    namespace = {"filenames": [os.path.relpath(p, "photos") for p in ds.paths],
                 "labels": [ds.class_names[i] for i in ds.labels]}
    os.symlink("photos", "images")
    for block in blocks("python"):
        exec(compile(fast(block), "README.md", "exec"), namespace)
    assert isinstance(namespace["w"], np.ndarray)
    assert (photos / "runs" / "mine" / "metrics.json").is_file()
