"""Qwen-Image: a stack of dual-stream MM-DiT blocks returning ``(text, image)``.

The pipeline packs 2x2 latent patches into tokens, row-major. True CFG (``true_cfg_scale > 1`` with
a ``negative_prompt``) makes a conditional call, then an unconditional one, per step. The
transformer receives the text padding mask as ``encoder_hidden_states_mask``.
"""
from __future__ import annotations

from typing import Any

from . import tiny
from .base import BlockGroup, Family

_TINY_HEAD_DIM = 16


def _tiny(seed: int, layers: int, single: None, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = tiny.qwen_tokenizer()
    text_kwargs = tiny.qwen_text_kwargs(tok)
    ids = {n: tok.convert_tokens_to_ids(f"<|{n}|>") for n in ("vision_start", "vision_end", "image_pad", "video_pad")}
    rope = {"mrope_section": [1, 1, 2], "rope_type": "default"}  # sections sum to head_dim / 2
    config = Qwen2_5_VLConfig(
        text_config={**text_kwargs, "num_hidden_layers": 2, "rope_scaling": rope},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": text_kwargs["hidden_size"]},
        vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"],
        image_token_id=ids["image_pad"], video_token_id=ids["video_pad"],
    )  # fmt: skip
    z_dim = 4
    return diffusers.QwenImagePipeline, {
        "scheduler": tiny.flow_scheduler(),
        "vae": tiny.seeded(
            seed,
            lambda: diffusers.AutoencoderKLQwenImage(
                base_dim=8, z_dim=z_dim, dim_mult=[1], num_res_blocks=1, temperal_downsample=[],
                latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim,
            ),
        ),
        "text_encoder": tiny.seeded(seed, lambda: Qwen2_5_VLForConditionalGeneration(config)),
        "tokenizer": tok,
        "transformer": tiny.seeded(
            seed,
            lambda: diffusers.QwenImageTransformer2DModel(
                patch_size=2, in_channels=4 * z_dim, out_channels=z_dim, num_layers=layers, attention_head_dim=16,
                num_attention_heads=heads, joint_attention_dim=text_kwargs["hidden_size"], guidance_embeds=False,
                axes_dims_rope=(8, 4, 4),
            ),
        ),
    }  # fmt: skip


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
    tiny=tiny.TinyRecipe(_tiny, head_dim=_TINY_HEAD_DIM, layers=(2, None),
                         call_kwargs={"true_cfg_scale": 4.0, "negative_prompt": " "}),
)
