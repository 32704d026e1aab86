"""Text-conditioned activation transport: copy a source prompt's activations into a target run.

``transport(model, source, target)`` generates both prompts from the **same initial noise** and, at
each transported (layer, step), replaces the target's block output under the mask ``M = p m^T``
(``p`` the chosen image tokens, ``m`` the chosen channels) by the source's (paper section 1.3 step 4)::

    X_target <- X_target * (1 - alpha M) + X_source * alpha M

``alpha = 1`` is the plain replacement; ``alpha = 0`` (or an all-False token mask) leaves the target
exactly as it was.

Modes:

* ``"cached"`` (default): the source runs once capturing raw activations (all tokens, all channels,
  conditional rows) of the transported layers and steps; the target then runs with an edit that
  writes them in. ``source_run=`` reuses such a run (from :func:`source_capture` or an earlier
  result) across many targets.
* ``"batched"``: one ``Model.run([source, target], seeds=[seed, seed])``; the edit copies the source
  row into the target row inside the same forward pass (no raw slices kept, twice the batch).

CFG branches (``branch``): ``"cond"`` (default) transports into the conditional rows only and leaves
the unconditional branch unedited (the source prompt acts through the conditional prediction, as in
the paper's text-conditioned setting; the unconditional branch of source and target is the same
negative prompt anyway). ``"both"`` (batched mode only) also copies the source's unconditional row
into the target's unconditional row. Guidance-distilled models (FLUX.1) have no CFG: every row is
conditional and the two choices agree.

Channels: ``"source"`` / ``"target"`` pick each layer's top-``k`` by ``stat`` (default ``abs_mean``)
of the unedited source / target run over the transported steps (:func:`massact_viz.analysis.select`),
``"union"`` takes the set union of both; a list gives the same channels at every layer, a
``{layer: list}`` dict its own per layer. With ``stream="both"`` chosen channels come from the
image-stream statistics and are transported in both streams; the text stream is always transported
over all its tokens (both prompts are padded to the same text length).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch

from ..analysis import select
from ..capture import Capture, Raw, previews_available, raw_key
from ..edits import Edit, describe_layers, describe_steps, token_channel_index
from ..errors import MassActError, RunFileError, check_k
from ..run import Run, atomic_write, read_result

if TYPE_CHECKING:
    from ..hooks import Site
    from ..model import Model

FORMAT = "massact_viz.transport"
MODES = ("cached", "batched")
CHANNEL_KINDS = ("source", "target", "union")
#: Runs whose localized foreground can be the transport's token mask (``tokens="source"``).
MASK_FROM = ("source", "target")
#: Default ceiling of the cached source's raw activations (``transport(max_cache_gb=...)``).
MAX_CACHE_GB = 8.0
CONTROLS = ("random-k", "bottom-k", "full-swap", "pixel-blend", "latent-blend")
_RESERVED = ("steps", "seed", "seeds", "capture", "edit", "progress", "prompt")


@dataclass
class TransportResult:
    """Source, unedited target and transported images (one each), the channels and the settings."""

    source_images: list
    target_images: list
    images: list
    channels: dict[str, list[int]]
    settings: dict = field(default_factory=dict)
    # Per-step predicted clean images of the first image of each row, uint8 (steps, H, W, 3), keyed by row
    # name: "source", "target", "transported" and each control's name (empty when previews were not asked
    # for or the family has no preview decoder).
    previews: dict[str, torch.Tensor] = field(default_factory=dict)
    # Final images of the controls, keyed by name: "random-k", "bottom-k", "full-swap", "pixel-blend",
    # "latent-blend" (only those asked for).
    controls: dict[str, list] = field(default_factory=dict)
    # metrics[row][metric] -> float for rows "transported" and each control (see transport_metrics()).
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def source_image(self):
        return self.source_images[0]

    @property
    def target_image(self):
        return self.target_images[0]

    @property
    def image(self):
        return self.images[0]

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``source.png``, ``target.png``, ``transported.png``, ``control-<name>.png``,
        ``previews.safetensors`` and ``transport.json`` (settings, channels, metrics; written last) into
        ``path``."""
        from safetensors.torch import save as st_save

        path = Path(path)
        if path.exists() and any(path.iterdir()) and not (path / "transport.json").exists():
            raise RunFileError(f"{path} exists and is not a transport directory; choose a new or empty one.")
        path.mkdir(parents=True, exist_ok=True)
        for name, ims in self._rows():
            for i, im in enumerate(ims):
                im.save(path / f"{name}{'' if i == 0 else f'-{i}'}.png")
        if self.previews:
            atomic_write(path / "previews.safetensors",
                         st_save({k: v.contiguous() for k, v in self.previews.items()}))
        doc = {"format": FORMAT, "settings": self.settings, "channels": self.channels,
               "n_images": len(self.images), "controls": list(self.controls), "previews": sorted(self.previews),
               "metrics": self.metrics}
        atomic_write(path / "transport.json", json.dumps(doc, indent=1, default=repr))  # written last: marks completeness
        return path

    def _rows(self):
        yield from (("source", self.source_images), ("target", self.target_images), ("transported", self.images))
        yield from ((f"control-{k}", v) for k, v in self.controls.items())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TransportResult":
        from PIL import Image
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        path = Path(path)
        doc = read_result(path / "transport.json", FORMAT, "transport result")

        def images(name: str) -> list:
            ims = []
            for i in range(doc["n_images"]):
                try:
                    with Image.open(path / f"{name}{'' if i == 0 else f'-{i}'}.png") as im:
                        ims.append(im.convert("RGB"))
                except OSError as e:
                    raise RunFileError(f"{path}: image {name} {i} is missing or damaged ({e}).") from e
            return ims

        previews = {}
        if doc.get("previews"):
            try:
                previews = st_load((path / "previews.safetensors").read_bytes())
            except (OSError, SafetensorError, ValueError) as e:
                raise RunFileError(f"{path}/previews.safetensors is missing or damaged ({e}); the images and "
                                   f"settings are intact - rerun transport() for the timeline.") from e
        return cls(images("source"), images("target"), images("transported"),
                   {k: list(v) for k, v in doc["channels"].items()}, doc["settings"], previews,
                   {c: images(f"control-{c}") for c in doc.get("controls", [])}, doc.get("metrics") or {})


def _streams(stream: str) -> list[str]:
    return ["image", "text"] if stream == "both" else [stream]


def _blend(x: torch.Tensor, src: torch.Tensor, toks: torch.Tensor | None, chans: list[int], alpha: float) -> None:
    """``x[:, toks, chans] <- (1 - alpha) x + alpha src`` in place (``src`` broadcast over x's rows)."""
    idx = token_channel_index(x, chans, toks)
    if idx is None:
        return
    s = src.to(x.device, x.dtype)[idx]
    x[idx] = s if alpha == 1.0 else x[idx] * (1.0 - alpha) + s * alpha


class _Transport:
    """The edit function of both modes (a plain ``fn(site)``)."""

    def __init__(self, channels: dict[str, list[int]], steps: set[int], streams: list[str],
                 toks: torch.Tensor | None, alpha: float, branch: str, raw: Mapping[str, torch.Tensor] | None):
        self.channels, self.steps, self.streams = channels, steps, streams
        self.toks, self.alpha, self.branch, self.raw = toks, alpha, branch, raw

    def __call__(self, site: "Site") -> None:
        chans = self.channels.get(site.block.name)
        if not chans or site.step not in self.steps or self.alpha == 0.0:
            return
        cond = site.cond
        for name in self.streams:
            x = site.stream(name)
            if x is None:
                continue
            toks = self.toks if name == "image" else None
            if self.raw is not None:  # cached: the source's conditional rows, kept on the host
                if cond.stop == cond.start:
                    continue  # an unconditional call: left unedited
                src = self.raw[raw_key(site.block.name, site.step, name)]
                tgt = x[cond]
                if src.shape[1:] != tgt.shape[1:]:
                    raise MassActError(f"the source's {name} stream at {site.block.name} step {site.step} has shape "
                                       f"{tuple(src.shape[1:])}, the target's {tuple(tgt.shape[1:])}; run both at "
                                       f"the same size (text streams: the same padded text length).")
                _blend(tgt, src[:1], toks, chans, self.alpha)
            else:  # batched: rows are [source, target] within each branch
                groups = [cond] if self.branch == "cond" else \
                    [slice(0, x.shape[0] // 2), slice(x.shape[0] // 2, x.shape[0])] if x.shape[0] == 4 else \
                    [slice(0, 2)]
                for g in groups:
                    if g.stop - g.start != 2:
                        continue
                    _blend(x[g.start + 1:g.start + 2], x[g.start:g.start + 1], toks, chans, self.alpha)


def _check_channels(model: "Model", channels: Any, k: int, layer_names: list[str]) -> Any:
    if isinstance(channels, str):
        if channels not in CHANNEL_KINDS:
            raise MassActError(f"channels must be one of {CHANNEL_KINDS}, a list or {{layer: list}}; got {channels!r}.")
        check_k(k, model.width)
        return channels
    e = Edit("zero", channels, layers=layer_names if not isinstance(channels, Mapping) else None)
    e.check(model)  # channel indices and layer names
    if isinstance(e.channels, dict):
        return {model.layer(n).name: list(v) for n, v in e.channels.items()}
    return {n: list(e.channels) for n in layer_names}


def _step_mean(st, img: int, layer: str, steps: list[int], stream: str, stat: str) -> torch.Tensor:
    """``stat`` per channel of image ``img`` at ``layer``, averaged over the transported ``steps``."""
    return torch.stack([st.get(stat, layer=layer, stream=stream, step=s, image=img) for s in steps]).mean(0)


def _choose(kind_stats: list, k: int, layers: list[str], steps: list[int], stream: str,
            stat: str) -> dict[str, list[int]]:
    """Top-k per layer by ``stat`` averaged over the transported ``steps``, from (stats, image) pairs,
    united over the pairs (the first pair's channels first, each highest first)."""
    out = {}
    for name in layers:
        chosen: list[int] = []
        for st, img in kind_stats:
            if list(st.steps) == list(steps):  # the capture holds exactly these steps: analysis.select
                top = select(st, "top", k, layer=name, stat=stat, stream=stream, image=img)
            else:  # e.g. a reused source_run captured more steps: average over the transported ones
                top = torch.topk(_step_mean(st, img, name, steps, stream, stat), k).indices.tolist()
            chosen += [c for c in top if c not in chosen]
        out[name] = chosen
    return out


def source_capture(model: "Model", source: str, *, layers: Any = None, steps: Any = None, stream: str = "image",
                   seed: int = 0, num_steps: int | None = None, previews: bool | None = None,
                   extra_raw: Any = (), **run_kwargs: Any) -> Run:
    """The cached source run :func:`transport` makes (statistics + raw slices, plus per-step previews
    when ``previews`` is true or, by default, when the family supports them; ``extra_raw``: more
    :class:`Raw` slices to keep); pass it as ``source_run=``."""
    num_steps = model.resolve_steps(num_steps)
    probe = Edit("zero", [0], layers=layers, steps=steps, stream=stream).check(model, num_steps,
                                                                               run_kwargs.get("size"))
    names = sorted(probe._layer_names, key=lambda n: model.layer(n).index)
    st = sorted(probe._steps)
    raws = [Raw(n, s, name) for n in names for s in st for name in _streams(stream)
            if name in model.layer(n).streams]
    have = {raw_key(model.layer(r.layer).name, r.step, r.stream) for r in raws}
    raws += [r for r in extra_raw if raw_key(model.layer(r.layer).name, r.step, r.stream) not in have]
    want = previews_available(model) if previews is None else bool(previews)
    return model.run(source, steps=num_steps, seed=seed, progress=False,
                     capture=Capture(layers=names, steps=st, raw=raws, previews=want), **run_kwargs)


def _check_controls(controls: Any) -> list[str]:
    if controls in (None, (), []):
        return []
    if controls == "all":
        return list(CONTROLS)
    if isinstance(controls, str):
        controls = [controls]
    out = []
    for c in controls:
        if c not in CONTROLS:
            raise MassActError(f"unknown control {c!r}; choose from {CONTROLS} (or controls='all').")
        if c not in out:
            out.append(c)
    return out


class _Plan:
    """Validated settings plus the unedited source and target runs; :meth:`edited` runs the target
    under a transport edit. Shared by :func:`transport` and :func:`interpolate`."""

    def __init__(self, model: "Model", source: str, target: str, *, channels: Any, k: int, tokens: Any,
                 alpha: float, layers: Any, steps: Any, stream: str, mode: str, branch: str, stat: str,
                 seed: int, num_steps: int | None, source_run: Run | None, previews: bool | None,
                 run_kwargs: dict, source_image: Any = None, inversion: str = "fixed-point",
                 max_cache_gb: float = MAX_CACHE_GB, mask_layer: Any = None, mask_k: int = 4):
        if source_image is not None and not isinstance(source, str):
            raise MassActError("with source_image=, source is the caption the reference is inverted with: a "
                               "string ('' for none, the null caption).")
        if source_image is None and (not isinstance(source, str) or not source.strip()):
            raise MassActError("source must be one non-empty prompt string (or give source_image= for an "
                               "image-conditioned source).")
        if source_image is not None and (mode != "cached" or source_run is not None):
            raise MassActError("source_image= makes its own cached source run: use mode='cached' and no source_run=.")
        if not isinstance(target, str) or not target.strip():
            raise MassActError("target must be one non-empty prompt string.")
        if mode not in MODES:
            raise MassActError(f"mode must be one of {MODES}, got {mode!r}.")
        if branch not in ("cond", "both"):
            raise MassActError(f"branch must be 'cond' or 'both', got {branch!r}.")
        if branch == "both" and mode == "cached":
            raise MassActError("branch='both' needs mode='batched' (the cached source keeps only its conditional rows).")
        self.alpha = _check_alpha(alpha)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise MassActError(f"seed must be a non-negative integer, got {seed!r}.")
        for r in _RESERVED:
            if r in run_kwargs:
                raise MassActError(f"transport() sets {r}= itself; use seed= for the shared noise, num_steps= for the "
                                   f"denoising steps and steps= for the transported step window.")
        if source_run is not None and mode != "cached":
            raise MassActError("source_run= is for mode='cached'.")
        if previews and not previews_available(model):
            raise MassActError(f"per-step previews are not available for {model.family.title} yet (FLUX.1, SD3 and "
                               f"the embedded model have them); use previews=False.")
        self.model, self.source, self.target, self.mode, self.branch = model, source, target, mode, branch
        self.stat, self.seed, self.k, self.kind = stat, seed, k, channels if isinstance(channels, str) else "explicit"
        self.num_steps = num_steps = model.resolve_steps(num_steps)
        self.layers_spec, self.steps_spec, self.stream = layers, steps, stream
        size = run_kwargs.get("size")
        self.mask_from = None
        if isinstance(tokens, str):
            if tokens not in MASK_FROM:
                raise MassActError(f"tokens must be None, a token mask/list, or one of {MASK_FROM} (the foreground "
                                   f"of that run found by clustering, see mask_layer=), got {tokens!r}.")
            self.mask_from, tokens = tokens, None
            self.mask_layer = model.layer(mask_layer if mask_layer is not None
                                          else model.blocks[len(model.blocks) // 2].name).name
            check_k(mask_k, model.width)
            self.mask_k, self.mask_step = mask_k, num_steps - 1
        elif mask_layer is not None:
            raise MassActError("mask_layer= is for tokens='source' or tokens='target'.")
        probe = Edit("zero", [0], layers=layers, steps=steps, stream=stream, tokens=tokens).check(model, num_steps, size)
        names = sorted(probe._layer_names, key=lambda n: model.layer(n).index)
        self.steps = st = sorted(probe._steps)
        self.streams = _streams(stream)
        chans = _check_channels(model, channels, k, names)
        if isinstance(chans, dict):
            names = sorted(chans, key=lambda n: model.layer(n).index)
        self.names = names
        self.sel_stream = "text" if stream == "text" else "image"
        need = [(n, s, name) for n in names for s in st for name in self.streams if name in model.layer(n).streams]
        if source_run is not None:
            missing = [raw_key(*t) for t in need if raw_key(*t) not in source_run.raw]
            if missing:
                raise MassActError(f"source_run lacks raw slices {missing[:3]}{'...' if len(missing) > 3 else ''}; "
                                   f"make it with source_capture(model, source, layers=..., steps=..., stream=...).")
            meta = source_run.meta
            if meta.get("prompts") != [source] or meta.get("steps") != num_steps or \
                    (meta.get("seeds") or [None])[0] != seed:
                raise MassActError(f"source_run was made for prompts {meta.get('prompts')}, {meta.get('steps')} steps, "
                                   f"seeds {meta.get('seeds')}; transport() needs [{source!r}], {num_steps}, seed {seed}.")
            if channels in ("source", "union") and (source_run.stats is None
                                                    or not set(names) <= set(source_run.stats.layers)):
                raise MassActError("source_run has no statistics of the transported layers to choose channels from; "
                                   "give channels= explicitly or make it with source_capture().")
        self.toks = probe._token_index
        if mode == "cached" and source_run is None:
            self._check_cache(model, need, size, max_cache_gb)
        self.previews = previews_available(model) if previews is None else bool(previews)
        self.run_kwargs = run_kwargs
        self.run_kw = dict(run_kwargs, steps=num_steps, progress=False)
        self._chans_arg, self._source_run = chans, source_run
        self.source_image, self.inversion_method, self.inversion = source_image, inversion, None
        if source_image is not None:
            from .inversion import METHODS, _check_model, _load_image
            _check_model(model)
            if inversion not in METHODS:
                raise MassActError(f"inversion must be one of {METHODS}, got {inversion!r}.")
            self.source_image = _load_image(source_image)  # a bad file fails before any work

    @staticmethod
    def _check_cache(model: "Model", need: list, size: Any, max_cache_gb: float) -> None:
        """The cached source keeps every token and channel of each transported (layer, step, stream) on the
        host; refuse before running when that exceeds ``max_cache_gb`` (a full FLUX.1 run at 1024 px, 57
        layers x 28 steps, would be ~40 GB)."""
        rows, cols = model.token_grid(size)
        per = rows * cols * model.width * torch.finfo(model.dtype).bits // 8
        gb = per * sum(1 for _, _, name in need if name == "image") / 1e9
        if gb > max_cache_gb:
            raise MassActError(f"the cached source would hold {gb:.1f} GB of raw activations ({len(need)} layer x step "
                               f"slices of {rows * cols} tokens x {model.width} channels) > max_cache_gb="
                               f"{max_cache_gb:g}. Use mode='batched' (source and target in one batch, nothing "
                               f"cached), transport fewer layers/steps, or raise max_cache_gb.")

    def prepare(self, progress: bool = True) -> None:
        """Run the unedited source and target (the expensive part shared by every edited run)."""
        model, st, names = self.model, self.steps, self.names
        mask_raw = [Raw(self.mask_layer, self.mask_step)] if self.mask_from else []
        stats_cap = Capture(layers=names, steps=st, previews=self.previews,
                            raw=mask_raw if self.mask_from == "target" or self.mode == "batched" else [])
        src_extra = mask_raw if self.mask_from == "source" else []
        if self.mode == "cached":
            if self.source_image is not None:
                src = self._image_source(progress, src_extra)
            else:
                src = self._source_run if self._source_run is not None else source_capture(
                    model, self.source, layers=names, steps=st, stream=self.stream, seed=self.seed,
                    num_steps=self.num_steps, previews=self.previews, extra_raw=src_extra, **self.run_kwargs)
            tgt = model.run(self.target, seed=self.seed, capture=stats_cap, **self.run_kw)
            self.pools = {"source": [(src.stats, 0)], "target": [(tgt.stats, 0)],
                          "union": [(src.stats, 0), (tgt.stats, 0)]}
            self.raw = src.raw
            self.source_images, self.target_images = list(src.images), list(tgt.images)
            if self.inversion is not None:  # the reference itself is the source image
                self.source_images = [self.inversion.reference]
            self.row_previews = {"source": _first(src.previews), "target": _first(tgt.previews)}
            self.source_run = src
        else:
            base = model.run([self.source, self.target], seeds=[self.seed, self.seed], capture=stats_cap,
                             **self.run_kw)
            self.pools = {"source": [(base.stats, 0)], "target": [(base.stats, 1)],
                          "union": [(base.stats, 0), (base.stats, 1)]}
            self.raw = None
            self.source_images, self.target_images = list(base.images[:1]), list(base.images[1:])
            self.row_previews = {"source": _first(base.previews), "target": _first(base.previews, 1)}
            self.source_run = None
        if self.mask_from:
            if self.mode == "cached":
                self.toks = self._foreground(src if self.mask_from == "source" else tgt, 0)
            else:
                self.toks = self._foreground(base, 0 if self.mask_from == "source" else 1)
        chans = self._chans_arg
        self.channels = _choose(self.pools[chans], self.k, self.names, st, self.sel_stream, self.stat) \
            if isinstance(chans, str) else chans
        self.row_previews = {k: v for k, v in self.row_previews.items() if v is not None}

    def _foreground(self, run: Run, row: int) -> torch.Tensor:
        """Token indices of the foreground cluster (K-means, K=2) of ``run``'s image ``row`` at
        ``mask_layer`` and the last step, on its top-``mask_k`` channels by ``abs_mean`` there."""
        from .localization import cluster_tokens

        key = raw_key(self.mask_layer, self.mask_step, "image")
        if key not in run.raw:
            raise MassActError(f"the {self.mask_from} run has no raw slice {key} to find the token mask in; let "
                               f"transport() make the source run (no source_run=) or capture mv.Raw"
                               f"({self.mask_layer!r}, {self.mask_step}) in it.")
        x = run.raw[key][row].float()
        chans = torch.topk(x.mean(0).abs(), self.mask_k).indices.tolist()
        fg = cluster_tokens(x.numpy(), tuple(self.model.token_grid(self.run_kwargs.get("size"))),
                            channels=chans, seed=self.seed).foreground
        self.mask_channels = chans
        return torch.from_numpy(np.flatnonzero(fg.reshape(-1)))

    def _image_source(self, progress: bool, extra_raw: list) -> Run:
        from .inversion import image_source_run, invert

        size = self.run_kwargs.get("size")
        guidance = self.run_kwargs.get("guidance")
        self.inversion = invert(self.model, self.source_image, self.source, num_steps=self.num_steps, size=size,
                                method=self.inversion_method, seed=self.seed, guidance=guidance, progress=progress)
        return image_source_run(self.model, self.source_image, self.source, layers=self.names, steps=self.steps,
                                stream=self.stream, num_steps=self.num_steps, seed=self.seed, size=size,
                                method=self.inversion_method, guidance=guidance, inversion=self.inversion,
                                extra_raw=extra_raw, progress=progress)

    def control_channels(self, kind: str) -> dict[str, list[int]]:
        """The channels of a channel control: ``bottom-k`` / ``random-k`` from the same statistics pool
        and count as the transported channels (random: outside the top-k, seeded by ``seed``),
        ``full-swap``: every channel."""
        width = self.model.width
        if kind == "full-swap":
            return {n: list(range(width)) for n in self.names}
        pool = self.pools["source" if self.kind == "explicit" else self.kind][0]
        st, img = pool
        out = {}
        for n in self.names:
            kk = len(self.channels[n])
            if kind == "bottom-k":
                v = _step_mean(st, img, n, self.steps, self.sel_stream, self.stat)
                out[n] = torch.topk(v, kk, largest=False).indices.tolist()
            else:
                if 2 * kk > width:
                    raise MassActError(f"the random-k control draws {kk} channels outside the top-{kk}; "
                                       f"it needs 2k <= {width}. Use a smaller k.")
                out[n] = sorted(_random_outside(self.channels[n], kk, width, self.seed, n))
        return out

    def edited(self, channels: dict[str, list[int]], alpha: float | None = None):
        """(images, previews of the first image or None) of the target run under the transport edit."""
        alpha = self.alpha if alpha is None else alpha
        fn: Callable = _Transport(channels, set(self.steps), self.streams, self.toks, alpha, self.branch, self.raw)
        cap = Capture(stats=False, previews=self.previews)
        if self.mode == "cached":
            run = self.model.run(self.target, seed=self.seed, capture=cap, edit=fn, **self.run_kw)
            return list(run.images), _first(run.previews)
        run = self.model.run([self.source, self.target], seeds=[self.seed, self.seed], capture=cap, edit=fn,
                             **self.run_kw)
        return list(run.images[1:]), _first(run.previews, 1)

    def settings(self, channels_kind: str | None = None) -> dict:
        return {"model": self.model.source, "source": self.source, "target": self.target, "mode": self.mode,
                "branch": self.branch, "channels": channels_kind or self.kind, "k": self.k, "stat": self.stat,
                "alpha": self.alpha, "layers": describe_layers(self.layers_spec),
                "steps": describe_steps(self.steps_spec), "transport_layers": self.names,
                "transport_steps": self.steps, "stream": self.stream,
                "tokens": None if self.toks is None else self.toks.tolist(),
                **({"token_mask": {"from": self.mask_from, "layer": self.mask_layer, "step": self.mask_step,
                                   "k": self.mask_k, "channels": getattr(self, "mask_channels", None)}}
                   if self.mask_from else {}),
                "seed": self.seed,
                "num_steps": self.num_steps,
                "run_kwargs": {key: repr(v) for key, v in sorted(self.run_kwargs.items())},
                **({"source_image": self.inversion.summary()} if self.inversion is not None else {})}


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise MassActError(f"alpha must be a number in [0, 1], got {alpha!r}.")
    return float(alpha)


def _first(previews: torch.Tensor | None, image: int = 0) -> torch.Tensor | None:
    """(steps, H, W, 3) uint8 previews of one image of a run, or None."""
    return None if previews is None else previews[:, image].contiguous()


def _random_outside(top: list[int], k: int, width: int, seed: int, layer: str) -> list[int]:
    import zlib

    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(f"transport-random/{layer}".encode()))
    keep = torch.ones(width, dtype=torch.bool)
    keep[list(top)] = False
    pool = keep.nonzero().flatten()
    return pool[torch.randperm(len(pool), generator=g)[:k]].tolist()


def _blend_images(a, b, w: float):
    from PIL import Image
    import numpy as np

    x = np.asarray(a.convert("RGB"), dtype=np.float64) * (1 - w) + np.asarray(b.convert("RGB"), dtype=np.float64) * w
    return Image.fromarray(np.clip(np.round(x), 0, 255).astype("uint8"))


def _latent_blend(model: "Model", source, target, w: float):
    """Encode both final images with the pipeline's VAE, blend the latents, decode."""
    from ..capture import decode_latents, to_pil
    from .inversion import encode_image

    size = (target.height, target.width)
    lat = encode_image(model, target, size=size) * (1 - w) + encode_image(model, source, size=size) * w
    return to_pil(decode_latents(model, lat, size=size))[0]


def transport(model: "Model", source: str, target: str, *, channels: Any = "source", k: int = 4,
              tokens: Any = None, alpha: float = 1.0, layers: Any = None, steps: Any = None,
              stream: str = "image", mode: str = "cached", branch: str = "cond", stat: str = "abs_mean",
              seed: int = 0, num_steps: int | None = None, source_run: Run | None = None,
              controls: Any = (), blend: float = 0.5, previews: bool | None = None,
              metrics: bool = True, source_image: Any = None, inversion: str = "fixed-point",
              max_cache_gb: float = MAX_CACHE_GB, mask_layer: Any = None, mask_k: int = 4,
              progress: bool = True, **run_kwargs: Any) -> TransportResult:
    """Transport the source prompt's activations into the target prompt's run (see the module docstring).

    ``tokens``: ``None`` (all image tokens) or a boolean mask over the image tokens (``rows * cols``
    or shaped ``(rows, cols)``, see ``model.token_grid(size)``) or a list of token indices, or
    ``"source"`` / ``"target"``: the foreground of that unedited run, found as in the paper's localization
    (K-means, K=2, on the top-``mask_k`` channels by ``abs_mean`` of ``mask_layer`` at the last denoising
    step, the cluster with the larger normalised sum; ``mask_layer`` defaults to the middle block; the
    mask and its settings are kept in ``settings["tokens"]`` / ``settings["token_mask"]``).
    ``layers``/``steps``/``stream`` are the :class:`~massact_viz.edits.Edit` specs (``steps`` a step,
    list or ``(start, stop)`` window of the ``num_steps`` denoising steps). Other keywords (``size``,
    ``guidance``, pipeline kwargs) go to ``Model.run``. Everything is validated before anything runs.

    ``controls``: any of ``"random-k"``, ``"bottom-k"`` (the same transport with the same number of
    random channels from outside the top-k / lowest-statistic channels), ``"full-swap"`` (every
    channel at the same layers, steps and tokens), ``"pixel-blend"`` and ``"latent-blend"`` (the final
    target and source images blended with weight ``blend`` on the source, in pixels or in VAE latents),
    or ``"all"``. ``previews``: keep per-step predicted clean images for the timeline (default: when the
    family supports them). ``metrics``: score every row with :func:`transport_metrics` (``False``
    skips it). ``max_cache_gb``: the cached source keeps all tokens and channels of every transported
    (layer, step) on the host (a whole FLUX.1 run at 1024 px: ~40 GB); above this it refuses before running
    and suggests ``mode="batched"`` (which caches nothing) or fewer layers/steps.

    Image-conditioned (subject-driven) transport: ``source_image=`` (a path, PIL image or uint8 array)
    replaces the source prompt's run by the reference image's trajectory: the image is VAE-encoded and
    inverted (``inversion="fixed-point"``, the default: inverse-Euler flow inversion with the model's
    conditional velocity under the prompt ``source`` (a caption of the reference, or ``""``), corrected by fixed-point
    iterations; ``"euler"``: plain inverse Euler; ``"noise"``: forward noising with the target's own
    initial noise; see :mod:`massact_viz.probes.inversion`), the model is teacher-forced along it to
    capture the source activations, and those are transported. ``result.source_image`` is then the
    (resized) reference, ``settings["source_image"]`` holds the method and the reconstruction error
    (how far regenerating from the inverted noise lands from the reference: check it before trusting
    the source), and the reconstruction is kept as ``result.controls["reconstruction"]``.
    """
    names = _check_controls(controls)
    blend = _check_alpha(blend)
    if "latent-blend" in names and model.family.preview is None:
        raise MassActError(f"latent-blend needs a VAE encoder/decoder path for {model.family.title}, which this "
                           f"version has only for FLUX.1, SD3 and the embedded model; drop it from controls.")
    plan = _Plan(model, source, target, channels=channels, k=k, tokens=tokens, alpha=alpha, layers=layers,
                 steps=steps, stream=stream, mode=mode, branch=branch, stat=stat, seed=seed, num_steps=num_steps,
                 source_run=source_run, previews=previews, run_kwargs=run_kwargs, source_image=source_image,
                 inversion=inversion, max_cache_gb=max_cache_gb, mask_layer=mask_layer, mask_k=mask_k)
    from tqdm.auto import tqdm

    runs = [n for n in names if n in ("random-k", "bottom-k", "full-swap")]
    bar = tqdm(total=3 + len(runs), desc="transport", unit="run", disable=not progress, leave=False)
    plan.prepare(progress)
    bar.update(2)  # the unedited source and target
    images, prev = plan.edited(plan.channels)
    bar.update()
    previews_out = dict(plan.row_previews)
    if prev is not None:
        previews_out["transported"] = prev
    ctrl: dict[str, list] = {}
    ctrl_channels: dict[str, dict[str, list[int]]] = {}
    for name in names:
        if name in ("random-k", "bottom-k", "full-swap"):
            ctrl_channels[name] = plan.control_channels(name)
            ctrl[name], p = plan.edited(ctrl_channels[name])
            bar.update()
            if p is not None:
                previews_out[name] = p
        elif name == "pixel-blend":
            ctrl[name] = [_blend_images(t, plan.source_images[0], blend) for t in plan.target_images]
        else:
            ctrl[name] = [_latent_blend(model, plan.source_images[0], t, blend) for t in plan.target_images]
    bar.close()
    settings = plan.settings()
    if names:
        settings["controls"] = names
        settings["blend"] = blend
        settings["control_channels"] = {k: v for k, v in ctrl_channels.items() if k != "full-swap"}
    if plan.inversion is not None and plan.inversion.reconstruction is not None:
        ctrl["reconstruction"] = [plan.inversion.reconstruction]
    result = TransportResult(plan.source_images, plan.target_images, images, plan.channels, settings,
                             previews_out, ctrl)
    if metrics:
        result.metrics = transport_metrics(result)
    return result


def _hmean(a: float, b: float) -> float:
    a, b = min(max(a, 0.0), 1.0), min(max(b, 0.0), 1.0)
    return 0.0 if a + b == 0 or math.isnan(a + b) else 2 * a * b / (a + b)


def _judge(image, caption: str) -> tuple[float, float] | None:
    """(fraction of the caption's attributes found, 1.0 if every colour is right else 0.0) by the embedded
    model's procedural judge; None when the caption is not in the teaching model's language."""
    from ..shapes.scenes import judge

    try:
        j = judge(image, caption)
    except ValueError:
        return None
    parts = [j["colour_ok"], j["shape_ok"]] + ([] if j["relation_ok"] is None else [j["relation_ok"]])
    return float(sum(bool(p) for p in parts)) / len(parts), float(bool(j["colour_ok"]))


def transport_metrics(result: TransportResult) -> dict[str, dict[str, float]]:
    """Score every row (``target``, ``transported``, each control, ``source``; first image) of a result.

    Per row:

    * ``ssim_target``: SSIM to the unedited target image, the **structure kept** (1 for the target);
    * ``mse_source`` / ``mse_target``: pixel MSE (``[0, 1]`` units) to the source / target image;
    * ``toward_source``: ``1 - mse(row, source) / mse(target, source)``, the pixel-space progress from the
      target (0) to the source (1); negative when the row moved away from both;
    * ``clip_t_source`` / ``clip_t_target``: CLIP text-image similarity to each prompt, when
      :func:`massact_viz.metrics.clip_metrics` has registered ``clip_t``; ``dino_target``: DINO
      similarity to the target image when :func:`~massact_viz.metrics.dino_metric` has registered it;
    * ``judge_source`` / ``judge_target``: on the embedded model, the fraction of each caption's
      attributes (colours, shapes, relation) the procedural judge finds in the row's image;
      ``colour_source`` / ``colour_target``: 1 when every colour of that caption (objects and
      background) is right, else 0;
    * ``semantic``: how far the row moved toward the source's meaning: the CLIP-T gain
      ``(clip_t_source(row) - clip_t_source(target)) / (clip_t_source(source) - clip_t_source(target))``
      when CLIP is registered (image-conditioned transport: the same gain of ``clip_i_source``, the CLIP
      image similarity to the reference), else ``toward_source``;
    * ``composite``: the harmonic mean of ``semantic`` and ``ssim_target``, each clipped to [0, 1]: high only
      when the image moved toward the source *and* kept the target's structure (the target and the source
      themselves score 0 and about ``ssim(source, target)`` at most).
    """
    from ..metrics import METRICS, mse, ssim

    src, tgt = result.source_image, result.target_image
    rows = {"target": tgt, "transported": result.image}
    rows.update({name: ims[0] for name, ims in result.controls.items()})
    rows["source"] = src
    d0 = mse(tgt, src)
    s_prompt, t_prompt = result.settings.get("source", ""), result.settings.get("target", "")
    by_image = "source_image" in result.settings  # image-conditioned: the source is a reference image
    clip_t = METRICS.get("clip_t") if (s_prompt.strip() and not by_image) else None
    clip_i = METRICS.get("clip_i") if by_image else None
    dino = METRICS.get("dino")
    sem = None  # (metric name, fn) of the semantic score
    if clip_t is not None:
        sem = ("clip_t_source", lambda im: clip_t(im, None, s_prompt))
    elif clip_i is not None:
        sem = ("clip_i_source", lambda im: clip_i(im, src))
    base = {} if sem is None else {"t": sem[1](tgt), "s": sem[1](src)}
    out: dict[str, dict[str, float]] = {}
    for name, img in rows.items():
        m = {"ssim_target": ssim(img, tgt), "mse_source": mse(img, src), "mse_target": mse(img, tgt)}
        m["toward_source"] = 1.0 - m["mse_source"] / d0 if d0 > 0 else float("nan")
        if sem is not None:
            m[sem[0]] = sem[1](img)
        if METRICS.get("clip_t") is not None:  # the target prompt is always there to score against
            m["clip_t_target"] = METRICS["clip_t"](img, None, t_prompt)
        if dino is not None:
            m["dino_target"] = dino(img, tgt)
        for which in ("source", "target"):
            j = _judge(img, result.settings[which]) if result.settings.get(which, "").strip() else None
            if j is not None:
                m[f"judge_{which}"], m[f"colour_{which}"] = j
        if sem is not None and base["s"] != base["t"]:
            m["semantic"] = (m[sem[0]] - base["t"]) / (base["s"] - base["t"])
        else:
            m["semantic"] = m["toward_source"]
        m["composite"] = _hmean(m["semantic"], m["ssim_target"])
        out[name] = m
    return out


@dataclass
class Interpolation:
    """A sweep of :func:`transport` from the target (first frame) toward the source (last frame)."""

    over: str                      # "k" or "alpha"
    values: list                   # the swept value of each frame
    frames: list                   # PIL images, target first
    source_image: Any
    target_image: Any
    settings: dict = field(default_factory=dict)
    metrics: list = field(default_factory=list)   # per frame: transport_metrics()'s "transported" row

    def strip(self, height: int = 128):
        """One image: target, the frames, source, side by side at ``height`` pixels."""
        from PIL import Image

        ims = [self.target_image, *self.frames, self.source_image]
        w = [round(im.width * height / im.height) for im in ims]
        out = Image.new("RGB", (sum(w) + 4 * (len(ims) - 1), height), "white")
        x = 0
        for im, wi in zip(ims, w):
            out.paste(im.resize((wi, height), Image.NEAREST), (x, 0))
            x += wi + 4
        return out


def interpolate(model: "Model", source: str, target: str, *, over: str = "k", values: Any = None,
                progress: bool = True, **kwargs: Any) -> Interpolation:
    """Prompt interpolation: :func:`transport` swept over ``k`` (channels per layer) or ``alpha`` (soft
    blend), sharing one source and one target run across the frames.

    ``values`` default: ``k`` in 1, 2, 4, ... up to half the width; ``alpha`` in 0, 0.25, ..., 1.
    Other keywords are :func:`transport`'s (``channels`` must be ``"source"``, ``"target"`` or ``"union"``
    when sweeping ``k``). Returns frames from the target toward the source with
    :func:`transport_metrics`' scores of each frame.
    """
    from tqdm.auto import tqdm

    if over not in ("k", "alpha"):
        raise MassActError(f"over must be 'k' or 'alpha', got {over!r}.")
    for bad in ("controls", "blend", "metrics", over):
        if bad in kwargs:
            raise MassActError(f"interpolate() does not take {bad}=; sweep with values= (over={over!r}).")
    if values is None:
        values = [2 ** i for i in range(int(math.log2(model.width)))] if over == "k" else [0.0, 0.25, 0.5, 0.75, 1.0]
    values = list(values)
    if not values:
        raise MassActError("values must list at least one k or alpha.")
    channels = kwargs.pop("channels", "source")
    if over == "k":
        if not isinstance(channels, str):
            raise MassActError("sweeping k needs channels='source', 'target' or 'union' (a list fixes the channels).")
        for v in values:
            check_k(v, model.width)
        k = max(values)
    else:
        values = [_check_alpha(v) for v in values]
        k = kwargs.pop("k", 4)
    run_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key not in _TRANSPORT_ARGS}
    plan = _Plan(model, source, target, channels=channels, k=k, run_kwargs=run_kwargs, previews=False,
                 **{a: kwargs.get(a, d) for a, d in _TRANSPORT_ARGS.items()})
    plan.prepare()
    frames, scores = [], []
    for v in tqdm(values, desc=f"interpolate over {over}", disable=not progress):
        chans = {n: c[:v] for n, c in plan.channels.items()} if over == "k" and channels != "union" else \
            _union_prefix(plan, v) if over == "k" else plan.channels
        ims, _ = plan.edited(chans, alpha=v if over == "alpha" else None)
        frames.append(ims[0])
        r = TransportResult(plan.source_images, plan.target_images, ims, chans, plan.settings())
        scores.append(transport_metrics(r)["transported"])
    settings = plan.settings()
    settings.update(over=over, values=values)
    return Interpolation(over, values, frames, plan.source_images[0], plan.target_images[0], settings, scores)


def _union_prefix(plan: _Plan, k: int) -> dict[str, list[int]]:
    return _choose(plan.pools["union"], k, plan.names, plan.steps, plan.sel_stream, plan.stat)


_TRANSPORT_ARGS = {"tokens": None, "alpha": 1.0, "layers": None, "steps": None, "stream": "image",
                   "mode": "cached", "branch": "cond", "stat": "abs_mean", "seed": 0, "num_steps": None,
                   "source_run": None, "source_image": None, "inversion": "fixed-point", "max_cache_gb": MAX_CACHE_GB,
                   "mask_layer": None, "mask_k": 4}

__all__ = ["transport", "source_capture", "TransportResult", "transport_metrics", "interpolate", "Interpolation",
           "CONTROLS"]
