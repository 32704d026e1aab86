"""Resolving what a user names: image sizes and list-or-single arguments (layers, steps, streams,
tokens and channels build on these). Pure functions over plain values; nothing here knows a model."""
from __future__ import annotations

from typing import Any

from .errors import MassActError


def check_size(size: Any) -> tuple[int, int] | None:
    """``(height, width)`` in pixels from a pair or one int (a square); None stays None (the pipeline's default)."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return (size[0], size[1])
    raise MassActError(f"size must be (height, width) in pixels or one int for a square, got {size!r}.")


def listify(v: Any, what: str) -> list | None:
    """A list from a single value or an iterable; None stays None (meaning "all")."""
    if v is None:
        return None
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return [v]
    try:
        return list(v)
    except TypeError:
        raise MassActError(f"{what} must be a list (or a single value), got {v!r}.") from None
