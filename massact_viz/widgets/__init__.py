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
from .disruption_grid import DisruptionGrid
from .projection_view import ProjectionView
from .token_cluster_map import TokenClusterMap
from .transport_timeline import TransportTimeline

__all__ = ["View", "payload_bytes", "ChannelExplorer", "TokenClusterMap", "ProjectionView", "TransportTimeline",
           "DisruptionGrid"]
