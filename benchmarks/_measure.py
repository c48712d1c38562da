"""Peak resident memory of one call, for benchmarks that run each case in a fresh process.

Linux only: writing ``5`` to ``/proc/self/clear_refs`` resets the process's
peak resident set (``VmHWM``) to its current size, so the peak read after a
call is the call's own peak, not the set-up's.
"""

from __future__ import annotations


def status(key: str) -> int:
    """A ``/proc/self/status`` size field (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def reset_peak() -> int:
    """Resets the peak resident set to now; returns the resident bytes now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")


def peak_above(base: int) -> float:
    """MiB of the peak resident set above ``base``."""
    return (status("VmHWM") - base) / 2**20
