"""The training-throughput benchmark runs in its CPU smoke configuration."""

import os
import re
import subprocess
import sys
from pathlib import Path


def test_smoke_configuration_prints_all_three_configurations():
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--smoke"],
                            cwd=root, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, KERAS_BACKEND="jax"))
    assert result.returncode == 0, result.stderr[-2000:]
    row = re.search(r"^resnet\s+32\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+(\d+)%\s+(\d+)%$",
                    result.stdout, flags=re.M)
    assert row, result.stdout
    synthetic, cache, jpeg = (float(v.replace(",", "")) for v in row.groups()[:3])
    assert min(synthetic, cache, jpeg) > 0
    assert abs(int(row.group(4)) - 100 * cache / synthetic) <= 2  # the printed ratio
