"""Importing longtail: what it leaves alone, and what `from longtail import *` needs."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_importing_longtail_changes_nothing_global():
    result = _python(
        "import warnings, cv2\n"
        "threads, filters = cv2.getNumThreads(), list(warnings.filters)\n"
        "import longtail, longtail.decode, longtail.cache, longtail.predict, longtail.sources\n"
        "assert cv2.getNumThreads() == threads, (cv2.getNumThreads(), threads)\n"
        "added = [f for f in warnings.filters if f not in filters]\n"
        "assert not added, added\n"
        "from longtail.decode import opencv_on_calling_thread\n"
        "opencv_on_calling_thread()  # what a decoding pool of longtail sets\n"
        "assert cv2.getNumThreads() != threads\n"
        "print('ok')\n")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_star_import_works_without_torch():
    result = _python(
        "import sys\n"
        "class NoTorch:  # as if torch were not installed\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from longtail import *\n"
        "import longtail\n"
        "assert Dataset is longtail.Dataset and callable(evaluate) and callable(train)\n"
        "assert 'torch' not in dir() and 'tf' not in dir()  # a user's torch/tf stay theirs\n"
        "assert 'torch' in dir(longtail)\n"
        "print('ok')\n")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_a_missing_backend_skips_its_script_tests():
    import pytest
    from _backends import require_backend, run_script, start_script

    assert start_script("_layers_backend.py", "no_such_backend") is None
    for check in (lambda: require_backend("no_such_backend"),
                  lambda: run_script("_layers_backend.py", "no_such_backend")):
        with pytest.raises(pytest.skip.Exception, match="backend no_such_backend is not installed"):
            check()
