"""The figures of massive activations, built from :class:`~massact_viz.stats.ChannelStats` (or a Run), raw
slices and probe results: channel heatmap, layer curves, activation surface, magnitude against step,
stability matrix, projection scatter, mIoU / disruption / interpolation curves, and captioned image rows."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from ..errors import MassActError, check_index, check_k
from ..palette import MARK_COLOR, MEDIAN_COLOR, PALETTE
from ..stats import as_stats, check_stat
from .style import AGREEMENT, SEQUENTIAL, TEMPLATE, _esc, _layer_axis, _log10, _log_ticks, _prompt_label


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
    mx = stats.rows(stats.values["max_abs"][:, :, :, st].double(), image=image, step=step)  # (P, S, L, D)
    kk = min(3, stats.width)
    tops = torch.sort(mx, dim=-1, descending=True).values[..., :kk]  # NaN rows stay NaN
    tops = torch.nanmean(tops.flatten(0, 1), dim=0).numpy()  # (L, kk)
    med = stats.rows(stats.median_abs[:, :, :, st].double(), image=image, step=step)
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
    from ..metrics import METRICS
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
