"""Plotly figures of massive activations, split by purpose:

* :mod:`.figures`      the figures: :func:`channel_heatmap` (layer x channel magnitude, slider over steps,
  top-k marked), :func:`layer_curves` (Sun et al.'s top-1/2/3 and median per layer),
  :func:`activation_surface`, :func:`magnitude_vs_step`, :func:`stability_matrix`, projection, mIoU,
  disruption and interpolation curves, :func:`image_row` (captioned image strips);
* :mod:`.style`        one look for every figure: :data:`TEMPLATE` (one palette, one font), HTML-escaped labels;
* :mod:`.saving`       :func:`save_figure` (.html self-contained with plotly.js packed, .json, .png/.svg/.pdf
  through kaleido and a local Chromium, never downloaded), :func:`to_image`;
* :mod:`.notebook`     :func:`show` / :class:`NotebookFigure`: the interactive figure plus a static PNG, so
  figures survive nbconvert and GitHub;
* :mod:`.publication`  print sizes (mm, pt, journal columns), :func:`publication`, :func:`panels`, :func:`export`.

Everything is importable from ``massact_viz.plots`` directly. User text (prompts, labels) is HTML-escaped
before it reaches a figure: plotly renders HTML-like markup in labels. Static export without a Chromium
raises :class:`~massact_viz.errors.MassActError` saying ``apt-get install -y chromium``.
"""
from __future__ import annotations

from ..palette import PALETTE
from .saving import (CHROMIUM_HINT, FIGURE_SCRIPT_TYPE, STATIC_FORMATS, SUFFIXES, close_browser, figure_fragment,
                     figure_page, plotlyjs_loader, save_figure, to_image)
from .figures import (activation_surface, channel_heatmap, disruption_curves, image_row, interpolation_curves,
                      layer_curves, magnitude_vs_step, miou_curves, projection_scatter, stability_matrix)
from .notebook import NotebookFigure, figure_bundle, show
from .publication import (COLUMN_MM, CSS_DPI, MM_PER_INCH, PRINT_FONT, channel_colors, color_channels, export,
                          mm_to_px, panels, png_scale, pt_to_px, publication)
from .style import AGREEMENT, FONT, MIME_PLOTLY, SEQUENTIAL, TEMPLATE, short_text

__all__ = ["PALETTE", "AGREEMENT", "CHROMIUM_HINT", "COLUMN_MM", "CSS_DPI", "FIGURE_SCRIPT_TYPE", "FONT", "MIME_PLOTLY",
           "MM_PER_INCH", "NotebookFigure", "PRINT_FONT", "SEQUENTIAL", "STATIC_FORMATS", "SUFFIXES", "TEMPLATE",
           "activation_surface", "channel_colors", "channel_heatmap", "close_browser", "color_channels",
           "disruption_curves", "export", "figure_bundle", "figure_fragment", "figure_page", "image_row",
           "interpolation_curves", "layer_curves", "magnitude_vs_step", "miou_curves", "mm_to_px", "panels",
           "plotlyjs_loader", "png_scale", "projection_scatter", "pt_to_px", "publication", "save_figure",
           "short_text", "show", "stability_matrix", "to_image"]
