import os

import pytest


def make_tree(root, counts, ext="png", nested=True):
    """Creates empty files: {class: n} -> root/class[/sub]/i.ext."""
    for name, n in counts.items():
        for i in range(n):
            sub = os.path.join(root, name, "sub" if nested and i % 2 else "")
            os.makedirs(sub, exist_ok=True)
            open(os.path.join(sub, f"{i:04d}.{ext}"), "w").close()
    return str(root)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data", {"dog": 30, "cat": 6, "Zebra": 3})
