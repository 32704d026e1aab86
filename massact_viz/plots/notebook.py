"""Figures in notebooks: ``show`` / :class:`NotebookFigure` carry the interactive plotly output and a static
PNG, so a figure survives nbconvert and GitHub."""
from __future__ import annotations

import base64
import html
import json
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from .saving import to_image
from .style import MIME_PLOTLY, short_text


def figure_bundle(fig: go.Figure, *, png: bool = True, width: int | None = None,
                  height: int | None = None) -> dict[str, Any]:
    """The notebook MIME bundle of ``fig``: the interactive plotly JSON, a static ``image/png``
    (base64; skipped when ``png=False`` or when kaleido/Chromium fail) and ``text/plain``."""
    bundle: dict[str, Any] = {MIME_PLOTLY: json.loads(pio.to_json(fig, validate=False)) | {"config": {}}}
    title = fig.layout.title.text or "figure"
    note = ""
    if png:
        try:
            bundle["image/png"] = base64.b64encode(to_image(fig, "png", width=width, height=height)).decode()
        except Exception as e:  # noqa: BLE001 display must never fail; the interactive figure still shows
            note = f" (static PNG unavailable: {short_text(str(e), 160)})"
    bundle["text/plain"] = f"<plotly figure: {html.unescape(str(title))}, {len(fig.data)} traces>{note}"
    return bundle


class NotebookFigure:
    """Wraps a figure for notebooks: displays as interactive plotly *and* a static PNG, so the
    figure survives nbconvert, GitHub and viewers without the plotly renderer."""

    def __init__(self, fig: go.Figure, *, png: bool = True, width: int | None = None, height: int | None = None):
        self.fig, self.png, self.width, self.height = fig, png, width, height

    def _repr_mimebundle_(self, include=None, exclude=None):
        b = figure_bundle(self.fig, png=self.png, width=self.width, height=self.height)
        if include:
            b = {k: v for k, v in b.items() if k in include}
        if exclude:
            b = {k: v for k, v in b.items() if k not in exclude}
        return b

    def __repr__(self) -> str:
        return f"NotebookFigure({self.fig.layout.title.text!r}, {len(self.fig.data)} traces)"


def show(fig: go.Figure, *, png: bool = True, width: int | None = None, height: int | None = None):
    """Display ``fig`` in a notebook with both the interactive plotly output and a static PNG.

    Inside IPython it displays and returns None; elsewhere it returns the :class:`NotebookFigure`
    (so a script can still inspect ``_repr_mimebundle_()``).
    """
    obj = NotebookFigure(fig, png=png, width=width, height=height)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return obj
    if get_ipython() is None:
        return obj
    display(obj)
    return None
