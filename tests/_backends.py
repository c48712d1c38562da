"""Running a test script under another Keras backend, the same way in every test file.

The suite's own process runs JAX (see conftest.py); a check that needs torch
or TensorFlow runs a script in a subprocess with ``KERAS_BACKEND`` set, and a
backend that is not installed skips that check (it does not fail it):

    proc = start_script("_fit_backend.py", "torch", data_dir)  # None if missing
    ...
    require_backend("torch")                 # in the test: skips when missing
    code, out, err = proc.result()

Importing this module imports neither Keras nor pytest.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

BACKENDS = ("jax", "torch", "tensorflow")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# The inputs of these scripts are tiny: one thread each keeps the backends'
# thread pools from spinning against each other and the test process.
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def installed(backend: str) -> bool:
    """Whether the backend's framework can be imported (without importing it)."""
    return importlib.util.find_spec(backend) is not None


def require_backend(backend: str) -> None:
    """Skips the calling test when ``backend`` is not installed."""
    if not installed(backend):
        import pytest

        pytest.skip(f"backend {backend} is not installed")


def backend_env(backend: str, one_thread: bool = False) -> dict:
    """This process' environment for a script under ``backend``, on the CPU."""
    path = [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join(path),
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return {**env, **ONE_THREAD} if one_thread else env


class Script:
    """A script running under one backend; :meth:`result` waits for it."""

    def __init__(self, script: str, backend: str, args, one_thread: bool):
        self.backend = backend
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, script), *map(str, args)],
            env=backend_env(backend, one_thread), cwd=REPO, stdout=self._out,
            stderr=self._err, text=True)

    def result(self, timeout: float = 300.0) -> tuple[int, str, str]:
        """``(exit status, stdout, stderr)``; a run past ``timeout`` is killed."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.seek(0)
        self._err.seek(0)
        return self.proc.returncode, self._out.read(), self._err.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


def start_script(script: str, backend: str, *args, one_thread: bool = False) -> Script | None:
    """Starts ``tests/<script> ARGS`` under ``backend``; None when it is not installed."""
    if not installed(backend):
        return None
    return Script(script, backend, args, one_thread)


def run_script(script: str, backend: str, *args, timeout: float = 300.0,
               one_thread: bool = False) -> tuple[int, str, str]:
    """Runs ``tests/<script> ARGS`` under ``backend`` to the end; skips when it is missing."""
    require_backend(backend)
    return start_script(script, backend, *args, one_thread=one_thread).result(timeout)
