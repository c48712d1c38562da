"""``python -m longtail``: the same entry point as the ``longtail`` command."""

import sys

from longtail.cli import main

sys.exit(main())
