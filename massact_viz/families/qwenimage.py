"""Qwen-Image: a stack of dual-stream MM-DiT blocks returning ``(text, image)``.

The pipeline packs 2x2 latent patches into tokens, row-major. True CFG (``true_cfg_scale > 1`` with
a ``negative_prompt``) makes a conditional call, then an unconditional one, per step. The
transformer receives the text padding mask as ``encoder_hidden_states_mask``.
"""
from __future__ import annotations

from .base import BlockGroup, Family

QWENIMAGE = Family(
    name="qwenimage",
    title="Qwen-Image",
    transformer_classes=("QwenImageTransformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "double", "text_image"),),
    pipeline_packing=2,
    text_mask_kwarg="encoder_hidden_states_mask",
    conditioning_kwargs=("encoder_hidden_states", "encoder_hidden_states_mask"),
    cfg="separate",
    cfg_scale_kwarg="true_cfg_scale",
    cfg_needs_negative_prompt=True,
    guidance_kwarg="true_cfg_scale",
)
