"""SANA / SANA 1.5: linear-attention DiT blocks with cross-attention text, returning one image tensor.

Only the ``image`` stream exists (all hidden tokens are image tokens). The transformer patchifies
with ``patch_size`` over the DC-AE latent, row-major. CFG is batched, ``[uncond; cond]``. Calls turn
resolution binning off (the size is the one asked for) and caption cleaning off (it needs ftfy/bs4).
"""
from __future__ import annotations

from typing import Any

from . import tiny
from .base import BlockGroup, Family

_TINY_HEAD_DIM = 8


def _tiny(seed: int, layers: int, single: None, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers
    from transformers import Gemma2Config, Gemma2Model

    tok = tiny.gemma_tokenizer()
    text_config = Gemma2Config(
        head_dim=8, hidden_size=tiny.LM_DIM, intermediate_size=2 * tiny.LM_DIM, num_attention_heads=2,
        num_hidden_layers=1, num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        attn_implementation="eager",
    )  # fmt: skip
    width = heads * _TINY_HEAD_DIM
    return diffusers.SanaPipeline, {
        "scheduler": tiny.flow_scheduler(shift=3.0),
        "vae": tiny.seeded(
            seed,
            lambda: diffusers.AutoencoderDC(
                in_channels=3, latent_channels=4, attention_head_dim=2,
                encoder_block_types=("ResBlock", "EfficientViTBlock"),
                decoder_block_types=("ResBlock", "EfficientViTBlock"),
                encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
                encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
                downsample_block_type="conv", upsample_block_type="interpolate",
                decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
            ),
        ),
        "text_encoder": tiny.seeded(seed, lambda: Gemma2Model(text_config)),
        "tokenizer": tok,
        "transformer": tiny.seeded(
            seed,
            lambda: diffusers.SanaTransformer2DModel(
                patch_size=1, in_channels=4, out_channels=4, num_layers=layers, num_attention_heads=heads,
                attention_head_dim=_TINY_HEAD_DIM, num_cross_attention_heads=heads,
                cross_attention_head_dim=_TINY_HEAD_DIM, cross_attention_dim=width,
                caption_channels=text_config.hidden_size, sample_size=16,
            ),
        ),
    }  # fmt: skip


SANA = Family(
    name="sana",
    title="SANA",
    transformer_classes=("SanaTransformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "block", "image"),),
    conditioning_kwargs=("encoder_hidden_states", "encoder_attention_mask"),
    cfg="batched",
    call_defaults={"use_resolution_binning": False, "clean_caption": False},
    tiny=tiny.TinyRecipe(_tiny, head_dim=_TINY_HEAD_DIM, layers=(2, None),
                         call_kwargs={"guidance_scale": 4.5, "use_resolution_binning": False,
                                      "clean_caption": False, "complex_human_instruction": None}),
)
