"""PixArt-Sigma (and PixArt-alpha): cross-attention DiT blocks returning one image tensor.

There is no text stream in the hidden state: text enters through cross-attention, so only the
``image`` stream exists. The transformer patchifies with ``patch_size``, row-major. CFG is batched,
``[uncond; cond]``. Calls turn resolution binning off (the size is the one asked for) and caption cleaning off (it needs ftfy/bs4).
"""
from __future__ import annotations

from typing import Any

from . import tiny
from .base import BlockGroup, Family

_TINY_HEAD_DIM = 8


def _tiny(seed: int, layers: int, single: None, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers

    width = heads * _TINY_HEAD_DIM
    t5_tok, t5 = tiny.t5_pair(seed)
    return diffusers.PixArtSigmaPipeline, {
        "tokenizer": t5_tok,
        "text_encoder": t5,
        "vae": tiny.kl_vae(seed, 4),
        "transformer": tiny.seeded(
            seed,
            lambda: diffusers.PixArtTransformer2DModel(
                sample_size=32, num_layers=layers, patch_size=2, attention_head_dim=_TINY_HEAD_DIM,
                num_attention_heads=heads, caption_channels=tiny.TEXT_DIM, in_channels=4, cross_attention_dim=width,
                out_channels=8, attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
            ),
        ),
        "scheduler": diffusers.DDIMScheduler(),
    }  # fmt: skip


PIXART = Family(
    name="pixart",
    title="PixArt-Sigma",
    transformer_classes=("PixArtTransformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "block", "image"),),
    conditioning_kwargs=("encoder_hidden_states", "encoder_attention_mask"),
    cfg="batched",
    call_defaults={"use_resolution_binning": False, "clean_caption": False},
    tiny=tiny.TinyRecipe(_tiny, head_dim=_TINY_HEAD_DIM, layers=(2, None),
                         call_kwargs={"guidance_scale": 4.5, "use_resolution_binning": False, "clean_caption": False}),
)
