"""Plotly figures of massive activations, built from :class:`~massact_viz.stats.ChannelStats`
(or a :class:`~massact_viz.run.Run`) and raw slices, plus export and notebook display.

* :func:`channel_heatmap`     layer x channel magnitude (log10), slider over steps, top-k marked;
* :func:`layer_curves`        Sun et al.'s layer-wise plot: top-1/2/3 max|x| and the median per layer;
* :func:`activation_surface`  Sun et al.'s 3-D plot of |x| over tokens x channels for one raw slice;
* :func:`magnitude_vs_step`   chosen channels' score against the denoising step, per prompt;
* :func:`stability_matrix`    an annotated Jaccard (or any 0..1) matrix;
* :func:`save_figure`         .html (self-contained, no CDN), .png/.svg/.pdf (kaleido + a local
  Chromium), .json;
* :func:`show` / :class:`NotebookFigure`  display with both the interactive plotly mimetype and a
  static PNG, so figures survive nbconvert and GitHub.

Every figure uses the module template :data:`TEMPLATE` (one palette, one font). User text (prompts,
labels) is HTML-escaped before it reaches a figure: plotly renders HTML-like markup in labels.
Static export never downloads a browser: without a Chromium it raises
:class:`~massact_viz.errors.MassActError` saying ``apt-get install -y chromium``.
"""
from __future__ import annotations

import atexit
import base64
import functools
import html
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch

from .errors import MassActError, check_index, check_k
from .files import atomic_write
from .palette import MARK_COLOR, MEDIAN_COLOR, PALETTE
from .stats import ChannelStats, as_stats, check_stat

# ---------------------------------------------------------------- one look for every figure
#: Sequential colour scale of every magnitude heatmap and surface.
SEQUENTIAL = "Viridis"
#: Colour scale of 0..1 agreement matrices (Jaccard).
AGREEMENT = "Blues"
FONT = dict(family="Inter, 'Helvetica Neue', Helvetica, Arial, sans-serif", size=13, color="#222222")

TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(
    font=FONT, colorway=list(PALETTE), title=dict(font=dict(size=16), x=0.02, xanchor="left"),
    colorscale=dict(sequential=SEQUENTIAL), hoverlabel=dict(font=dict(family=FONT["family"], size=12)),
    legend=dict(font=dict(size=12)), margin=dict(l=80, r=30, t=70, b=60))
pio.templates["massact"] = TEMPLATE  # registered for reuse; never made the default

STATIC_FORMATS = ("png", "svg", "pdf")
SUFFIXES = (".html", ".json") + tuple("." + f for f in STATIC_FORMATS)
CHROMIUM_HINT = ("Static export (PNG/SVG/PDF) needs a local Chromium: run `apt-get install -y chromium` "
                 "(Debian/Ubuntu, as root; `make test`/`make demo` do it), or set BROWSER_PATH to a "
                 "Chrome/Chromium executable. .html and .json export need no browser.")
MIME_PLOTLY = "application/vnd.plotly.v1+json"


# ---------------------------------------------------------------- helpers
def _esc(text: Any) -> str:
    """HTML-escape ``< > &`` (plotly renders HTML-like markup in names, hover text and titles).

    Quotes are left alone: plotly.js does not decode ``&quot;``, so escaping them would show the entity.
    """
    return html.escape(str(text), quote=False)


def short_text(text: str, n: int = 40) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis (labels, captions, messages)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _log10(v: np.ndarray) -> np.ndarray:
    """log10 of non-negative magnitudes; zeros, negatives and NaN become NaN (an empty cell)."""
    v = np.asarray(v, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v) & (v > 0)
    out[ok] = np.log10(v[ok])
    return out


def _log_ticks(*arrays: Any) -> dict:
    """Tick settings of a log axis over these values, every label a whole number (no plotly "2 3 .. 9"
    digits that make 0.3 read as 3): powers of ten when the values span two decades or more, else the
    1-2-5 steps between them (0.2, 0.5, 1, 2, 5)."""
    v = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0 or math.log10(v.max() / v.min()) >= 2:
        return dict(dtick=1)
    lo, hi = math.floor(math.log10(v.min())) - 1, math.ceil(math.log10(v.max())) + 1
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1) for m in (1, 2, 5) if v.min() / 2 <= m * 10.0 ** e <= v.max() * 2]
    return dict(tickmode="array", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def _layer_axis(layers: Sequence[str], *, reverse: bool = False) -> dict:
    ax = dict(type="category", categoryorder="array", categoryarray=list(layers), title="layer")
    if reverse:
        ax["autorange"] = "reversed"
    return ax


def _select_rows(t: torch.Tensor, stats: ChannelStats, image: int | None, step: int | None) -> torch.Tensor:
    """Keep one image and/or one step of an (images, steps, ...) tensor (dims kept)."""
    if image is not None:
        t = t[[check_index(image, t.shape[0], "image", f"This capture has {t.shape[0]} images.")]]
    if step is not None:
        t = t[:, [stats.step_index(step)]]
    return t


def _prompt_label(stats: ChannelStats, i: int, n: int = 40) -> str:
    p = stats.prompts[i] if i < len(stats.prompts) else ""
    return f"image {i}: {_esc(short_text(p, n))}"


# ---------------------------------------------------------------- 1. channel heatmap
def channel_heatmap(stats, *, stat: str = "abs_mean", stream: str = "image", image: int | None = None,
                    k: int = 3, steps: Sequence[int] | None = None, title: str | None = None) -> go.Figure:
    """Layer x channel heatmap of ``stat`` on a log10 colour scale, with a slider over steps.

    Rows are layers in execution order (top to bottom), columns channel indices. The slider's first
    position is the mean over the captured steps (what :meth:`ChannelStats.get` returns with
    ``step=None``); then one position per step in ``steps`` (default: every captured step). Each
    position is one heatmap trace plus one marker trace on the ``k`` largest channels of every layer
    (as :meth:`ChannelStats.top_k`), so the figure holds ``2 * (len(steps) + 1)`` traces, one pair
    visible. ``image=None`` averages over images. Colours are ``log10(value)`` on one range shared by
    all positions; zero or missing values (a layer without this stream) are empty cells. Hover shows
    layer, channel and the value itself.

    Size: every position stores layers x channels values twice (log and value), so for a large model
    restrict ``steps`` to keep the HTML small.
    """
    stats = as_stats(stats)
    check_stat(stats, stat)
    stats.stream_index(stream)
    k = check_k(k, stats.width)
    steps = list(stats.steps) if steps is None else [stats.steps[stats.step_index(s)] for s in steps]
    options = [("mean over steps", None)] + [(f"step {s}", s) for s in steps]
    layers, width = list(stats.layers), stats.width
    channels = np.arange(width)
    grids = []
    for _, step in options:
        v = stats.get(stat, step=step, stream=stream, image=image).double().numpy()  # (L, D)
        grids.append(v)
    logs = [_log10(v) for v in grids]
    finite = np.concatenate([z[np.isfinite(z)] for z in logs]) if logs else np.array([])
    zmin, zmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if zmax <= zmin:
        zmax = zmin + 1.0

    fig = go.Figure()
    for i, ((label, step), v, z) in enumerate(zip(options, grids, logs)):
        visible = i == 0
        fig.add_trace(go.Heatmap(
            z=z.astype(np.float32), x=channels, y=layers, customdata=v.astype(np.float32),
            coloraxis="coloraxis", visible=visible, name=label, hoverongaps=False,
            hovertemplate=(f"layer %{{y}}<br>channel %{{x}}<br>{stat} %{{customdata:.4g}}"
                           f"<br>log10 %{{z:.3f}}<extra>{label}</extra>")))
        mx, my, mt = [], [], []
        for li, name in enumerate(layers):
            row = torch.from_numpy(v[li])
            if not torch.isfinite(row).all():
                continue
            s, idx = torch.topk(row, k)
            for rank, (c, val) in enumerate(zip(idx.tolist(), s.tolist()), 1):
                mx.append(c)
                my.append(name)
                mt.append(f"top-{rank} at {name}: channel {c}, {stat} {val:.4g}")
        fig.add_trace(go.Scatter(
            x=mx, y=my, mode="markers", visible=visible, name=f"top-{k} ({label})", hovertext=mt,
            hoverinfo="text", showlegend=False,
            marker=dict(symbol="circle-open", size=8, color=MARK_COLOR, line=dict(width=2))))

    slider_steps = []
    for i, (label, _) in enumerate(options):
        vis = [False] * (2 * len(options))
        vis[2 * i] = vis[2 * i + 1] = True
        slider_steps.append(dict(method="update", label=label, args=[{"visible": vis}]))
    who = "mean over images" if image is None else _prompt_label(stats, image % stats.shape[0])
    fig.update_layout(
        template=TEMPLATE,
        title=title if title is not None else f"{stat} per channel, {stream} stream ({who}); top-{k} circled",
        xaxis=dict(title="channel", showgrid=False, zeroline=False, range=[-0.5, width - 0.5]),
        yaxis=_layer_axis(layers, reverse=True) | dict(showgrid=False),
        coloraxis=dict(colorscale=SEQUENTIAL, cmin=zmin, cmax=zmax,
                       colorbar=dict(title=dict(text=f"log10 {stat}"))),
        sliders=[dict(active=0, steps=slider_steps, currentvalue=dict(prefix="showing: "),
                      pad=dict(t=50))],
        height=max(420, 18 * len(layers) + 230))
    return fig


# ---------------------------------------------------------------- 2. layer curves
def layer_curves(stats, *, stream: str = "image", image: int | None = None, step: int | None = None,
                 title: str | None = None) -> go.Figure:
    """Sun et al.'s layer-wise massive-activation plot: top-1, top-2, top-3 and median |x| per layer.

    For every (image, step) the per-channel maxima ``max_abs`` of a layer are sorted and the three
    largest kept; these and the median |x| of the hidden state (``median_abs``, the Sun criterion's
    median) are then averaged over the captured images and steps (or taken at ``image`` / ``step``),
    as Sun et al. average over ten sequences. Note: top-k here are the k largest per-channel
    maxima, i.e. k distinct channels; Sun et al. sort all elements, so their top-2 can be a second
    token of the top-1 channel. Markers: circles for the tops, a downward triangle for the median;
    log y axis; x = layer names in execution order. Four traces.
    """
    stats = as_stats(stats)
    check_stat(stats, "max_abs")
    st = stats.stream_index(stream)
    mx = _select_rows(stats.values["max_abs"][:, :, :, st].double(), stats, image, step)  # (P, S, L, D)
    kk = min(3, stats.width)
    tops = torch.sort(mx, dim=-1, descending=True).values[..., :kk]  # NaN rows stay NaN
    tops = torch.nanmean(tops.flatten(0, 1), dim=0).numpy()  # (L, kk)
    med = _select_rows(stats.median_abs[:, :, :, st].double(), stats, image, step)
    med = torch.nanmean(med.flatten(0, 1), dim=0).numpy()  # (L,)
    layers = list(stats.layers)
    fig = go.Figure()
    for r in range(kk):
        fig.add_trace(go.Scatter(
            x=layers, y=tops[:, r], mode="lines+markers", name=f"top-{r + 1}",
            line=dict(color=PALETTE[r], width=2), marker=dict(symbol="circle", size=8, color=PALETTE[r]),
            hovertemplate=f"layer %{{x}}<br>top-{r + 1} max|x| %{{y:.4g}}<extra></extra>"))
    captured = bool(np.isfinite(med).any())
    fig.add_trace(go.Scatter(
        x=layers, y=med, mode="lines+markers", name="median" if captured else "median (not captured)",
        line=dict(color=MEDIAN_COLOR, width=2, dash="dot"),
        marker=dict(symbol="triangle-down", size=9, color=MEDIAN_COLOR),
        hovertemplate="layer %{x}<br>median |x| %{y:.4g}<extra></extra>"))
    where = ", ".join(x for x in (None if image is None else _prompt_label(stats, image % stats.shape[0]),
                                  None if step is None else f"step {step}") if x) or "mean over images and steps"
    fig.update_layout(
        template=TEMPLATE,
        title=title if title is not None else f"Largest channel magnitudes per layer, {stream} stream ({where})",
        xaxis=_layer_axis(layers),
        yaxis=dict(type="log", title="magnitude |x| (log scale)", minor=dict(ticks="outside"), **_log_ticks(tops, med)),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        height=460)
    return fig


# ---------------------------------------------------------------- 3. activation surface
def activation_surface(x, *, title: str = "|activation| over tokens and channels",
                       channels: Sequence[int] | None = None, label_top: int = 2,
                       max_cells: int = 250_000) -> go.Figure:
    """3-D surface of |x| over tokens x channels for one raw slice, like Sun et al.'s exp1 plot.

    ``x``: a (tokens, channels) tensor, or (1, tokens, channels) as in ``run.raw[...]`` (index one
    image first: ``run.raw[key][i]``). ``channels``: the model channel numbers of the columns when
    the slice kept a subset (``Raw(..., channels=[...])``); default 0..C-1. The ``label_top``
    channels with the largest |x| are labelled at their peaks, as Sun et al. label 1415 and 2533.
    Slices with more than ``max_cells`` cells are max-pooled over groups of tokens (then channels),
    which keeps every peak; the axis titles say so. Traces: the surface, plus one labelled marker
    trace when ``label_top > 0``.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x):
        raise MassActError(f"activation_surface takes a tensor (tokens, channels), got {type(x).__name__}; "
                           "pass run.raw['<layer>/step<S>/<stream>'][i].")
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 2:
        raise MassActError(f"activation_surface needs one slice of shape (tokens, channels) or (1, tokens, "
                           f"channels), got {tuple(x.shape)}; index one image first: run.raw[key][i].")
    T, C = x.shape
    if T == 0 or C == 0:
        raise MassActError("activation_surface got an empty slice; capture a Raw(...) with tokens and channels.")
    chan = list(range(C)) if channels is None else [int(c) for c in channels]
    if len(chan) != C:
        raise MassActError(f"channels has {len(chan)} entries but the slice has {C} channels.")
    a = x.detach().float().abs().cpu()  # (T, C)
    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 64:
        raise MassActError(f"max_cells must be an integer >= 64, got {max_cells!r}.")
    gt = gc = 1
    if T * C > max_cells:
        gt = math.ceil(T / max(min(T, 16), max_cells // C))
        gc = math.ceil(C / max(1, max_cells // math.ceil(T / gt)))
    pooled = a
    if gt > 1 or gc > 1:
        pad = (0, (-C) % gc, 0, (-T) % gt)
        p = torch.nn.functional.pad(a, pad, value=0.0)
        pooled = p.reshape(p.shape[0] // gt, gt, p.shape[1] // gc, gc).amax(dim=(1, 3))
    tok_ax = np.arange(pooled.shape[0]) * gt
    ch_ax = np.array(chan[::gc]) if channels is not None else np.arange(pooled.shape[1]) * gc
    z = pooled.T.numpy()  # rows = channels (y), columns = tokens (x)
    fig = go.Figure(go.Surface(
        x=tok_ax, y=ch_ax, z=z, colorscale=SEQUENTIAL, colorbar=dict(title=dict(text="|x|")),
        hovertemplate="token %{x}<br>channel %{y}<br>|x| %{z:.4g}<extra></extra>", name="|x|"))
    if label_top > 0:
        peak, tok = a.max(dim=0)  # per channel
        n = min(int(label_top), C)
        top = torch.topk(peak, n).indices.tolist()
        fig.add_trace(go.Scatter3d(
            x=[int(tok[c]) for c in top], y=[chan[c] for c in top], z=[float(peak[c]) for c in top],
            mode="markers+text", text=[f"ch {chan[c]}" for c in top], textposition="top center",
            marker=dict(size=4, color=MARK_COLOR), name="largest channels", showlegend=False,
            hovertemplate="channel %{y}<br>token %{x}<br>|x| %{z:.4g}<extra></extra>"))
    tok_title = "token" if gt == 1 else f"token (max over groups of {gt})"
    ch_title = "channel" if gc == 1 else f"channel (max over groups of {gc})"
    fig.update_layout(
        template=TEMPLATE, title=_esc(title), height=600,
        scene=dict(xaxis=dict(title=tok_title), yaxis=dict(title=ch_title), zaxis=dict(title="|x|"),
                   camera=dict(eye=dict(x=1.6, y=-1.6, z=0.9))))
    return fig


# ---------------------------------------------------------------- 4. magnitude vs step
def magnitude_vs_step(stats, channels: Sequence[int], *, layer: str | int, stat: str = "abs_mean",
                      stream: str = "image", log_y: bool = False, title: str | None = None) -> go.Figure:
    """The given channels' ``stat`` at ``layer`` against the denoising step, one line per (prompt, channel).

    Colour is the channel, line dash the prompt; the legend groups lines by channel and names each
    line by its (escaped, shortened) prompt; hover shows the full escaped prompt. Traces are ordered
    channel-major: ``channels[0]`` for every image, then ``channels[1]``, ...
    """
    stats = as_stats(stats)
    check_stat(stats, stat)
    st = stats.stream_index(stream)
    li = stats.layer_index(layer)
    name = stats.layers[li]
    chans = [int(c) for c in channels] if not isinstance(channels, int) else [int(channels)]
    if not chans:
        raise MassActError("channels is empty: pass the channel indices to plot, e.g. stats.top_k(3, layer=...)[0].")
    chans = [check_index(c, stats.width, "channel", f"This model has {stats.width} channels.") for c in chans]
    vals = stats.values[stat][:, :, li, st].double().numpy()  # (P, S, D)
    dashes = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
    fig = go.Figure()
    for ci, c in enumerate(chans):
        color = PALETTE[ci % len(PALETTE)]
        for p in range(vals.shape[0]):
            prompt = stats.prompts[p] if p < len(stats.prompts) else ""
            full = _esc(prompt)
            fig.add_trace(go.Scatter(
                x=list(stats.steps), y=vals[p, :, c], mode="lines+markers",
                name=_prompt_label(stats, p, 32) if vals.shape[0] > 1 else f"channel {c}", legendgroup=f"ch{c}",
                legendgrouptitle=dict(text=f"channel {c}") if vals.shape[0] > 1 else None,
                line=dict(color=color, dash=dashes[p % len(dashes)], width=2), marker=dict(size=6, color=color),
                hovertext=[f"channel {c}, image {p}<br>{full}"] * len(stats.steps),
                hovertemplate=f"%{{hovertext}}<br>step %{{x}}<br>{stat} %{{y:.4g}}<extra></extra>"))
    fig.update_layout(
        template=TEMPLATE,
        title=title if title is not None else f"{stat} against denoising step at {name}, {stream} stream",
        xaxis=dict(title="denoising step", tickmode="array", tickvals=list(stats.steps)),
        yaxis=dict(title=stat, type="log" if log_y else "linear", **(_log_ticks(vals[:, :, chans]) if log_y else {})),
        legend=dict(groupclick="toggleitem", tracegroupgap=8), height=460)
    return fig


# ---------------------------------------------------------------- 5. stability matrix
def stability_matrix(matrix, labels: Sequence[str], *, title: str = "Top-k Jaccard similarity") -> go.Figure:
    """Heatmap of a square agreement matrix (e.g. top-k Jaccard between steps, images or layers).

    Values are written in the cells (two decimals); the colour range is fixed to 0..1 so figures are
    comparable; NaN cells stay empty. ``labels`` name rows and columns (escaped). One trace.
    """
    m = matrix.detach().cpu().double().numpy() if torch.is_tensor(matrix) else np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise MassActError(f"stability_matrix needs a square matrix, got shape {tuple(m.shape)}.")
    labels = [_esc(x) for x in labels]
    if len(labels) != m.shape[0]:
        raise MassActError(f"{len(labels)} labels for a {m.shape[0]}x{m.shape[0]} matrix; give one per row.")
    if len(set(labels)) != len(labels):
        raise MassActError("labels must be distinct (they name the rows and columns).")
    n = m.shape[0]
    fig = go.Figure(go.Heatmap(
        z=m, x=labels, y=labels, zmin=0.0, zmax=1.0, colorscale=AGREEMENT, texttemplate="%{z:.2f}",
        colorbar=dict(title=dict(text="Jaccard")), hoverongaps=False,
        hovertemplate="%{y} vs %{x}<br>%{z:.3f}<extra></extra>"))
    side = max(380, 42 * n + 200)
    fig.update_layout(
        template=TEMPLATE, title=_esc(title), width=side + 100, height=side,
        xaxis=dict(type="category", showgrid=False, tickangle=-45 if n > 6 else 0),
        yaxis=dict(type="category", showgrid=False, autorange="reversed", scaleanchor="x"))
    return fig


def projection_scatter(projection, *, legend: Sequence[str] | None = None, title: str | None = None) -> go.Figure:
    """A 2-D projection of image tokens (:func:`massact_viz.probes.localization.project`), one trace per
    cluster in the palette the widgets use (cluster ``c`` is ``PALETTE[c]``; unclustered tokens grey), so the
    same clusters have the same colours in every view. ``legend``: text per cluster id (default
    ``"cluster c"``); hover names the token and its row and column."""
    coords, labels = np.asarray(projection.coords), projection.labels
    labels = np.zeros(len(coords), dtype=int) if labels is None else np.asarray(labels, dtype=int)
    axis = "PC " if projection.method == "pca" else projection.method.upper() + " "
    fig = go.Figure()
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        name = "no cluster" if c < 0 else (legend[c] if legend is not None and c < len(legend) else f"cluster {c}")
        fig.add_trace(go.Scatter(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=name,
            marker=dict(color="#999999" if c < 0 else PALETTE[c % len(PALETTE)], size=7),
            hovertext=[f"token {t} (row {projection.row[t]}, col {projection.col[t]})" for t in idx],
            hovertemplate="%{hovertext}<extra>" + _esc(name) + "</extra>"))
    fig.update_layout(template=TEMPLATE, title=title or f"{projection.method.upper()} of the image tokens",
                      xaxis_title=f"{axis}1 (arbitrary units)", yaxis_title=f"{axis}2 (arbitrary units)",
                      legend=dict(title="cluster"), height=460)
    return fig


def miou_curves(result, *, step: int = -1, title: str | None = None) -> go.Figure:
    """Per-layer mIoU of a :class:`~massact_viz.probes.localization.LocalizationResult`, one line per
    channel set (top-k, bottom-k, random-k, all channels): the paper's Figure 3D shape."""
    curves = result.intervals(step=step)
    layers = list(result.layers)
    fig = go.Figure()
    for i, (name, ivs) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        label = {"top": "top-k", "bottom": "bottom-k", "random": "random-k", "all": "all channels"}.get(name, name)
        fig.add_trace(go.Scatter(x=layers + layers[::-1], y=[v.hi for v in ivs] + [v.lo for v in ivs][::-1],
                                 fill="toself", fillcolor=_rgba(color, 0.15), line=dict(width=0), hoverinfo="skip",
                                 mode="lines", showlegend=False, legendgroup=name,
                                 name=f"{_esc(label)} 95 % interval"))
        fig.add_trace(go.Scatter(
            x=layers, y=[v.mean for v in ivs], mode="lines+markers", name=_esc(label), legendgroup=name,
            customdata=[[v.lo, v.hi] for v in ivs],
            line=dict(color=color, dash="dot" if name == "all" else "solid"),
            hovertemplate=f"{_esc(label)}<br>%{{x}}: mIoU %{{y:.3f}} [%{{customdata[0]:.3f}}, "
                          f"%{{customdata[1]:.3f}}]<extra></extra>"))
    k = result.params.get("k") if hasattr(result, "params") else None
    n = len(result.prompts)
    fig.update_layout(template=TEMPLATE,
                      title=_esc(title or f"Localization: mIoU per layer (k={k}; bands: 95 % interval over n={n} prompts)"),
                      xaxis=_layer_axis(layers), yaxis=dict(title="mIoU (IoU of the foreground cluster with the "
                                                                  "object mask)", range=[0, 1]))
    return fig


def _rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` -> ``rgba(r, g, b, alpha)`` (bands under a line of that colour)."""
    c = color.lstrip("#")
    if len(c) != 6:
        return f"rgba(128, 128, 128, {alpha})"
    return f"rgba({int(c[0:2], 16)}, {int(c[2:4], 16)}, {int(c[4:6], 16)}, {alpha})"


def disruption_curves(result, *, metric: str = "mse", title: str | None = None,
                      layer_set: str | None = None) -> go.Figure:
    """A metric of a :class:`~massact_viz.probes.disruption.DisruptionResult` against k, one line per
    channel set (random-k averaged over its draws); the axis says which direction is better.

    For a sweep with layer sets, ``layer_set`` picks one (default: the first)."""
    rows = result.summary()
    names = list(dict.fromkeys(r["layer_set"] for r in rows if "layer_set" in r))
    if names:
        if layer_set is None:
            layer_set = names[0]
        elif layer_set not in names:
            raise MassActError(f"layer set {layer_set!r} is not in this result; it has {names}.")
        rows = [r for r in rows if r["layer_set"] == layer_set]
    elif layer_set is not None:
        raise MassActError("this result was swept without layer sets; leave layer_set= out.")
    if not rows or metric not in rows[0]:
        raise MassActError(f"metric {metric!r} is not in this result; it has {list(result.metrics)}.")
    from .metrics import METRICS
    known = METRICS.get(metric)
    better = "" if known is None else f" ({'higher' if known.higher_is_better else 'lower'} is better)"
    fig = go.Figure()
    sets = list(dict.fromkeys(r["set"] for r in rows))
    for i, name in enumerate(sets):
        pts = sorted((r["k"], r[metric], r.get(f"{metric}_lo", math.nan), r.get(f"{metric}_hi", math.nan))
                     for r in rows if r["set"] == name)
        color = PALETTE[i % len(PALETTE)]
        label = {"top": "top-k", "bottom": "bottom-k", "random": "random-k"}.get(name, name)
        xs = [p[0] for p in pts]
        if all(math.isfinite(p[2]) and math.isfinite(p[3]) for p in pts):
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[p[3] for p in pts] + [p[2] for p in pts][::-1],
                                     fill="toself", fillcolor=_rgba(color, 0.15), line=dict(width=0), mode="lines",
                                     hoverinfo="skip", showlegend=False, legendgroup=name))
        fig.add_trace(go.Scatter(x=xs, y=[p[1] for p in pts], mode="lines+markers", legendgroup=name,
                                 name=_esc(label), line=dict(color=color), customdata=[[p[2], p[3]] for p in pts],
                                 hovertemplate=f"{_esc(label)}, k=%{{x}}: %{{y:.4g}} [%{{customdata[0]:.4g}}, "
                                               f"%{{customdata[1]:.4g}}]<extra></extra>"))
    where = f" (layers: {layer_set})" if names else ""
    n = rows[0].get("n")
    bands = f"; bands: 95 % interval over n={n} prompts" if n else ""
    fig.update_layout(template=TEMPLATE,
                      title=_esc(title or f"Disruption: {metric} vs the unedited image{where}{bands}"),
                      xaxis=dict(title="k (channels edited per layer)", tickmode="array",
                                 tickvals=sorted({r["k"] for r in rows})),
                      yaxis=dict(title=f"{metric}{better}"))
    return fig


# ---------------------------------------------------------------- export
def interpolation_curves(results: Sequence[Any], *, metrics: Sequence[str] = ("toward_source", "ssim_target"),
                         title: str = "Prompt interpolation: target (left) toward source (right)") -> go.Figure:
    """Per-frame metrics of :func:`massact_viz.probes.interpolate` results (one trace per result and
    metric): how far each frame moved toward the source and how much target structure it kept."""
    from plotly.subplots import make_subplots

    if not results:
        raise MassActError("give at least one interpolation result.")
    fig = make_subplots(rows=1, cols=len(results), shared_yaxes=True,
                        subplot_titles=[f"sweep over {_esc(r.over)}" for r in results])
    for j, r in enumerate(results, start=1):
        for i, name in enumerate(metrics):
            ys = [m.get(name, float("nan")) for m in r.metrics]
            fig.add_trace(go.Scatter(x=[str(v) for v in r.values], y=ys, mode="lines+markers", name=_esc(name),
                                     legendgroup=name, showlegend=j == 1, line=dict(color=PALETTE[i % len(PALETTE)])),
                          row=1, col=j)
        fig.update_xaxes(title_text=_esc(r.over), type="category", row=1, col=j)
    fig.update_yaxes(title_text="score", row=1, col=1)
    fig.update_layout(title=title, template=TEMPLATE, height=340)
    return fig


def image_row(images: Sequence[Any], labels: Sequence[str] | None = None, *, height: int = 128, gap: int = 4):
    """One PIL image: the images side by side at ``height`` pixels (nearest-neighbour, so small images stay
    crisp), each with its label above (a static figure: it survives nbconvert and GitHub)."""
    from PIL import Image, ImageDraw

    if not images:
        raise MassActError("give at least one image.")
    if labels is not None and len(labels) != len(images):
        raise MassActError(f"{len(labels)} labels for {len(images)} images.")
    ims = [im if hasattr(im, "convert") else Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
    ws = [max(1, round(im.width * height / im.height)) for im in ims]
    th = 14 if labels is not None else 0
    out = Image.new("RGB", (sum(ws) + gap * (len(ims) - 1), height + th), "white")
    d = ImageDraw.Draw(out)
    x = 0
    for i, (im, w) in enumerate(zip(ims, ws)):
        out.paste(im.convert("RGB").resize((w, height), Image.NEAREST), (x, th))
        if labels is not None:
            d.text((x + 2, 1), str(labels[i])[: max(4, w // 6)], fill="black")
        x += w + gap
    return out


def _find_browser() -> str:
    """Path of the Chromium kaleido would use, or a MassActError; never downloads one."""
    try:
        from choreographer.browsers.chromium import Chromium
        path = Chromium.find_browser(skip_local=False)
    except ImportError:
        raise MassActError("static export needs kaleido>=1 (a dependency of massact-viz): pip install 'kaleido>=1'.") from None
    except Exception:  # noqa: BLE001 (choreographer internals vary between versions)
        path = None
    if not path or not Path(path).is_file():
        raise MassActError(f"no Chrome/Chromium found for kaleido{f' (BROWSER_PATH={path!r})' if path else ''}. "
                           + CHROMIUM_HINT)
    return str(path)


#: Keep one headless Chromium running after the first static export (kaleido's sync server):
#: the first export costs a few seconds, later ones a fraction of a second. Closed at exit or by
#: :func:`close_browser`. Set to False for a fresh browser per export.
KEEP_BROWSER = True
_server_started = False


def _start_browser() -> None:
    global _server_started
    if not KEEP_BROWSER or _server_started:
        return
    try:
        import kaleido
        kaleido.start_sync_server(silence_warnings=True)
    except Exception:  # noqa: BLE001 older kaleido, or already running: fall back to one-shot exports
        return
    _server_started = True
    atexit.register(close_browser)


def close_browser() -> None:
    """Close the Chromium that static exports keep running (no-op when none is)."""
    global _server_started
    if not _server_started:
        return
    _server_started = False
    try:
        import kaleido
        kaleido.stop_sync_server(silence_warnings=True)
    except Exception:  # noqa: BLE001
        pass


def to_image(fig: go.Figure, fmt: str = "png", *, width: int | None = None, height: int | None = None,
             scale: float | None = None) -> bytes:
    """Static image bytes of ``fig`` (``png``, ``svg`` or ``pdf``) via kaleido and a local Chromium."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in STATIC_FORMATS:
        raise MassActError(f"unknown static format {fmt!r}; use one of {', '.join(STATIC_FORMATS)}.")
    _find_browser()
    _start_browser()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*kopts argument is ignored.*")
            return pio.to_image(fig, format=fmt, width=width, height=height, scale=scale, validate=False)
    except MassActError:
        raise
    except Exception as e:  # noqa: BLE001 kaleido/choreographer raise plain RuntimeErrors
        close_browser()  # a fresh browser next time
        msg = str(e)
        if "chrome" in msg.lower() or "browser" in msg.lower() or type(e).__name__.startswith("Browser"):
            raise MassActError(f"kaleido could not run Chromium ({type(e).__name__}: {short_text(msg, 200)}). "
                               + CHROMIUM_HINT) from None
        raise


#: the type of a figure's script in our HTML pages: it runs once :func:`plotlyjs_loader` has unpacked plotly.js
FIGURE_SCRIPT_TYPE = "text/x-plotly-figure"


@functools.lru_cache(maxsize=1)
def _plotlyjs_packed() -> str:
    """plotly.js gzip-compressed and base64-encoded (about 2.0 MB instead of 4.8 MB; deterministic)."""
    import gzip

    from plotly.offline import get_plotlyjs
    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), compresslevel=9, mtime=0)).decode("ascii")


def figure_fragment(fig: go.Figure) -> str:
    """``fig`` as an HTML fragment for a page that ends with :func:`plotlyjs_loader` (its script waits for it)."""
    frag = fig.to_html(full_html=False, include_plotlyjs=False, validate=False, config={"displaylogo": False})
    return frag.replace("<script>", f'<script type="{FIGURE_SCRIPT_TYPE}">')


def plotlyjs_loader() -> str:
    """The end of a self-contained page of figures: plotly.js, packed (:func:`_plotlyjs_packed`), is unpacked
    by the browser (``DecompressionStream``: Chrome/Edge 80+, Firefox 113+, Safari 16.4+), then the page's
    figure scripts run in order. Where it cannot be unpacked the page says so in one line; its text,
    tables and images read without it. Nothing is fetched."""
    return f"""<p id="mv-plotly-status" style="color:#555">Drawing the interactive figures...</p>
<script>(async () => {{
  const note = document.getElementById("mv-plotly-status");
  try {{
    if (typeof DecompressionStream === "undefined") throw new Error("no DecompressionStream");
    const bin = atob("{_plotlyjs_packed()}");
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const js = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
    const lib = document.createElement("script"); lib.textContent = js; document.head.appendChild(lib);
    for (const old of document.querySelectorAll('script[type="{FIGURE_SCRIPT_TYPE}"]')) {{
      const run = document.createElement("script"); run.textContent = old.textContent; old.replaceWith(run);
    }}
    note.remove();
  }} catch (err) {{
    note.textContent = "The interactive figures could not be drawn: this browser cannot unpack the embedded " +
      "plotly.js (" + err.message + "). Open the page in a current Chrome, Edge, Firefox or Safari.";
  }}
}})();</script>"""


def figure_page(fig: go.Figure, title: str = "figure") -> str:
    """A self-contained HTML page of one figure (what ``save_figure(fig, "x.html")`` writes)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title></head>'
            f"<body>{figure_fragment(fig)}{plotlyjs_loader()}</body></html>\n")


def save_figure(fig: go.Figure, path: str | os.PathLike, *, width: int | None = None,
                height: int | None = None, scale: float | None = None) -> Path:
    """Write ``fig`` to ``path``; the format follows the suffix.

    ``.html``: a self-contained page with the plotly.js bundle inlined (works offline, no CDN);
    ``.json``: the plotly figure JSON (``plotly.io.read_json`` reads it back);
    ``.png`` / ``.svg`` / ``.pdf``: a static image through kaleido, which needs a local Chromium
    (``apt-get install -y chromium``); a browser is never downloaded. ``width``/``height``/``scale``
    apply to static images. Parent directories are created; the file is written atomically.
    """
    if not isinstance(fig, go.Figure):
        raise MassActError(f"save_figure takes a plotly Figure, got {type(fig).__name__}.")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MassActError(f"cannot save a figure as {path.name!r}: unknown suffix {suffix or '(none)'!r}. "
                           f"Use one of {', '.join(SUFFIXES)}.")
    if suffix == ".html":
        data = figure_page(fig, path.stem).encode()
    elif suffix == ".json":
        data = pio.to_json(fig, validate=False).encode()
    else:
        data = to_image(fig, suffix[1:], width=width, height=height, scale=scale)
    return atomic_write(path, data)


# ---------------------------------------------------------------- notebooks
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


__all__ = ["channel_heatmap", "layer_curves", "activation_surface", "magnitude_vs_step", "stability_matrix",
           "save_figure", "to_image", "close_browser", "figure_bundle", "NotebookFigure", "show", "TEMPLATE", "PALETTE"]


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


__all__ += ["publication", "panels", "export", "channel_colors", "color_channels", "mm_to_px", "pt_to_px",
            "png_scale", "COLUMN_MM", "CSS_DPI", "PRINT_FONT"]
