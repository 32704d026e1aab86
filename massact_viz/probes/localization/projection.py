"""2-D projections (UMAP or PCA) of one image's tokens for linked widgets, cached in memory."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...errors import MassActError, check_index
from .tokens import as_array, check_channels, check_seed, normalize, token_features, token_grid

PROJECTIONS = ("umap", "pca")

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
    seed = check_seed(seed)
    a = token_features(x)
    rows, cols = token_grid(grid, a.shape[0])
    ch = check_channels(channels, a.shape[1])
    lab = None
    if labels is not None:
        lab = as_array(labels, "labels").astype(int).ravel()
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
