"""Resolving what a user names: image sizes and list-or-single arguments (layers, steps, streams,
tokens and channels build on these). Pure functions over plain values; nothing here knows a model."""
from __future__ import annotations

from typing import Any

from .errors import MassActError, check_index


#: the largest image side (pixels) and the most denoising steps a run accepts: well past what any supported
#: model draws (FLUX.1 and SD3 at most about 2048 px) or samples with, and small enough that a typo such as
#: ``--size 100000`` or ``--steps 10000000`` gets this error instead of exhausting memory
MAX_SIDE = 8192
MAX_NUM_STEPS = 1000


def check_size(size: Any) -> tuple[int, int] | None:
    """``(height, width)`` in pixels from a pair or one int (a square); None stays None (the pipeline's default)."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise MassActError(f"size must be (height, width) in pixels or one int for a square, got {size!r}.")
    for what, v in zip(("height", "width"), size):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise MassActError(f"{what} must be a positive integer number of pixels, got {v!r}.")
        if v > MAX_SIDE:
            raise MassActError(f"{what} {v} px is larger than {MAX_SIDE} px, far past what these models draw; "
                               f"use e.g. 1024.")
    return (size[0], size[1])


def parse_layer_words(words: Any) -> Any:
    """A layer spec from command-line words (``--layers double.0 3 single``): integers become block
    indices, ``all`` (or nothing) means every layer; names and kinds stay as they are."""
    if not words:
        return None
    out: list = []
    for w in words:
        for part in str(w).split(","):
            part = part.strip()
            if part == "all":
                return None
            if part:
                out.append(int(part) if part.lstrip("-").isdigit() else part)
    return out or None


#: the engines a capture or an edit runs on: PyTorch hooks (massact_viz.hooks) or a worker in an nnsight trace
#: (massact_viz.nnsight_engine); the same statistics and images on both
ENGINES = ("hooks", "nnsight")


def check_engine(engine: Any) -> str:
    """``engine`` if it is one of :data:`ENGINES`, else a clear error."""
    if engine not in ENGINES:
        raise MassActError(f"engine must be one of {ENGINES}, got {engine!r}.")
    return engine


def check_num_steps(steps: Any) -> int:
    """The number of denoising steps: a positive integer up to :data:`MAX_NUM_STEPS`."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MassActError(f"num_steps must be a positive integer (the number of denoising steps), got {steps!r}.")
    if steps > MAX_NUM_STEPS:
        raise MassActError(f"{steps} denoising steps is more than {MAX_NUM_STEPS}; flow-matching samplers use 4 to 50.")
    return steps


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


def resolve_steps(spec: Any, num_steps: int, what: str = "step") -> list[int]:
    """The denoising steps (sorted, non-negative) a step spec selects in a run of ``num_steps`` steps, the
    same rule for :class:`~massact_viz.capture.Capture`, :class:`~massact_viz.edits.Edit` and every probe:
    ``None`` all steps; an int one step; a list or ``range`` those steps; a **tuple** ``(start, stop)`` the
    window ``start <= step < stop``. Negative numbers count from the end."""
    if spec is None:
        return list(range(num_steps))
    hint = f"This run has {num_steps} steps."
    if isinstance(spec, tuple):
        if len(spec) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in spec):
            raise MassActError(f"a tuple of steps is a window (start, stop); got {spec!r}. Use a list for "
                               f"explicit steps, e.g. [{', '.join(str(v) for v in spec)}].")
        a, b = (v if v >= 0 else v + num_steps for v in spec)
        if not 0 <= a < b <= num_steps:
            raise MassActError(f"step window {spec!r} is empty or out of range: need 0 <= start < stop <= "
                               f"{num_steps}. {hint}")
        return list(range(a, b))
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    if isinstance(spec, (str, bytes)) or not hasattr(spec, "__iter__"):
        raise MassActError(f"steps must be None, a step, a list of steps or a (start, stop) window; got {spec!r}.")
    out = [check_index(v, num_steps, what, hint) for v in spec]
    if not out:
        raise MassActError("steps is an empty list: pass None for all steps.")
    return sorted(set(out))
