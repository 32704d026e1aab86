"""Stable Diffusion 3 / 3.5: joint (MM-DiT) blocks returning ``(text, image)``.

The last block is ``context_pre_only`` and returns ``None`` for the text stream. The transformer
patchifies latents with ``patch_size`` (row-major). CFG is batched: rows are ``[uncond; cond]``.
Text tokens are 77 CLIP positions (CLIP-L and CLIP-G side by side in channels) followed by the T5
tokens; the padding mask is rebuilt from the tokenizers.
"""
from __future__ import annotations

from typing import Any

import torch

from . import tiny
from .base import BlockGroup, Family, tokenizer_mask


class SD3Family(Family):
    def text_mask(self, pipe, prompts, n_text):
        clip_len = int(getattr(pipe, "tokenizer_max_length", 77))
        if n_text < clip_len or getattr(pipe, "tokenizer", None) is None:
            return None
        clip = tokenizer_mask(pipe.tokenizer, prompts, clip_len)
        rest = n_text - clip_len
        tok3 = getattr(pipe, "tokenizer_3", None)
        if getattr(pipe, "text_encoder_3", None) is None or tok3 is None:
            t5 = torch.zeros(len(prompts), rest, dtype=torch.bool)  # zero embeddings, never real text
        else:
            t5 = tokenizer_mask(tok3, prompts, rest)
        return torch.cat([clip, t5], dim=1)



_TINY_HEAD_DIM = 8


def _tiny(seed: int, layers: int, single: None, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers

    width = heads * _TINY_HEAD_DIM
    clip_tok = tiny.clip_tokenizer()
    t5_tok, t5 = tiny.t5_pair(seed)
    return diffusers.StableDiffusion3Pipeline, {
        "transformer": tiny.seeded(
            seed,
            lambda: diffusers.SD3Transformer2DModel(
                sample_size=32, patch_size=2, in_channels=4, num_layers=layers, attention_head_dim=_TINY_HEAD_DIM,
                num_attention_heads=heads, caption_projection_dim=width, joint_attention_dim=tiny.TEXT_DIM,
                pooled_projection_dim=2 * tiny.TEXT_DIM, out_channels=4,
            ),
        ),
        "scheduler": tiny.flow_scheduler(),
        "vae": tiny.kl_vae(seed, 4, shift_factor=0.0609, scaling_factor=1.5035),
        "text_encoder": tiny.clip_encoder(seed, "CLIPTextModelWithProjection", len(clip_tok)),
        "tokenizer": clip_tok,
        "text_encoder_2": tiny.clip_encoder(seed + 1, "CLIPTextModelWithProjection", len(clip_tok)),
        "tokenizer_2": tiny.clip_tokenizer(),
        "text_encoder_3": t5,
        "tokenizer_3": t5_tok,
        "image_encoder": None,
        "feature_extractor": None,
    }  # fmt: skip


SD3 = SD3Family(
    name="sd3",
    title="Stable Diffusion 3",
    transformer_classes=("SD3Transformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "double", "text_image"),),
    conditioning_kwargs=("encoder_hidden_states", "pooled_projections"),
    cfg="batched",
    decodes_latents=True,
    tiny=tiny.TinyRecipe(_tiny, head_dim=_TINY_HEAD_DIM, layers=(2, None),
                         call_kwargs={"guidance_scale": 7.0}),
)
