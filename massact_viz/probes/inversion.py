"""Image-conditioned sources: encode a reference image, invert it to a trajectory, capture its activations.

The paper's image-conditioned transport (``../shared/research/paper.md`` 1.3 use case B, 3.F) needs a
*source trajectory* that carries a reference image instead of a source prompt. This module makes one:

* :func:`encode_image` turns an image (PIL, path or uint8 array) into the latents the pipeline's own
  ``latents=`` argument takes: VAE encode (the distribution's mode), ``(z - shift_factor) * scaling_factor``,
  then FLUX.1's 2x2 packing into tokens (``FluxPipeline._pack_latents``); SD3 keeps the unpacked
  ``(1, C, h, w)`` latent (its transformer patchifies). The embedded ``shapes`` model is a FluxPipeline
  whose VAE is an exact pixel-unshuffle, so its latents are the image's pixels in [-1, 1], packed.
* :func:`invert` builds the trajectory ``x_0 .. x_T`` that a denoising run would pass through (``x_s``
  is what the transformer sees at step ``s``, ``x_T`` the clean latent), with one of three methods:

  - ``"euler"``, **inverse Euler flow inversion** for rectified-flow (``FlowMatchEulerDiscreteScheduler``)
    models: start from the clean latent at sigma 0 and walk the run's own sigmas upward,
    ``x(sigma_next) = x(sigma) + (sigma_next - sigma) * v(x(sigma), sigma)``, with the transformer's own
    velocity ``v`` (the exact mirror of the pipeline's Euler step, evaluated at the known point). The
    velocity is the **conditional** one by default (``guidance=None`` turns classifier-free guidance off:
    ``true_cfg_scale`` / ``guidance_scale`` = 1 where they mean CFG); FLUX.1-dev's *embedded* guidance
    stays at the pipeline default, as in a normal run. ``guidance=g`` runs the inversion, the
    reconstruction and the source run with ``Model.run(guidance=g)`` (CFG with scale ``g`` where the
    family has CFG, the guidance embedding otherwise).
  - ``"fixed-point"``, **fixed-point corrected inverse Euler**: each step starts from the ``"euler"``
    guess and then solves the implicit equation ``x_s = x_{s+1} - (sigma_{s+1} - sigma_s) v(x_s, sigma_s)``
    (the exact inverse of the pipeline's own Euler step ``x_{s+1} = x_s + (sigma_{s+1} - sigma_s)
    v(x_s, sigma_s)``) by ``iterations`` fixed-point iterations (``1 + iterations`` transformer calls per
    step). Measured on the trained ``shapes`` model (the weights shipped at step 66168), own output, 20 steps,
    no CFG: mean |regenerated - reference| = 0.02 uint8 units (PSNR 62.7 dB) with 5 iterations, against
    9.2 for ``"euler"`` and 30.4 for a generation from another seed (at step 29771: 0.18, 19.0 and 27.2; at
    step 22490: 1.85, 10.2 and 25.1: plain inverse Euler drifts by an amount that changes with the weights,
    the fixed point much less, when the step is small enough for the iteration to contract; with the
    step-5130 weights: 0.05 vs 25.9, and 9.8 at 4 steps).
  - ``"noise"``, **forward noising**: ``x_s = (1 - sigma_s) x_clean + sigma_s * eps`` with ``eps`` the
    initial noise that ``Model.run(seed=seed)`` draws (taken from the pipeline's own ``prepare_latents``
    through a probe call), so the source shares the target's noise exactly (``x_0 == eps`` when
    ``sigma_0 == 1``).

  The sigmas and timesteps are the ones the pipeline itself sets for that run (read from its scheduler
  during a probe ``Model.run`` call, so FLUX's resolution-dependent shift ``mu = calculate_shift(...)``
  and SD3's static shift are the pipeline's, not re-derived). The velocity calls replay the keyword
  arguments the pipeline passed to its transformer at step 0 (text embeddings, pooled embeddings,
  position ids, guidance embedding), with only ``hidden_states`` and ``timestep`` changed; the replay
  is checked against the pipeline's own output at step 0 before the inversion runs.

  ``Inversion.reconstruction`` regenerates an image from ``x_0`` with the same prompt, steps and
  guidance through ``Model.run(latents=x_0)``, and ``Inversion.error`` says how close it comes back to
  the reference (MSE, PSNR, mean |diff| in uint8 units), how good the VAE alone is (``vae_*``, the
  ceiling), and the per-step latent drift of the regenerated trajectory from the inverted one. Use it
  to judge whether a source is trustworthy.
* :func:`image_source_run` teacher-forces the trajectory through a capture run (``latents=x_0`` and a
  ``callback_on_step_end`` that sets the latents to ``x_{s+1}`` after each step, so the transformer
  sees ``x_s`` at step ``s`` and the hooks' step counting is unchanged) and returns a :class:`Run`
  shaped like :func:`~massact_viz.probes.sources.source_capture`'s output (statistics and raw slices
  of the chosen layers/steps, ``meta`` prompts ``[prompt]``, ``steps``, ``seeds [seed]``), usable as
  ``transport(..., source_run=...)``. ``meta["source_image"]`` records the method, the reference
  image's SHA-256, the sigmas and the reconstruction error.

Supported: FLUX.1 (including the embedded ``shapes`` model) and Stable Diffusion 3 / 3.5 with a
flow-matching Euler scheduler. Qwen-Image, FLUX.2, SANA and PixArt raise :class:`MassActError`.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..capture import Capture
from ..edits import resolve_scope
from ..errors import MassActError
from ..families import families
from ..hooks import record_calls
from ..run import Run
from ..specs import check_size
from ..progress import progress_bar

if TYPE_CHECKING:
    from ..model import Model

METHODS = ("euler", "fixed-point", "noise")
#: fixed-point iterations per step of method="fixed-point" unless iterations= says otherwise
FIXED_POINT_ITERATIONS = 5


@dataclass
class Inversion:
    """A reference image turned into a denoising trajectory (see the module docstring).

    ``latents[s]`` (``s = 0 .. T-1``) is the latent the transformer sees at denoising step ``s``;
    ``latents[T]`` is the clean latent of the reference (:func:`encode_image`). They are float32 on
    the CPU, in the pipeline's ``latents=`` layout, stacked as ``(T + 1, *latent_shape)``.
    ``sigmas[s]`` is the noise level of ``latents[s]`` (``sigmas[T] == 0``), ``timesteps[s]`` the
    scheduler timestep of step ``s`` (``T`` of them).
    """

    method: str
    iterations: int  # fixed-point iterations per step (0 unless method == "fixed-point")
    prompt: str
    num_steps: int
    seed: int
    size: tuple[int, int]
    guidance: float | None
    latents: torch.Tensor
    sigmas: list[float]
    timesteps: list[float]
    reference: Any  # PIL image: the resized / center-cropped reference the model saw
    reconstruction: Any = None  # PIL image regenerated from latents[0]; None with regenerate=False
    error: dict[str, Any] = field(default_factory=dict)
    image_sha256: str = ""

    @property
    def noise(self) -> torch.Tensor:
        """``latents[0]``: the starting latent a regeneration (or a teacher-forced run) begins from."""
        return self.latents[0]

    @property
    def clean(self) -> torch.Tensor:
        """``latents[-1]``: the encoded reference."""
        return self.latents[-1]

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (what :func:`image_source_run` writes to ``meta["source_image"]``); an
        infinite PSNR (identical images) is written as None."""
        return {"method": self.method, "iterations": self.iterations, "prompt": self.prompt,
                "num_steps": self.num_steps, "seed": self.seed,
                "size": list(self.size), "guidance": self.guidance, "image_sha256": self.image_sha256,
                "sigmas": [float(s) for s in self.sigmas], "timesteps": [float(t) for t in self.timesteps],
                "error": {k: _finite(v) for k, v in self.error.items()}}


def _finite(v: Any) -> Any:
    """JSON-safe: a non-finite float (the PSNR of identical images) becomes None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return [_finite(x) for x in v] if isinstance(v, list) else v


# ------------------------------------------------------------------------------------------ images
def _load_image(image: Any):
    """A PIL RGB image from a PIL image, a path or a uint8 array, or a clear error."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        im = image
    elif isinstance(image, (str, os.PathLike)):
        p = Path(image)
        if not str(image).strip():
            raise MassActError("the image path is empty; pass a path to an image file, a PIL image or a uint8 array.")
        if not p.is_file():
            raise MassActError(f"no image file at {str(p)!r}; pass an existing image path, a PIL image or a "
                               f"uint8 array.")
        try:
            with Image.open(p) as f:
                f.load()
                im = f.copy()
        except (OSError, UnidentifiedImageError) as e:
            raise MassActError(f"cannot read {str(p)!r} as an image ({e}); pass a PNG/JPEG file, a PIL image "
                               f"or a uint8 array.") from e
    elif isinstance(image, np.ndarray):
        a = image
        if a.dtype != np.uint8:
            raise MassActError(f"an image array must be uint8 (0..255), got {a.dtype}; convert it with "
                               f"(x * 255).round().astype('uint8') for floats in [0, 1].")
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or a.shape[0] == 0 or a.shape[1] == 0:
            raise MassActError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4) with H, W > 0, "
                               f"got shape {a.shape}.")
        im = Image.fromarray(np.ascontiguousarray(a))
    else:
        raise MassActError(f"image must be a PIL image, a path or a uint8 numpy array, got {type(image).__name__}.")
    if im.width == 0 or im.height == 0:
        raise MassActError("the image is empty (zero width or height).")
    return im.convert("RGB")


def _fit(im, height: int, width: int):
    """Center-crop ``im`` to the aspect ratio ``height:width``, then resize to exactly that size."""
    from PIL import Image

    w0, h0 = im.size
    if (w0, h0) == (width, height):
        return im
    if w0 * height > h0 * width:  # too wide: crop the sides
        cw = max(1, round(h0 * width / height))
        box = ((w0 - cw) // 2, 0, (w0 - cw) // 2 + cw, h0)
    else:
        ch = max(1, round(w0 * height / width))
        box = (0, (h0 - ch) // 2, w0, (h0 - ch) // 2 + ch)
    return im.crop(box).resize((width, height), Image.Resampling.LANCZOS)


def _sha256(im) -> str:
    a = np.asarray(im, dtype=np.uint8)
    return hashlib.sha256(f"{a.shape[0]}x{a.shape[1]}x3:".encode() + a.tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------ checks
def _check_model(model: "Model") -> None:
    fam, pipe = model.family, model.pipe
    supported = "; ".join(f.title for f in families().values() if f.decodes_latents)
    if not fam.decodes_latents:
        raise MassActError(f"image inversion is not available for {fam.title} models yet; it supports {supported}.")
    if type(pipe.scheduler).__name__ != "FlowMatchEulerDiscreteScheduler":
        raise MassActError(f"image inversion needs a rectified-flow FlowMatchEulerDiscreteScheduler; this pipeline has "
                           f"{type(pipe.scheduler).__name__}. Supported: {supported} with their default schedulers.")
    fam.check_latents(pipe)


def _resolve_size(model: "Model", size: Any) -> tuple[int, int]:
    h, w = check_size(size) or model.family.default_size(model.pipe)
    model.family.token_grid(model.pipe, h, w)  # a clear error for sizes that do not fit the token grid
    return h, w


def _check_common(model: "Model", prompt: Any, num_steps: Any, seed: Any, size: Any, method: Any,
                  guidance: Any, iterations: Any = None) -> tuple[int, tuple[int, int]]:
    _check_model(model)
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise MassActError(f"iterations must be a positive integer (fixed-point iterations per step), "
                           f"got {iterations!r}.")
    if iterations is not None and method != "fixed-point":
        raise MassActError(f"iterations= is for method='fixed-point', not {method!r}.")
    if not isinstance(prompt, str):
        raise MassActError(f"prompt must be a string, got {type(prompt).__name__}.")
    if method not in METHODS:
        raise MassActError(f"method must be one of {METHODS} ('euler': inverse Euler flow inversion, "
                           f"'fixed-point': inverse Euler corrected to the exact inverse of the Euler step, "
                           f"'noise': forward noising with the seed's noise), got {method!r}.")
    steps = model.resolve_num_steps(num_steps)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MassActError(f"num_steps must be a positive integer (denoising steps), got {num_steps!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MassActError(f"seed must be a non-negative integer, got {seed!r}.")
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float))
                                 or not math.isfinite(guidance)):
        raise MassActError(f"guidance must be a number or None, got {guidance!r}.")
    return steps, _resolve_size(model, size)


def _prompt_kwargs(model: "Model", prompt: str) -> dict[str, Any]:
    """Extra Model.run kwargs for ``prompt``: an empty prompt (the null caption) needs ``allow_empty_prompt``."""
    return {} if prompt.strip() else {"allow_empty_prompt": True}


def _cfg_kwarg_is_cfg(model: "Model") -> bool:
    """Whether ``Model.run(guidance=...)`` sets classifier-free guidance (else FLUX's embedded guidance)."""
    return model.guidance_kwarg == "true_cfg_scale" or model.family.cfg == "batched"


def _run_guidance(model: "Model", guidance: float | None) -> float | None:
    """The ``guidance=`` every Model.run of an inversion uses: CFG off unless asked for."""
    if guidance is not None:
        return float(guidance)
    return 1.0 if _cfg_kwarg_is_cfg(model) else None


# ------------------------------------------------------------------------------------------ encode / decode
@torch.no_grad()
def _encode(model: "Model", im) -> torch.Tensor:
    """Clean latent (1, ...) float32 of a PIL image already at the target size."""
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    return model.family.encode_latents(model.pipe, x).to(model.pipe._execution_device)


def encode_image(model: "Model", image: Any, size: Any = None) -> torch.Tensor:
    """Latents of ``image`` in the layout ``model.pipe(latents=...)`` takes (float32, on the model's device).

    ``image`` is a PIL image, a path or a uint8 array (``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``); it is
    center-cropped to the aspect of ``size`` (``(height, width)`` or one int; default the model's own
    size) and resized to it. FLUX.1 / ``shapes``: ``(1, tokens, 4 C)`` packed 2x2 latents; SD3:
    ``(1, C, h, w)``. Both are ``(vae(x).mode() - shift_factor) * scaling_factor``.
    """
    _check_model(model)
    h, w = _resolve_size(model, size)
    return _encode(model, _fit(_load_image(image), h, w))


@torch.no_grad()
def decode_image(model: "Model", latents: torch.Tensor, size: Any = None):
    """PIL images of latents in the ``latents=`` layout (the inverse of :func:`encode_image`), through the
    family's decoder (the one the per-step previews use)."""
    from ..run import pil_images

    _check_model(model)
    h, w = _resolve_size(model, size)
    z = latents.to(model.pipe._execution_device, torch.float32)
    if z.dim() == model.family.latent_ndim - 1:
        z = z[None]
    return pil_images(model.family.decode_latents(model.pipe, z, h, w))


# ------------------------------------------------------------------------------------------ the probe
class _Stop(Exception):
    pass


@dataclass
class _Probe:
    """What one aborted ``Model.run`` says about the pipeline: its noise, sigmas and transformer calls."""

    eps: torch.Tensor  # (1, ...) float32: the initial noise of Model.run(seed=seed)
    sigmas: torch.Tensor  # (T + 1,) float32 on CPU
    timesteps: torch.Tensor  # (T,) scheduler timesteps, on the scheduler's device
    calls: list[dict]  # transformer kwargs of step 0 (cond first for separate CFG)
    outputs: list[torch.Tensor]  # the transformer outputs of those calls
    layout: str  # "none", "batched" or "separate"
    scale: float | None  # CFG scale where layout != "none"
    ts_dtype: torch.dtype
    ts_div: float
    x1: torch.Tensor  # latents after step 0 (checks the CFG combination)


@torch.no_grad()
def _probe(model: "Model", prompt: str, steps: int, seed: int, size: tuple[int, int], g_run: float | None) -> _Probe:
    info: dict[str, Any] = {}

    def stop(pipe, i, t, kw):
        sched = pipe.scheduler
        info.update(sigmas=sched.sigmas.detach().float().cpu().clone(), timesteps=sched.timesteps.detach().clone(),
                    x1=kw["latents"].detach().float().clone())
        raise _Stop

    with record_calls(model.pipe.transformer) as (calls, outputs):
        try:
            model.run(prompt, num_steps=steps, seed=seed, size=size, guidance=g_run, capture=Capture.nothing(),
                      progress=False, callback_on_step_end=stop, **_prompt_kwargs(model, prompt))
            raise MassActError("the pipeline never called callback_on_step_end; image inversion needs a diffusers "
                               "pipeline that supports it (FluxPipeline, StableDiffusion3Pipeline).")
        except _Stop:
            pass
    sig, ts = info["sigmas"], info["timesteps"]
    if len(sig) != steps + 1 or len(ts) != steps or float(sig[-1]) != 0.0 or not bool((sig[1:] < sig[:-1]).all()):
        raise MassActError(f"the scheduler's sigmas {sig.tolist()} are not {steps} decreasing noise levels ending at "
                           f"0; image inversion needs a plain flow-matching Euler schedule.")
    b = [int(c["hidden_states"].shape[0]) for c in calls]
    if b == [1]:
        layout = "none"
    elif b == [2]:
        layout = "batched"
    elif b == [1, 1]:
        layout = "separate"
    else:
        raise MassActError(f"unexpected transformer calls at step 0 (batch sizes {b}); image inversion supports one "
                           f"conditional call, batched CFG or a conditional + unconditional call per step.")
    scale = None if layout == "none" else float(g_run if g_run is not None else float("nan"))
    if scale is not None and math.isnan(scale):
        raise MassActError("the pipeline runs classifier-free guidance with a scale this module does not know; "
                           "pass guidance= explicitly.")
    t_kw = calls[0]["timestep"]
    ratio = float(ts[0]) / float(t_kw.reshape(-1)[0]) if float(t_kw.reshape(-1)[0]) else 1.0
    div = 1000.0 if abs(ratio - 1000.0) < 1.0 else 1.0
    if div == 1.0 and abs(ratio - 1.0) > 1e-2:
        raise MassActError(f"cannot map scheduler timesteps to the transformer's timestep input (ratio {ratio}).")
    eps = calls[0]["hidden_states"][:1].detach().float().clone()
    return _Probe(eps, sig, ts, calls, outputs, layout, scale, t_kw.dtype, div, info["x1"])


class _Velocity:
    """``v(x, t)``: the pipeline's (guided) transformer prediction at latent ``x`` and scheduler timestep ``t``,
    by replaying its step-0 transformer calls with new ``hidden_states`` and ``timestep``."""

    def __init__(self, model: "Model", probe: _Probe):
        self.tr, self.p = model.pipe.transformer, probe
        self.dtype = probe.calls[0]["hidden_states"].dtype

    def _call(self, kw: dict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = dict(kw)
        hs = x.to(kw["hidden_states"].device, self.dtype)
        if self.p.layout == "batched":
            hs = torch.cat([hs, hs])
        t = t.to(kw["timestep"].device).reshape(()).expand(hs.shape[0]).to(self.p.ts_dtype)
        k["hidden_states"], k["timestep"] = hs, (t / self.p.ts_div if self.p.ts_div != 1.0 else t)
        k["return_dict"] = False
        return self.tr(**k)[0]

    @torch.no_grad()
    def raw(self, x: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        return [self._call(kw, x, t) for kw in self.p.calls]

    def combine(self, outs: list[torch.Tensor]) -> torch.Tensor:
        p = self.p
        if p.layout == "none":
            return outs[0].float()
        if p.layout == "batched":  # rows [uncond; cond]
            u, c = outs[0].float().chunk(2)
        else:  # separate: call 0 conditional, call 1 unconditional
            c, u = outs[0].float(), outs[1].float()
        return u + p.scale * (c - u)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.combine(self.raw(x, t))

    def check(self) -> None:
        """The replay at step 0 must equal what the pipeline computed there."""
        p = self.p
        outs = self.raw(p.eps, p.timesteps[0])
        for i, (a, b) in enumerate(zip(outs, p.outputs)):
            tol = (1e-4 if self.dtype == torch.float32 else 2e-2) * (1.0 + float(b.float().abs().max()))
            err = float((a.float() - b.float()).abs().max())
            if not err <= tol:
                raise MassActError(f"replaying the pipeline's transformer call {i} at step 0 differs from the pipeline "
                                   f"(max |diff| {err:.3g} > {tol:.3g}); image inversion does not understand this "
                                   f"pipeline's conditioning.")
        if self.dtype == torch.float32:  # the guided combination must give the pipeline's first Euler step
            x1 = p.eps + (p.sigmas[1] - p.sigmas[0]).item() * self.combine(p.outputs)
            err = float((x1 - p.x1.to(x1.device)).abs().max())
            if not err <= 1e-3 * (1.0 + float(p.x1.abs().max())):
                raise MassActError(f"the guided velocity does not reproduce the pipeline's first step (max |diff| "
                                   f"{err:.3g}); image inversion does not understand this pipeline's guidance.")


# ------------------------------------------------------------------------------------------ invert
def _image_error(a, b) -> dict[str, float]:
    """How far image ``a`` is from ``b``: :mod:`massact_viz.metrics`' mse and psnr, and the mean |difference|
    in uint8 levels."""
    from ..metrics import mse, psnr, to_array
    return {"mse": mse(a, b), "psnr": psnr(a, b),
            "mean_abs_uint8": float(np.abs(to_array(a.convert("RGB")) - to_array(b.convert("RGB"))).mean() * 255.0)}


def invert(model: "Model", image: Any, prompt: str = "", *, num_steps: int | None = None, size: Any = None,
           method: str = "fixed-point", seed: int = 0, guidance: float | None = None, iterations: int | None = None,
           regenerate: bool = True, progress: bool = True) -> Inversion:
    """Invert ``image`` into the trajectory a ``num_steps`` run with ``prompt`` and ``seed`` would follow.

    Methods (see the module docstring): ``"fixed-point"`` (default, as in ``transport(inversion=...)``:
    inverse Euler corrected by ``iterations`` fixed-point iterations per step, default
    :data:`FIXED_POINT_ITERATIONS`, into the exact inverse of the Euler step; the closest reconstruction
    measured), ``"euler"`` (plain inverse Euler flow inversion with the model's own conditional
    velocity: one transformer call per step, and it drifts) and
    ``"noise"`` (forward noising ``x_s = (1 - sigma_s) x + sigma_s eps`` with
    the seed's own initial noise ``eps``). ``guidance=None`` (default) runs without classifier-free
    guidance (FLUX.1-dev keeps its default embedded guidance); a number is passed as
    ``Model.run(guidance=...)`` to the probe, the inversion's velocity and the regeneration.
    ``num_steps`` defaults to the model's recommended steps, ``size`` to its default size.

    ``regenerate=True`` regenerates ``reconstruction`` from ``latents[0]`` and fills ``error``:
    ``mse``/``psnr``/``mean_abs_uint8`` of the reconstruction vs the (resized) reference, ``vae_*`` the
    same for the VAE round trip alone (the best any inversion can do), ``inv_*`` the reconstruction vs
    that VAE round trip (the inversion's own error, without the VAE's), ``latent_drift[s]`` the relative
    distance ``|x'_s - x_s| / |x_s|`` between the regenerated and the inverted latent at each step
    ``s = 0 .. T`` and ``noise_std`` the standard deviation of ``latents[0]`` (about 1 for Gaussian noise).
    """

    steps, (h, w) = _check_common(model, prompt, num_steps, seed, size, method, guidance, iterations)
    iters = FIXED_POINT_ITERATIONS if iterations is None else iterations
    if not isinstance(regenerate, bool):
        raise MassActError(f"regenerate must be True or False, got {regenerate!r}.")
    ref = _fit(_load_image(image), h, w)

    g_run = _run_guidance(model, guidance)
    x0 = _encode(model, ref)
    probe = _probe(model, prompt, steps, seed, (h, w), g_run)
    if tuple(x0.shape) != tuple(probe.eps.shape):
        raise MassActError(f"the encoded image has latent shape {tuple(x0.shape)} but the pipeline draws "
                           f"{tuple(probe.eps.shape)} at {h}x{w}; this pipeline's latent layout is not supported.")
    sig = probe.sigmas.tolist()
    lat: list[torch.Tensor | None] = [None] * (steps + 1)
    lat[steps] = x0
    if method == "noise":
        eps = probe.eps.to(x0.device)
        for s in range(steps):
            lat[s] = (1.0 - sig[s]) * x0 + sig[s] * eps
    else:
        vel = _Velocity(model, probe)
        vel.check()
        x = x0
        zero = torch.zeros((), dtype=probe.timesteps.dtype, device=probe.timesteps.device)
        for s in progress_bar(range(steps - 1, -1, -1), desc="inverting", unit="step", disable=not progress, leave=False):
            t = probe.timesteps[s + 1] if s + 1 < steps else zero  # the noise level x sits at
            d = sig[s] - sig[s + 1]
            y = x + d * vel(x, t)
            for _ in range(iters if method == "fixed-point" else 0):
                y = x + d * vel(y, probe.timesteps[s])  # y = x_s solving x_{s+1} = y + (sigma_{s+1} - sigma_s) v(y)
            x = lat[s] = y
    latents = torch.stack([v.detach().float().cpu() for v in lat])
    inv = Inversion(method=method, iterations=iters if method == "fixed-point" else 0, prompt=prompt,
                    num_steps=steps, seed=seed, size=(h, w), guidance=guidance,
                    latents=latents, sigmas=[float(v) for v in sig], timesteps=[float(t) for t in probe.timesteps],
                    reference=ref, image_sha256=_sha256(ref))
    if regenerate:
        _regenerate(model, inv, g_run, progress)
    return inv


def _regenerate(model: "Model", inv: Inversion, g_run: float | None, progress: bool) -> None:

    seen: list[torch.Tensor] = [inv.latents[0]]
    bar = progress_bar(total=inv.num_steps, desc="regenerating", unit="step", disable=not progress, leave=False)

    def record(pipe, i, t, kw):
        seen.append(kw["latents"].detach().float().cpu().clone())
        bar.update()
        return {}

    try:
        out = model.run(inv.prompt, num_steps=inv.num_steps, seed=inv.seed, size=inv.size, guidance=g_run,
                        capture=Capture.nothing(), progress=False, latents=inv.latents[0].to(model.dtype),
                        callback_on_step_end=record, **_prompt_kwargs(model, inv.prompt))
    finally:
        bar.close()
    inv.reconstruction = out.images[0]
    vae_image = decode_image(model, inv.clean, inv.size)[0]
    err = _image_error(inv.reconstruction, inv.reference)
    err.update({f"vae_{k}": v for k, v in _image_error(vae_image, inv.reference).items()})
    err.update({f"inv_{k}": v for k, v in _image_error(inv.reconstruction, vae_image).items()})
    drift = [float((a - b).norm() / b.norm().clamp_min(1e-12)) for a, b in zip(seen, inv.latents)]
    err.update(latent_drift=drift, final_latent_error=drift[-1], noise_std=float(inv.latents[0].std()))
    inv.error = err


# ------------------------------------------------------------------------------------------ source runs
def image_source_run(model: "Model", image: Any, prompt: str = "", *, layers: Any = None, steps: Any = None,
                     stream: str = "image", num_steps: int | None = None, seed: int = 0, size: Any = None,
                     method: str = "fixed-point", guidance: float | None = None, iterations: int | None = None,
                     inversion: Inversion | None = None, extra_raw: Any = (), progress: bool = True,
                     **capture_kw: Any) -> Run:
    """A cached transport source from a reference image: the :func:`invert` trajectory, teacher-forced.

    Returns a :class:`Run` shaped like :func:`~massact_viz.probes.sources.source_capture`'s (statistics
    and raw slices of ``layers`` x ``steps`` x ``stream``, meta ``prompts == [prompt]``, ``steps ==
    num_steps``, ``seeds == [seed]``) in which the transformer saw ``inversion.latents[s]`` at step
    ``s``; pass it as ``transport(model, prompt, target, source_run=run, seed=seed, num_steps=...)``.
    ``meta["source_image"]`` holds :meth:`Inversion.summary` (method, image SHA-256, sigmas,
    reconstruction error). ``run.images[0]`` is the decoded clean latent (the VAE reconstruction).
    ``inversion=`` reuses an earlier :func:`invert` result made with the same prompt, steps, seed and size
    (its method, iterations and guidance are then the ones used; ``image`` is not read again).
    ``capture_kw``: what to keep, as :func:`~massact_viz.probes.sources.source_capture` takes it
    (``channels``, ``branch``, ``conditioning``, ``stats``, ``raw``, ``previews``).
    """

    from .sources import source_capture

    n, (h, w) = _check_common(model, prompt, num_steps, seed, size, method, guidance, iterations)
    if stream not in ("image", "text", "both"):
        raise MassActError(f"stream must be 'image', 'text' or 'both', got {stream!r}.")
    resolve_scope(model, layers=layers, steps=steps, stream=stream, num_steps=n, size=(h, w))  # specs, before work
    if inversion is not None:
        if not isinstance(inversion, Inversion):
            raise MassActError(f"inversion must be an Inversion from invert(), got {type(inversion).__name__}.")
        want = (prompt, n, seed, (h, w))
        have = (inversion.prompt, inversion.num_steps, inversion.seed, tuple(inversion.size))
        if have != want:
            raise MassActError(f"inversion was made for (prompt, num_steps, seed, size) = {have}, this source run "
                               f"needs {want}.")
        inv = inversion
        guidance = inv.guidance
    else:
        _load_image(image)  # a bad image fails before the inversion
        inv = invert(model, image, prompt, num_steps=n, size=(h, w), method=method, seed=seed, guidance=guidance,
                     iterations=iterations, progress=progress)
    lat = inv.latents
    # The latents are forced at every step, so guidance does not move the trajectory; with both CFG branches
    # kept (the default) the run makes the model's own conditional *and* unconditional calls at the forced
    # latents, so a transport can fill each branch of a CFG target from its match.
    both = capture_kw.get("branch", "both") == "both"
    run_guidance = guidance if (both and guidance is not None) else None if both else _run_guidance(model, guidance)
    bar = progress_bar(total=n, desc="teacher-forced source", unit="step", disable=not progress, leave=False)

    def force(pipe, i, t, kw):
        bar.update()
        return {"latents": lat[i + 1].to(kw["latents"].device, kw["latents"].dtype)}

    try:
        run = source_capture(model, prompt, layers=layers, steps=steps, stream=stream, seed=seed, num_steps=n,
                             size=(h, w), guidance=run_guidance,
                             latents=lat[0].to(model.dtype), callback_on_step_end=force, extra_raw=extra_raw,
                             **capture_kw, **_prompt_kwargs(model, prompt))
    finally:
        bar.close()
    run.meta["source_image"] = inv.summary()
    return run


__all__ = ["Inversion", "METHODS", "FIXED_POINT_ITERATIONS", "encode_image", "decode_image", "invert",
           "image_source_run"]
