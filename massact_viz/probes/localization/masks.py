"""Masks: token-grid <-> pixel masks (nearest neighbour), IoU, masks from files, and the teaching model's
colour masks; :func:`resolve_masks` turns localize's ``masks=`` into one mask per prompt."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import MassActError
from .tokens import as_array

def upsample(mask: Any, pixels_per_token: int | Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a (rows, cols) token-grid array by ``pixels_per_token``."""
    m = as_array(mask, "mask")
    if m.ndim != 2:
        raise MassActError(f"mask must be 2-D (rows, cols), got shape {m.shape}.")
    ppt = (pixels_per_token, pixels_per_token) if isinstance(pixels_per_token, (int, np.integer)) else tuple(pixels_per_token)
    if len(ppt) != 2 or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1 for p in ppt):
        raise MassActError(f"pixels_per_token must be a positive integer or (rows, cols) of them, got {pixels_per_token!r}; "
                           "see model.family.pixels_per_token(model.pipe).")
    return np.repeat(np.repeat(m, ppt[0], axis=0), ppt[1], axis=1)


def downsample(mask: Any, grid: Sequence[int], threshold: float = 0.5) -> np.ndarray:
    """A pixel mask ``(H, W)`` -> a bool token mask ``(rows, cols)``: a token is on when at least
    ``threshold`` of its pixels are (e.g. to restrict an edit or a transport to an object's tokens;
    ``grid`` is ``model.token_grid(size)``)."""
    m = as_array(mask, "mask").astype(np.float64)
    rows, cols = (int(g) for g in grid)
    if m.ndim != 2 or m.shape[0] % rows or m.shape[1] % cols:
        raise MassActError(f"mask of shape {m.shape} does not tile a {rows}x{cols} token grid; give the pixel mask "
                           f"at the run's size (a multiple of the grid).")
    if not 0.0 < threshold <= 1.0:
        raise MassActError(f"threshold must be in (0, 1], got {threshold!r}.")
    frac = m.reshape(rows, m.shape[0] // rows, cols, m.shape[1] // cols).mean(axis=(1, 3))
    return frac >= threshold


def iou(a: Any, b: Any) -> float:
    """Binary IoU of two same-shape masks; two empty masks give 1.0."""
    a, b = as_array(a, "mask").astype(bool), as_array(b, "mask").astype(bool)
    if a.shape != b.shape:
        raise MassActError(f"masks of different shapes {a.shape} and {b.shape}: upsample the token mask first "
                           "(upsample(mask, pixels_per_token)) or give both at token size.")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def load_mask(source: Any) -> np.ndarray:
    """A bool mask from an array, a PIL image, or a file (``.npy``; an image file: pixel > 127 / > 0.5)."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise MassActError(f"mask file {str(p)!r} does not exist.")
        if p.suffix == ".npy":
            source = np.load(p, allow_pickle=False)
        else:
            from PIL import Image
            with Image.open(p) as im:
                source = np.asarray(im.convert("L"))
    elif hasattr(source, "convert"):  # PIL image
        source = np.asarray(source.convert("L"))
    m = as_array(source, "mask")
    if m.ndim == 3 and m.shape[-1] in (1, 3, 4):
        m = m[..., 0]
    if m.ndim != 2:
        raise MassActError(f"a mask must be 2-D (H, W) or (rows, cols), got shape {m.shape}.")
    if m.dtype == bool:
        return m
    if np.issubdtype(m.dtype, np.integer):
        return m > (127 if m.max() > 1 else 0)
    return m > 0.5


def shapes_masks(images: Sequence[Any], prompts: Sequence[str]) -> list[np.ndarray]:
    """Foreground of generated teaching-model (``shapes``) images, read by colour at pixel size.

    A pixel is foreground when its nearest palette colour is one of the captioned objects' colours
    (exact for the flat objects of the training scenes; a background of the same colour would be
    counted too). One ``(H, W)`` bool mask per image.
    """
    from ...shapes import scenes
    if len(images) != len(prompts):
        raise MassActError(f"{len(images)} images but {len(prompts)} prompts: give one prompt per image.")
    out = []
    for im, p in zip(images, prompts):
        attrs = scenes.parse_caption(p)
        colours = [scenes.COLOUR_NAMES.index(o["colour"]) for o in attrs["objects"] if o.get("colour")]
        out.append(np.isin(scenes.nearest_colour(im), colours))
    return out


def resolve_masks(masks: Any, images: list, prompts: list[str], size: tuple[int, int],
                   grid: tuple[int, int]) -> list[np.ndarray]:
    if isinstance(masks, str) and masks == "shapes":
        got = shapes_masks(images, prompts)
    elif callable(masks):
        got = [masks(im, p) for im, p in zip(images, prompts)]
    else:
        if isinstance(masks, (str, bytes)) or not hasattr(masks, "__len__"):
            raise MassActError("masks must be a list (one mask or mask file per prompt), a function "
                               "(image, prompt) -> mask, or 'shapes' (the teaching model's colour masks).")
        if len(masks) != len(prompts):
            raise MassActError(f"{len(masks)} masks for {len(prompts)} prompts: give one mask per prompt.")
        got = list(masks)
    out = []
    for i, m in enumerate(got):
        m = load_mask(m)
        if m.shape not in (tuple(size), tuple(grid)):
            raise MassActError(f"mask {i} has shape {m.shape}; it must be the image size {tuple(size)} "
                               f"(pixels) or the token grid {tuple(grid)}.")
        out.append(m)
    return out
