"""What massact_viz needs to know about one DiT family, and the generic logic built on it.

A :class:`Family` is a small description (which module lists hold the blocks, what each block
returns, how latents become image tokens, where the text padding mask comes from). Everything else
(hooks, statistics, edits) is written once against it. Adding a family means writing one such
description; see ``massact_viz/families/flux.py`` for the shortest example and
:func:`massact_viz.families.register` to plug in your own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..errors import MassActError

#: Output layouts of a block's forward: a ``(text, image)`` tuple, one joint ``[text; image]``
#: tensor, or an image-only tensor (cross-attention DiTs).
LAYOUTS = ("text_image", "joint", "image")
STREAMS = ("image", "text")


@dataclass(frozen=True)
class BlockGroup:
    """One ``nn.ModuleList`` of blocks on the transformer."""

    attr: str  # attribute of the transformer, e.g. "transformer_blocks"
    kind: str  # short name used in layer names: "double", "single" or "block"
    layout: str  # one of LAYOUTS


@dataclass(frozen=True)
class Block:
    """One transformer block, in execution order."""

    name: str  # stable name, e.g. "double.3"
    index: int  # position in execution order over all blocks
    kind: str
    path: str  # module path under the transformer, e.g. "transformer_blocks.3"
    layout: str

    @property
    def streams(self) -> tuple[str, ...]:
        return ("image",) if self.layout == "image" else STREAMS


@dataclass
class Family:
    """Description of one DiT family (FLUX.1, SD3, ...)."""

    name: str  # registry key, e.g. "flux"
    title: str  # human name, e.g. "FLUX.1 (dev, schnell)"
    transformer_classes: tuple[str, ...]  # diffusers transformer class names
    groups: tuple[BlockGroup, ...]
    #: latent pixels per token side packed by the *pipeline* (FLUX packs 2x2); None means the
    #: transformer patchifies with ``transformer.config.patch_size``.
    pipeline_packing: int | None = None
    #: transformer forward kwarg that carries the text padding mask, if any
    text_mask_kwarg: str | None = None
    #: how CFG runs: "batched" ([uncond; cond] rows in one call), "separate" (a conditional call,
    #: then an unconditional one, per step), or "none". Summaries and memory planning read it
    #: (:meth:`uses_cfg`); the hooks detect the layout at run time from the batch size and call order.
    cfg: str = "none"
    #: pipeline kwarg whose value above 1 turns CFG on, and whether a ``negative_prompt`` must also be
    #: given (FLUX.1 and Qwen-Image true CFG); None: this family's pipeline has no CFG
    cfg_scale_kwarg: str | None = "guidance_scale"
    cfg_needs_negative_prompt: bool = False
    #: transformer forward kwargs that carry the prompt into the model outside the blocks' token
    #: streams (the text embeddings entering the first block or every cross-attention, pooled /
    #: AdaLN vectors, their masks): what transport's ``conditioning="source"`` takes from the source
    conditioning_kwargs: tuple[str, ...] = ("encoder_hidden_states",)
    #: pipeline kwarg for the guidance strength a user means by ``guidance=``
    guidance_kwarg: str = "guidance_scale"
    #: extra kwargs every call needs (e.g. resolution binning off so the size is what was asked)
    call_defaults: dict[str, Any] = field(default_factory=dict)
    #: whether latents can go through the VAE here (:meth:`encode_latents` / :meth:`decode_latents`):
    #: per-step previews, the latent-blend control and image inversion need it
    decodes_latents: bool = False
    notes: str = ""
    #: the tiny random-weight pipeline of this family that tests build offline (:class:`~massact_viz.families.tiny.TinyRecipe`,
    #: built by :func:`massact_viz.testing.tiny_pipeline`); None: no tiny recipe
    tiny: Any = None

    # ---------------------------------------------------------------- blocks
    def matches(self, pipe: Any) -> bool:
        tr = getattr(pipe, "transformer", None)
        return tr is not None and type(tr).__name__ in self.transformer_classes

    def blocks(self, transformer: torch.nn.Module) -> list[Block]:
        out: list[Block] = []
        for g in self.groups:
            for i, _ in enumerate(getattr(transformer, g.attr)):
                out.append(Block(f"{g.kind}.{i}", len(out), g.kind, f"{g.attr}.{i}", g.layout))
        return out

    # ---------------------------------------------------------------- geometry
    def pixels_per_token(self, pipe: Any) -> int:
        vae_sf = int(getattr(pipe, "vae_scale_factor", 1))
        if self.pipeline_packing is not None:
            return vae_sf * self.pipeline_packing
        return vae_sf * int(pipe.transformer.config.patch_size)

    def default_size(self, pipe: Any) -> tuple[int, int]:
        """The pipeline's own default (height, width) in pixels."""
        vae_sf = int(getattr(pipe, "vae_scale_factor", 1))
        sample = getattr(pipe, "default_sample_size", None)
        if sample is None:
            sample = getattr(pipe.transformer.config, "sample_size", None) or 64
        side = int(sample) * vae_sf
        return side, side

    def token_grid(self, pipe: Any, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of the image-token grid at this pixel size; a clear error if it does not fit."""
        ppt = self.pixels_per_token(pipe)
        for what, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise MassActError(f"{what} must be a positive integer number of pixels, got {v!r}.")
        if height % ppt or width % ppt:
            h2, w2 = (max(ppt, round(v / ppt) * ppt) for v in (height, width))
            raise MassActError(
                f"size {height}x{width} is not divisible by {ppt}, the pixels per image token of this "
                f"{self.title} model (VAE factor x patch size); use e.g. {h2}x{w2}.")
        return height // ppt, width // ppt

    @staticmethod
    def token_rc(token: int, grid: tuple[int, int]) -> tuple[int, int]:
        """Row-major (row, col) of image token ``token`` on the token grid."""
        rows, cols = grid
        if not 0 <= token < rows * cols:
            raise MassActError(f"image token {token} is out of range: this grid has {rows * cols} tokens.")
        return divmod(token, cols)

    def token_box(self, pipe: Any, token: int, grid: tuple[int, int]) -> tuple[int, int, int, int]:
        """Pixel box (top, left, bottom, right) covered by image token ``token`` (bottom/right exclusive)."""
        r, c = self.token_rc(token, grid)
        s = self.pixels_per_token(pipe)
        return r * s, c * s, (r + 1) * s, (c + 1) * s

    # ---------------------------------------------------------------- streams
    def split(self, output: Any, block: Block, text_len: int | None, n_image: int) -> dict[str, torch.Tensor | None]:
        """Views of a block output: ``{"image": (B, n_image, D), "text": (B, T, D) or None}``.

        Views share storage with the output, so in-place writes to them edit the model. Image
        tokens beyond ``n_image`` (reference-image tokens of editing pipelines) are left out.
        """
        if block.layout == "text_image":
            text, image = output[0], output[1]
        elif block.layout == "joint":
            t = output if torch.is_tensor(output) else output[0]
            if text_len is None:
                raise MassActError(f"cannot split the joint stream of {block.name}: text length unknown.")
            text, image = t[:, :text_len], t[:, text_len:]
        else:
            text, image = None, (output if torch.is_tensor(output) else output[0])
        if image.dim() != 3:
            raise MassActError(
                f"{block.name} returned an image stream of shape {tuple(image.shape)}; expected "
                f"(batch, tokens, channels). The {self.title} adapter may not match this diffusers version.")
        return {"image": image[:, :n_image], "text": text}

    def text_mask(self, pipe: Any, prompts: Sequence[str], n_text: int) -> torch.Tensor | None:
        """Padding mask (len(prompts), n_text) for families whose transformer gets no mask kwarg.

        The base version knows no tokenizer layout and returns None (all text tokens count).
        """
        return None

    # ---------------------------------------------------------------- guidance
    def uses_cfg(self, pipe_kwargs: dict[str, Any], pipe: Any = None) -> bool:
        """Whether a pipeline call with these kwargs makes unconditional calls (classifier-free guidance).
        With ``pipe``, a scale left out takes the pipeline's own default (FLUX.2 klein and Qwen-Image default
        to 4, not 1) and a guidance-distilled FLUX.2 (``config.is_distilled``) never runs CFG."""
        if self.cfg == "none" or self.cfg_scale_kwarg is None:
            return False
        if pipe is not None and getattr(getattr(pipe, "config", None), "is_distilled", False):
            return False
        default = _call_default(pipe, self.cfg_scale_kwarg, 1.0) if pipe is not None else 1.0
        scale = pipe_kwargs.get(self.cfg_scale_kwarg, default)
        on = float(1.0 if scale is None else scale) > 1.0
        negative = pipe_kwargs.get("negative_prompt") is not None or pipe_kwargs.get("negative_prompt_embeds") is not None
        return on and (not self.cfg_needs_negative_prompt or negative)

    def calls_per_step(self, pipe_kwargs: dict[str, Any], pipe: Any = None) -> int:
        """Transformer calls per denoising step for a pipeline call with these kwargs: 2 with separate-call
        CFG (a conditional, then an unconditional call), else 1 (SD3's skip-layer guidance adds calls at
        some steps only, not counted here)."""
        return 2 if self.cfg == "separate" and self.uses_cfg(pipe_kwargs, pipe) else 1

    # ---------------------------------------------------------------- latents
    @property
    def latent_ndim(self) -> int:
        """Dimensions of a batch of latents in the pipeline's ``latents=`` layout: 3 (batch, tokens,
        channels) when the pipeline packs them into tokens, else 4 (batch, channels, height, width)."""
        return 3 if self.pipeline_packing is not None else 4

    def check_latents(self, pipe: Any) -> None:
        """A clear error when latents of ``pipe`` cannot go through the VAE here."""
        if not self.decodes_latents:
            raise MassActError(f"encoding and decoding latents is not implemented for {self.title} models yet.")
        if getattr(pipe, "vae", None) is None or not hasattr(pipe.vae, "encode"):
            raise MassActError("this pipeline has no VAE with encode() and decode().")

    def pack_latents(self, pipe: Any, z: torch.Tensor) -> torch.Tensor:
        """VAE latents ``(batch, C, h, w)`` -> the pipeline's ``latents=`` layout (unchanged here)."""
        return z

    def unpack_latents(self, pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The pipeline's ``latents=`` layout -> VAE latents ``(batch, C, h, w)`` at ``height x width`` px."""
        return latents

    @torch.no_grad()
    def encode_latents(self, pipe: Any, images: torch.Tensor) -> torch.Tensor:
        """Images ``(batch, 3, H, W)`` in [-1, 1] -> float32 latents in the ``latents=`` layout:
        ``(vae(x).mode() - shift_factor) * scaling_factor``, packed as the pipeline packs them."""
        self.check_latents(pipe)
        vae = pipe.vae
        enc = vae.encode(images.to(device=vae.device, dtype=vae.dtype))
        enc = enc[0] if isinstance(enc, tuple) else enc
        dist = getattr(enc, "latent_dist", None)
        z = (dist.mode() if dist is not None else enc.latents).float()
        z = (z - (getattr(vae.config, "shift_factor", None) or 0.0)) * vae.config.scaling_factor
        return self.pack_latents(pipe, z)

    @torch.no_grad()
    def decode_latents(self, pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Latents in the ``latents=`` layout -> float images ``(batch, 3, H, W)`` in [0, 1] (the inverse of
        :meth:`encode_latents`; per-step previews use it)."""
        self.check_latents(pipe)
        vae = pipe.vae
        lat = self.unpack_latents(pipe, latents, height, width)
        lat = lat.to(vae.device, vae.dtype) / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None)
                                                                           or 0.0)
        return (vae.decode(lat, return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1)


def _call_default(pipe: Any, name: str, fallback: Any) -> Any:
    """The default of keyword ``name`` in ``pipe.__call__``'s signature, or ``fallback``."""
    import inspect
    try:
        p = inspect.signature(type(pipe).__call__).parameters.get(name)
    except (TypeError, ValueError):
        return fallback
    return fallback if p is None or p.default is inspect.Parameter.empty else p.default


def tokenizer_mask(tokenizer: Any, prompts: Sequence[str], length: int) -> torch.Tensor:
    """Attention mask of ``prompts`` padded/truncated to ``length`` tokens, as the pipelines tokenize."""
    enc = tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True,
                    return_tensors="pt")
    return enc.attention_mask.bool()
