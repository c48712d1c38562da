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
    # The printed ratio comes from unrounded rates; the columns are rounded to whole
    # images per second, so the ratio they imply is only known to within that rounding.
    low = 100 * (cache - 0.5) / (synthetic + 0.5)
    high = 100 * (cache + 0.5) / (synthetic - 0.5)
    assert low - 1 <= int(row.group(4)) <= high + 1
