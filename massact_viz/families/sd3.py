"""Stable Diffusion 3 / 3.5: joint (MM-DiT) blocks returning ``(text, image)``.

The last block is ``context_pre_only`` and returns ``None`` for the text stream. The transformer
patchifies latents with ``patch_size`` (row-major). CFG is batched: rows are ``[uncond; cond]``.
Text tokens are 77 CLIP positions (CLIP-L and CLIP-G side by side in channels) followed by the T5
tokens; the padding mask is rebuilt from the tokenizers.
"""
from __future__ import annotations

import torch

from .base import BlockGroup, Family, tokenizer_mask


class SD3Family(Family):
    def text_mask(self, pipe, prompts, n_text, call_kwargs):
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


SD3 = SD3Family(
    name="sd3",
    title="Stable Diffusion 3",
    transformer_classes=("SD3Transformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "double", "text_image"),),
    conditioning_kwargs=("encoder_hidden_states", "pooled_projections"),
    cfg="batched",
    decodes_latents=True,
)
