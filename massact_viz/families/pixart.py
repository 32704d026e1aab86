"""PixArt-Sigma (and PixArt-alpha): cross-attention DiT blocks returning one image tensor.

There is no text stream in the hidden state: text enters through cross-attention, so only the
``image`` stream exists. The transformer patchifies with ``patch_size``, row-major. CFG is batched,
``[uncond; cond]``. Calls turn resolution binning off (the size is the one asked for) and caption cleaning off (it needs ftfy/bs4).
"""
from __future__ import annotations

from .base import BlockGroup, Family

PIXART = Family(
    name="pixart",
    title="PixArt-Sigma",
    transformer_classes=("PixArtTransformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "block", "image"),),
    conditioning_kwargs=("encoder_hidden_states", "encoder_attention_mask"),
    cfg="batched",
    call_defaults={"use_resolution_binning": False, "clean_caption": False},
)
