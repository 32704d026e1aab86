"""Localization probe: do the massive channels of one layer say *where* the object is?

The protocol (seed paper step 3, as pinned by the third-party reproduction; see
``shared/research/paper.md`` sections 1.3-1.4):

1. take the image tokens ``X`` (tokens x channels) of one layer at one denoising step and restrict
   them to a channel set (top-k, bottom-k, random-k, or all channels);
2. min-max normalise every channel across tokens (a constant channel becomes 0);
3. cluster the per-token vectors, K-means with K=2 by default (K settable) or HDBSCAN;
4. decide which cluster is the foreground (``foreground=``): ``"border"`` (default: every cluster but the
   one holding most of the grid's outer ring), the paper's ``"max_sum"`` (the higher mean summed
   normalised activation), ``"min_sum"``, ``"minority"``, or a function of your own;
5. reshape to the latent token grid, upsample (nearest neighbour) to pixels and score against a
   mask with IoU (two empty masks: IoU 1.0).

:func:`localize` sweeps this over layers, steps and channel sets on a model and returns per-layer
mIoU curves (the paper's Figure 3D shape). :func:`project` gives 2-D UMAP or PCA coordinates of
image tokens for linked widgets, cached in memory.

Everything here is numpy in, numpy out; torch tensors are accepted. Bad input raises
:class:`~massact_viz.errors.MassActError`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..capture import check_probe_kwargs
from ..errors import MassActError, RunFileError, check_index
from ..specs import resolve_steps
from ..files import atomic_write, read_result, resume_manifest
from ..run import check_output_file
from ..analysis import KINDS
from ..distributed import Ranks, ranks
from ..progress import progress_bar

METHODS = ("kmeans", "hdbscan")
#: How a cluster becomes the foreground. ``max_sum`` / ``min_sum``: the cluster with the highest / lowest
#: mean heat (sum of min-max normalised channels; ``max_sum`` is the paper's rule, and it depends on the
#: sign each channel takes on the object); ``border``: every cluster but the one holding the most tokens of
#: the grid's outer ring (the background surrounds an object); ``minority``: the smallest cluster.
FOREGROUND_RULES = ("max_sum", "min_sum", "border", "minority")
#: The default rule, chosen by measurement on the embedded model (BENCHMARKS.md "Defaults by measurement").
DEFAULT_FOREGROUND = "border"
SETS = KINDS + ("all",)   # the selection kinds of analysis.select, and every channel
PROJECTIONS = ("umap", "pca")
FORMAT = "massact_viz.localization"


# ----------------------------------------------------------------------------- small helpers
def _as_array(x: Any, what: str = "x") -> np.ndarray:
    if hasattr(x, "detach"):  # torch
        x = x.detach().float().cpu().numpy()
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise MassActError(f"{what} must be an array (tokens x channels), got {type(x).__name__}.") from e
    return a


def _grid(grid: Any, n: int) -> tuple[int, int]:
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


def _tokens(x: Any) -> np.ndarray:
    a = _as_array(x)
    if a.ndim != 2:
        raise MassActError(f"x must be image tokens of one image, shape (tokens, channels), got shape {a.shape}; "
                           "e.g. run.raw['double.3/step3/image'][0].")
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise MassActError(f"x has shape {a.shape}: need at least 2 tokens and 1 channel.")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise MassActError("x holds NaN or infinite values (float16 overflow?); run the model in float32 or bfloat16.")
    return a


def _channels(channels: Any, width: int) -> list[int] | None:
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


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MassActError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


# ----------------------------------------------------------------------------- clustering
def _labels(norm: np.ndarray, k_clusters: int, method: str, seed: int, min_cluster_size: int | None) -> np.ndarray:
    n = norm.shape[0]
    if method == "kmeans":
        from sklearn.cluster import KMeans
        if np.ptp(norm, axis=0).max() == 0:  # every token identical: one cluster, nothing to split
            return np.zeros(n, dtype=int)
        import warnings
        with warnings.catch_warnings():  # fewer distinct points than clusters
            warnings.simplefilter("ignore")
            return KMeans(k_clusters, n_init=10, random_state=seed).fit_predict(norm).astype(int)
    mcs = max(2, n // 20) if min_cluster_size is None else min_cluster_size
    if isinstance(mcs, bool) or not isinstance(mcs, int) or not 2 <= mcs <= n:
        raise MassActError(f"min_cluster_size must be an integer between 2 and {n} (the number of tokens), got {mcs!r}.")
    try:
        from sklearn.cluster import HDBSCAN
        model = HDBSCAN(min_cluster_size=mcs, copy=True)
    except ImportError:  # scikit-learn < 1.3: the hdbscan package
        try:
            from hdbscan import HDBSCAN  # type: ignore
        except ImportError as e:
            raise MassActError("method='hdbscan' needs scikit-learn >= 1.3 or the hdbscan package "
                               "(a dependency of massact-viz: pip install hdbscan); or use method='kmeans'.") from e
        model = HDBSCAN(min_cluster_size=mcs)
    return np.asarray(model.fit_predict(norm), dtype=int)  # -1 = noise


def _ring(grid: tuple[int, int]) -> np.ndarray:
    rows, cols = grid
    r = np.zeros((rows, cols), bool)
    r[0], r[-1], r[:, 0], r[:, -1] = True, True, True, True
    return r.reshape(-1)


def _pick_foreground(norm: np.ndarray, labels: np.ndarray, rule: Any, grid: tuple[int, int] | None = None) -> np.ndarray:
    ids = [c for c in np.unique(labels) if c >= 0]  # noise (-1, HDBSCAN) is never the foreground
    if callable(rule):
        out = rule(norm, labels)
        arr = np.asarray(out)
        if arr.ndim == 0:
            return labels == int(arr)
        if arr.shape != labels.shape:
            raise MassActError(f"the foreground rule must return a cluster id or a ({labels.size},) bool mask, "
                               f"got shape {arr.shape}.")
        return arr.astype(bool)
    if not ids or len(ids) == 1 and np.ptp(norm.sum(1)) == 0:
        return np.zeros(labels.shape, bool)  # nothing to separate
    if rule == "minority":
        sizes = [(labels == c).sum() for c in ids]
        return labels == ids[int(np.argmin(sizes))]
    if rule == "border":
        if len(ids) == 1:
            return np.zeros(labels.shape, bool)
        ring = _ring(grid or _grid(None, labels.size))
        background = ids[int(np.argmax([(ring & (labels == c)).sum() for c in ids]))]
        return (labels >= 0) & (labels != background)
    s = norm.sum(1)
    means = [s[labels == c].mean() for c in ids]
    best = ids[int(np.argmax(means) if rule == "max_sum" else np.argmin(means))]
    return labels == best


def cluster_foreground(feats: Any, *, k_clusters: int = 2, method: str = "kmeans", foreground: Any = DEFAULT_FOREGROUND,
                       seed: int = 0, min_cluster_size: int | None = None, grid: Sequence[int] | None = None) -> np.ndarray:
    """Flat ``(tokens,)`` foreground mask of already-restricted token features ``(tokens, k)``
    (the core of :func:`cluster_tokens`; ``grid`` (rows, cols) for the ``border`` rule, default square)."""
    a = _tokens(feats)
    return _cluster(a, k_clusters, method, foreground, seed, min_cluster_size, _grid(grid, a.shape[0]))[2]


def _check_cluster_args(n: int, k_clusters: Any, method: Any, foreground: Any) -> None:
    if method not in METHODS:
        raise MassActError(f"method must be one of {METHODS}, got {method!r}.")
    if method == "kmeans" and (isinstance(k_clusters, bool) or not isinstance(k_clusters, (int, np.integer))
                               or not 2 <= k_clusters <= n):
        raise MassActError(f"k_clusters must be an integer between 2 and {n} (the number of tokens), got {k_clusters!r}.")
    if not callable(foreground) and foreground not in FOREGROUND_RULES:
        raise MassActError(f"foreground must be one of {FOREGROUND_RULES} or a function (features, labels) -> "
                           f"cluster id or bool mask, got {foreground!r}.")


def _cluster(feats: np.ndarray, k_clusters, method, foreground, seed, min_cluster_size, grid=None):
    _check_cluster_args(feats.shape[0], k_clusters, method, foreground)
    seed = _check_seed(seed)
    norm = normalize(feats)
    labels = _labels(norm, int(k_clusters), method, seed, min_cluster_size)
    return norm, labels, _pick_foreground(norm, labels, foreground, grid)


def cluster_legend(n_clusters: int, foreground: int = -1) -> list[str]:
    """Legend text per cluster id: the cluster the foreground rule picked, and the others (background)."""
    return [f"cluster {c}: " + ("foreground" if c == foreground else "background" if foreground >= 0 else "cluster")
            for c in range(n_clusters)]


@dataclass
class TokenClusters:
    """Result of :func:`cluster_tokens`: everything on the ``(rows, cols)`` token grid."""

    labels: np.ndarray  # (rows, cols) int cluster id (-1: HDBSCAN noise)
    foreground: np.ndarray  # (rows, cols) bool
    heat: np.ndarray  # (rows, cols) sum of normalised channels (the paper's heatmap s)
    features: np.ndarray  # (tokens, k) min-max normalised features, row-major tokens
    channels: list[int] | None  # the channel set (None: all)
    method: str = "kmeans"

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.labels.shape)  # type: ignore[return-value]

    @property
    def foreground_cluster(self) -> int:
        """The cluster id the foreground consists of (-1 when it is not exactly one cluster)."""
        ids = np.unique(self.labels[self.foreground])
        return int(ids[0]) if ids.size == 1 else -1

    def legend(self) -> list[str]:
        """Legend text per cluster id, as every view labels clusters (:func:`cluster_legend`)."""
        return cluster_legend(int(self.labels.max()) + 1 if self.labels.size else 0, self.foreground_cluster)

    def mask(self, pixels_per_token: int | tuple[int, int] = 1) -> np.ndarray:
        """The foreground at pixel size (nearest-neighbour upsampling)."""
        return upsample(self.foreground, pixels_per_token)


def cluster_tokens(x: Any, grid: Sequence[int] | None = None, *, channels: Sequence[int] | None = None,
                   k_clusters: int = 2, method: str = "kmeans", foreground: str | Callable = DEFAULT_FOREGROUND,
                   seed: int = 0, min_cluster_size: int | None = None) -> TokenClusters:
    """Cluster the image tokens ``x`` (tokens, channels) of one image into foreground and background.

    ``grid`` is ``(rows, cols)`` (``run.meta["token_grid"]``; None: a square grid). ``channels``
    restricts the features (None: all). Channels are min-max normalised across tokens (constant
    channel -> 0), then clustered with K-means (``k_clusters``, ``n_init=10``, ``random_state=seed``)
    or HDBSCAN (``min_cluster_size``, default ``max(2, tokens // 20)``; noise is never foreground).
    ``foreground`` (see :data:`FOREGROUND_RULES`): ``"border"`` (default) takes every cluster but the one
    holding most of the grid's outer ring; ``"max_sum"`` picks the cluster with the highest mean heat
    ``s = sum of normalised channels`` (the paper's rule), ``"min_sum"`` the lowest; ``"minority"`` the
    smallest cluster; a function ``(features, labels)`` may return a cluster id or a ``(tokens,)`` bool mask.
    """
    a = _tokens(x)
    rows, cols = _grid(grid, a.shape[0])
    ch = _channels(channels, a.shape[1])
    feats = a if ch is None else a[:, ch]
    norm, labels, fg = _cluster(feats, k_clusters, method, foreground, seed, min_cluster_size, (rows, cols))
    return TokenClusters(labels.reshape(rows, cols), fg.reshape(rows, cols), norm.sum(1).reshape(rows, cols),
                         norm, ch, method)


# ----------------------------------------------------------------------------- masks and IoU
def upsample(mask: Any, pixels_per_token: int | Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a (rows, cols) token-grid array by ``pixels_per_token``."""
    m = _as_array(mask, "mask")
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
    m = _as_array(mask, "mask").astype(np.float64)
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
    a, b = _as_array(a, "mask").astype(bool), _as_array(b, "mask").astype(bool)
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
    m = _as_array(source, "mask")
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
    from ..shapes import scenes
    if len(images) != len(prompts):
        raise MassActError(f"{len(images)} images but {len(prompts)} prompts: give one prompt per image.")
    out = []
    for im, p in zip(images, prompts):
        attrs = scenes.parse_caption(p)
        colours = [scenes.COLOUR_NAMES.index(o["colour"]) for o in attrs["objects"] if o.get("colour")]
        out.append(np.isin(scenes.nearest_colour(im), colours))
    return out


def _resolve_masks(masks: Any, images: list, prompts: list[str], size: tuple[int, int],
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


# ----------------------------------------------------------------------------- the sweep
@dataclass
class LocalizationResult:
    """IoU of every (set, layer, step, prompt) and its means; see :func:`localize`."""

    layers: list[str]
    steps: list[int]
    sets: list[str]
    prompts: list[str]
    iou: np.ndarray  # (sets, layers, steps, prompts); random: mean over the draws per prompt
    params: dict = field(default_factory=dict)
    channels: dict = field(default_factory=dict)  # "set/layer/stepS/i" -> channels (random: first draw)

    def miou(self, set: str = "top", layer: str | int | None = None, step: int = -1):
        """mIoU over prompts: a float for one layer, else a list aligned with ``layers``."""
        row = self.iou[self._set(set), :, self._step(step)].mean(-1)
        if layer is None:
            return [float(v) for v in row]
        return float(row[self._layer(layer)])

    def curves(self, step: int = -1) -> dict[str, list[float]]:
        """``{set: [mIoU per layer]}`` at one step (the paper's Figure 3D)."""
        return {s: self.miou(s, step=step) for s in self.sets}

    def interval(self, set: str = "top", layer: str | int = 0, step: int = -1):
        """mIoU of one set at one layer with its 95 % bootstrap interval over prompts
        (:class:`~massact_viz.intervals.Interval`, ``n`` = prompts)."""
        from ..intervals import mean_interval
        return mean_interval(self.iou[self._set(set), self._layer(layer), self._step(step)])

    def intervals(self, step: int = -1) -> dict[str, list]:
        """``{set: [Interval per layer]}``: the curves with their 95 % bootstrap intervals over prompts."""
        return {s: [self.interval(s, li, step) for li in range(len(self.layers))] for s in self.sets}

    def compare(self, a: str = "top", b: str = "bottom", layer: str | int | None = None, step: int = -1):
        """Paired comparison of two channel sets over the same prompts at ``layer`` (default: set ``a``'s
        best layer): a :class:`~massact_viz.intervals.Comparison` whose ``sentence`` claims a difference
        only when the interval of the per-prompt difference excludes 0."""
        from ..intervals import compare
        layer = self.best_layer(a, step) if layer is None else layer
        li, ti = self._layer(layer), self._step(step)
        c = compare(self.iou[self._set(a), li, ti], self.iou[self._set(b), li, ti], f"{a}-k" if a != "all" else
                    "all channels", f"{b}-k" if b != "all" else "all channels")
        return c

    def conclusion(self, step: int = -1) -> str:
        """Computed sentences on the paper's localization claim: at top-k's best layer, does top-k beat
        bottom-k and all channels? Each says only what the paired 95 % intervals support."""
        layer = self.best_layer("top", step)
        parts = [f"best top-{self.params.get('k', 'k')} layer {layer}"]
        for other in ("bottom", "random", "all"):
            if other in self.sets and "top" in self.sets:
                parts.append(self.compare("top", other, layer, step).sentence)
        n = len(self.prompts)
        note = (f" Note: the best layer is chosen on these same {n} prompts, which favours top-k; a held-out "
                f"check would be stricter.") if len(self.layers) > 1 else ""
        return "; ".join(parts) + "." + note

    def best_layer(self, set: str = "top", step: int = -1) -> str:
        """The layer with the highest mIoU for ``set``."""
        return self.layers[int(np.argmax(self.miou(set, step=step)))]

    def to_table(self) -> list[dict]:
        """One row per (layer, step, set): ``layer, step, set, miou, lo, hi, n`` (95 % bootstrap interval
        over the ``n`` prompts) and ``std`` over prompts."""
        rows = []
        for li, layer in enumerate(self.layers):
            for ti, step in enumerate(self.steps):
                for si, s in enumerate(self.sets):
                    v = self.iou[si, li, ti]
                    iv = self.interval(s, li, step)
                    rows.append({"layer": layer, "step": step, "set": s, "miou": round(float(v.mean()), 4),
                                 "lo": round(iv.lo, 4), "hi": round(iv.hi, 4), "n": iv.n,
                                 "std": round(float(v.std()), 4)})
        return rows

    def markdown(self, step: int = -1) -> str:
        """mIoU per layer and set with 95 % bootstrap intervals over the prompts."""
        c = self.intervals(step)
        lines = [f"mIoU [95 % interval], n = {len(self.prompts)} prompts, step {self.steps[self._step(step)]}",
                 "", "| layer | " + " | ".join(self.sets) + " |", "|---|" + "---|" * len(self.sets)]
        for i, layer in enumerate(self.layers):
            lines.append(f"| {layer} | " + " | ".join(c[s][i].fmt() for s in self.sets) + " |")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        doc = {"format": FORMAT, "version": 1, "layers": self.layers, "steps": self.steps, "sets": self.sets,
               "prompts": self.prompts, "iou": np.round(self.iou, 6).tolist(), "params": self.params,
               "channels": self.channels}
        return atomic_write(p, json.dumps(doc, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LocalizationResult":
        doc = read_result(path, FORMAT, "localization result")
        try:
            return cls(doc["layers"], doc["steps"], doc["sets"], doc["prompts"], np.asarray(doc["iou"], float),
                       doc.get("params", {}), doc.get("channels", {}))
        except (ValueError, KeyError, TypeError) as e:
            raise RunFileError(f"{str(path)!r} is not a localization result written by LocalizationResult.save "
                               f"({e!r} missing or malformed).") from e

    def _set(self, s: str) -> int:
        if s not in self.sets:
            raise MassActError(f"set {s!r} was not measured; this result has {self.sets}.")
        return self.sets.index(s)

    def _step(self, step: int) -> int:
        if step in self.steps:
            return self.steps.index(step)
        return check_index(step, len(self.steps), "step", f"measured steps are {self.steps}.")

    def _layer(self, layer: str | int) -> int:
        if isinstance(layer, str):
            if layer not in self.layers:
                raise MassActError(f"layer {layer!r} was not measured; this result has {self.layers}.")
            return self.layers.index(layer)
        return check_index(layer, len(self.layers), "layer")


def _identity(x: Any) -> Any:
    """What a resumable sweep's manifest records of a rule or a mask set, the same in every process: a
    function by its qualified name (not its address), arrays and files by a digest of their contents."""
    if isinstance(x, str):
        return x
    if callable(x):
        return f"{getattr(x, '__module__', '?')}.{getattr(x, '__qualname__', type(x).__name__)}"
    h = hashlib.sha256()
    for m in x:
        h.update(Path(m).read_bytes() if isinstance(m, (str, os.PathLike)) else np.ascontiguousarray(np.asarray(m)).tobytes())
    return f"sha256:{h.hexdigest()}"


def localize(model, prompts: str | Sequence[str], masks: Any, *, layers: Any = None, steps: Any = -1,
             k: int = 4, sets: Sequence[str] = SETS, random_draws: int = 3, seed: int = 0, stat: str = "abs_mean",
             rank: str = "image", k_clusters: int = 2, method: str = "kmeans", foreground: Any = DEFAULT_FOREGROUND,
             chunk: int = 8, num_steps: int | None = None, progress: bool = True, distributed: bool = False,
             out: str | os.PathLike | None = None, **run_kwargs: Any) -> LocalizationResult:
    """Sweep the localization probe over layers, steps and channel sets on ``model``.

    Generates ``prompts`` (image *i* uses seed ``seed + i``; ``seed`` also seeds K-means and the
    random-k draws), captures statistics and the raw image tokens of every chosen layer at the chosen ``steps`` (negative:
    from the end; default the last step), and for each prompt, layer, step and set clusters the
    tokens restricted to the set and scores the foreground against the prompt's mask.

    * ``masks``: one per prompt (bool array at pixel size ``(H, W)`` or token size ``(rows, cols)``,
      a PIL image, or a ``.npy``/image file), a function ``(image, prompt) -> mask`` applied to each
      generated image, or ``"shapes"`` (the teaching model's colour masks, :func:`shapes_masks`).
      Pixel masks are compared with the token mask upsampled by nearest neighbour.
    * ``sets``: ``top``, ``bottom``, ``random`` (``random_draws`` seeded draws outside the top-k, IoU
      averaged per prompt first) and ``all``; channels are ranked by ``stat`` **per image, layer and
      step** (``rank="image"``, the reproduction's protocol) or by its mean over the prompts
      (``rank="mean"``).
    * ``num_steps``: denoising steps of the generation (``Model.run``'s ``num_steps=``; None: the
      model's default). Other ``run_kwargs`` go to :meth:`Model.run` (``size=``, ``guidance=``,
      ...). Prompts run ``chunk`` at a time so raw slices stay bounded.
    * ``distributed=True``: share the chunks with the other processes launched by ``accelerate launch`` or
      ``torchrun`` (each given the same arguments); their scores are gathered, so every process returns
      the single-process result (with ``rank="mean"`` every process first runs the statistics of all prompts).
    * ``out``: the result's file (``.json``), saved there at the end; while the sweep runs, each finished
      chunk's scores are kept in ``<out>.parts/``, so the same call again after an interruption (or a process
      that died; with any number of processes) runs only the chunks not done and gives the same result.
      Other arguments are refused with a clear message; the parts folder is removed once the result is saved.
    """
    from ..capture import Capture, Raw
    from ..analysis import select
    from ..errors import check_k

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise MassActError("prompts is empty: pass at least one prompt.")
    sets = [sets] if isinstance(sets, str) else list(sets)
    for s in sets:
        if s not in SETS:
            raise MassActError(f"unknown channel set {s!r}; choose from {SETS}.")
    if not sets:
        raise MassActError(f"sets is empty; choose from {SETS}.")
    seed = _check_seed(seed)
    check_k(k, model.width)
    if "random" in sets and 2 * k > model.width:
        raise MassActError(f"random-k needs k <= {model.width // 2} (half the channels); use a smaller k.")
    if isinstance(random_draws, bool) or not isinstance(random_draws, int) or random_draws < 1:
        raise MassActError(f"random_draws must be a positive integer, got {random_draws!r}.")
    if rank not in ("image", "mean"):
        raise MassActError(f"rank must be 'image' (per-image ranking) or 'mean' (over prompts), got {rank!r}.")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise MassActError(f"chunk must be a positive integer, got {chunk!r}.")
    check_probe_kwargs(run_kwargs, "localize", ("capture", "prompt"),
                       "pass the prompts as localize's first argument and the layers and steps as its own arguments.")
    _check_cluster_args(2 ** 30, k_clusters, method, foreground)
    if out is not None:
        out = check_output_file(out, (".json",), "localization result")   # before any work
    blocks = [b for b in model.resolve_layers(layers) if "image" in b.streams]
    if not blocks:
        raise MassActError("none of the chosen layers has an image stream.")
    total = model.resolve_num_steps(num_steps)
    run_kwargs["num_steps"] = total
    step_list = resolve_steps(steps, total)

    iou_arr = np.zeros((len(sets), len(blocks), len(step_list), len(prompts)))
    chans: dict[str, list[int]] = {}
    mean_stats = None
    if rank == "mean":  # rank over every prompt first: statistics only, no raw slices
        cap = Capture(layers=[b.name for b in blocks], steps=step_list, streams=["image"], sun=False)
        mean_stats = model.run(prompts, seed=seed, capture=cap, progress=False, **run_kwargs).stats
    if not (isinstance(masks, str) or callable(masks)) and hasattr(masks, "__len__") and len(masks) != len(prompts):
        raise MassActError(f"{len(masks)} masks for {len(prompts)} prompts: give one mask per prompt.")
    share = ranks() if distributed else Ranks()
    share.agree({"prompts": prompts, "layers": [b.name for b in blocks], "steps": step_list, "k": k, "sets": sets,
                 "draws": random_draws, "seed": seed, "stat": stat, "rank": rank, "clusters": k_clusters,
                 "method": method, "foreground": repr(foreground), "chunk": chunk,
                 "masks": masks if isinstance(masks, str) else repr(type(masks)),
                 "run_kwargs": repr(sorted(run_kwargs.items()))}, "localization sweep")
    parts_dir = None
    if out is not None:
        parts_dir = out.parent / f"{out.name}.parts"
        job = {"prompts": prompts, "layers": [b.name for b in blocks], "steps": step_list, "k": k, "sets": sets,
               "draws": random_draws, "seed": seed, "stat": stat, "rank": rank, "clusters": k_clusters,
               "method": method, "foreground": _identity(foreground), "chunk": chunk,
               "model": getattr(model, "source", None), "dtype": str(getattr(model, "dtype", "")),
               "masks": _identity(masks), "run_kwargs": repr(sorted(run_kwargs.items()))}
        hint = f"Resume it with the same arguments, or delete {parts_dir} (or choose another out=) to start over."
        if share.main:
            resume_manifest(parts_dir, job, "partial localization sweep", hint)
        share.barrier()
        if not share.main:
            resume_manifest(parts_dir, job, "partial localization sweep", hint)
    starts = list(range(0, len(prompts), chunk))
    have = share.from_main([s0 for s0 in starts if (parts_dir / f"{s0:06d}.json").exists()]
                           if parts_dir is not None and share.main else [])
    for s0 in have:   # chunks finished before: their scores from disk
        doc = json.loads((parts_dir / f"{s0:06d}.json").read_text(encoding="utf-8"))
        iou_arr[..., s0:s0 + chunk] = np.array(doc["iou"], dtype=float)
        chans.update(doc["chans"])
    mine = share.share([s0 for s0 in starts if s0 not in have])
    bar = progress_bar(total=sum(len(prompts[s:s + chunk]) for s in mine), unit="prompt", disable=not progress,
                       desc="localize: prompts clustered" + ("" if share.world == 1 else
                                                             f" (process {share.rank} of {share.world})"))
    for start in mine:
        part = prompts[start:start + chunk]
        cap = Capture(layers=[b.name for b in blocks], steps=step_list, streams=["image"], sun=False,
                      stats=rank == "image", raw=[Raw(b.name, s) for b in blocks for s in step_list])
        run = model.run(part, seed=seed + start, capture=cap, progress=False, **run_kwargs)
        grid = tuple(run.meta["token_grid"])
        size = tuple(run.meta["size"])
        ppt = (size[0] // grid[0], size[1] // grid[1])
        gts = _resolve_masks(masks if isinstance(masks, str) or callable(masks) else list(masks)[start:start + len(part)],
                             run.images, part, size, grid)
        for j, gt in enumerate(gts):
            i = start + j
            stats, img = (run.stats, j) if rank == "image" else (mean_stats, None)
            for li, b in enumerate(blocks):
                for ti, st in enumerate(step_list):
                    x = run.raw[f"{b.name}/step{st}/image"][j].float().numpy()

                    def score(ch):
                        fg = _cluster(x[:, ch], k_clusters, method, foreground, seed, None, grid)[2].reshape(grid)
                        return iou(upsample(fg, ppt) if gt.shape != grid else fg, gt)
                    for si, s in enumerate(sets):
                        if s == "all":
                            draws = [list(range(x.shape[1]))]
                        elif s == "random":
                            draws = [select(stats, "random", k, layer=b.name, step=st, image=img, stat=stat,
                                            seed=seed * 1_000_003 + i * 1009 + d) for d in range(random_draws)]
                        else:
                            draws = [select(stats, s, k, layer=b.name, step=st, image=img, stat=stat)]
                        iou_arr[si, li, ti, i] = float(np.mean([score(ch) for ch in draws]))
                        if s != "all":
                            chans[f"{s}/{b.name}/step{st}/{i}"] = [int(c) for c in draws[0]]
        if parts_dir is not None:
            mine_chans = {key: v for key, v in chans.items() if start <= int(key.rsplit("/", 1)[1]) < start + len(part)}
            atomic_write(parts_dir / f"{start:06d}.json",
                         json.dumps({"start": start, "iou": iou_arr[..., start:start + len(part)].tolist(),
                                     "chans": mine_chans}))
        bar.update(len(part))
    bar.close()
    if share.world > 1:   # every process gets every process's prompts (a collective: also the barrier)
        merged: dict[str, list[int]] = dict(chans)
        for got_starts, got_iou, got_chans in share.gather((list(mine), iou_arr, chans)):
            for s0 in got_starts:
                iou_arr[..., s0:s0 + chunk] = got_iou[..., s0:s0 + chunk]
            merged.update(got_chans)
        chans = merged
    chans = {key: chans[key] for i in range(len(prompts)) for b in blocks for st in step_list for s in sets
             if (key := f"{s}/{b.name}/step{st}/{i}") in chans}   # one order, however the chunks were shared
    params = {"k": k, "random_draws": random_draws, "seed": seed, "stat": stat, "rank": rank,
              "k_clusters": k_clusters, "method": method,
              "foreground": foreground if isinstance(foreground, str) else getattr(foreground, "__name__", "custom"),
              "model": getattr(model, "source", None), "total_steps": total,
              "run_kwargs": {kk: v for kk, v in run_kwargs.items() if isinstance(v, (int, float, str, list, tuple))}}
    result = LocalizationResult([b.name for b in blocks], step_list, sets, prompts, iou_arr, params, chans)
    if out is not None:
        if share.main:
            result.save(out)
            shutil.rmtree(parts_dir)
        share.barrier()   # the result is on disk before any process returns
    return result


# ----------------------------------------------------------------------------- projections
@dataclass
class Projection:
    """2-D coordinates of image tokens, each point knowing its token, cluster and channel values."""

    coords: np.ndarray  # (tokens, 2)
    token: np.ndarray  # (tokens,) row-major token index
    row: np.ndarray  # (tokens,)
    col: np.ndarray  # (tokens,)
    values: np.ndarray  # (tokens, c) raw values of the channels used
    channels: list[int] | None  # None: all channels
    labels: np.ndarray | None = None  # (tokens,) cluster ids, if given
    method: str = "pca"

    def point(self, i: int) -> dict:
        """Everything a linked widget needs about point ``i``."""
        i = check_index(int(i), len(self.token), "point")
        return {"token": int(self.token[i]), "row": int(self.row[i]), "col": int(self.col[i]),
                "x": float(self.coords[i, 0]), "y": float(self.coords[i, 1]),
                "cluster": None if self.labels is None else int(self.labels[i]),
                "values": dict(zip(self.channels or range(self.values.shape[1]), map(float, self.values[i])))}


_PROJECTION_CACHE: dict[tuple, Projection] = {}


def clear_projection_cache() -> None:
    _PROJECTION_CACHE.clear()


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def import_umap():
    """``import umap`` with numba's on-disk cache on for the functions it compiles, so that only the first
    kernel on a machine pays the compilation (about 40 s here); every later kernel's first fit takes a few
    seconds (``benchmarks/umap_warm_start.py``, BENCHMARKS.md). umap-learn and pynndescent leave ``cache=`` off
    on most of their jitted functions; this turns it on while they are imported, and nothing else changes."""
    import sys
    if "umap" in sys.modules:
        return sys.modules["umap"]
    import warnings

    import numba
    njit, jit = numba.njit, numba.jit

    def cached(decorator):
        def wrap(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)
        return wrap
    numba.njit, numba.jit = cached(njit), cached(jit)
    try:
        with warnings.catch_warnings():  # functions numba cannot cache compile as before, without the notice
            warnings.simplefilter("ignore")
            import umap
    finally:
        numba.njit, numba.jit = njit, jit
    return umap


def project(x: Any, grid: Sequence[int] | None = None, *, method: str = "umap", channels: Sequence[int] | None = None,
            labels: Any = None, seed: int = 0, cache: bool = True, normalise: bool = True) -> Projection:
    """2-D projection of the image tokens ``x`` (tokens, channels) of one image.

    ``method="umap"`` (umap-learn, imported on first use by :func:`import_umap`: the first kernel on a
    machine pays about 40 s of numba compilation, later kernels a few seconds) or ``"pca"`` (fast). ``channels`` restricts the features (None: all);
    ``normalise`` min-max normalises them first, as the clustering does. ``labels`` (e.g.
    ``cluster_tokens(...).labels``) ride along. Results are cached in memory by (array hash,
    method, channels, labels, seed, normalise): asking again returns the same object.
    """
    if method not in PROJECTIONS:
        raise MassActError(f"method must be one of {PROJECTIONS}, got {method!r}.")
    seed = _check_seed(seed)
    a = _tokens(x)
    rows, cols = _grid(grid, a.shape[0])
    ch = _channels(channels, a.shape[1])
    lab = None
    if labels is not None:
        lab = _as_array(labels, "labels").astype(int).ravel()
        if lab.size != a.shape[0]:
            raise MassActError(f"labels has {lab.size} entries for {a.shape[0]} tokens.")
    key = (_digest(a, lab), method, None if ch is None else tuple(ch), seed, bool(normalise), (rows, cols))
    if cache and key in _PROJECTION_CACHE:
        return _PROJECTION_CACHE[key]
    vals = a if ch is None else a[:, ch]
    feats = normalize(vals) if normalise else vals
    n = feats.shape[0]
    if method == "pca":
        centred = feats - feats.mean(0)
        if feats.shape[1] == 1 or not centred.any():
            coords = np.zeros((n, 2))
            coords[:, 0] = centred[:, 0] if feats.shape[1] >= 1 else 0
        else:
            u, sv, _ = np.linalg.svd(centred, full_matrices=False)
            coords = np.zeros((n, 2))
            m = min(2, u.shape[1])
            coords[:, :m] = u[:, :m] * sv[:m]
            # a deterministic sign: the largest-magnitude coordinate of each axis is positive
            for j in range(m):
                if coords[np.argmax(np.abs(coords[:, j])), j] < 0:
                    coords[:, j] *= -1
    else:
        try:
            umap = import_umap()
        except ImportError as e:
            raise MassActError("method='umap' needs umap-learn (a dependency of massact-viz: pip install umap-learn); "
                               "or use method='pca'.") from e
        if n < 4:
            raise MassActError(f"UMAP needs at least 4 tokens, got {n}; use method='pca'.")
        import warnings
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1,
                            init="random" if n < 10 else "spectral")
        with warnings.catch_warnings():  # "n_jobs overridden by random_state": seeded runs are serial
            warnings.simplefilter("ignore", UserWarning)
            coords = np.asarray(reducer.fit_transform(feats), dtype=np.float64)
    tok = np.arange(n)
    out = Projection(coords, tok, tok // cols, tok % cols, vals.astype(np.float32), ch, lab, method)
    if cache:
        _PROJECTION_CACHE[key] = out
    return out
