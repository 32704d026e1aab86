"""The transport plan: every setting of a transport, validated against the model before any work.

:func:`plan_transport` checks the arguments of :func:`~massact_viz.probes.transport.transport` (and
:func:`~massact_viz.probes.transport.interpolate`) and returns an immutable :class:`TransportPlan`;
nothing runs until :mod:`.execution` is handed the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

import torch

from ...capture import check_probe_kwargs, previews_available
from ...edits import Edit, describe_layers, describe_steps, resolve_scope
from ...errors import MassActError, check_k
from ...run import Run

if TYPE_CHECKING:
    from ...model import Model

MODES = ("cached", "batched")
CHANNEL_KINDS = ("source", "target", "union")
#: ``branch``: ``"both"`` copies each CFG branch from the source's matching branch (conditional from
#: conditional, unconditional from unconditional); ``"cond"`` edits the conditional branch only.
BRANCHES = ("both", "cond")
#: ``conditioning``: where the prompt inputs outside the blocks' token streams (text embeddings,
#: pooled / AdaLN vector, see ``Family.conditioning_kwargs``) come from at the transported steps.
CONDITIONING = ("target", "source")
#: Runs whose localized foreground can be the transport's token mask (``tokens="source"``).
MASK_FROM = ("source", "target")
#: Default ceiling of the cached source's raw activations (``transport(max_cache_gb=...)``).
MAX_CACHE_GB = 8.0
#: Edited-run controls (the same edit with other channels) and image controls (blends of the finals).
CHANNEL_CONTROLS = ("random-k", "bottom-k", "full-swap")
CONTROLS = CHANNEL_CONTROLS + ("pixel-blend", "latent-blend")
_RESERVED = ("steps", "seed", "seeds", "capture", "edit", "progress", "prompt", "batch_size")


@dataclass(frozen=True)
class TokenMaskSpec:
    """A token mask found by localization in one of the unedited runs (``tokens="source"|"target"``):
    K-means (K=2) foreground at ``layer`` and ``step`` on that run's top-``k`` channels there."""

    run: str
    layer: str
    step: int
    k: int


@dataclass(frozen=True, eq=False)  # identity == and hash: fields hold tensors and mappings
class TransportPlan:
    """Everything a transport does, resolved and validated (see :func:`plan_transport`)."""

    model_source: str
    source: str
    target: str
    channels: str | Mapping[str, tuple[int, ...]]  # a kind from CHANNEL_KINDS, or explicit per layer
    k: int
    layers: tuple[str, ...]  # transported layer names, in execution order
    steps: tuple[int, ...]  # transported denoising steps
    stream: str  # "image", "text" or "both"
    tokens: torch.Tensor | None  # fixed image-token indices (None: all tokens, or a localized mask)
    token_mask: TokenMaskSpec | None
    alpha: float
    mode: str
    branch: str
    conditioning: str
    stat: str
    seed: int
    num_steps: int
    controls: tuple[str, ...]
    blend: float
    previews: bool
    metrics: bool
    source_image: Any  # PIL image of an image-conditioned source, else None
    inversion: str
    max_cache_gb: float
    run_kwargs: Mapping[str, Any] = field(default_factory=dict)
    layers_spec: str = "all"  # the user's layers=/steps= as given, for the settings record
    steps_spec: str = "all"
    source_run: Run | None = field(default=None, compare=False)

    @property
    def streams(self) -> tuple[str, ...]:
        return ("image", "text") if self.stream == "both" else (self.stream,)

    @property
    def branches(self) -> tuple[str, ...]:
        """The CFG branches the transported row edits (``"cond"``, plus ``"uncond"`` for ``branch="both"``);
        a model without CFG has only conditional calls, so both settings agree there."""
        return ("cond", "uncond") if self.branch == "both" else ("cond",)

    @property
    def select_stream(self) -> str:
        """The stream whose statistics choose the channels (the image stream unless only text moves)."""
        return "text" if self.stream == "text" else "image"

    @property
    def kind(self) -> str:
        return self.channels if isinstance(self.channels, str) else "explicit"

    @property
    def run_kw(self) -> dict:
        """Keyword arguments of every ``Model.run`` of this transport."""
        return dict(self.run_kwargs, num_steps=self.num_steps, progress=False)

    def settings(self) -> dict:
        """The plan as plain JSON data (what ``transport.json`` keeps)."""
        out = {"model": self.model_source, "source": self.source, "target": self.target, "mode": self.mode,
               "branch": self.branch, "conditioning": self.conditioning, "channels": self.kind, "k": self.k,
               "stat": self.stat, "alpha": self.alpha, "layers": self.layers_spec, "steps": self.steps_spec,
               "transport_layers": list(self.layers), "transport_steps": list(self.steps), "stream": self.stream,
               "tokens": None if self.tokens is None else self.tokens.tolist(), "seed": self.seed,
               "num_steps": self.num_steps,
               "run_kwargs": {key: repr(v) for key, v in sorted(self.run_kwargs.items())}}
        if self.token_mask is not None:
            tm = self.token_mask
            out["token_mask"] = {"from": tm.run, "layer": tm.layer, "step": tm.step, "k": tm.k}
        if self.controls:
            out["controls"] = list(self.controls)
            out["blend"] = self.blend
        return out


def check_alpha(alpha: Any, what: str = "alpha") -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise MassActError(f"{what} must be a number in [0, 1], got {alpha!r}.")
    return float(alpha)


def check_controls(controls: Any) -> tuple[str, ...]:
    if controls in (None, (), []):
        return ()
    if controls == "all":
        return CONTROLS
    if isinstance(controls, str):
        controls = [controls]
    out: list[str] = []
    for c in controls:
        if c not in CONTROLS:
            raise MassActError(f"unknown control {c!r}; choose from {CONTROLS} (or controls='all').")
        if c not in out:
            out.append(c)
    return tuple(out)


def _check_channels(model: "Model", channels: Any, k: int, layer_names: list[str]) -> Any:
    if isinstance(channels, str):
        if channels not in CHANNEL_KINDS:
            raise MassActError(f"channels must be one of {CHANNEL_KINDS}, a list or {{layer: list}}; got {channels!r}.")
        check_k(k, model.width)
        return channels
    e = Edit("zero", channels, layers=layer_names if not isinstance(channels, Mapping) else None)
    e.check(model)  # channel indices and layer names
    if isinstance(e.channels, dict):
        return {model.layer(n).name: tuple(v) for n, v in e.channels.items()}
    return {n: tuple(e.channels) for n in layer_names}


#: the keywords of :func:`plan_transport` (and :func:`transport`) that are transport settings; the rest go to
#: ``Model.run``
PLAN_KEYS = ("channels", "k", "tokens", "alpha", "layers", "steps", "stream", "mode", "branch", "conditioning",
             "stat", "num_steps", "source_run", "controls", "blend", "previews", "metrics", "source_image",
             "inversion", "max_cache_gb", "mask_layer", "mask_k", "seed")


def plan_transport(model: "Model", source: str, target: str, *, channels: Any = "source", k: int = 4,
                   tokens: Any = None, alpha: float = 1.0, layers: Any = None, steps: Any = None,
                   stream: str = "image", mode: str = "cached", branch: str = "both", conditioning: str = "target",
                   stat: str = "abs_mean", seed: int = 0, num_steps: int | None = None,
                   source_run: Run | None = None, controls: Any = (), blend: float = 0.5,
                   previews: bool | None = None, metrics: bool = True, source_image: Any = None,
                   inversion: str = "fixed-point", max_cache_gb: float = MAX_CACHE_GB, mask_layer: Any = None,
                   mask_k: int = 4, run_kwargs: Mapping[str, Any] | None = None) -> TransportPlan:
    """Validate a transport request (see :func:`~massact_viz.probes.transport.transport`) and resolve it
    against ``model``; raises :class:`MassActError` with what to change, before anything runs."""
    run_kwargs = dict(run_kwargs or {})
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
    if branch not in BRANCHES:
        raise MassActError(f"branch must be one of {BRANCHES} ('both': each CFG branch from the source's matching "
                           f"branch; 'cond': the conditional branch only), got {branch!r}.")
    if conditioning not in CONDITIONING:
        raise MassActError(f"conditioning must be one of {CONDITIONING} (where the prompt inputs outside the "
                           f"blocks come from), got {conditioning!r}.")
    alpha = check_alpha(alpha)
    blend = check_alpha(blend, "blend")
    ctrl = check_controls(controls)
    if "latent-blend" in ctrl and not model.family.decodes_latents:
        raise MassActError(f"latent-blend needs a VAE encoder/decoder path for {model.family.title}, which this "
                           f"version has only for FLUX.1, SD3 and the embedded model; drop it from controls.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MassActError(f"seed must be a non-negative integer, got {seed!r}.")
    check_probe_kwargs(run_kwargs, "transport", _RESERVED,
                       "one prompt per run in cached mode, the pair as one batch in batched mode; use seed= for the "
                       "shared noise, num_steps= for the denoising steps and steps= for the transported step window.")
    if source_run is not None and mode != "cached":
        raise MassActError("source_run= is for mode='cached'.")
    if previews and not previews_available(model):
        raise MassActError(f"per-step previews are not available for {model.family.title} yet (FLUX.1, SD3 and "
                           f"the embedded model have them); use previews=False.")
    if isinstance(max_cache_gb, bool) or not isinstance(max_cache_gb, (int, float)) or max_cache_gb <= 0:
        raise MassActError(f"max_cache_gb must be a positive number, got {max_cache_gb!r}.")
    from ...stats import STATISTICS
    if stat not in STATISTICS:
        raise MassActError(f"stat must be one of {STATISTICS}, got {stat!r}.")
    num_steps = model.resolve_num_steps(num_steps)
    size = run_kwargs.get("size")
    token_mask = None
    if isinstance(tokens, str):
        if tokens not in MASK_FROM:
            raise MassActError(f"tokens must be None, a token mask/list, or one of {MASK_FROM} (the foreground "
                               f"of that run found by clustering, see mask_layer=), got {tokens!r}.")
        check_k(mask_k, model.width)
        layer = model.layer(mask_layer if mask_layer is not None else model.blocks[len(model.blocks) // 2].name).name
        token_mask = TokenMaskSpec(tokens, layer, num_steps - 1, mask_k)
        tokens = None
    elif mask_layer is not None:
        raise MassActError("mask_layer= is for tokens='source' or tokens='target'.")
    scope = resolve_scope(model, layers=layers, steps=steps, stream=stream, tokens=tokens, num_steps=num_steps,
                          size=size)
    names = list(scope.layers)
    chans = _check_channels(model, channels, k, names)
    if isinstance(chans, dict):
        if isinstance(channels, Mapping) and layers is not None:
            extra = sorted(set(chans) - set(names), key=lambda n: model.layer(n).index)
            if extra:
                raise MassActError(f"channels= gives per-layer channels for {extra}, outside layers={layers!r}; with a "
                                   f"{{layer: channels}} dict leave layers= out (the dict's layers are transported).")
            chans = {n: v for n, v in chans.items() if n in names}
        names = sorted(chans, key=lambda n: model.layer(n).index)
        chans = MappingProxyType(chans)
    if "random-k" in ctrl:
        kk = k if isinstance(chans, str) else max(len(v) for v in chans.values())
        if 2 * kk * (2 if chans == "union" else 1) > model.width:
            raise MassActError(f"the random-k control draws as many channels as are transported from outside them; "
                               f"it needs 2k <= {model.width}. Use a smaller k or drop random-k.")
    if (mode == "cached" and model.family.text_mask_kwarg and source_image is None
            and (stream in ("text", "both") or conditioning == "source" or "full-swap" in ctrl)):
        tok = getattr(model.pipe, "tokenizer", None)
        if tok is not None and len(tok(source).input_ids) != len(tok(target).input_ids):
            raise MassActError(f"{model.family.title} encodes prompts to their own lengths, and these two differ, so "
                               f"the text stream and the prompt inputs cannot be copied between separate runs; use "
                               f"mode='batched' (both padded to one length), prompts of equal token length, or "
                               f"stream='image' with conditioning='target' and no full-swap.")
    if source_image is not None:
        from ..inversion import METHODS, _check_model, _load_image
        _check_model(model)
        if inversion not in METHODS:
            raise MassActError(f"inversion must be one of {METHODS}, got {inversion!r}.")
        source_image = _load_image(source_image)  # a bad file fails before any work
    plan = TransportPlan(
        model_source=model.source, source=source, target=target, channels=chans, k=k, layers=tuple(names),
        steps=scope.steps, stream=stream, tokens=scope.tokens, token_mask=token_mask,
        alpha=alpha, mode=mode, branch=branch, conditioning=conditioning, stat=stat, seed=seed, num_steps=num_steps,
        controls=ctrl, blend=blend, previews=previews_available(model) if previews is None else bool(previews),
        metrics=bool(metrics), source_image=source_image, inversion=inversion, max_cache_gb=float(max_cache_gb),
        run_kwargs=MappingProxyType(run_kwargs), layers_spec=describe_layers(layers), steps_spec=describe_steps(steps),
        source_run=source_run)
    if source_run is not None:
        _check_source_run(model, plan, source_run)
    if mode == "cached" and source_run is None:
        gb = cache_gb(model, plan)
        if gb > plan.max_cache_gb:
            what = "the full-swap control keeps every channel; " if "full-swap" in ctrl else ""
            raise MassActError(f"the cached source would hold about {gb:.1f} GB of raw activations ({what}"
                               f"{len(plan.layers)} layers x {len(plan.steps)} steps) > max_cache_gb={max_cache_gb:g}. "
                               f"Use mode='batched' (source and target in one batch, nothing cached), transport "
                               f"fewer layers/steps/channels, or raise max_cache_gb.")
    return plan


def channels_per_layer(model: "Model", plan: TransportPlan) -> int:
    """Upper bound of the channels per (layer, stream) the cached source keeps: the transported ones
    plus each channel control's (every channel when the full-swap control is asked for)."""
    if "full-swap" in plan.controls:
        return model.width
    if isinstance(plan.channels, str):
        per = plan.k * (2 if plan.channels == "union" else 1)
    else:
        per = max(len(v) for v in plan.channels.values())
    per *= 1 + sum(c in plan.controls for c in ("random-k", "bottom-k"))
    return min(per, model.width)


def uses_cfg(model: "Model", run_kwargs: Mapping[str, Any]) -> bool:
    """Whether a run with these kwargs makes unconditional calls (classifier-free guidance): batched-CFG
    families with guidance > 1, separate-call families with ``true_cfg_scale > 1`` and a negative prompt
    (FLUX.1, Qwen-Image) or ``guidance_scale > 1`` (FLUX.2). An estimate for memory planning only; the hooks
    read the real layout at run time."""
    kw = {**model.family.call_defaults, **model.defaults, **run_kwargs}
    if run_kwargs.get("guidance") is not None:
        kw[model.guidance_kwarg] = run_kwargs["guidance"]
    return model.family.uses_cfg(kw, model.pipe)


def text_tokens(model: "Model", run_kwargs: Mapping[str, Any]) -> int:
    """The text-stream length a run will have, as far as it is known before running (the pipeline's
    ``max_sequence_length`` when set, else the tokenizer's maximum; 512 when neither says)."""
    kw = {**model.defaults, **run_kwargs}
    if kw.get("max_sequence_length"):
        return int(kw["max_sequence_length"])
    tok = getattr(model.pipe, "tokenizer_2", None) or getattr(model.pipe, "tokenizer", None)
    n = getattr(tok, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < 100_000 else 512


def cache_gb(model: "Model", plan: TransportPlan) -> float:
    """Host memory (GB) of the cached source: kept channels x tokens x transported (layer, step, stream)
    x CFG branches, in the model's dtype. The image stream uses the run's token grid, the text stream its
    expected length (:func:`text_tokens`); a second branch counts only when the run uses CFG."""
    rows, cols = model.token_grid(plan.run_kwargs.get("size"))
    itemsize = torch.finfo(model.dtype).bits // 8
    full_swap = "full-swap" in plan.controls
    n_text = text_tokens(model, plan.run_kwargs)
    branches = 2 if ((plan.branch == "both" or full_swap) and uses_cfg(model, plan.run_kwargs)) else 1
    total = 0
    for n in plan.layers:
        for s in model.layer(n).streams:
            if s == "image" and (full_swap or "image" in plan.streams):
                total += rows * cols * channels_per_layer(model, plan)
            elif s == "text" and (full_swap or "text" in plan.streams):
                total += n_text * channels_per_layer(model, plan)
    return total * itemsize * len(plan.steps) * branches / 1e9


def _check_source_run(model: "Model", plan: TransportPlan, run: Run) -> None:
    from ..sources import SourceCache

    meta = run.meta
    if meta.get("prompts") != [plan.source] or meta.get("num_steps") != plan.num_steps or \
            (meta.get("seeds") or [None])[0] != plan.seed:
        raise MassActError(f"source_run was made for prompts {meta.get('prompts')}, {meta.get('num_steps')} steps, "
                           f"seeds {meta.get('seeds')}; transport() needs [{plan.source!r}], {plan.num_steps}, "
                           f"seed {plan.seed}.")
    if plan.channels in ("source", "union") and (run.stats is None or not set(plan.layers) <= set(run.stats.layers)):
        raise MassActError("source_run has no statistics of the transported layers to choose channels from; "
                           "give channels= explicitly or make it with source_capture().")
    # what the rows will read: every channel of the transported slices (the channel choice is not known yet),
    # each branch the rows edit when the run used CFG, the prompt inputs for conditioning="source"
    cache = SourceCache(model, run)
    full = "full-swap" in plan.controls
    streams = ("image", "text") if full else plan.streams
    cfg = uses_cfg(model, plan.run_kwargs)
    branches = ("cond", "uncond") if (cfg and (plan.branch == "both" or full)) else ("cond",)
    missing = cache.missing(plan.layers, plan.steps, streams, branches, None if plan.kind != "explicit" else
                            {n: list(v) for n, v in plan.channels.items()})
    if missing:
        raise MassActError(f"source_run lacks {missing[:3]}{'...' if len(missing) > 3 else ''}; make it with "
                           f"source_capture(model, source, layers=..., steps=..., stream=..., branch='both') keeping "
                           f"every channel, or let transport() run the source itself.")
    if plan.conditioning == "source":
        need = [n for n in model.family.conditioning_kwargs if cache.input(n, "cond") is None]
        if need:
            raise MassActError(f"source_run keeps no prompt inputs {need} for conditioning='source'; make it with "
                               f"source_capture(..., conditioning=True).")
