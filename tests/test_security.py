"""Hostile inputs: no pickle, safe-mode models, paths kept in their root, escaped HTML."""

import ast
import html.parser
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import longtail as lt
from longtail.errors import ConfigError, DataError

PACKAGE = pathlib.Path(lt.__file__).parent


# ------------------------------------------------------------------ no pickle
_BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve",
                   "joblib", "jsonpickle"}
_BANNED_CALLS = {"eval", "exec", "compile", "__import__"}


def _aliases(tree) -> dict:
    """Local name -> dotted module path, from every import in the module."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else \
                    a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node, aliases) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _keyword(call, name):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return "<missing>"


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Every place in ``source`` that could run code or unpickle while loading data."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            for m in modules:
                if m.split(".")[0] in _BANNED_MODULES:
                    found.append(f"{where}: imports {m}")
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id in _BANNED_CALLS and \
                node.func.id not in aliases:
            found.append(f"{where}: calls {node.func.id}()")
        name = _dotted(node.func, aliases) or ""
        if name in ("numpy.load", "numpy.lib.format.read_array") and \
                _keyword(node, "allow_pickle") is not False:
            found.append(f"{where}: {name} without allow_pickle=False")
        if name == "torch.load" and _keyword(node, "weights_only") is not True:
            found.append(f"{where}: torch.load without weights_only=True")
        if name.startswith("yaml.") and name.split(".")[-1] in (
                "load", "load_all", "full_load", "full_load_all", "unsafe_load",
                "unsafe_load_all"):
            found.append(f"{where}: {name} (use yaml.safe_load)")
        if name.split(".")[-1] in ("read_pickle", "enable_unsafe_deserialization"):
            found.append(f"{where}: {name}")
        if name.split(".")[-1] == "load_model" and _keyword(node, "safe_mode") is False:
            found.append(f"{where}: {name} with safe_mode=False")
        for kw in node.keywords:
            if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant)
                                                 and kw.value.value is False):
                found.append(f"{where}: allow_pickle={ast.unparse(kw.value)}")
    return found


def test_package_source_has_no_unsafe_loading():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = [f for path in files for f in unsafe_loads(path.read_text(), str(path))]
    assert found == []


@pytest.mark.parametrize("source", [
    "import pickle\npickle.loads(b'')",
    "from pickle import loads",
    "import cloudpickle",
    "import marshal",
    "import numpy as np\nnp.load('a.npy')",
    "import numpy\nnumpy.load('a.npy', allow_pickle=True)",
    "from numpy import load\nload('a.npy')",
    "import numpy as np\nnp.load('a.npy', allow_pickle=flag)",
    "import numpy as np\nnp.lib.format.read_array(f)",
    "import torch\ntorch.load('m.pt')",
    "import torch\ntorch.load('m.pt', weights_only=False)",
    "import yaml\nyaml.load(text, Loader=yaml.Loader)",
    "import yaml\nyaml.unsafe_load(text)",
    "eval('1 + 1')",
    "exec(code)",
    "import pandas as pd\npd.read_pickle('x.pkl')",
    "import keras\nkeras.saving.load_model('m.keras', safe_mode=False)",
    "import keras\nkeras.config.enable_unsafe_deserialization()",
])
def test_the_scanner_finds_each_unsafe_pattern(source):
    assert unsafe_loads(source), source


@pytest.mark.parametrize("source", [
    "import numpy as np\nnp.load('a.npy', allow_pickle=False)",
    "import numpy as np\nnp.load('a.npy', mmap_mode='r', allow_pickle=False)",
    "import torch\ntorch.load('m.pt', weights_only=True)",
    "import yaml\nyaml.safe_load(text)",
    "import json\njson.load(f)",
    "import keras\nkeras.saving.load_model('m.keras', safe_mode=True)",
    "model.compile(optimizer='adam')",
    "import pyarrow.parquet as pq\npq.read_table('t.parquet')",
])
def test_the_scanner_passes_safe_loading(source):
    assert unsafe_loads(source) == []


# ------------------------------------------------------------ safe-mode models
@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    import keras

    folder = tmp_path_factory.mktemp("models")
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    path = str(folder / "lambda.keras")
    model.save(path)
    plain = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    plain.save(str(folder / "plain.keras"))
    return path, str(folder / "plain.keras")


def test_a_model_with_a_lambda_layer_is_refused(lambda_model):
    from longtail.models import load_model, load_user_model

    path, plain = lambda_model
    assert load_model(plain).outputs[0].shape[-1] == 3  # a plain model loads
    with pytest.raises(ConfigError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused") and "\n" not in message
    assert "Lambda" in message and "safe mode" in message
    assert "safe_mode=False" not in message  # no advice to switch the guard off
    with pytest.raises(ConfigError, match=r"^--model .*lambda\.keras: refused"):
        load_user_model(path, num_classes=3)


def test_cli_evaluate_refuses_a_lambda_model_in_one_line(lambda_model, tmp_path):
    path, _ = lambda_model
    proc = subprocess.run([sys.executable, "-m", "longtail.cli", "evaluate", path,
                           str(tmp_path), "--out", str(tmp_path / "ev")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "jax"})
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("longtail:")]
    assert len(lines) == 1 and "refused" in lines[0] and "Lambda" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------- paths in the root
def _png(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (4, 4), (200, 10, 10)).save(path)
    return str(path)


@pytest.fixture
def layout(tmp_path):
    """tmp/data/{a,b}/*.png, tmp/secret.png outside, tmp/data/table.csv."""
    for c in ("a", "b"):
        for i in range(3):
            _png(tmp_path / "data" / c / f"{i}.png")
    _png(tmp_path / "secret.png")
    return tmp_path


def _csv(path, rows):
    path.write_text("path,label\n" + "".join(f"{p},{c}\n" for p, c in rows))
    return str(path)


INSIDE = [("a/0.png", "a"), ("a/1.png", "a"), ("b/0.png", "b"), ("b/1.png", "b")]


@pytest.mark.parametrize("escape", ["../secret.png", "a/../../secret.png", "ABS",
                                    "./../data/../secret.png"])
def test_a_table_path_leaving_its_folder_is_refused(layout, escape):
    escape = str(layout / "secret.png") if escape == "ABS" else escape
    table = _csv(layout / "data" / "t.csv", INSIDE + [(escape, "b")])
    with pytest.raises(DataError) as info:
        lt.Dataset.from_table(table)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{table}: row 5: ")
    assert repr(escape) in message and "--allow-outside-root" in message
    with pytest.raises(DataError, match="leads outside"):
        lt.Dataset.open(table)
    ds = lt.Dataset.open(table, allow_outside_root=True)  # the user's opt-in
    assert os.path.normpath(ds.path(4)) == str(layout / "secret.png")
    assert len(ds.loader(batch_size=5, image_size=4, on_error="raise",
                         sampling="sequential", num_workers=0)) == 1


def test_paths_that_stay_inside_are_accepted(layout):
    table = _csv(layout / "data" / "t.csv", INSIDE + [
        (str(layout / "data" / "b" / "2.png"), "b"),  # absolute, but inside
        ("a/../b/2.png", "b"), ("a..b/../a/2.png", "a")])
    ds = lt.Dataset.from_table(table)
    assert len(ds) == 7 and os.path.normpath(ds.path(5)) == str(layout / "data/b/2.png")


def test_a_manifest_is_checked_against_its_stored_root(layout):
    ds = lt.Dataset.from_directory(layout / "data")
    manifest = layout / "splits" / "train.parquet"
    os.makedirs(manifest.parent)
    ds.save(manifest)  # root stored as ../data: outside the manifest's folder, declared
    meta = json.loads(pq.read_schema(manifest).metadata[b"longtail"])
    assert meta["root"] == os.path.join("..", "data")
    assert lt.Dataset.load(manifest).equals(ds)

    table = pq.read_table(manifest)
    paths = table.column("path").to_pylist()
    paths[0] = "../secret.png"
    hostile = table.set_column(0, "path", pa.array(paths)).replace_schema_metadata(
        table.schema.metadata)
    pq.write_table(hostile, layout / "splits" / "hostile.parquet")
    with pytest.raises(DataError, match=r"row 1: path '\.\./secret\.png' leads outside .*"
                                        r"manifest's root"):
        lt.Dataset.load(layout / "splits" / "hostile.parquet")
    opened = lt.Dataset.load(layout / "splits" / "hostile.parquet", allow_outside_root=True)
    assert os.path.normpath(opened.path(0)) == str(layout / "secret.png")

    meta["root"] = None  # absolute paths and no root: nothing to hold them in
    absolute = table.set_column(0, "path", pa.array(list(ds.paths))).replace_schema_metadata(
        {b"longtail": json.dumps(meta).encode()})
    pq.write_table(absolute, layout / "splits" / "absolute.parquet")
    with pytest.raises(DataError, match="absolute paths and no root folder"):
        lt.Dataset.load(layout / "splits" / "absolute.parquet")
    assert lt.Dataset.load(layout / "splits" / "absolute.parquet",
                           allow_outside_root=True).equals(ds)


@pytest.mark.parametrize("how", ["absolute", "mixed", "opted-in table"])
def test_manifests_longtail_writes_load_without_the_opt_in(layout, how):
    data = layout / "data"
    if how == "absolute":  # from_arrays keeps root None
        ds = lt.Dataset.from_arrays([str(data / "a/0.png"), str(layout / "secret.png")],
                                    ["a", "b"])
        assert ds.root is None
    elif how == "mixed":  # relative to root, plus an absolute path elsewhere
        ds = lt.Dataset.from_arrays(["a/0.png", "b/0.png", str(layout / "secret.png")],
                                    ["a", "b", "b"], root=data)
    else:
        table = _csv(data / "t.csv", INSIDE + [("../secret.png", "b")])
        ds = lt.Dataset.from_table(table, allow_outside_root=True)
    out = layout / "out" / "m.parquet"
    os.makedirs(out.parent)
    ds.save(out)
    back = lt.Dataset.load(out)  # the same files, their paths normalised
    assert back.class_names == ds.class_names and back.labels.tolist() == ds.labels.tolist()
    assert [os.path.normpath(p) for p in back.paths] == [os.path.normpath(p) for p in ds.paths]
    assert back.root is not None and all(not os.path.isabs(p) and ".." not in p.split(os.sep)
                                         for p in back.relative_paths.to_pylist())


def test_cli_refuses_then_accepts_with_allow_outside_root(layout, capsys):
    from longtail.cli import main

    table = _csv(layout / "data" / "t.csv", INSIDE + [("../secret.png", "b")])
    assert main(["stats", table]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "leads outside" in err and "--allow-outside-root" in err
    assert main(["stats", table, "--allow-outside-root", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 5
    out = layout / "split"
    assert main(["split", table, "--out", str(out)]) == 2
    capsys.readouterr()
    assert main(["split", table, "--out", str(out), "--allow-outside-root", "--val", "0.4"]) == 0
    # the manifests split wrote load as they are, with no opt-in
    parts = [lt.Dataset.load(out / f"{n}.parquet") for n in ("train", "val")]
    assert sum(len(p) for p in parts) == 5


def test_every_data_command_takes_allow_outside_root(tmp_path):
    from longtail.cli import _train_options, build_parser

    parser = build_parser()
    for argv in (["stats", "D"], ["split", "D", "--out", "o"], ["train", "D", "--out", "o"],
                 ["evaluate", "M", "D", "--out", "o"], ["cache", "D", "--out", "o"],
                 ["compare", "D", "--strategies", "none", "--out", "o"]):
        assert parser.parse_args(argv).allow_outside_root is False
        args = parser.parse_args(argv + ["--allow-outside-root"])
        assert args.allow_outside_root is True
        if argv[0] in ("train", "compare"):
            assert _train_options(args)["data_options"]["allow_outside_root"] is True


# ------------------------------------------------------------------- caches
@pytest.fixture
def cache(layout):
    from longtail.cache import build_cache

    out = layout / "cache"
    build_cache(str(layout / "data"), str(out), image_size=4, workers=1)
    lt.Dataset.open(out)  # opens as built
    return out


def _rewrite_manifest(cache, edit):
    path = cache / "cache.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["../../secret.npy", "ABS", "sub/00000.npy", ".."])
def test_a_cache_naming_files_outside_its_folder_is_refused(cache, layout, name):
    shard = cache / "shards" / "00000.npy"
    outside = layout / "elsewhere" / "00000.npy"
    os.makedirs(outside.parent)
    shutil.copy(shard, outside)
    name = str(outside) if name == "ABS" else name

    def edit(m):
        files = m["shards"][0]["files"]
        files[name] = files.pop("00000.npy")
    _rewrite_manifest(cache, edit)
    with pytest.raises(DataError) as info:
        lt.Dataset.open(cache)
    message = str(info.value)
    assert "\n" not in message and repr(name) in message and "not inside the cache" in message
    assert "--allow-outside-root" in message


def test_a_cache_shard_linked_outside_is_refused_unless_allowed(cache, layout):
    shard = cache / "shards" / "00000.npy"
    outside = layout / "elsewhere.npy"
    shutil.move(shard, outside)
    os.symlink(outside, shard)
    with pytest.raises(DataError, match="'00000.npy', which is not inside the cache"):
        lt.Dataset.open(cache)
    ds = lt.Dataset.open(cache, allow_outside_root=True)
    x, _ = next(iter(ds.loader(batch_size=2, num_workers=0, sampling="sequential")))
    assert x.shape == (2, 4, 4, 3)


def test_a_cache_rows_file_outside_is_refused(cache):
    _rewrite_manifest(cache, lambda m: m["rows_file"].update(name="../../rows.parquet"))
    with pytest.raises(DataError, match=r"'\.\./\.\./rows\.parquet', which is not inside"):
        lt.Dataset.open(cache)


# --------------------------------------------------------------- HTML reports
PAYLOADS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(2)>',
            "'><svg onload=alert(3)>", "</td></tr></table><iframe src=javascript:alert(4)>"]
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "section",
                "table", "thead", "tbody", "tr", "th", "td", "p", "div", "img", "span", "pre",
                "strong"}


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def _check_page(path):
    page = _Collect()
    page.feed(pathlib.Path(path).read_text(encoding="utf-8"))
    for tag, attrs in page.tags:
        assert tag in ALLOWED_TAGS, tag
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    return "".join(page.text)


def test_reports_escape_class_strategy_and_file_names(tmp_path):
    from longtail.metrics import compute_metrics
    from longtail.report import write_compare_report, write_report

    names = [f"{p} class{i}" for i, p in enumerate(PAYLOADS)]
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    logits = rng.normal(size=(40, 4)) + 2 * np.eye(4)[y]
    metrics = compute_metrics(y, logits, names, train_counts=[150, 60, 10, 3])
    metrics["per_class"][3]["shot"] = PAYLOADS[1]  # a string where a group name goes
    (tmp_path / "history.csv").write_text(f"epoch,loss,{PAYLOADS[0]}\n0,1.0,0.5\n1,0.5,0.7\n")
    config = {"data": f"/data/{PAYLOADS[1]}.csv", "model": f"{PAYLOADS[0]}.keras",
              "strategy": PAYLOADS[2]}
    report = write_report(tmp_path, metrics, config=config,
                          title=f"longtail evaluation: {PAYLOADS[3]}.csv")
    text = _check_page(report)
    for p in PAYLOADS:  # the strings are there, as text
        assert p in text, p

    summaries = [{"strategy": s, "metrics": metrics, "train_seconds": 1.0}
                 for s in (PAYLOADS[0], PAYLOADS[1], "none")]
    compare = write_compare_report(tmp_path / "cmp", summaries, title=PAYLOADS[3])
    text = _check_page(compare)
    assert PAYLOADS[0] in text and PAYLOADS[1] in text and PAYLOADS[3] in text


def test_the_page_check_catches_an_unescaped_payload(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(f"<html><body><td>{PAYLOADS[1]}</td></body></html>")
    with pytest.raises(AssertionError):
        _check_page(page)
    page.write_text(f"<html><body><td>{PAYLOADS[0]}</td></body></html>")
    with pytest.raises(AssertionError):
        _check_page(page)


def test_cache_check_refuses_an_escaping_cache_unless_allowed(cache, layout, capsys):
    from longtail.cli import main

    shard = cache / "shards" / "00000.npy"
    outside = layout / "elsewhere.npy"
    shutil.move(shard, outside)
    os.symlink(outside, shard)
    assert main(["cache", "--check", str(cache)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not inside the cache" in err
    assert main(["cache", "--check", str(cache), "--allow-outside-root"]) == 0
    assert "0 sources changed" in capsys.readouterr().out


def test_predict_refuses_an_escaping_manifest_unless_allowed(layout, tmp_path, capsys):
    import keras

    from longtail.cli import main

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    model.save(tmp_path / "m.keras")
    manifest = _csv(layout / "data" / "m.csv", [("a/0.png", "a"), ("../secret.png", "b")])
    out = tmp_path / "preds.csv"
    assert main(["predict", str(tmp_path / "m.keras"), manifest, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'../secret.png' leads outside" in err
    assert not out.exists()
    assert main(["predict", str(tmp_path / "m.keras"), manifest, "--out", str(out),
                 "--allow-outside-root"]) == 0
    rows = out.read_text().strip().splitlines()
    assert len(rows) == 3 and rows[2].split(",")[0].endswith("secret.png")


# ------------------------------------------- a stored root is data, not trust
def _hostile_manifest(path, root, rows, class_names=("a", "b")):
    """A Parquet manifest, as another tool (or an attacker) could write it."""
    table = pa.table({"path": [p for p, _ in rows], "label": [c for _, c in rows]})
    meta = {"version": 1, "class_names": list(class_names), "kind": "files", "root": root}
    pq.write_table(table.replace_schema_metadata({b"longtail": json.dumps(meta).encode()}),
                   path)
    return str(path)


@pytest.mark.parametrize("root", ["/", "../../..", "..", "ABS", "../elsewhere"])
def test_a_manifest_cannot_widen_its_own_root(layout, root):
    outside = layout / "elsewhere"
    _png(outside / "private.png")
    target = {"/": str(outside / "private.png").lstrip("/"),
              "../../..": os.path.relpath(outside / "private.png", "/"),
              "..": "elsewhere/private.png", "ABS": "private.png",
              "../elsewhere": "private.png"}[root]
    stored = str(outside) if root == "ABS" else root
    sub = layout / "m"
    os.makedirs(sub)
    if root == "../../..":  # as many ".." as it takes to climb to "/"
        stored = "/".join([".."] * len(sub.parts))
    manifest = _hostile_manifest(sub / "m.parquet", stored, [(target, "a"), (target, "b")])
    with pytest.raises(DataError) as info:
        lt.Dataset.from_table(manifest)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{manifest}: the manifest's stored root")
    assert "--allow-outside-root" in message
    with pytest.raises(DataError, match="stored root"):
        lt.Dataset.open(manifest)
    # the user's opt-in reads it
    ds = lt.Dataset.open(manifest, allow_outside_root=True)
    assert os.path.normpath(ds.path(0)) == str(outside / "private.png")


@pytest.mark.parametrize("command", ["stats", "cache", "predict"])
def test_cli_commands_refuse_a_manifest_that_declares_its_root(layout, command, capsys,
                                                               tmp_path):
    from longtail.cli import main

    secret = layout / "not-an-image.png"
    secret.write_text("root:x:0:0:SECRET-TOKEN\n")
    manifest = _hostile_manifest(layout / "data" / "m.parquet", "..",
                                 [("not-an-image.png", "a"), ("data/a/0.png", "b")])
    argv = {"stats": ["stats", manifest],
            "cache": ["cache", manifest, "--out", str(tmp_path / "c"), "--image-size", "4"],
            "predict": ["predict", "MODEL", manifest]}[command]
    if command == "predict":
        pytest.importorskip("keras")
        argv[1] = str(_tiny_model(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stored root" in err and "SECRET" not in err
    assert not (tmp_path / "c").exists()


def _tiny_model(tmp_path):
    import keras

    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    path = tmp_path / "tiny.keras"
    model.save(path)
    return path


def test_a_manifest_longtail_sealed_loads_until_it_is_edited(layout, monkeypatch):
    ds = lt.Dataset.from_directory(layout / "data")
    manifest = layout / "splits" / "train.parquet"
    os.makedirs(manifest.parent)
    ds.save(manifest)  # root "../data", sealed for this user
    assert lt.Dataset.load(manifest).equals(ds)

    table = pq.read_table(manifest)
    meta = json.loads(table.schema.metadata[b"longtail"])
    # the same seal on another root, or on other paths, is no seal
    moved = dict(meta, root="..")
    pq.write_table(table.replace_schema_metadata({b"longtail": json.dumps(moved).encode()}),
                   layout / "splits" / "moved.parquet")
    with pytest.raises(DataError, match="was not written by longtail for this user"):
        lt.Dataset.load(layout / "splits" / "moved.parquet")
    paths = table.column("path").to_pylist()
    paths[0] = "b/2.png"  # still inside the stored root, but not what was sealed
    edited = table.set_column(0, "path", pa.array(paths)).replace_schema_metadata(
        table.schema.metadata)
    pq.write_table(edited, layout / "splits" / "edited.parquet")
    with pytest.raises(DataError, match="or was edited since"):
        lt.Dataset.load(layout / "splits" / "edited.parquet")
    # another user (another key) does not trust this user's seal
    monkeypatch.setenv("LONGTAIL_CONFIG_DIR", str(layout / "other-user"))
    with pytest.raises(DataError, match="stored root"):
        lt.Dataset.load(manifest)
    assert lt.Dataset.load(manifest, allow_outside_root=True).equals(ds)


def _digest_by_hand(strings: list) -> bytes:
    """The seal's digest of paths, one Python string at a time: offsets, then characters."""
    import hashlib

    digest = hashlib.sha256()
    if not strings:
        return digest.digest()
    encoded = [s.encode() for s in strings]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in encoded])]).astype("<i8")
    digest.update(offsets.tobytes())
    digest.update(b"".join(encoded))
    return digest.digest()


@pytest.mark.parametrize("block", [1, 3, 1 << 20])
def test_the_paths_digest_is_the_same_however_the_column_is_chunked(block):
    from longtail._trust import strings_digest

    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(0, 30))
        strings = ["".join(rng.choice(list("ab/é._"), int(rng.integers(0, 7)))) for _ in range(n)]
        cuts = sorted(rng.choice(n + 1, int(rng.integers(0, min(4, n + 1) + 1)), replace=False))
        parts = [strings[a:b] for a, b in zip([0, *cuts], [*cuts, n])]
        chunked = pa.chunked_array([pa.array(p, pa.string()) for p in parts], pa.string())
        sliced = pa.array(["x", *strings, "y"], pa.large_string()).slice(1, n)
        expected = _digest_by_hand(strings)
        assert strings_digest(chunked, block=block) == expected
        assert strings_digest(chunked.combine_chunks(), block=block) == expected
        assert strings_digest(sliced, block=block) == expected


def test_a_sealed_manifest_read_back_in_many_chunks_still_loads(layout):
    ds = lt.Dataset.from_directory(layout / "data")
    manifest = layout / "splits" / "train.parquet"
    os.makedirs(manifest.parent)
    ds.save(manifest)  # root "../data": opens only through its seal
    table = pq.read_table(manifest)
    pq.write_table(table, layout / "splits" / "groups.parquet", row_group_size=1)
    assert pq.read_table(layout / "splits" / "groups.parquet").column("path").num_chunks > 1
    assert lt.Dataset.load(layout / "splits" / "groups.parquet").equals(ds)


def test_a_cache_split_cannot_point_at_another_cache(cache, layout):
    ds = lt.Dataset.open(cache)
    train, _ = ds.split(val=0.5, seed=0)
    out = layout / "cs" / "train.parquet"
    os.makedirs(out.parent)
    train.save(out)  # sealed: opens with the cache outside its folder
    assert len(lt.Dataset.load(out)) == len(train)
    table = pq.read_table(out)
    meta = json.loads(table.schema.metadata[b"longtail"])
    meta["cache"] = str(cache)  # the same cache, named another way: not sealed
    pq.write_table(table.replace_schema_metadata({b"longtail": json.dumps(meta).encode()}),
                   layout / "cs" / "hostile.parquet")
    with pytest.raises(DataError, match="stored cache"):
        lt.Dataset.load(layout / "cs" / "hostile.parquet")


# ------------------------------------------------- no file contents in messages
@pytest.mark.parametrize("content", [b"root:x:0:0:SECRET-TOKEN\n",
                                     b"\x93NUMPY\x01\x00\x20\x00{'descr': 'SECRET-TOKEN'}  \n",
                                     b"\xff\xd8\xffSECRET-TOKEN-not-a-real-jpeg"])
def test_decode_errors_never_quote_the_file(tmp_path, content):
    from longtail.decode import DecodeOptions, read_image
    from longtail.errors import DecodeError

    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(DecodeError) as info:
        read_image(str(path), DecodeOptions(image_size=(4, 4)))
    assert "SECRET" not in str(info.value) and "root:x" not in str(info.value)
    assert str(path) in str(info.value)


def test_predict_folder_skips_links_that_indexing_skips(layout, tmp_path):
    from longtail.predict import collect_inputs

    folder = layout / "inputs"
    _png(folder / "own.png")
    os.symlink(layout / "secret.png", folder / "link.png")
    os.symlink(layout / "data", folder / "linked-folder")
    with pytest.warns(UserWarning, match="skipped 2 symbolic links"):
        paths = collect_inputs([str(folder)])
    assert paths == [str(folder / "own.png")]
    assert lt.Dataset.from_directory(layout / "data").paths.tolist() == \
        lt.Dataset.from_directory(layout / "data", follow_symlinks=False).paths.tolist()
    followed = collect_inputs([str(folder)], follow_symlinks=True)
    assert sorted(map(os.path.basename, followed)) == sorted(
        ["own.png", "link.png"] + [f"{i}.png" for i in range(3)] * 2)


@pytest.mark.parametrize("name", ["=HYPERLINK(1)", "+1+2", "-2+3", "@SUM(A1)", "\tx", "plain"])
def test_predict_csv_neutralises_formula_cells(tmp_path, name, monkeypatch):
    import csv
    import io

    from longtail.predict import predict_files

    monkeypatch.chdir(tmp_path)
    image = _png(tmp_path / "ok.png")

    class Model:  # a fixed linear model: class 0 always wins
        def predict_on_batch(self, x):
            return np.tile([[5.0, 0.0]], (len(x), 1))

    (tmp_path / f"{name}.png").write_bytes(b"not an image")
    text, failed = predict_files(Model(), [image, f"{name}.png"],
                                 class_names=[name, "-other"], image_size=(4, 4), top_k=2)
    rows = list(csv.reader(io.StringIO(text)))
    guard = "" if name == "plain" else "'"
    assert rows[1][1] == guard + name and rows[1][3] == "'-other"
    assert rows[2][0] == guard + name + ".png" and rows[1][0] == image
    assert float(rows[1][2]) == pytest.approx(np.exp(5) / (np.exp(5) + 1), abs=1e-6)
    assert len(failed) == 1
