"""Image tokens of one image as numpy: the checks every localization function shares (token features,
their grid, a channel list, a seed) and the per-channel min-max normalisation the clustering and the
projections use."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import MassActError, check_index

def as_array(x: Any, what: str = "x") -> np.ndarray:
    if hasattr(x, "detach"):  # torch
        x = x.detach().float().cpu().numpy()
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise MassActError(f"{what} must be an array (tokens x channels), got {type(x).__name__}.") from e
    return a


def token_grid(grid: Any, n: int) -> tuple[int, int]:
    if grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise MassActError(f"{n} tokens do not form a square grid: pass grid=(rows, cols), e.g. "
                               "run.meta['token_grid'].")
        return side, side
    try:
        rows, cols = (int(v) for v in grid)
    except Exception as e:  # noqa: BLE001
        raise MassActError(f"grid must be (rows, cols), got {grid!r}.") from e
    if rows < 1 or cols < 1 or rows * cols != n:
        raise MassActError(f"grid {rows}x{cols} = {rows * cols} tokens does not match the {n} tokens given; "
                           "pass run.meta['token_grid'] for image tokens of that run.")
    return rows, cols


def token_features(x: Any) -> np.ndarray:
    a = as_array(x)
    if a.ndim != 2:
        raise MassActError(f"x must be image tokens of one image, shape (tokens, channels), got shape {a.shape}; "
                           "e.g. run.raw['double.3/step3/image'][0].")
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise MassActError(f"x has shape {a.shape}: need at least 2 tokens and 1 channel.")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise MassActError("x holds NaN or infinite values (float16 overflow?); run the model in float32 or bfloat16.")
    return a


def check_channels(channels: Any, width: int) -> list[int] | None:
    if channels is None:
        return None
    if isinstance(channels, (str, bytes)):
        raise MassActError(f"channels must be a list of channel indices, got {channels!r}.")
    try:
        raw = [int(c) for c in np.asarray(channels).ravel()]
    except Exception as e:  # noqa: BLE001
        raise MassActError(f"channels must be a list of channel indices, got {channels!r}.") from e
    if not raw:
        raise MassActError("channels is empty: pass at least one channel index (or None for all).")
    return [check_index(c, width, "channel", f"x has {width} channels.") for c in raw]


def normalize(feats: Any) -> np.ndarray:
    """Per-channel min-max normalisation across tokens to [0, 1]; a constant channel becomes 0."""
    f = np.asarray(feats, dtype=np.float64)
    lo, hi = f.min(0), f.max(0)
    span = hi - lo
    ok = span > 0
    return np.where(ok, (f - lo) / np.where(ok, span, 1.0), 0.0)


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MassActError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)
