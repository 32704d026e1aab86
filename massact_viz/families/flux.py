"""FLUX.1 (dev, schnell) and the embedded teaching model: 19 double-stream + 38 single-stream blocks.

Both block kinds return ``(text, image)`` in diffusers >= 0.35. The pipeline packs 2x2 latent
patches into one token (``FluxPipeline._pack_latents``), row-major over the latent grid. FLUX.1 is
guidance-distilled (``guidance_scale`` is an embedded input, one transformer call per step); with
``true_cfg_scale > 1`` and a ``negative_prompt`` the pipeline makes a conditional call, then an
unconditional one, per step. The transformer gets no text mask: T5 pads to
``max_sequence_length`` (512 by default), so the mask is rebuilt from ``tokenizer_2``.
"""
from __future__ import annotations

from typing import Any

from ..errors import MassActError
from . import tiny
from .base import BlockGroup, Family, tokenizer_mask


class FluxFamily(Family):
    def text_mask(self, pipe, prompts, n_text):
        tok = getattr(pipe, "tokenizer_2", None)
        return None if tok is None else tokenizer_mask(tok, prompts, n_text)

    def check_latents(self, pipe):
        super().check_latents(pipe)
        if not (hasattr(pipe, "_pack_latents") and hasattr(pipe, "_unpack_latents")):
            raise MassActError(f"{type(pipe).__name__} does not pack latents like FluxPipeline; latents go through "
                               f"the VAE for FluxPipeline (FLUX.1, 'shapes') and StableDiffusion3Pipeline.")

    def pack_latents(self, pipe, z):
        b, c, h, w = z.shape
        return pipe._pack_latents(z, b, c, h, w)

    def unpack_latents(self, pipe, latents, height, width):
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)



_TINY_HEAD_DIM = 16


def _tiny(seed: int, layers: int, single: int, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers

    transformer = tiny.seeded(
        seed,
        lambda: diffusers.FluxTransformer2DModel(
            patch_size=1, in_channels=4, num_layers=layers, num_single_layers=single, attention_head_dim=16,
            num_attention_heads=heads, joint_attention_dim=tiny.TEXT_DIM, pooled_projection_dim=tiny.TEXT_DIM,
            guidance_embeds=True, axes_dims_rope=[4, 4, 8],
        ),
    )  # fmt: skip
    clip_tok = tiny.clip_tokenizer()
    t5_tok, t5 = tiny.t5_pair(seed)
    return diffusers.FluxPipeline, {
        "scheduler": tiny.flow_scheduler(),
        "vae": tiny.kl_vae(seed, 1, shift_factor=0.0609, scaling_factor=1.5035),
        "text_encoder": tiny.clip_encoder(seed, "CLIPTextModel", len(clip_tok)),
        "tokenizer": clip_tok,
        "text_encoder_2": t5,
        "tokenizer_2": t5_tok,
        "transformer": transformer,
        "image_encoder": None,
        "feature_extractor": None,
    }


FLUX = FluxFamily(
    name="flux",
    title="FLUX.1",
    transformer_classes=("FluxTransformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "double", "text_image"),
            BlockGroup("single_transformer_blocks", "single", "text_image")),
    pipeline_packing=2,
    conditioning_kwargs=("encoder_hidden_states", "pooled_projections"),
    cfg="separate",
    cfg_scale_kwarg="true_cfg_scale",
    cfg_needs_negative_prompt=True,
    decodes_latents=True,
    notes="guidance-distilled; true CFG (true_cfg_scale>1 + negative_prompt) = a second call per step",
    tiny=tiny.TinyRecipe(_tiny, head_dim=_TINY_HEAD_DIM, layers=(2, 4),
                         call_kwargs={"guidance_scale": 3.5}),
)
