"""``python -m longtail``: the same entry point as the ``longtail`` command."""

import os
import sys

from longtail.cli import main

code = main()
if code == 130:
    # Interrupted (Ctrl-C), maybe mid-epoch: decode threads, Keras' callback
    # threads and XLA's own may still be running. Tearing the interpreter
    # down under them can crash it (SIGSEGV after "longtail: interrupted");
    # every file is already committed or left to the next run's clean-up, so
    # flush and end the process without finalising the interpreter.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
