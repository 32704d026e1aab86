"""Figures for print: sizes in millimetres and points, journal column widths, fonts, panels with letters,
and ``export`` of one figure to PDF/SVG/PNG at a DPI."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from ..errors import MassActError
from ..files import atomic_write
from ..palette import PALETTE
from .saving import SUFFIXES, save_figure, to_image
from .style import TEMPLATE, _esc


# ---------------------------------------------------------------- print: sizes, fonts, panels, export
#: CSS pixels per inch. Plotly lays a figure out in CSS px and kaleido keeps 96 px = 1 inch in PDF and
#: SVG (a 336 px wide figure is a 252 pt = 88.9 mm PDF page), so millimetres and points convert exactly.
CSS_DPI = 96
MM_PER_INCH = 25.4
#: Journal column widths in mm (Nature: 89 single column, 183 double column; most journals are close).
COLUMN_MM = {"single": 89.0, "double": 183.0}
#: A sans-serif family that every PDF viewer and most journals accept.
PRINT_FONT = "Arial, Helvetica, 'Liberation Sans', sans-serif"
_LETTER = "panel letter"  # name of the annotations panels() adds, so publication() can size them


def mm_to_px(mm: float) -> float:
    """Millimetres to plotly's CSS pixels (96 per inch)."""
    return float(mm) / MM_PER_INCH * CSS_DPI


def pt_to_px(pt: float) -> float:
    """Typographic points (1/72 inch) to plotly's CSS pixels (96 per inch): 7 pt is 9.33 px."""
    return float(pt) * CSS_DPI / 72.0


def png_scale(dpi: float) -> float:
    """The ``scale`` that makes a PNG export ``dpi`` dots per inch at the figure's physical size."""
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0:
        raise MassActError(f"dpi must be a positive number (300 for print, 600 for line art), got {dpi!r}.")
    return float(dpi) / CSS_DPI


def _positive(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise MassActError(f"{name} must be a positive number, got {v!r}.")
    return float(v)


def _axis_names(layout) -> list[str]:
    return [k for k in layout.to_plotly_json() if re.fullmatch(r"[xy]axis\d*", k)]


def channel_colors(channels: Sequence[int], palette: Sequence[str] = PALETTE) -> dict[int, str]:
    """One colour per channel, in the given order (Okabe-Ito by default, safe under colour-vision
    deficiencies): pass the same mapping to every panel so a channel has one colour everywhere."""
    chans = [int(c) for c in channels]
    if len(set(chans)) != len(chans):
        raise MassActError(f"channels must be distinct, got {chans}.")
    if len(chans) > len(palette):
        raise MassActError(f"{len(chans)} channels but only {len(palette)} colours; pass fewer channels or a longer palette.")
    return {c: palette[i] for i, c in enumerate(chans)}


def color_channels(fig: go.Figure, colors: dict[int, str]) -> go.Figure:
    """Recolour, in place, the traces that belong to a channel: legend group ``ch{c}`` (as
    :func:`magnitude_vs_step` makes) or ``meta={"channel": c}``. Returns ``fig``."""
    for t in fig.data:
        meta = t.meta if isinstance(getattr(t, "meta", None), dict) else {}
        group = getattr(t, "legendgroup", None) or ""
        c = meta.get("channel")
        if c is None and re.fullmatch(r"ch\d+", group):
            c = int(group[2:])
        if c is None or int(c) not in colors:
            continue
        col = colors[int(c)]
        if hasattr(t, "line"):
            t.line.color = col
        if hasattr(t, "marker"):
            t.marker.color = col
    return fig


def publication(fig: go.Figure, *, width_mm: float = COLUMN_MM["single"], height_mm: float | None = None,
                font_size: float = 7.0, font_family: str = PRINT_FONT, title: bool = False,
                line_width: float = 1.0, marker_size: float = 4.0, colorscale: str | None = None,
                legend: bool = True) -> go.Figure:
    """A copy of ``fig`` styled for print at its physical size.

    ``width_mm`` / ``height_mm``: the printed size (:data:`COLUMN_MM`: 89 mm single column, 183 mm
    double column); ``height_mm=None`` keeps the figure's aspect ratio (its ``height / width``, width
    700 px when unset). ``font_size`` is in points *at that size* (journals ask for 5-8 pt), set on
    every text: axes, ticks, legend, colour bars, annotations, cell text; panel letters from
    :func:`panels` get 1.3x, bold. Lines are ``line_width`` px (1 px = 0.75 pt), markers at most
    ``marker_size`` px. Interactive parts that a page cannot show go: sliders, buttons, and the hidden
    traces behind them (the figure shows what was visible). ``title=False`` drops the figure title (a
    paper puts it in the caption). ``colorscale`` replaces the colour scale of every colour axis and
    heatmap (e.g. ``"Cividis"``). Axes get black lines and outside ticks; margins shrink to what the
    labels need (automargin). Export with :func:`export` or :func:`save_figure`.
    """
    if not isinstance(fig, go.Figure):
        raise MassActError(f"publication takes a plotly Figure, got {type(fig).__name__}.")
    width_mm = _positive("width_mm", width_mm)
    font_px = pt_to_px(_positive("font_size", font_size))
    line_width = _positive("line_width", line_width)
    marker_size = _positive("marker_size", marker_size)
    if height_mm is None:
        w0 = fig.layout.width or 700
        h0 = fig.layout.height or 450
        height_mm = width_mm * h0 / w0
    height_mm = _positive("height_mm", height_mm)

    out = go.Figure(fig)
    out.data = [t for t in out.data if t.visible is not False]
    for t in out.data:
        if t.visible is not None:
            t.visible = True
        if t.type in ("scatter", "scattergl"):
            if hasattr(t, "line") and t.line is not None:
                t.line.width = line_width
            size = t.marker.size if t.marker.size is not None else 6
            t.marker.size = np.minimum(np.asarray(size, dtype=float), marker_size).tolist() \
                if not np.isscalar(size) else min(float(size), marker_size)
            if t.marker.line is not None and t.marker.line.width is not None:
                t.marker.line.width = min(float(t.marker.line.width), line_width)
            if t.textfont is not None:
                t.textfont.size = font_px
        if t.type == "heatmap":
            t.textfont.size = font_px
            if colorscale is not None and not t.coloraxis:
                t.colorscale = colorscale
            t.colorbar.update(thickness=font_px, outlinewidth=0, tickfont=dict(size=font_px),
                              title=dict(font=dict(size=font_px), side="right"))
    lay = out.layout
    lay.sliders, lay.updatemenus = (), ()
    keep_title = bool(title and lay.title.text)
    # text and marks above the plot area (subplot titles, panel letters, shapes) need a top margin;
    # automargin ignores them
    above = any(a.yref == "paper" and a.y is not None and a.y >= 0.99 for a in lay.annotations) or any(
        (sh.yref == "paper" or str(sh.yref or "").endswith("domain")) and max(sh.y0 or 0, sh.y1 or 0) > 1
        for sh in lay.shapes)
    out.update_layout(
        width=round(mm_to_px(width_mm)), height=round(mm_to_px(height_mm)), autosize=False,
        font=dict(family=font_family, size=font_px, color="#000000"),
        paper_bgcolor="white", plot_bgcolor="white",
        margin=dict(l=2, r=2, b=2, t=round(font_px * (0.8 + 1.6 * above + 1.6 * keep_title)), pad=0),
        legend=dict(font=dict(size=font_px), title=dict(font=dict(size=font_px)), tracegroupgap=2,
                    grouptitlefont=dict(size=font_px), itemwidth=30),
        hoverlabel=dict(font=dict(family=font_family)), showlegend=legend if not legend else lay.showlegend)
    if keep_title:
        lay.title.update(font=dict(size=font_px * 1.15, family=font_family), x=0.0, xanchor="left",
                         xref="paper", y=1.0, yref="container", yanchor="top")
    else:
        lay.title.text = None
    for name in _axis_names(lay):
        lay[name].update(automargin=True, showline=True, linecolor="#000000", linewidth=0.75, mirror=False,
                         ticks="outside", ticklen=3, tickwidth=0.75, tickcolor="#000000",
                         tickfont=dict(size=font_px), title=dict(font=dict(size=font_px), standoff=3),
                         gridcolor="#E5E5E5", gridwidth=0.5, zeroline=False)
    for key in lay.to_plotly_json():
        if re.fullmatch(r"coloraxis\d*", key):
            ca = lay[key]
            if colorscale is not None:
                ca.colorscale = colorscale
            ca.colorbar.update(thickness=font_px, outlinewidth=0, tickfont=dict(size=font_px),
                               title=dict(font=dict(size=font_px), side="right"))
    for key in lay.to_plotly_json():
        if re.fullmatch(r"legend\d+", key):
            lay[key].update(font=dict(size=font_px), title=dict(font=dict(size=font_px)),
                            grouptitlefont=dict(size=font_px), tracegroupgap=2, itemwidth=30)
    for a in lay.annotations:
        if a.name == _LETTER:
            a.font = dict(size=font_px * 1.3, family=font_family, color="#000000", weight="bold")
        else:
            a.font = dict(size=font_px, family=font_family, color="#000000")
    return out


def panels(figs: Sequence[go.Figure], rows: int | None = None, cols: int | None = None, *,
           titles: Sequence[str] | None = None, letters: bool | Sequence[str] = True,
           horizontal_spacing: float | None = None, vertical_spacing: float | None = None) -> go.Figure:
    """Several 2-D figures as the panels of one figure, row by row, with panel letters (a, b, c, ...).

    Each panel keeps its traces (visible ones only: a slider's hidden positions are dropped), its axes
    (titles, log/category types, ranges, reversed axes, square cells), its colour axis (renamed
    ``coloraxis``, ``coloraxis2``, ... so scales stay separate), and its own colour bar and legend,
    placed just right of the panel, in the gap before the next one (plotly's numbered legends). Shapes and annotations drawn
    on a panel's data axes come along; ones placed on the whole paper do not. ``rows`` / ``cols``
    default to up to three panels per row. ``titles``: a short title per panel (escaped), or None.
    ``letters``: True for a, b, c, ..., False for none, or your own strings. 3-D figures cannot be
    panels (plotly places scenes differently); export them on their own. Style the result with
    :func:`publication` (e.g. ``width_mm=183``).
    """
    from plotly.subplots import make_subplots

    figs = list(figs) if not isinstance(figs, go.Figure) else [figs]
    if not figs or not all(isinstance(f, go.Figure) for f in figs):
        raise MassActError("panels takes a non-empty list of plotly Figures.")
    n = len(figs)
    for i, f in enumerate(figs):
        if any(t.type in ("surface", "scatter3d", "mesh3d", "isosurface", "volume", "cone") for t in f.data):
            raise MassActError(f"figure {i} is 3-D; panels() places 2-D figures only. Export 3-D figures on their own.")
    for name, v in (("rows", rows), ("cols", cols)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise MassActError(f"{name} must be a positive integer, got {v!r}.")
    if rows is None and cols is None:
        cols = min(n, 3)
    if cols is None:
        cols = math.ceil(n / rows)
    if rows is None:
        rows = math.ceil(n / cols)
    if rows * cols < n:
        raise MassActError(f"{n} figures do not fit in {rows} rows x {cols} columns.")
    if titles is not None:
        titles = [_esc(t) for t in titles]
        if len(titles) != n:
            raise MassActError(f"{len(titles)} titles for {n} figures; give one per figure (or None).")
    if letters is True:
        letters = [chr(ord("a") + i) if i < 26 else f"a{i}" for i in range(n)]
    elif letters is False or letters is None:
        letters = []
    else:
        letters = [str(x) for x in letters]
        if len(letters) != n:
            raise MassActError(f"{len(letters)} letters for {n} figures; give one per figure, True or False.")
    has_bar = any(t.type == "heatmap" for f in figs for t in f.data) or len(figs) > 1
    hs = horizontal_spacing if horizontal_spacing is not None else (0.16 if has_bar else 0.09) * min(1.0, 3 / cols)
    vs = vertical_spacing if vertical_spacing is not None else 0.14 * min(1.0, 3 / rows)
    hs, vs = min(hs, 0.99 / max(cols - 1, 1)), min(vs, 0.99 / max(rows - 1, 1))
    out = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=hs, vertical_spacing=vs)
    out.update_layout(template=TEMPLATE, width=360 * cols + 120, height=320 * rows + 80, showlegend=True,
                      margin=dict(l=60, r=30, t=60, b=50))
    n_ca = n_leg = 0
    for i, f in enumerate(figs):
        r, c = divmod(i, cols)
        sp = out.get_subplot(r + 1, c + 1)
        xname, yname = sp.xaxis.plotly_name, sp.yaxis.plotly_name
        xid, yid = xname.replace("axis", ""), yname.replace("axis", "")
        xdom, ydom = tuple(sp.xaxis.domain), tuple(sp.yaxis.domain)
        src = f.layout
        for own, dst in (("xaxis", xname), ("yaxis", yname)):
            ax = src[own].to_plotly_json()
            for k in ("domain", "anchor", "overlaying", "position", "side", "matches"):
                ax.pop(k, None)
            if "scaleanchor" in ax:
                ax["scaleanchor"] = {"x": xid, "y": yid}.get(ax["scaleanchor"], ax["scaleanchor"])
                ax["constrain"] = "domain"
            out.layout[dst].update(ax)
        # legends: shown as the source figure would show them
        shown = [t for t in f.data if t.visible is not False and t.showlegend is not False and t.type != "heatmap"]
        legend_on = src.showlegend if src.showlegend is not None else len(shown) >= 2
        leg_id = None
        if legend_on and shown:
            n_leg += 1
            leg_id = "legend" if n_leg == 1 else f"legend{n_leg}"
            lj = src.legend.to_plotly_json()
            for k in ("x", "y", "xanchor", "yanchor", "orientation", "xref", "yref"):
                lj.pop(k, None)
            out.layout[leg_id] = lj | dict(x=xdom[1] + 0.01, y=ydom[1], xanchor="left", yanchor="top", xref="paper",
                                           yref="paper", bgcolor="rgba(255,255,255,0)")
        ca_map: dict[str, str] = {}
        for t in f.data:
            if t.visible is False:
                continue
            t = t.__class__(t)
            if t.visible is not None:
                t.visible = True
            bar = dict(x=xdom[1] + 0.01, xanchor="left", xref="paper", y=(ydom[0] + ydom[1]) / 2, yanchor="middle",
                       yref="paper", len=ydom[1] - ydom[0], lenmode="fraction")
            if getattr(t, "coloraxis", None):
                if t.coloraxis not in ca_map:
                    n_ca += 1
                    ca_map[t.coloraxis] = new = "coloraxis" if n_ca == 1 else f"coloraxis{n_ca}"
                    cj = src[t.coloraxis].to_plotly_json() if t.coloraxis in src else {}
                    out.layout[new] = cj
                    out.layout[new].colorbar.update(bar)
                t.coloraxis = ca_map[t.coloraxis]
            elif t.type == "heatmap" and t.showscale is not False:
                t.colorbar.update(bar)
            if "showlegend" in t and t.type != "heatmap":
                if leg_id is None:
                    t.showlegend = False
                else:
                    t.legend = leg_id
                    if t.showlegend is None:
                        t.showlegend = True
            out.add_trace(t, row=r + 1, col=c + 1)
        for kind in ("shapes", "annotations"):
            for item in src[kind]:
                j = item.to_plotly_json()
                refs = {k: j.get(k) for k in ("xref", "yref")}
                if any(v == "paper" or v is None and kind == "annotations" for v in refs.values()):
                    continue  # placed on the whole figure: no panel to move it to
                for k, v in refs.items():
                    if v:
                        axid = xid if k == "xref" else yid
                        j[k] = re.sub(r"^[xy]\d*", axid, v)
                (out.add_shape if kind == "shapes" else out.add_annotation)(j)
        if letters:
            out.add_annotation(text=f"<b>{_esc(letters[i])}</b>", name=_LETTER, xref="paper", yref="paper",
                               x=xdom[0], y=ydom[1], xanchor="right", yanchor="bottom", xshift=-28, yshift=4,
                               showarrow=False, font=dict(size=18))
    return out


def export(fig: go.Figure, folder: str | os.PathLike, name: str, *, formats: Sequence[str] = ("pdf", "svg", "png"),
           dpi: float = 300) -> list[Path]:
    """Write ``fig`` as ``folder/name.<format>`` for each format; returns the paths in that order.

    PDF and SVG are vector: their physical size is the figure's width and height in CSS px at 96 per
    inch (what :func:`publication` sets from millimetres), so they print at exactly that size. PNG is
    a raster: it is rendered at ``scale = dpi / 96`` (300 dpi: 3.125x the px size) and the dpi is
    written into the file (pHYs), so word processors place it at the intended size. Other suffixes
    of :func:`save_figure` (``html``, ``json``) are accepted too.
    """
    folder = Path(folder)
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise MassActError(f"name must be a plain file stem such as 'figure1', got {name!r}.")
    scale = png_scale(dpi)
    paths = []
    for fmt in formats:
        fmt = str(fmt).lower().lstrip(".")
        if "." + fmt not in SUFFIXES:
            raise MassActError(f"unknown format {fmt!r}; use some of {', '.join(s[1:] for s in SUFFIXES)}.")
        path = folder / f"{name}.{fmt}"
        if fmt == "png":
            import io

            from PIL import Image
            im = Image.open(io.BytesIO(to_image(fig, "png", scale=scale)))
            buf = io.BytesIO()
            im.save(buf, format="PNG", dpi=(float(dpi), float(dpi)))
            paths.append(atomic_write(path, buf.getvalue()))
        else:
            paths.append(save_figure(fig, path))
    return paths


__all__ = ["publication", "panels", "export", "channel_colors", "color_channels", "mm_to_px", "pt_to_px",
            "png_scale", "COLUMN_MM", "CSS_DPI", "PRINT_FONT"]
