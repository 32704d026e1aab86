"""Errors raised by massact_viz.

Every error caused by user input derives from :class:`MassActError` (itself a ``ValueError``) and
its message says what was wrong *and* what to do instead.
"""
from __future__ import annotations


class MassActError(ValueError):
    """Bad input to massact_viz. The message says what to do instead."""


class UnsupportedArchitectureError(MassActError):
    """The pipeline's transformer belongs to no registered family."""


class RunFileError(MassActError):
    """A run directory is missing, truncated, corrupt, or was not written by massact_viz."""


def check_index(value: int, size: int, what: str, hint: str = "") -> int:
    """Return ``value`` as a non-negative index into ``range(size)``; negative counts from the end."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MassActError(f"{what} must be an integer, got {value!r}. {hint}".strip())
    if not -size <= value < size:
        raise MassActError(f"{what} {value} is out of range: valid values are 0..{size - 1}"
                           f" (or -{size}..-1 from the end). {hint}".strip())
    return value % size


def check_k(k: int, size: int, what: str = "k") -> int:
    """Validate a channel count ``k`` against a width ``size``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise MassActError(f"{what} must be an integer between 1 and {size} (the number of channels), got {k!r}.")
    return k
