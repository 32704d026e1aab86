"""Image-comparison metrics: a small registry, offline by default.

``METRICS[name]`` is a :class:`Metric`: ``fn(image, reference) -> float`` and ``higher_is_better``.
Images are PIL images or arrays (``(H, W)``, ``(H, W, 3)``): uint8 arrays and PIL images are read as
``value / 255``; float arrays are taken as already in ``[0, 1]``. Built in (numpy/scipy only):

* ``mse``: mean squared error over pixels and channels, in ``[0, 1]`` units (lower is better);
* ``psnr``: ``10 log10(1 / mse)`` in dB, ``inf`` for identical images (higher is better);
* ``ssim``: the structural similarity of Wang et al. 2004 with their Gaussian window (11 taps,
  sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, data range 1, population (not sample) covariances,
  computed **per RGB channel and averaged** (grayscale images: on the one channel); the SSIM map is
  averaged after cropping the 5-pixel border the window does not cover (higher is better, 1 for
  identical images).

Add a learned metric (CLIP, DINO, LPIPS...) with :func:`register_metric`; it then works everywhere a
metric name is accepted (e.g. ``probes.disrupt(metrics=(..., "lpips"))``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import MassActError


@dataclass(frozen=True)
class Metric:
    """``fn(image, reference) -> float`` and which direction is better."""

    fn: Callable[[Any, Any], float]
    higher_is_better: bool
    description: str = ""

    def __call__(self, image: Any, reference: Any) -> float:
        return float(self.fn(image, reference))


def to_array(image: Any) -> np.ndarray:
    """A float64 ``(H, W, C)`` array in ``[0, 1]`` from a PIL image or an array."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        image = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    a = np.asarray(image)
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    else:
        raise MassActError(f"images must be PIL images, uint8 arrays or float arrays in [0, 1]; got dtype {a.dtype}.")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise MassActError(f"an image array must be (H, W) or (H, W, C), got shape {a.shape}.")
    return a


def _pair(image: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_array(image), to_array(reference)
    if a.shape != b.shape:
        raise MassActError(f"images to compare differ in shape: {a.shape} vs {b.shape}; generate them at one size.")
    return a, b


def mse(image: Any, reference: Any) -> float:
    a, b = _pair(image, reference)
    return float(np.mean((a - b) ** 2))


def psnr(image: Any, reference: Any) -> float:
    m = mse(image, reference)
    return float("inf") if m == 0 else float(10.0 * np.log10(1.0 / m))


def ssim(image: Any, reference: Any, *, sigma: float = 1.5, win: int = 11, k1: float = 0.01,
         k2: float = 0.03) -> float:
    from scipy.ndimage import gaussian_filter

    a, b = _pair(image, reference)
    if min(a.shape[:2]) < win:
        raise MassActError(f"SSIM needs images of at least {win}x{win} pixels, got {a.shape[1]}x{a.shape[0]}.")
    c1, c2 = (k1 * 1.0) ** 2, (k2 * 1.0) ** 2
    truncate = ((win - 1) / 2) / sigma  # an 11-tap window
    pad = (win - 1) // 2

    def f(x):
        return gaussian_filter(x, sigma=sigma, truncate=truncate, mode="reflect")

    vals = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        vals.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(vals))


METRICS: dict[str, Metric] = {
    "mse": Metric(mse, higher_is_better=False, description="pixel mean squared error in [0, 1] units"),
    "psnr": Metric(psnr, higher_is_better=True, description="peak signal-to-noise ratio in dB (inf if identical)"),
    "ssim": Metric(ssim, higher_is_better=True, description="SSIM, Gaussian 11/1.5 window, mean over RGB channels"),
}


def register_metric(name: str, fn: Callable[[Any, Any], float], higher_is_better: bool, description: str = "",
                    *, replace: bool = False) -> Metric:
    """Add ``fn(image, reference) -> float`` to :data:`METRICS` under ``name``."""
    if not isinstance(name, str) or not name:
        raise MassActError(f"a metric name must be a non-empty string, got {name!r}.")
    if not callable(fn):
        raise MassActError(f"metric {name!r}: fn must be callable as fn(image, reference) -> float.")
    if not isinstance(higher_is_better, bool):
        raise MassActError(f"metric {name!r}: higher_is_better must be True or False.")
    if name in METRICS and not replace:
        raise MassActError(f"metric {name!r} is already registered; pass replace=True to replace it.")
    METRICS[name] = Metric(fn, higher_is_better, description)
    return METRICS[name]


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise MassActError(f"unknown metric {name!r}; registered: {sorted(METRICS)} (add one with register_metric).")
    return METRICS[name]


def compare(image: Any, reference: Any, metrics=("mse", "psnr", "ssim")) -> dict[str, float]:
    """``{name: value}`` of each metric of ``image`` against ``reference``."""
    return {m: get_metric(m)(image, reference) for m in metrics}
