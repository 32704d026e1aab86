"""ProjectionView: a UMAP (or PCA) scatter of a TokenClusterMap's tokens, linked both ways.

Points are :func:`massact_viz.probes.localization.project` of the cluster map's current (layer,
step) tokens restricted to its current channels, coloured by its cluster labels. Selecting points
(box or lasso drag, or click) sets ``selected`` (token indices), which is linked to the cluster
map's ``selected``: the tokens light up on the image, and tokens picked on the image light up here.
When the cluster map's configuration changes, the projection is recomputed in Python (cached per
configuration by ``project``) and resent: tokens x 2 float32 + tokens uint8 labels (FLUX: 36 kB).
"""
from __future__ import annotations

import numpy as np
import traitlets

from ..errors import MassActError
from ..probes import localization as loc
from ..palette import PALETTE_RGB
from .base import View, esc, esm, label
from .token_cluster_map import TokenClusterMap


class ProjectionView(View):
    """``ProjectionView(cluster_map, method="umap", seed=0)``; ``method="pca"`` is instant (UMAP's first
    fit pays numba's compilation once per machine, then about 6 s per new kernel: BENCHMARKS.md).
    Axes are labelled by the method's components; the legend names each cluster (foreground or background).

    Synced traits: ``selected`` (token indices, linked to ``cluster_map.selected``), ``coords``
    (float32 bytes, tokens x 2), ``labels`` (uint8 bytes, cluster id + 1), ``method``.
    """

    _esm = esm("projection_view")

    selected = traitlets.List(traitlets.Int()).tag(sync=True)
    coords = traitlets.Bytes(b"").tag(sync=True)
    labels = traitlets.Bytes(b"").tag(sync=True)
    method = traitlets.Unicode("umap").tag(sync=True)
    grid = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)
    subtitle = traitlets.Unicode("").tag(sync=True)
    #: legend text per cluster id (index = cluster id), e.g. "cluster 1: foreground"
    legend = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(self, cluster_map: TokenClusterMap, method: str = "umap", *, seed: int = 0):
        if not isinstance(cluster_map, TokenClusterMap):
            raise MassActError(f"ProjectionView links to a TokenClusterMap, got {type(cluster_map).__name__}; "
                               "build one with TokenClusterMap(run) first.")
        if method not in loc.PROJECTIONS:
            raise MassActError(f"method must be one of {loc.PROJECTIONS}, got {method!r}.")
        self._map, self._seed = cluster_map, seed
        super().__init__()
        self.method = method
        self.grid = list(cluster_map.grid)
        self.title = cluster_map.title
        self._update()
        self.selected = list(cluster_map.selected)
        self._link = traitlets.link((cluster_map, "selected"), (self, "selected"))
        cluster_map.observe(lambda change: self._update(), names=["layer", "step", "k", "k_clusters", "channel_set"])

    @traitlets.validate("selected")
    def _v_selected(self, p):
        n = self.grid[0] * self.grid[1]
        v = sorted({int(i) for i in p["value"]})
        if v and (v[0] < 0 or v[-1] >= n):
            raise MassActError(f"selected token indices must be 0..{n - 1}.")
        return v

    def _update(self) -> None:
        m = self._map
        cur = m.current
        self.projection = loc.project(m._acts[(m.layer, m.step)], tuple(m.grid), method=self.method,
                                      channels=cur["channels"], labels=cur["labels"], seed=self._seed)
        with self.hold_sync():
            self.coords = self.projection.coords.astype("<f4").tobytes()
            self.labels = (cur["labels"] + 1).clip(0, 255).astype(np.uint8).tobytes()
            self.subtitle = (f"{self.method.upper()} of {m.layer} step {m.step}, {m.channel_set}-{m.k} channels, "
                             f"{m.k_clusters} clusters")
            self.legend = loc.cluster_legend(int(cur["labels"].max()) + 1 if cur["labels"].size else 0,
                                         cur.get("foreground", -1))

    def point(self, i: int) -> dict:
        """Everything about point ``i`` (token, row, col, cluster, values): ``Projection.point``."""
        return self.projection.point(i)

    def static_image(self):
        from PIL import Image, ImageDraw
        S, pad, left, legend_h = 320, 12, 16, 16 * max(1, len(self.legend))
        xy = self.projection.coords
        lo, hi = xy.min(0), xy.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        p = pad + (xy - lo) / span * (S - 2 * pad)
        im = Image.new("RGB", (S + left, S + 32 + legend_h), "white")
        d = ImageDraw.Draw(im)
        label(d, (4, 2), self.subtitle)
        d.line([(left, 16), (left, 16 + S), (left + S, 16 + S)], fill=(90, 90, 90))   # the two axes
        axis = "PC" if self.method == "pca" else self.method.upper()
        label(d, (left + S // 2 - 30, 18 + S), f"{axis} 1 (a.u.)")
        ylab = Image.new("RGB", (S, 14), "white")
        label(ImageDraw.Draw(ylab), (S // 2 - 30, 1), f"{axis} 2 (a.u.)")
        im.paste(ylab.rotate(90, expand=True), (1, 16))   # the vertical axis' name, read bottom to top
        for j, text in enumerate(self.legend):
            col = PALETTE_RGB[j % len(PALETTE_RGB)]
            y0 = S + 32 + 16 * j
            d.rectangle([left, y0 + 2, left + 10, y0 + 12], fill=col)
            label(d, (left + 14, y0), text)
        lab = self.projection.labels
        sel = set(self.selected)
        for i, (x, y) in enumerate(p):
            col = PALETTE_RGB[int(lab[i]) % len(PALETTE_RGB)] if lab is not None and lab[i] >= 0 else (150, 150, 150)
            y, x = 16 + S - y, x + left
            r = 4 if i in sel else 2.5
            d.ellipse([x - r, y - r, x + r, y + r], fill=col, outline=(0, 0, 0) if i in sel else None)
        return im

    def static_html_body(self) -> str:
        return f"<p>{esc(self.subtitle)}; {len(self.selected)} tokens selected</p>"
