"""ChannelExplorer: layer x channel log-magnitude heatmap with a step slider, statistic choice, top-k
marks, and a clicked channel's per-layer curve and spatial map over the generated image.

Payload (what the browser receives once): one statistic at a time as a uint8 log-quantised cube of
``(1 + steps) x layers x channels`` (position 0 is the mean over steps), plus the indices of the
``max(k, 16)`` largest channels per (position, layer) as int32. For a FLUX-scale run (57 layers x
3072 channels x 28 steps) that is ``29 * 57 * 3072 = 5.08 MB`` (float16 would be 10.2 MB, float32
20.3 MB) + ``29 * 57 * 16 * 4 = 106 kB`` of top-k indices + the image PNG. Moving the step slider or
changing k redraws in the browser from that cube (no Python round trip); choosing another statistic
asks Python for that statistic's cube (another 5.08 MB); clicking a channel asks Python for its
spatial map (rows x cols float32: 16 kB for FLUX's 64 x 64 tokens), read from the run's raw slices.
"""
from __future__ import annotations

import numpy as np
import torch
import traitlets

from ..errors import MassActError, check_index, check_k
from ..stats import STATISTICS, ChannelStats
from .base import EMPTY_RGB, MARK, VIRIDIS, View, enlarge, esc, esm, label, log_colour_bar, log_quantize, png_b64, thumb

#: top-k indices are sent for at least this many channels per layer, so k changes up to it stay in the browser
K_SENT = 16


class ChannelExplorer(View):
    """``ChannelExplorer(run, stat="abs_mean", stream="image", k=4, image=None, channel=None)``.

    ``run`` is a :class:`~massact_viz.Run` (or a ``ChannelStats``: no image, no spatial map).
    Synced traits: ``layer`` (name), ``step`` (a captured step, or None for the mean over steps),
    ``stat``, ``channel`` (-1: none), ``k``; read-only state: ``spatial`` (float32 bytes, rows x cols,
    the clicked channel over the image tokens of image ``image or 0``), ``spatial_step`` (the step the
    map comes from: the selected step, the nearest step with a raw slice when it has none, the last raw
    step for the mean over steps), ``spatial_note`` (why there is no map: capture raw slices with
    ``mv.Capture(raw=[mv.Raw(layer, step)])``; or which step the map shows instead of the selected one).
    """

    _esm = esm("channel_explorer")

    layer = traitlets.Unicode("").tag(sync=True)
    step = traitlets.Int(None, allow_none=True).tag(sync=True)
    stat = traitlets.Unicode("abs_mean").tag(sync=True)
    channel = traitlets.Int(-1).tag(sync=True)
    k = traitlets.Int(4).tag(sync=True)

    layers = traitlets.List(traitlets.Unicode()).tag(sync=True)
    steps = traitlets.List(traitlets.Int()).tag(sync=True)
    stats_available = traitlets.List(traitlets.Unicode()).tag(sync=True)
    width = traitlets.Int(0).tag(sync=True)
    stream = traitlets.Unicode("image").tag(sync=True)
    cube = traitlets.Bytes(b"").tag(sync=True)  # uint8 (1 + steps, layers, width)
    lo = traitlets.Float(0.0).tag(sync=True)  # log10 range of the codes 1..255
    hi = traitlets.Float(1.0).tag(sync=True)
    order = traitlets.Bytes(b"").tag(sync=True)  # int32 (1 + steps, layers, k_sent), largest first
    k_sent = traitlets.Int(0).tag(sync=True)
    image_png = traitlets.Unicode("").tag(sync=True)
    grid = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)
    spatial = traitlets.Bytes(b"").tag(sync=True)  # float32 (rows * cols)
    spatial_step = traitlets.Int(None, allow_none=True).tag(sync=True)
    spatial_note = traitlets.Unicode("").tag(sync=True)

    def __init__(self, run, stat: str = "abs_mean", stream: str = "image", k: int = 4, *, image: int | None = None,
                 layer: str | int | None = None, step: int | None = None, channel: int | None = None):
        stats = getattr(run, "stats", run)
        if not isinstance(stats, ChannelStats):
            raise MassActError(f"ChannelExplorer needs a Run with statistics (or a ChannelStats), got "
                               f"{type(run).__name__}{' without statistics' if hasattr(run, 'stats') else ''}. "
                               "Capture them with model.run(prompt, capture=mv.Capture(stats=True)).")
        self._run = run if hasattr(run, "stats") else None
        self._stats = stats
        avail = [s for s in STATISTICS if s in stats.values]
        if stat not in avail:
            raise MassActError(f"unknown statistic {stat!r}; this run has {avail}.")
        stats.stream_index(stream)
        check_k(k, stats.width)
        self._image = None if image is None else check_index(image, stats.shape[0], "image",
                                                            f"This run has {stats.shape[0]} images.")
        self._ready = False
        super().__init__()
        self.layers, self.steps, self.stats_available = list(stats.layers), list(stats.steps), avail
        self.width, self.stream = stats.width, stream
        self.title = self._title()
        if self._run is not None and self._run.images:
            img = self._run.images[self._image or 0]
            self._pil = img.convert("RGB")
            self.image_png = png_b64(thumb(self._pil, 512))  # shown at 256 px
            self.grid = [int(v) for v in self._run.meta.get("token_grid", [0, 0])]
        else:
            self._pil = None
        self.stat, self.k = stat, k
        self._send_cube()
        self.layer = stats.layers[stats.layer_index(layer)] if layer is not None else self._loudest_layer()
        self.step = None if step is None else stats.steps[stats.step_index(step)]
        self._ready = True
        self.channel = -1 if channel is None else check_index(channel, stats.width, "channel")
        self._update_spatial()

    # ---------------------------------------------------------------- validation
    @traitlets.validate("layer")
    def _v_layer(self, proposal):
        v = proposal["value"]
        if self.layers and v not in self.layers:
            raise MassActError(f"unknown layer {v!r}; this run has {self.layers}.")
        return v

    @traitlets.validate("step")
    def _v_step(self, proposal):
        v = proposal["value"]
        if v is not None and v not in self.steps:
            raise MassActError(f"step {v} was not captured; captured steps are {self.steps} (None: mean over steps).")
        return v

    @traitlets.validate("stat")
    def _v_stat(self, proposal):
        v = proposal["value"]
        if self.stats_available and v not in self.stats_available:
            raise MassActError(f"unknown statistic {v!r}; this run has {self.stats_available}.")
        return v

    @traitlets.validate("k")
    def _v_k(self, proposal):
        return check_k(proposal["value"], self._stats.width)

    @traitlets.validate("channel")
    def _v_channel(self, proposal):
        v = proposal["value"]
        if v == -1:
            return v
        return check_index(v, self._stats.width, "channel", f"This run has {self._stats.width} channels (-1: none).")

    # ---------------------------------------------------------------- data
    def _title(self) -> str:
        p = self._stats.prompts
        who = f"image {self._image}: {p[self._image]}" if self._image is not None and p else \
            (f"{p[0]}" if len(p) == 1 else f"mean over {len(p)} images")
        return f"{who} — {self.stream} stream"

    def _grids(self, stat: str) -> np.ndarray:
        """(1 + steps, layers, width) float64: the mean over steps, then each captured step."""
        st = self._stats
        out = [st.get(stat, stream=self.stream, image=self._image).double().numpy()]
        out += [st.get(stat, step=s, stream=self.stream, image=self._image).double().numpy() for s in st.steps]
        return np.stack(out)

    def _send_cube(self) -> None:
        g = self._grids(self.stat)
        self._values = g
        q, lo, hi = log_quantize(g)
        ks = min(self._stats.width, max(self.k, K_SENT))
        t = torch.from_numpy(np.nan_to_num(g, nan=-np.inf))
        order = torch.topk(t, ks, dim=-1).indices.to(torch.int32).numpy()
        with self.hold_sync():
            self.lo, self.hi = lo, hi
            self.cube = q.tobytes()
            self.order = np.ascontiguousarray(order).astype("<i4").tobytes()
            self.k_sent = ks

    def _loudest_layer(self) -> str:
        v = self._values[0]
        ratio = [np.nanmax(r) / max(np.nanmedian(r), 1e-30) if np.isfinite(r).any() else -1 for r in v]
        return self._stats.layers[int(np.argmax(ratio))]

    def _pos(self) -> int:
        return 0 if self.step is None else 1 + self.steps.index(self.step)

    @traitlets.observe("stat")
    def _on_stat(self, change):
        if self._ready:
            self._send_cube()

    @traitlets.observe("k")
    def _on_k(self, change):
        if self._ready and change["new"] > self.k_sent:
            self._send_cube()

    @traitlets.observe("layer", "step", "channel")
    def _on_pick(self, change):
        if self._ready:
            self._update_spatial()

    def _raw_slice(self, layer: str, step: int | None):
        """(tokens,) values of ``self.channel`` at ``layer`` from the run's raw slices, the step used and a note."""
        run = self._run
        if run is None:
            return None, None, "no spatial map: ChannelExplorer was given statistics only; pass the Run."
        specs = {(r["layer"], r["step"], r.get("stream", "image")): r for r in
                 (run.meta.get("capture") or {}).get("raw", []) if isinstance(r, dict)}
        have = sorted(int(key.split("/step")[1].split("/")[0]) for key in run.raw
                      if key.startswith(f"{layer}/step") and key.endswith("/image"))
        hint = (f"Capture raw slices to see it: model.run(..., capture=mv.Capture(raw=[mv.Raw({layer!r}, "
                f"{self.steps[-1] if step is None else step})])).")
        if not have:
            return None, None, f"no spatial map: the run has no raw image-stream slice of {layer}. {hint}"
        shown = ""
        if step is None:
            use = have[-1]
        elif step in have:
            use = step
        else:  # the nearest step that has one (the later one on a tie), and the map says so
            use = min(have, key=lambda s: (abs(s - step), -s))
            shown = (f"the heatmap shows step {step}, which has no raw slice of {layer}; "
                     f"this map is the nearest raw step, {use}.")
        x = run.raw[f"{layer}/step{use}/image"]
        spec = specs.get((layer, use, "image"), {})
        chans = spec.get("channels")
        if spec.get("tokens") is not None:
            return None, use, f"no spatial map: the raw slice of {layer} at step {use} keeps only some tokens. {hint}"
        col = self.channel
        if chans is not None:
            if self.channel not in list(chans):
                return None, use, (f"no spatial map: channel {self.channel} is not among the raw slice's channels "
                                   f"{list(chans)[:12]} of {layer} at step {use}. {hint}")
            col = list(chans).index(self.channel)
        i = self._image or 0
        return x[i, :, col].float().numpy(), use, shown

    def _update_spatial(self) -> None:
        if self.channel < 0:
            with self.hold_sync():
                self.spatial, self.spatial_step, self.spatial_note = b"", None, ""
            return
        v, used, note = self._raw_slice(self.layer, self.step)
        grid = self.grid
        if v is not None and grid[0] * grid[1] != v.shape[0]:
            v, note = None, f"no spatial map: the raw slice has {v.shape[0]} tokens, not the token grid {grid}."
        with self.hold_sync():
            self.spatial = b"" if v is None else v.astype("<f4").tobytes()
            self.spatial_step = used
            self.spatial_note = note

    # ---------------------------------------------------------------- Python-side reading
    def values(self, step: int | None = None) -> np.ndarray:
        """(layers, width) values of the current statistic at ``step`` (None: mean over steps)."""
        return self._values[0 if step is None else 1 + self.steps.index(step)]

    def curve(self, channel: int | None = None) -> list[float]:
        """The per-layer curve of ``channel`` (default: the selected one) at the current step."""
        c = self.channel if channel is None else channel
        if c < 0:
            raise MassActError("no channel selected: set view.channel (or click a heatmap cell).")
        return [float(x) for x in self._values[self._pos()][:, c]]

    def top_k(self) -> dict[str, list[int]]:
        """``{layer: top-k channels}`` at the current step and statistic (what the marks show)."""
        o = np.frombuffer(self.order, dtype="<i4").reshape(len(self.steps) + 1, len(self.layers), self.k_sent)
        return {name: [int(c) for c in o[self._pos(), li, :self.k]] for li, name in enumerate(self.layers)
                if np.isfinite(self._values[self._pos(), li]).all()}

    def spatial_map(self) -> np.ndarray | None:
        """(rows, cols) float32 spatial map of the selected channel, or None (see ``spatial_note``)."""
        if not self.spatial:
            return None
        return np.frombuffer(self.spatial, dtype="<f4").reshape(self.grid)

    def figure(self):
        """The plotly form (:func:`massact_viz.plots.channel_heatmap`) for PDF/SVG export via kaleido."""
        from ..plots import channel_heatmap
        return channel_heatmap(self._stats, stat=self.stat, stream=self.stream, image=self._image, k=self.k)

    # ---------------------------------------------------------------- static
    def static_image(self):
        from PIL import Image, ImageDraw
        pos = self._pos()
        q = np.frombuffer(self.cube, dtype=np.uint8).reshape(len(self.steps) + 1, len(self.layers), self.width)[pos]
        L, D = q.shape
        cols = min(D, 900)
        # max-pool channels into at most 900 columns so single massive channels stay visible
        edges = np.linspace(0, D, cols + 1).astype(int)
        pooled = np.maximum.reduceat(q, edges[:-1], axis=1)
        rgb = VIRIDIS[np.clip(pooled.astype(int) - 1, 0, 255) * 255 // 254]
        rgb[pooled == 0] = EMPTY_RGB
        cw = max(1, 900 // cols)
        rh = max(6, min(18, 480 // max(L, 1)))
        heat = Image.fromarray(rgb.astype(np.uint8)).resize((cols * cw, L * rh), Image.NEAREST)
        lw, top = 70, 18
        canvas = Image.new("RGB", (lw + heat.size[0] + 10, top + heat.size[1] + 20), "white")
        canvas.paste(heat, (lw, top))
        d = ImageDraw.Draw(canvas)
        where = "mean over steps" if self.step is None else f"step {self.step}"
        label(d, (lw, 3), f"log10 {self.stat} ({where}); top-{self.k} marked")
        tk = self.top_k()
        for li, name in enumerate(self.layers):
            if L <= 60 or li % max(1, L // 30) == 0:
                label(d, (2, top + li * rh + max(0, rh // 2 - 6)), name[:10])
            for c in tk.get(name, []):
                x = lw + int(np.searchsorted(edges, c, side="right") - 1) * cw
                d.rectangle([x - 2, top + li * rh, x + cw + 1, top + (li + 1) * rh - 1], outline=MARK)
        label(d, (lw, top + heat.size[1] + 4), f"channel 0 .. {D - 1}" + (
            "" if cols == D else f" ({D / cols:.3g} channels per column, max shown)"))
        bar = log_colour_bar(min(heat.size[0], 360), self.lo, self.hi, f"{self.stat} (log colour scale)",
                             empty="zero / not captured")
        framed = Image.new("RGB", (max(canvas.size[0], lw + bar.size[0]), canvas.size[1] + bar.size[1] + 4), "white")
        framed.paste(canvas, (0, 0))
        framed.paste(bar, (lw - 4, canvas.size[1]))
        canvas = framed
        if self._pil is not None:
            side = enlarge(self._pil, 160)
            out = Image.new("RGB", (canvas.size[0] + side.size[0] + 10, max(canvas.size[1], side.size[1] + top)), "white")
            out.paste(canvas, (0, 0))
            out.paste(side, (canvas.size[0] + 5, top))
            label(ImageDraw.Draw(out), (canvas.size[0] + 5, 3), "generated image")
            return out
        return canvas

    def static_html_body(self) -> str:
        rows = "".join(f"<tr><td>{esc(name)}</td><td>{esc(', '.join(map(str, ch)))}</td></tr>"
                       for name, ch in self.top_k().items())
        where = "mean over steps" if self.step is None else f"step {self.step}"
        return (f"<p>{esc(self.stat)}, {esc(where)}: top-{self.k} channels per layer</p>"
                f"<table><tr><th>layer</th><th>channels</th></tr>{rows}</table>")

    def save(self, path):
        """``.png``/``.html``/``.svg`` as every view; ``.pdf`` through the plotly figure and kaleido."""
        from pathlib import Path
        if Path(path).suffix.lower() == ".pdf":
            from ..plots import save_figure
            return save_figure(self.figure(), path)
        return super().save(path)
