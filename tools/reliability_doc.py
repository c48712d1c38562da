"""Regenerates the "Broken inputs" section of docs/reliability.md.

Runs tests/test_reliability.py with LONGTAIL_WRITE_RELIABILITY_DOC=1: its
last test then writes the section from what the commands did (the test alone
only compares). As root, run it under ``setpriv
--bounding-set=-dac_override,-dac_read_search`` so that the unreadable-file
case runs.

Usage: ``python tools/reliability_doc.py [pytest options]``
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    env = dict(os.environ, LONGTAIL_WRITE_RELIABILITY_DOC="1")
    command = [sys.executable, "-m", "pytest", "-q", "tests/test_reliability.py", *sys.argv[1:]]
    sys.exit(subprocess.call(command, cwd=REPO, env=env))
