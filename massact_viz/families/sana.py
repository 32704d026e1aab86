"""SANA / SANA 1.5: linear-attention DiT blocks with cross-attention text, returning one image tensor.

Only the ``image`` stream exists (all hidden tokens are image tokens). The transformer patchifies
with ``patch_size`` over the DC-AE latent, row-major. CFG is batched, ``[uncond; cond]``. Calls turn
resolution binning off (the size is the one asked for) and caption cleaning off (it needs ftfy/bs4).
"""
from __future__ import annotations

from .base import BlockGroup, Family

SANA = Family(
    name="sana",
    title="SANA",
    transformer_classes=("SanaTransformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "block", "image"),),
    conditioning_kwargs=("encoder_hidden_states", "encoder_attention_mask"),
    cfg="batched",
    call_defaults={"use_resolution_binning": False, "clean_caption": False},
)
