"""Errors that speak to the user.

Every error longtail raises for bad input is a subclass of :class:`LongtailError`,
which is itself a :class:`ValueError`, so callers that already catch
``ValueError`` keep working. The command line turns any of them into a
one-line message and exit status 2.
"""

from __future__ import annotations

__all__ = ["LongtailError", "DataError", "DecodeError", "ConfigError"]


class LongtailError(ValueError):
    """Base class of the errors caused by the user's input or arguments."""


class DataError(LongtailError):
    """A dataset, table, manifest or cache is missing or malformed.

    The message names the file or folder and what was expected.
    """


class DecodeError(LongtailError):
    """A sample could not be read or decoded; the message names the file."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(LongtailError):
    """An argument or option is out of its accepted set or range."""
