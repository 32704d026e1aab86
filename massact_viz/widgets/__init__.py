"""Interactive notebook views (anywidget; plain DOM/canvas/SVG, no network at render time).

* :class:`ChannelExplorer`   layer x channel heatmap, step slider, statistic, top-k, channel curve + spatial map;
* :class:`TokenClusterMap`   token clusters over the generated image (layer, step, k, K, channel set, IoU);
* :class:`ProjectionView`    UMAP/PCA of the cluster map's tokens, selection linked both ways;
* :class:`TransportTimeline` source / target / transported previews per step, finals, settings, metrics;
* :class:`DisruptionGrid`    top/bottom/random-k edited images at each k with their metric values.

Every view has a static PNG + HTML fallback in its MIME bundle, ``save(path)`` (.png/.svg/.html)
and ``payload_bytes`` (what the browser receives).
"""
from .base import View, payload_bytes
from .channel_explorer import ChannelExplorer

__all__ = ["View", "payload_bytes", "ChannelExplorer", "TokenClusterMap", "ProjectionView", "TransportTimeline",
           "DisruptionGrid"]


def __getattr__(name):  # the other views load on first use
    if name == "TokenClusterMap":
        from .token_cluster_map import TokenClusterMap
        return TokenClusterMap
    if name == "ProjectionView":
        from .projection_view import ProjectionView
        return ProjectionView
    if name == "TransportTimeline":
        from .transport_timeline import TransportTimeline
        return TransportTimeline
    if name == "DisruptionGrid":
        from .disruption_grid import DisruptionGrid
        return DisruptionGrid
    raise AttributeError(name)
