"""TokenClusterMap: the generated image with its foreground cluster outlined, beside the cluster labels of
its tokens in solid colours (the colours every view gives cluster c; the image is dimmed outside the
foreground, never tinted, so the picture stays visible).

Clustering is :func:`massact_viz.probes.localization.cluster_tokens` on the image tokens of one
(layer, step) restricted to a channel set from :func:`massact_viz.analysis.select` (top / bottom /
random-k by ``stat`` of that image, layer and step), scored with
:func:`~massact_viz.probes.localization.iou` against a mask when one is given.

Payload: when the slider grid (layers x steps x sets x ks x k_clusters_choices) is small
(``precompute=None``: at most 128 configurations and 4 MB of labels), every configuration's labels (uint8
per token) and the values of every channel any configuration uses (float32, tokens x channels) are computed once and
sent once, so every slider move redraws in the browser; otherwise each change is computed in Python
and only the current labels (tokens bytes) and values (tokens x k float32) travel. FLUX scale: 4096
tokens, so one configuration is 4 kB of labels; a 2 x 2 x 3 x 4 x 3 grid (144 configurations) would be
590 kB of labels, computed on change by default (KMeans on 4096 tokens costs ~0.1-1 s per configuration).
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import torch
import traitlets

from ..analysis import KINDS, select
from ..errors import MassActError, check_index
from ..probes import localization as loc
from ..stats import STATISTICS, ChannelStats, reduce_channels
from ..palette import PALETTE_RGB
from .base import EMPTY_RGB, MARK, View, esc, esm, label, png_b64, thumb

SETS = KINDS   # the channel sets a map offers: analysis.select's kinds
PRECOMPUTE_MAX_CONFIGS = 128
PRECOMPUTE_MAX_BYTES = 4_000_000


def _parse_key(key: Any) -> tuple[str, int]:
    if isinstance(key, tuple) and len(key) == 2:
        return str(key[0]), int(key[1])
    if isinstance(key, str) and "/step" in key:
        layer, rest = key.split("/step", 1)
        return layer, int(rest.split("/")[0])
    raise MassActError(f"activation key {key!r} must be 'layer/stepS/image' (as in run.raw) or a (layer, step) tuple.")


class TokenClusterMap(View):
    """``TokenClusterMap(run_or_acts, *, image=0, ks=(1, 2, 4, 8), k_clusters_choices=(2, 3, 4),
    sets=("top", "bottom", "random"), layer=None, step=None, k=None, k_clusters=2, channel_set="top", mask=None,
    grid=None, picture=None, stat="abs_mean", seed=0, precompute=None, opacity=0.5)``.

    ``k`` is the number of channels clustered on (one of ``ks``, the slider's stops), ``k_clusters`` the number of
    clusters (one of ``k_clusters_choices``), as ``k_clusters`` in :func:`~massact_viz.probes.localization.localize`.

    ``run_or_acts``: a :class:`~massact_viz.Run` with raw image-stream slices (all tokens and channels;
    capture them with ``mv.Capture(raw=[mv.Raw("double.3", 3)])``), or activations: a dict
    ``{"layer/stepS/image" or (layer, step): (tokens, channels) or (images, tokens, channels)}``, or one
    (tokens, channels) array. ``mask``: pixel-size or token-size bool mask (array, PIL image or file) for IoU.

    Synced traits: ``layer``, ``step``, ``k``, ``k_clusters``, ``channel_set``, ``opacity`` (how strongly the image
    outside the foreground cluster is dimmed, 0..1: the "dim background" slider), ``selected`` (token
    indices); state: ``labels`` (uint8 bytes per token: cluster id + 1, 0 = noise), ``fg_cluster``,
    ``channels``, ``values`` (float32 bytes tokens x k), ``iou`` (None without a mask).
    """

    _esm = esm("token_cluster_map")

    layer = traitlets.Unicode("").tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    k = traitlets.Int(1).tag(sync=True)
    k_clusters = traitlets.Int(2).tag(sync=True)
    channel_set = traitlets.Unicode("top").tag(sync=True)
    opacity = traitlets.Float(0.5).tag(sync=True)
    selected = traitlets.List(traitlets.Int()).tag(sync=True)

    layers = traitlets.List(traitlets.Unicode()).tag(sync=True)
    steps = traitlets.List(traitlets.Int()).tag(sync=True)
    ks = traitlets.List(traitlets.Int()).tag(sync=True)
    k_clusters_choices = traitlets.List(traitlets.Int()).tag(sync=True)
    sets = traitlets.List(traitlets.Unicode()).tag(sync=True)
    grid = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)
    image_png = traitlets.Unicode("").tag(sync=True)
    has_mask = traitlets.Bool(False).tag(sync=True)
    precomputed = traitlets.Bool(False).tag(sync=True)
    table = traitlets.Unicode("").tag(sync=True)  # JSON index of the precomputed configurations
    table_labels = traitlets.Bytes(b"").tag(sync=True)  # uint8, configs x tokens
    table_values = traitlets.Bytes(b"").tag(sync=True)  # float32, per (layer, step): tokens x used channels
    labels = traitlets.Bytes(b"").tag(sync=True)
    fg_cluster = traitlets.Int(-1).tag(sync=True)
    channels = traitlets.List(traitlets.Int()).tag(sync=True)
    values = traitlets.Bytes(b"").tag(sync=True)
    iou = traitlets.Float(None, allow_none=True).tag(sync=True)

    def __init__(self, run_or_acts, *, image: int = 0, ks: Sequence[int] = (1, 2, 4, 8),
                 k_clusters_choices: Sequence[int] = (2, 3, 4), sets: Sequence[str] = SETS, layer: str | None = None,
                 step: int | None = None, k: int | None = None,
                 k_clusters: int = 2, channel_set: str = "top", mask: Any = None, grid: Sequence[int] | None = None,
                 picture: Any = None, stat: str = "abs_mean", seed: int = 0, precompute: bool | None = None,
                 opacity: float = 0.5, prompt: str | None = None):
        acts, grid, picture, prompt = self._sources(run_or_acts, image, grid, picture, prompt)
        self._acts = acts
        if stat not in STATISTICS:
            raise MassActError(f"stat must be one of {STATISTICS}, got {stat!r}.")
        self._stat, self._seed = stat, int(seed)
        keys = sorted(acts, key=lambda t: (t[1], t[0]))
        lay = list(dict.fromkeys(lk for lk, _ in keys))
        stp = sorted({s for _, s in keys})
        n, width = next(iter(acts.values())).shape
        self._n, self._width = n, width
        sets = [sets] if isinstance(sets, str) else list(sets)
        for s in sets:
            if s not in SETS:
                raise MassActError(f"unknown channel set {s!r}; choose from {SETS}.")
        ks = sorted({int(x) for x in ks if 1 <= int(x) <= width and ("random" not in sets or 2 * int(x) <= width)})
        if not ks:
            raise MassActError(f"no usable k in ks: each k must be 1..{width} ({width // 2} with the random set).")
        k_clusters_choices = sorted({int(x) for x in k_clusters_choices})
        if not k_clusters_choices or any(x < 2 or x > n for x in k_clusters_choices):
            raise MassActError(f"k_clusters_choices must be cluster counts between 2 and {n} (the number of tokens), "
                               f"got {k_clusters_choices}.")
        self._stats = self._build_stats(acts, lay, stp, prompt)
        self._mask = None
        if mask is not None:
            m = loc.load_mask(mask)
            if tuple(m.shape) != tuple(grid) and (m.shape[0] % grid[0] or m.shape[1] % grid[1]):
                raise MassActError(f"mask shape {m.shape} is neither the token grid {tuple(grid)} nor a multiple of it "
                                   "(the image size); pass a mask at pixel or token size.")
            self._mask = m
        self._picture = picture
        self._ready = False
        super().__init__()
        self.layers, self.steps, self.ks, self.k_clusters_choices, self.sets = lay, stp, ks, k_clusters_choices, sets
        self.grid = [int(grid[0]), int(grid[1])]
        self.has_mask = self._mask is not None
        self.title = prompt or ""
        if picture is not None:
            self.image_png = png_b64(thumb(picture, 512))  # shown at 320 px
        n_cfg = len(keys) * len(sets) * len(ks) * len(k_clusters_choices)
        if precompute is None:
            precompute = n_cfg <= PRECOMPUTE_MAX_CONFIGS and n_cfg * n <= PRECOMPUTE_MAX_BYTES
        self._cache: dict[tuple, dict] = {}
        if precompute:
            self._precompute(keys)
        self.precomputed = bool(precompute)
        self.layer = layer if layer is not None else lay[-1]
        self.step = step if step is not None else max(s for lk, s in keys if lk == self.layer)
        if (self.layer, self.step) not in acts:
            raise MassActError(f"no activations for layer {self.layer!r} at step {self.step}; available: {keys}. "
                               f"Capture mv.Raw({self.layer!r}, {self.step}).")
        self.k = k if k is not None else ks[min(len(ks) - 1, 2)]
        self.k_clusters, self.channel_set, self.opacity = k_clusters, channel_set, opacity
        self._ready = True
        self._update()

    # ---------------------------------------------------------------- inputs
    @staticmethod
    def _sources(obj, image, grid, picture, prompt):
        acts: dict[tuple[str, int], np.ndarray] = {}
        if hasattr(obj, "raw") and hasattr(obj, "meta"):  # a Run
            specs = {(r["layer"], r["step"]): r for r in (obj.meta.get("capture") or {}).get("raw", [])
                     if isinstance(r, dict) and r.get("stream", "image") == "image"}
            for key, x in obj.raw.items():
                if not key.endswith("/image"):
                    continue
                lk = _parse_key(key)
                sp = specs.get(lk, {})
                if sp.get("channels") is not None or sp.get("tokens") is not None:
                    continue  # partial slices cannot be clustered over all channels
                i = check_index(image, x.shape[0], "image", f"This run has {x.shape[0]} images.")
                acts[lk] = x[i].float().numpy()
            if not acts:
                raise MassActError("this run has no raw image-stream slices with all tokens and channels: capture "
                                   "them with model.run(prompt, capture=mv.Capture(raw=[mv.Raw('double.3', 3)])) "
                                   "(one mv.Raw per layer and step you want to explore).")
            grid = grid or obj.meta.get("token_grid")
            if picture is None and obj.images:
                picture = obj.images[check_index(image, len(obj.images), "image")]
            if prompt is None and obj.prompts:
                prompt = obj.prompts[image % len(obj.prompts)]
        else:
            items = {("x", 0): obj} if hasattr(obj, "shape") else obj
            if not isinstance(items, dict) or not items:
                raise MassActError("TokenClusterMap takes a Run with raw slices, a dict {'layer/stepS/image': "
                                   "(tokens, channels) array}, or one (tokens, channels) array.")
            for key, x in items.items():
                a = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float32)
                if a.ndim == 3:
                    a = a[check_index(image, a.shape[0], "image")]
                if a.ndim != 2:
                    raise MassActError(f"activations {key!r} must be (tokens, channels), got shape {a.shape}.")
                acts[_parse_key(key)] = a.astype(np.float32)
        shapes = {a.shape for a in acts.values()}
        if len(shapes) != 1:
            raise MassActError(f"all activation slices must have the same (tokens, channels) shape, got {sorted(shapes)}.")
        n = next(iter(shapes))[0]
        for a in acts.values():
            if not np.isfinite(a).all():
                raise MassActError("activations hold NaN/inf (float16 overflow?); run the model in float32 or bfloat16.")
        grid = loc.token_grid(grid, n)
        if picture is not None and hasattr(picture, "detach"):
            picture = picture.detach().cpu().numpy()
        if isinstance(picture, np.ndarray):
            from PIL import Image
            picture = Image.fromarray(picture.astype(np.uint8))
        return acts, grid, (picture.convert("RGB") if picture is not None else None), prompt

    def _build_stats(self, acts, layers, steps, prompt) -> ChannelStats:
        """Per-channel statistics of each slice (massact_viz.stats.reduce_channels), for analysis.select."""
        width = self._width
        vals = {s: torch.full((1, len(steps), len(layers), 1, width), float("nan")) for s in STATISTICS}
        for (lk, st), a in acts.items():
            red = reduce_channels(torch.from_numpy(a)[None], sun=False)
            for s in STATISTICS:
                vals[s][0, steps.index(st), layers.index(lk), 0] = red[s][0]
        return ChannelStats(vals, torch.zeros(1, len(steps), len(layers), 1), list(layers), list(steps), ["image"],
                            [prompt or ""])

    # ---------------------------------------------------------------- compute
    def compute(self, layer: str, step: int, channel_set: str, k: int, k_clusters: int) -> dict:
        """One configuration: ``labels`` (tokens,) int, ``foreground`` cluster id, ``channels``, ``iou``."""
        key = (layer, step, channel_set, k, k_clusters)
        if key in self._cache:
            return self._cache[key]
        if (layer, step) not in self._acts:
            raise MassActError(f"no activations for layer {layer!r} at step {step}; available: "
                               f"{sorted(self._acts)}. Capture mv.Raw({layer!r}, {step}).")
        ch = select(self._stats, channel_set, k, layer=layer, step=step, stat=self._stat, seed=self._seed)
        c = loc.cluster_tokens(self._acts[(layer, step)], tuple(self.grid), channels=ch, k_clusters=k_clusters,
                               seed=self._seed)
        lab = c.labels.ravel()
        fgc = np.unique(lab[c.foreground.ravel()])
        score = None
        if self._mask is not None:
            fg = c.foreground
            if tuple(self._mask.shape) != fg.shape:
                fg = loc.upsample(fg, (self._mask.shape[0] // fg.shape[0], self._mask.shape[1] // fg.shape[1]))
            score = loc.iou(fg, self._mask)
        out = {"labels": lab.astype(int), "foreground": int(fgc[0]) if fgc.size == 1 else -1,
               "channels": [int(x) for x in ch], "iou": score}
        self._cache[key] = out
        return out

    def _precompute(self, keys) -> None:
        index, labels, used = {}, [], {}
        for lk, st in keys:
            for s in self.sets:
                for k in self.ks:
                    for k_clusters in self.k_clusters_choices:
                        r = self.compute(lk, st, s, k, k_clusters)
                        index[f"{lk}|{st}|{s}|{k}|{k_clusters}"] = {"i": len(labels), "fg": r["foreground"],
                                                                    "channels": r["channels"], "iou": r["iou"]}
                        labels.append((r["labels"] + 1).clip(0, 255).astype(np.uint8))
                        used.setdefault((lk, st), set()).update(r["channels"])
        vals, values_index, off = [], {}, 0
        for (lk, st), chans in used.items():
            chans = sorted(chans)
            a = self._acts[(lk, st)][:, chans].astype("<f4")
            values_index[f"{lk}|{st}"] = {"channels": chans, "offset": off}
            vals.append(a.tobytes())
            off += a.size
        self.table = json.dumps({"configs": index, "values": values_index})
        self.table_labels = np.concatenate(labels).tobytes() if labels else b""
        self.table_values = b"".join(vals)

    # ---------------------------------------------------------------- validation and updates
    @traitlets.validate("layer")
    def _v_layer(self, p):
        if self.layers and p["value"] not in self.layers:
            raise MassActError(f"layer {p['value']!r} has no activations here; available: {self.layers}. "
                               f"Capture mv.Raw(layer, step) for it.")
        return p["value"]

    @traitlets.validate("step")
    def _v_step(self, p):
        if self.steps and p["value"] not in self.steps:
            raise MassActError(f"step {p['value']} has no activations here; available: {self.steps}.")
        return p["value"]

    @traitlets.validate("k")
    def _v_k(self, p):
        if self.ks and p["value"] not in self.ks:
            raise MassActError(f"k={p['value']!r} is not on this map's grid {self.ks}; pass ks=(...) to include it "
                               f"(1..{self._width}, at most {self._width // 2} with the random set).")
        return p["value"]

    @traitlets.validate("k_clusters")
    def _v_k_clusters(self, p):
        if self.k_clusters_choices and p["value"] not in self.k_clusters_choices:
            raise MassActError(f"k_clusters={p['value']!r} is not on this map's grid {self.k_clusters_choices}; "
                               "pass k_clusters_choices=(...) to include it.")
        return p["value"]

    @traitlets.validate("channel_set")
    def _v_set(self, p):
        if self.sets and p["value"] not in self.sets:
            raise MassActError(f"channel_set {p['value']!r} is not one of {self.sets}.")
        return p["value"]

    @traitlets.validate("opacity")
    def _v_opacity(self, p):
        v = float(p["value"])
        if not 0.0 <= v <= 1.0:
            raise MassActError(f"opacity must be between 0 and 1, got {v}.")
        return v

    @traitlets.validate("selected")
    def _v_selected(self, p):
        v = sorted({int(i) for i in p["value"]})
        if v and (v[0] < 0 or v[-1] >= self._n):
            raise MassActError(f"selected token indices must be 0..{self._n - 1} (row-major over the token grid).")
        return v

    @traitlets.observe("layer", "step", "k", "K", "channel_set")
    def _on_config(self, change):
        if not self._ready:
            return
        if (self.layer, self.step) not in self._acts:
            # a sparse grid: a new layer snaps the step to its nearest captured step, a new step the layer
            if change["name"] == "step":
                have = [lk for lk in self.layers if (lk, self.step) in self._acts]
                here = self.layers.index(self.layer)
                self.layer = min(have, key=lambda lk: abs(self.layers.index(lk) - here))
            else:
                have = [s for s in self.steps if (self.layer, s) in self._acts]
                self.step = min(have, key=lambda s: abs(s - self.step))
            return  # the nested change updated the state
        self._update()

    def _update(self) -> None:
        r = self.compute(self.layer, self.step, self.channel_set, self.k, self.k_clusters)
        with self.hold_sync():
            self.labels = (r["labels"] + 1).clip(0, 255).astype(np.uint8).tobytes()
            self.fg_cluster = r["foreground"]
            self.channels = r["channels"]
            self.values = self._acts[(self.layer, self.step)][:, r["channels"]].astype("<f4").tobytes()
            self.iou = r["iou"]

    # ---------------------------------------------------------------- Python-side reading
    @property
    def current(self) -> dict:
        """The current configuration (as :meth:`compute` returns it)."""
        return self.compute(self.layer, self.step, self.channel_set, self.k, self.k_clusters)

    def features(self) -> np.ndarray:
        """(tokens, k) raw values of the current channels (what the hover shows)."""
        return self._acts[(self.layer, self.step)][:, self.channels]

    def token_info(self, token: int) -> dict:
        """What hovering ``token`` shows: row, col, cluster and the values on the current channels."""
        t = check_index(int(token), self._n, "token")
        lab = self.current["labels"]
        return {"token": t, "row": t // self.grid[1], "col": t % self.grid[1], "cluster": int(lab[t]),
                "values": {c: float(v) for c, v in zip(self.channels, self.features()[t])}}

    # ---------------------------------------------------------------- static
    def static_image(self):
        from PIL import Image, ImageDraw
        rows, cols = self.grid
        lab = self.current["labels"].reshape(rows, cols)
        colours = np.array([EMPTY_RGB] + PALETTE_RGB, dtype=np.uint8)
        side = 256
        clusters = Image.fromarray(colours[np.where(lab < 0, 0, 1 + lab % len(PALETTE_RGB))]).resize((side, side), Image.NEAREST)
        fg = lab == self.fg_cluster if self.fg_cluster >= 0 else np.zeros_like(lab, dtype=bool)
        if self._picture is not None:
            picture = self._picture.convert("RGB").resize((side, side), Image.BICUBIC)
            if self.fg_cluster >= 0 and self.opacity > 0:  # dim outside the foreground, as the live view does
                dim = Image.fromarray(np.where(fg, 0, 255).astype(np.uint8)).resize((side, side), Image.NEAREST)
                dark = Image.new("RGB", picture.size, (20, 20, 20))
                picture = Image.composite(Image.blend(picture, dark, self.opacity), picture, dim)
        else:
            picture = None
        sy, sx = side / rows, side / cols
        segs = []   # the foreground's boundary: the sides of its tokens that face another cluster or the edge
        for r, c in zip(*np.nonzero(fg)):
            if r == 0 or not fg[r - 1, c]:
                segs.append([c * sx, r * sy, (c + 1) * sx, r * sy])
            if r == rows - 1 or not fg[r + 1, c]:
                segs.append([c * sx, (r + 1) * sy, (c + 1) * sx, (r + 1) * sy])
            if c == 0 or not fg[r, c - 1]:
                segs.append([c * sx, r * sy, c * sx, (r + 1) * sy])
            if c == cols - 1 or not fg[r, c + 1]:
                segs.append([(c + 1) * sx, r * sy, (c + 1) * sx, (r + 1) * sy])
        panels = [p for p in (picture, clusters) if p is not None]
        for panel in panels:
            d0 = ImageDraw.Draw(panel)
            for seg in segs:   # black under white
                d0.line(seg, fill=(0, 0, 0), width=3)
                d0.line(seg, fill=(255, 255, 255), width=1)
            for t in self.selected:
                r, c = divmod(t, cols)
                d0.rectangle([c * sx + 1, r * sy + 1, (c + 1) * sx - 2, (r + 1) * sy - 2], outline=MARK, width=2)
        legend = loc.cluster_legend(self.k_clusters, self.fg_cluster)
        top = 44
        out = Image.new("RGB", (10 + len(panels) * (side + 10), top + side + 8 + 14 * len(legend)), "white")
        d = ImageDraw.Draw(out)
        label(d, (5, 2), f"{self.layer} step {self.step} {self.channel_set}-{self.k} channels {self.channels[:8]}, "
                         f"{self.k_clusters} clusters" + ("" if self.iou is None else f", IoU {self.iou:.3f}"))
        captions = (["image: foreground outlined, the rest dimmed"] if picture is not None else []) + \
            [f"token clusters ({rows} x {cols} tokens)"]
        for i, (panel, cap) in enumerate(zip(panels, captions)):
            out.paste(panel, (5 + i * (side + 10), top))
            label(d, (5 + i * (side + 10), top - 14), cap)
        for c, text in enumerate(legend):   # the clusters' colours, named as every view names them
            y0 = top + side + 4 + 14 * c
            d.rectangle([5, y0 + 2, 15, y0 + 12], fill=PALETTE_RGB[c % len(PALETTE_RGB)])
            label(d, (19, y0), text + (" (outlined)" if c == self.fg_cluster else ""))
        return out

    def static_html_body(self) -> str:
        iou = "" if self.iou is None else f"<p>IoU vs mask: {self.iou:.3f}</p>"
        return (f"<p>layer {esc(self.layer)}, step {self.step}, {esc(self.channel_set)}-{self.k} channels "
                f"{esc(self.channels)}, {self.k_clusters} clusters (foreground cluster {self.fg_cluster})</p>{iou}")
