"""Token clustering: restrict one image's tokens to a channel set, min-max normalise, cluster (K-means or
HDBSCAN) and decide which cluster is the foreground (:data:`FOREGROUND_RULES`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import MassActError
from .masks import upsample
from .tokens import check_channels, check_seed, normalize, token_features, token_grid

METHODS = ("kmeans", "hdbscan")
#: How a cluster becomes the foreground. ``max_sum`` / ``min_sum``: the cluster with the highest / lowest
#: mean heat (sum of min-max normalised channels; ``max_sum`` is the paper's rule, and it depends on the
#: sign each channel takes on the object); ``border``: every cluster but the one holding the most tokens of
#: the grid's outer ring (the background surrounds an object); ``minority``: the smallest cluster.
FOREGROUND_RULES = ("max_sum", "min_sum", "border", "minority")
#: The default rule, chosen by measurement on the embedded model (BENCHMARKS.md "Defaults by measurement").
DEFAULT_FOREGROUND = "border"

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
        ring = _ring(grid or token_grid(None, labels.size))
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
    a = token_features(feats)
    return cluster_features(a, k_clusters, method, foreground, seed, min_cluster_size, token_grid(grid, a.shape[0]))[2]


def check_cluster_args(n: int | None, k_clusters: Any, method: Any, foreground: Any, name: str = "k_clusters") -> None:
    """Refuse bad clustering arguments in one line. ``n`` is the number of tokens, or None before it is known
    (a plan, a command line); ``name`` is what the caller calls the cluster count (the CLI: ``--k-clusters``)."""
    if method not in METHODS:
        raise MassActError(f"method must be one of {METHODS}, got {method!r}.")
    if method == "kmeans" and (isinstance(k_clusters, bool) or not isinstance(k_clusters, (int, np.integer))
                               or k_clusters < 2 or (n is not None and k_clusters > n)):
        bound = "at least 2 (foreground and background)" if n is None else f"between 2 and {n} (the number of tokens)"
        raise MassActError(f"{name} must be an integer {bound}, got {k_clusters!r}.")
    if not callable(foreground) and foreground not in FOREGROUND_RULES:
        raise MassActError(f"foreground must be one of {FOREGROUND_RULES} or a function (features, labels) -> "
                           f"cluster id or bool mask, got {foreground!r}.")


def cluster_features(feats: np.ndarray, k_clusters, method, foreground, seed, min_cluster_size, grid=None):
    check_cluster_args(feats.shape[0], k_clusters, method, foreground)
    seed = check_seed(seed)
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
    a = token_features(x)
    rows, cols = token_grid(grid, a.shape[0])
    ch = check_channels(channels, a.shape[1])
    feats = a if ch is None else a[:, ch]
    norm, labels, fg = cluster_features(feats, k_clusters, method, foreground, seed, min_cluster_size, (rows, cols))
    return TokenClusters(labels.reshape(rows, cols), fg.reshape(rows, cols), norm.sum(1).reshape(rows, cols),
                         norm, ch, method)
