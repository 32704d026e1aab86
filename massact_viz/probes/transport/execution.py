"""Transport execution: the unedited runs, the channel choice, the cached source and the edited runs.

Order of work for a :class:`~.plan.TransportPlan` (nothing here validates; the plan did):

1. :func:`run_baseline`: the unedited source and target from the same noise (two runs in ``cached``
   mode, one batched run in ``batched`` mode), with statistics of the transported layers and steps.
2. :func:`row_edits`: the transported channels per layer (top-``k`` by ``stat`` over the transported
   steps) and each channel control's, as :class:`RowEdit` values.
3. ``cached`` mode only: :func:`cache_source` runs the source once more and keeps just the channels,
   streams and CFG branches the rows need (plus the prompt inputs for ``conditioning="source"``).
4. :func:`run_row`: the target under :class:`TransportEdit` for each row.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from ...analysis import random_outside, select
from ...capture import BRANCHES, Capture, MassActWarning, Raw, raw_key
from ...edits import token_channel_index
from ...errors import MassActError
from ...run import Run
from ..sources import SourceCache, source_capture
from .plan import TransportPlan

if TYPE_CHECKING:
    from ...hooks import CallState, Site
    from ...model import Model


@dataclass
class Baseline:
    """The unedited source and target runs and what the transport takes from them."""

    source_images: list
    target_images: list
    pools: dict[str, list]  # channel kind -> [(ChannelStats, image row)]
    previews: dict[str, torch.Tensor]  # "source" / "target" -> (steps, H, W, 3) uint8
    tokens: torch.Tensor | None  # image tokens transported (fixed, localized, or None for all)
    mask_channels: list[int] | None = None
    inversion: Any = None
    source_run: Run | None = None  # cached mode: the run holding the source statistics


@dataclass(frozen=True, eq=False)  # identity == and hash: fields hold tensors and mappings
class RowEdit:
    """One edited target run: which channels of which streams, branches and tokens, how strongly."""

    channels: Mapping[str, list[int]]
    streams: tuple[str, ...]
    branches: tuple[str, ...]
    tokens: torch.Tensor | None
    alpha: float


def _first(previews: torch.Tensor | None, image: int = 0) -> torch.Tensor | None:
    """(steps, H, W, 3) uint8 previews of one image of a run, or None."""
    return None if previews is None else previews[:, image].contiguous()


def _mask_raw(plan: TransportPlan) -> list[Raw]:
    tm = plan.token_mask
    return [Raw(tm.layer, tm.step)] if tm is not None else []


def run_baseline(model: "Model", plan: TransportPlan, progress: bool = False, bar: Any = None) -> Baseline:
    """Step 1: the unedited source and target runs (statistics of the transported layers and steps)."""
    tick = bar.update if bar is not None else (lambda n=1: None)
    mask_raw = _mask_raw(plan)
    tm = plan.token_mask
    cap = Capture(layers=list(plan.layers), steps=list(plan.steps), previews=plan.previews,
                  raw=mask_raw if (tm is not None and (tm.run == "target" or plan.mode == "batched")) else [])
    if plan.mode == "batched":
        run = model.run([plan.source, plan.target], seeds=[plan.seed, plan.seed], capture=cap, **plan.run_kw)
        tick()
        base = Baseline(list(run.images[:1]), list(run.images[1:]),
                        {"source": [(run.stats, 0)], "target": [(run.stats, 1)],
                         "union": [(run.stats, 0), (run.stats, 1)]},
                        {"source": _first(run.previews), "target": _first(run.previews, 1)}, plan.tokens)
        if tm is not None:
            base.tokens, base.mask_channels = _foreground(model, plan, run, 0 if tm.run == "source" else 1)
    else:
        src_extra = mask_raw if (tm is not None and tm.run == "source") else []
        inversion = None
        if plan.source_run is not None:
            src = plan.source_run
        elif plan.source_image is not None:
            src, inversion = _image_source(model, plan, progress, dict(raw=False, conditioning=False,
                                                                       extra_raw=src_extra))
            tick()
        else:
            src = source_capture(model, plan.source, layers=list(plan.layers), steps=list(plan.steps),
                                 stream=plan.stream, raw=False, conditioning=False, seed=plan.seed,
                                 num_steps=plan.num_steps, previews=plan.previews, extra_raw=src_extra,
                                 **plan.run_kwargs)
            tick()
        tgt = model.run(plan.target, seed=plan.seed, capture=cap, **plan.run_kw)
        tick()
        source_images = [inversion.reference] if inversion is not None else list(src.images)
        base = Baseline(source_images, list(tgt.images),
                        {"source": [(src.stats, 0)], "target": [(tgt.stats, 0)],
                         "union": [(src.stats, 0), (tgt.stats, 0)]},
                        {"source": _first(src.previews), "target": _first(tgt.previews)}, plan.tokens,
                        inversion=inversion, source_run=src)
        if tm is not None:
            base.tokens, base.mask_channels = _foreground(model, plan, src if tm.run == "source" else tgt, 0)
    base.previews = {k: v for k, v in base.previews.items() if v is not None}
    return base


def _image_source(model: "Model", plan: TransportPlan, progress: bool, capture_kw: dict,
                  inversion: Any = None, stream: str | None = None) -> tuple[Run, Any]:
    from ..inversion import image_source_run, invert

    size, guidance = plan.run_kwargs.get("size"), plan.run_kwargs.get("guidance")
    # the target's other run settings (negative prompt, true_cfg_scale, max_sequence_length, ...) shape the
    # teacher-forced source's branches and text too: pass them on
    capture_kw = {**{k: v for k, v in plan.run_kwargs.items() if k not in ("size", "guidance")}, **capture_kw}
    if inversion is None:
        inversion = invert(model, plan.source_image, plan.source, num_steps=plan.num_steps, size=size,
                           method=plan.inversion, seed=plan.seed, guidance=guidance, progress=progress)
    run = image_source_run(model, plan.source_image, plan.source, layers=list(plan.layers), steps=list(plan.steps),
                           stream=stream or plan.stream, num_steps=plan.num_steps, seed=plan.seed, size=size,
                           method=plan.inversion, guidance=guidance, inversion=inversion, progress=progress,
                           **capture_kw)
    return run, inversion


def _foreground(model: "Model", plan: TransportPlan, run: Run, row: int) -> tuple[torch.Tensor, list[int]]:
    """Token indices of the foreground cluster (K-means, K=2) of ``run``'s image ``row`` at the mask layer
    and the last step, on its top-``k`` channels by ``abs_mean`` there."""
    from ..localization import cluster_tokens

    tm = plan.token_mask
    key = raw_key(tm.layer, tm.step, "image")
    if key not in run.raw:
        raise MassActError(f"the {tm.run} run has no raw slice {key} to find the token mask in; let "
                           f"transport() make the source run (no source_run=) or capture mv.Raw"
                           f"({tm.layer!r}, {tm.step}) in it.")
    x = run.raw[key][row].float()
    chans = torch.topk(x.mean(0).abs(), tm.k).indices.tolist()
    fg = cluster_tokens(x.numpy(), tuple(model.token_grid(plan.run_kwargs.get("size"))), channels=chans,
                        seed=plan.seed).foreground
    return torch.from_numpy(np.flatnonzero(fg.reshape(-1))), chans


# ------------------------------------------------------------------------------------------ channels
def _step_mean(st, img: int, layer: str, steps, stream: str, stat: str) -> torch.Tensor:
    """``stat`` per channel of image ``img`` at ``layer``, averaged over the transported ``steps``."""
    return torch.stack([st.get(stat, layer=layer, stream=stream, step=s, image=img) for s in steps]).mean(0)


def choose(pool: list, k: int, layers, steps, stream: str, stat: str) -> dict[str, list[int]]:
    """Top-k per layer by ``stat`` averaged over the transported ``steps``, from (stats, image) pairs,
    united over the pairs (the first pair's channels first, each highest first)."""
    out = {}
    for name in layers:
        chosen: list[int] = []
        for st, img in pool:
            if list(st.steps) == list(steps):  # the capture holds exactly these steps: analysis.select
                top = select(st, "top", k, layer=name, stat=stat, stream=stream, image=img)
            else:  # e.g. a reused source_run captured more steps: average over the transported ones
                top = torch.topk(_step_mean(st, img, name, steps, stream, stat), k).indices.tolist()
            chosen += [c for c in top if c not in chosen]
        out[name] = chosen
    return out


def transported_channels(plan: TransportPlan, base: Baseline) -> dict[str, list[int]]:
    if isinstance(plan.channels, str):
        return choose(base.pools[plan.channels], plan.k, plan.layers, plan.steps, plan.select_stream, plan.stat)
    return {n: list(v) for n, v in plan.channels.items()}


def control_channels(model: "Model", plan: TransportPlan, base: Baseline, chosen: Mapping[str, list[int]],
                     kind: str) -> dict[str, list[int]]:
    """Channels of a channel control: ``bottom-k`` / ``random-k`` with the transported count per layer
    from the same statistics (random: outside the top-k, seeded by ``seed``); ``full-swap``: all."""
    width = model.width
    if kind == "full-swap":
        return {n: list(range(width)) for n in plan.layers}
    st, img = base.pools["source" if plan.kind == "explicit" else plan.kind][0]
    out = {}
    for n in plan.layers:
        kk = len(chosen[n])
        if kind == "bottom-k":
            v = _step_mean(st, img, n, plan.steps, plan.select_stream, plan.stat)
            out[n] = torch.topk(v, kk, largest=False).indices.tolist()
        else:
            if 2 * kk > width:
                raise MassActError(f"the random-k control draws {kk} channels outside the top-{kk}; "
                                   f"it needs 2k <= {width}. Use a smaller k.")
            out[n] = random_outside(chosen[n], kk, width, seed=plan.seed, layer=n, stream=plan.select_stream)
    return out


def row_edits(model: "Model", plan: TransportPlan, base: Baseline) -> dict[str, RowEdit]:
    """Step 2: the transported row and each channel control's row.

    ``full-swap`` is the reference control: every channel of every stream, all image tokens, both CFG
    branches, replaced (alpha 1) at the transported layers and steps, under the plan's conditioning."""
    chosen = transported_channels(plan, base)
    rows = {"transported": RowEdit(chosen, plan.streams, plan.branches, base.tokens, plan.alpha)}
    for kind in plan.controls:
        if kind == "full-swap":
            rows[kind] = RowEdit(control_channels(model, plan, base, chosen, kind), ("image", "text"), BRANCHES,
                                 None, 1.0)
        elif kind in ("random-k", "bottom-k"):
            rows[kind] = RowEdit(control_channels(model, plan, base, chosen, kind), plan.streams, plan.branches,
                                 base.tokens, plan.alpha)
    return rows


# ------------------------------------------------------------------------------------------ the source cache
def cache_source(model: "Model", plan: TransportPlan, base: Baseline, rows: Mapping[str, RowEdit],
                 progress: bool = False) -> SourceCache:
    """Step 3 (cached mode): the source's activations the rows need, and nothing else.

    A given ``source_run`` is used as it is when it covers them (else a clear error); otherwise the
    source runs once more keeping the union of the rows' channels per layer, their streams and branches,
    and (``conditioning="source"``) the prompt inputs."""
    need: dict[str, set[int]] = {}
    streams: set[str] = set()
    branches: set[str] = set()
    for r in rows.values():
        for n, ch in r.channels.items():
            need.setdefault(n, set()).update(ch)
        streams.update(r.streams)
        branches.update(r.branches)
    if plan.source_run is not None:  # checked against the rows' needs when planned
        return SourceCache(model, plan.source_run)
    stream = "both" if streams == {"image", "text"} else next(iter(streams))
    branch = "both" if "uncond" in branches else "cond"
    chans = {n: (None if len(c) == model.width else sorted(c)) for n, c in need.items()}
    kw = dict(channels=chans, branch=branch, conditioning=plan.conditioning == "source", stats=False,
              previews=False)
    if plan.source_image is not None:
        run, _ = _image_source(model, plan, progress, kw, inversion=base.inversion, stream=stream)
    else:
        run = source_capture(model, plan.source, layers=list(plan.layers), steps=list(plan.steps), stream=stream,
                             seed=plan.seed, num_steps=plan.num_steps, **kw, **plan.run_kwargs)
    return SourceCache(model, run)


# ------------------------------------------------------------------------------------------ the edit
def _blend(x: torch.Tensor, src: torch.Tensor, toks: torch.Tensor | None, chans: list[int], alpha: float) -> None:
    """``x[:, toks, chans] <- (1 - alpha) x + alpha src`` in place; ``src`` is ``(1, tokens, len(chans))``
    (the source's values of those channels, broadcast over x's rows)."""
    idx = token_channel_index(x, chans, toks)
    if idx is None:
        return
    s = src.to(x.device, x.dtype)
    if toks is not None:
        s = s[:, toks.to(s.device)]
    x[idx] = s if alpha == 1.0 else x[idx] * (1.0 - alpha) + s * alpha


class TransportEdit:
    """The edit of one row (a plain ``fn(site)`` for ``Model.run(edit=...)``, with ``on_call`` for the
    prompt inputs): at the transported steps, each kept branch's rows of the target take the source's.

    With a :class:`SourceCache` (cached mode) the source's values come from it; without one (batched
    mode) every branch's rows are ``[source, target]`` and the target row copies the source row."""

    def __init__(self, row: RowEdit, steps, conditioning: str, conditioning_kwargs: tuple[str, ...],
                 cache: SourceCache | None):
        self.row, self.steps, self.cache = row, frozenset(steps), cache
        self.conditioning_kwargs = conditioning_kwargs if conditioning == "source" else ()

    def __call__(self, site: "Site") -> None:
        row = self.row
        chans = row.channels.get(site.block.name)
        if not chans or site.step not in self.steps or row.alpha == 0.0:
            return
        for stream in row.streams:
            x = site.stream(stream)
            if x is None:
                continue
            toks = row.tokens if stream == "image" else None
            for branch in row.branches:
                rows = site.state.rows(branch)
                if rows.stop == rows.start:
                    continue
                if self.cache is not None:
                    src = self.cache.get(site.block.name, site.step, stream, branch, chans)
                    tgt = x[rows]
                    if src.shape[1] != tgt.shape[1]:
                        raise MassActError(f"the source's {stream} stream at {site.block.name} step {site.step} has "
                                           f"{src.shape[1]} tokens, the target's {tgt.shape[1]}; run both at the same "
                                           f"size (text streams: the same padded text length).")
                    _blend(tgt, src[:1], toks, chans, row.alpha)
                elif rows.stop - rows.start == 2:
                    _blend(x[rows.start + 1:rows.start + 2], x[rows.start:rows.start + 1][..., chans], toks, chans,
                           row.alpha)
                else:
                    raise MassActError(f"batched transport expects the rows [source, target] in each branch, got "
                                       f"{rows.stop - rows.start} rows at {site.block.name} step {site.step}.")

    def on_call(self, state: "CallState", kwargs: dict) -> dict | None:
        if not self.conditioning_kwargs or state.step not in self.steps:
            return None
        new = None
        for branch in self.row.branches:
            rows = state.rows(branch)
            if rows.stop == rows.start:
                continue
            for name in self.conditioning_kwargs:
                v = (new or kwargs).get(name)
                if not torch.is_tensor(v) or v.shape[0] != state.batch:
                    continue
                v = v.clone()
                if self.cache is not None:
                    src = self.cache.input(name, branch)
                    if src is None:
                        raise MassActError(f"the source run keeps no {name!r} input of the {branch} branch; make "
                                           f"it with source_capture(..., conditioning=True).")
                    if src.shape[1:] != v.shape[1:]:
                        raise MassActError(f"the source's {name} has shape {tuple(src.shape[1:])}, the target's "
                                           f"{tuple(v.shape[1:])}: the prompts encode to different lengths, so "
                                           f"conditioning='source' cannot carry it. Use conditioning='target'.")
                    v[rows] = src[:1].to(v.device, v.dtype)
                elif rows.stop - rows.start == 2:
                    v[rows.start + 1] = v[rows.start]
                else:
                    raise MassActError(f"batched transport expects the rows [source, target] in each branch, got "
                                       f"{rows.stop - rows.start}.")
                new = dict(kwargs) if new is None else new
                new[name] = v
        return new


def run_row(model: "Model", plan: TransportPlan, row: RowEdit, cache: SourceCache | None):
    """Step 4: (images, previews of the first image or None) of the target under one row's edit."""
    fn = TransportEdit(row, plan.steps, plan.conditioning, model.family.conditioning_kwargs, cache)
    cap = Capture(stats=False, previews=plan.previews)
    if plan.mode == "cached":
        run = model.run(plan.target, seed=plan.seed, capture=cap, edit=fn, **plan.run_kw)
        return list(run.images), _first(run.previews)
    run = model.run([plan.source, plan.target], seeds=[plan.seed, plan.seed], capture=cap, edit=fn, **plan.run_kw)
    return list(run.images[1:]), _first(run.previews, 1)


def cache_bytes(cache: SourceCache | None) -> int:
    """Bytes of every tensor a source cache holds (0 in batched mode)."""
    return 0 if cache is None else int(sum(t.numel() * t.element_size() for t in cache.run.raw.values()))


def warn_if_identical(source_image, target_image) -> bool:
    """Warn (and return True) when the unedited source and target images are identical: every
    'toward the source' score is then undefined (written as null)."""
    same = np.array_equal(np.asarray(source_image.convert("RGB")), np.asarray(target_image.convert("RGB")))
    if same:
        warnings.warn("the source and target images are identical (same prompt and seed?): there is nothing to "
                      "transport, and toward_source / semantic scores are undefined (null).", MassActWarning,
                      stacklevel=3)
    return same


__all__ = ["Baseline", "RowEdit", "TransportEdit", "run_baseline", "row_edits", "cache_source", "run_row",
           "choose", "control_channels", "transported_channels", "cache_bytes"]
