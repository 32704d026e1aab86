"""The probe's entry points: :func:`transport` (plan, execute, result in one call), :func:`execute` (run a
validated :class:`~.plan.TransportPlan`) and :func:`interpolate` (a transport swept over one setting)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import MassActError, check_k
from ...run import Run
from ...progress import progress_bar
from .execution import RowEdit, TransportEdit, cache_bytes, cache_source, choose, row_edits, run_baseline, run_row, \
    warn_if_identical
from .plan import MAX_CACHE_GB, PLAN_KEYS, TransportPlan, check_alpha, plan_transport
from .results import TransportResult, transport_metrics

if TYPE_CHECKING:
    from ...model import Model


def _blend_images(a, b, w: float):
    import numpy as np
    from PIL import Image

    x = np.asarray(a.convert("RGB"), dtype=np.float64) * (1 - w) + np.asarray(b.convert("RGB"), dtype=np.float64) * w
    return Image.fromarray(np.clip(np.round(x), 0, 255).astype("uint8"))


def _latent_blend(model: "Model", source, target, w: float):
    """Encode both final images with the pipeline's VAE, blend the latents, decode."""
    from ..inversion import decode_image, encode_image

    size = (target.height, target.width)
    lat = encode_image(model, target, size=size) * (1 - w) + encode_image(model, source, size=size) * w
    return decode_image(model, lat, size=size)[0]


def transport(model: "Model", source: str, target: str, *, channels: Any = "source", k: int = 4,
              tokens: Any = None, alpha: float = 1.0, layers: Any = None, steps: Any = None,
              stream: str = "image", mode: str = "cached", branch: str = "both", conditioning: str = "target",
              stat: str = "abs_mean", seed: int = 0, num_steps: int | None = None, source_run: Run | None = None,
              controls: Any = (), blend: float = 0.5, previews: bool | None = None,
              metrics: bool = True, source_image: Any = None, inversion: str = "fixed-point",
              max_cache_gb: float = MAX_CACHE_GB, mask_layer: Any = None, mask_k: int = 4,
              progress: bool = True, **run_kwargs: Any) -> TransportResult:
    """Transport the source prompt's activations into the target prompt's run (see the module docstring).

    ``k`` (default 4) channels per layer: the fewest at which top-k moved the teaching model's image toward
    the source more than random-k, over 32 caption pairs (BENCHMARKS.md, "Defaults by measurement"; the paper
    does not give its k).

    ``tokens``: ``None`` (all image tokens) or a boolean mask over the image tokens (``rows * cols``
    or shaped ``(rows, cols)``, see ``model.token_grid(size)``) or a list of token indices, or
    ``"source"`` / ``"target"``: the foreground of that unedited run, found as in the paper's localization
    (K-means, K=2, on the top-``mask_k`` channels by ``abs_mean`` of ``mask_layer`` at the last denoising
    step, the foreground by localization's default rule, ``border``; ``mask_layer`` defaults to the middle block; the
    mask and its settings are kept in ``settings["tokens"]`` / ``settings["token_mask"]``).
    ``layers``/``steps``/``stream`` are the :class:`~massact_viz.edits.Edit` specs (``steps`` a step,
    list or ``(start, stop)`` window of the ``num_steps`` denoising steps). ``branch`` / ``conditioning``:
    see the module docstring. Other keywords (``size``, ``guidance``, pipeline kwargs) go to
    ``Model.run``. Everything is validated before anything runs.

    ``controls``: any of ``"random-k"``, ``"bottom-k"`` (the same transport with the same number of
    random channels from outside the top-k / lowest-statistic channels), ``"full-swap"`` (the reference:
    every channel of every stream, all tokens, both CFG branches, at the transported layers and steps),
    ``"pixel-blend"`` and ``"latent-blend"`` (the final target and source images blended with weight
    ``blend`` on the source, in pixels or in VAE latents), or ``"all"``. ``previews``: keep per-step
    predicted clean images for the timeline (default: when the family supports them). ``metrics``: score
    every row with :func:`transport_metrics` (``False`` skips it). ``max_cache_gb``: the cached source
    keeps the needed channels of every transported (layer, step, stream, branch) on the host; above this
    it refuses before running (the full-swap control keeps every channel of both streams: a whole FLUX.1 run
    at 1024 px would be about 45 GB, so use ``mode="batched"`` for it).

    Image-conditioned (subject-driven) transport: ``source_image=`` (a path, PIL image or uint8 array)
    replaces the source prompt's run by the reference image's trajectory: the image is VAE-encoded and
    inverted (``inversion="fixed-point"``, the default: inverse-Euler flow inversion with the model's
    conditional velocity under the prompt ``source`` (a caption of the reference, or ``""``), corrected by
    fixed-point iterations; ``"euler"``: plain inverse Euler; ``"noise"``: forward noising with the target's
    own initial noise; see :mod:`massact_viz.probes.inversion`), the model is teacher-forced along it to
    capture the source activations, and those are transported. ``result.source_image`` is then the
    (resized) reference, ``settings["source_image"]`` holds the method and the reconstruction error
    (how far regenerating from the inverted noise lands from the reference: check it before trusting
    the source), and the reconstruction is kept as ``result.controls["reconstruction"]``.
    """
    plan = plan_transport(model, source, target, channels=channels, k=k, tokens=tokens, alpha=alpha, layers=layers,
                          steps=steps, stream=stream, mode=mode, branch=branch, conditioning=conditioning, stat=stat,
                          seed=seed, num_steps=num_steps, source_run=source_run, controls=controls, blend=blend,
                          previews=previews, metrics=metrics, source_image=source_image, inversion=inversion,
                          max_cache_gb=max_cache_gb, mask_layer=mask_layer, mask_k=mask_k, run_kwargs=run_kwargs)
    return execute(model, plan, progress=progress)


def transport_edit(model: "Model", source: str, target: str, *, row: str = "transported", progress: bool = False,
                   **kwargs: Any) -> TransportEdit:
    """The edit :func:`transport` applies to the target's run (cached mode), for a run of your own.

    Plans and runs what the edit needs (the unedited source and target, the channel choice, the cached source
    activations), then returns it: pass it as ``model.run(target, seed=seed, edit=...)`` with the same
    settings, or, inside your own nnsight trace of the target prompt (same seed, steps and size), as
    ``mv.nnsight_capture(tracer, model, edit=...)``, where it composes with your interventions. ``row``:
    ``"transported"`` or a control row (``"random-k"``, ``"bottom-k"``, ``"full-swap"``). Other keywords
    are :func:`transport`'s (``k``, ``layers``, ``steps``, ``seed``, ``num_steps``, ``size``, ...)."""
    if kwargs.get("mode", "cached") != "cached":
        raise MassActError("transport_edit gives the cached-mode edit (a run of the target alone); drop mode=.")
    rows_asked = ("transported", "random-k", "bottom-k", "full-swap")
    if row not in rows_asked:
        raise MassActError(f"row must be one of {rows_asked}, got {row!r}.")
    plan_args = {k: v for k, v in kwargs.items() if k in PLAN_KEYS and k not in ("mode", "controls", "previews",
                                                                                  "metrics")}
    run_kwargs = {k: v for k, v in kwargs.items() if k not in PLAN_KEYS}
    plan = plan_transport(model, source, target, mode="cached", previews=False, metrics=False,
                          controls=() if row == "transported" else (row,), run_kwargs=run_kwargs, **plan_args)
    base = run_baseline(model, plan, progress)
    rows = row_edits(model, plan, base)
    cache = cache_source(model, plan, base, rows, progress)
    return TransportEdit(rows[row], plan.steps, plan.conditioning, model.family.conditioning_kwargs, cache)


def execute(model: "Model", plan: TransportPlan, progress: bool = True) -> TransportResult:
    """Run a validated :class:`TransportPlan` (what :func:`transport` does after planning)."""

    n_rows = 1 + sum(c in ("random-k", "bottom-k", "full-swap") for c in plan.controls)
    n_base = 1 if plan.mode == "batched" else 2 - (plan.source_run is not None)
    n_cache = 1 if plan.mode == "cached" and plan.source_run is None else 0
    bar = progress_bar(total=n_base + n_cache + n_rows, desc="transport (generations)", unit="run",
               disable=not progress, leave=False)
    base = run_baseline(model, plan, progress, bar)
    rows = row_edits(model, plan, base)
    cache = cache_source(model, plan, base, rows, progress) if plan.mode == "cached" else None
    bar.update(n_cache)
    finals, previews = {}, dict(base.previews)
    for name, row in rows.items():
        finals[name], p = run_row(model, plan, row, cache)
        bar.update()
        if p is not None:
            previews[name] = p
    bar.close()
    ctrl = {name: finals[name] for name in plan.controls if name in finals}
    for name in plan.controls:
        if name == "pixel-blend":
            ctrl[name] = [_blend_images(t, base.source_images[0], plan.blend) for t in base.target_images]
        elif name == "latent-blend":
            ctrl[name] = [_latent_blend(model, base.source_images[0], t, plan.blend) for t in base.target_images]
    ctrl = {name: ctrl[name] for name in plan.controls}  # the order asked for
    settings = plan.settings()
    if base.tokens is not None:
        settings["tokens"] = base.tokens.tolist()
    if base.mask_channels is not None:
        settings["token_mask"]["channels"] = base.mask_channels
    if plan.controls:
        settings["control_channels"] = {k: dict(r.channels) for k, r in rows.items()
                                        if k in ("random-k", "bottom-k")}
    settings["source_cache_bytes"] = cache_bytes(cache) if plan.source_run is None else None
    if base.inversion is not None:
        settings["source_image"] = base.inversion.summary()
        if base.inversion.reconstruction is not None:
            ctrl["reconstruction"] = [base.inversion.reconstruction]
    warn_if_identical(base.source_images[0], base.target_images[0])
    result = TransportResult(base.source_images, base.target_images, finals["transported"],
                             dict(rows["transported"].channels), settings, previews, ctrl)
    if plan.metrics:
        result.metrics = transport_metrics(result)
    return result


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

    @property
    def images(self) -> list:
        """Target, the frames, source: what ``plots.image_row(it.images, it.labels)`` shows."""
        return [self.target_image, *self.frames, self.source_image]

    @property
    def labels(self) -> list[str]:
        """A caption per image of :attr:`images` (``"target"``, ``"k=4"`` / ``"alpha=0.5"``, ``"source"``)."""
        return ["target", *[f"{self.over}={v}" for v in self.values], "source"]


_INTERPOLATE_ARGS = ("tokens", "alpha", "layers", "steps", "stream", "mode", "branch", "conditioning", "stat",
                     "seed", "num_steps", "source_run", "source_image", "inversion", "max_cache_gb", "mask_layer",
                     "mask_k")


def interpolate(model: "Model", source: str, target: str, *, over: str = "k", values: Any = None,
                progress: bool = True, **kwargs: Any) -> Interpolation:
    """Prompt interpolation: :func:`transport` swept over ``k`` (channels per layer) or ``alpha`` (soft
    blend), sharing one source and one target run across the frames.

    ``values`` default: ``k`` in 1, 2, 4, ... up to half the width; ``alpha`` in 0, 0.25, ..., 1.
    Other keywords are :func:`transport`'s (``channels`` must be ``"source"``, ``"target"`` or ``"union"``
    when sweeping ``k``). Returns frames from the target toward the source with
    :func:`transport_metrics`' scores of each frame.
    """

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
        values = [check_alpha(v) for v in values]
        k = kwargs.pop("k", 4)
    args = {a: kwargs.pop(a) for a in list(kwargs) if a in _INTERPOLATE_ARGS}
    plan = plan_transport(model, source, target, channels=channels, k=k, previews=False, run_kwargs=kwargs, **args)
    base = run_baseline(model, plan, progress)
    full = row_edits(model, plan, base)["transported"]
    frames_rows = []
    for v in values:
        if over == "k":
            chans = choose(base.pools[channels], v, plan.layers, plan.steps, plan.select_stream, plan.stat)
            frames_rows.append(RowEdit(chans, full.streams, full.branches, full.tokens, full.alpha))
        else:
            frames_rows.append(RowEdit(full.channels, full.streams, full.branches, full.tokens, v))
    cache = cache_source(model, plan, base, {"full": full}, progress) if plan.mode == "cached" else None
    settings = plan.settings()
    if base.inversion is not None:  # scored against the reference image, as transport() does
        settings["source_image"] = base.inversion.summary()
    frames, scores = [], []
    for v, row in progress_bar(list(zip(values, frames_rows)), desc=f"interpolate over {over}", unit="frame",
                               disable=not progress):
        ims, _ = run_row(model, plan, row, cache)
        frames.append(ims[0])
        r = TransportResult(base.source_images, base.target_images, ims, dict(row.channels), settings)
        scores.append(transport_metrics(r)["transported"])
    settings = dict(settings, over=over, values=values)
    return Interpolation(over, values, frames, base.source_images[0], base.target_images[0], settings, scores)

