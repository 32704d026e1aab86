"""FLUX.2 (klein and dev): double-stream blocks, then single-stream blocks on one joint tensor.

Double blocks return ``(text, image)``. Single blocks return one ``[text; image]`` tensor (the
transformer strips the text tokens after the last one), so the text length is read from the
transformer call. Latents are packed 2x2 into tokens by the pipeline, row-major. Under CFG the
klein pipeline makes a conditional call, then an unconditional one, per step. Reference-image
tokens of editing calls follow the image tokens and are left out of the image stream. The
transformer gets no text mask and the Qwen3 prompt template is pipeline-specific, so text-stream
statistics count every text token (documented limitation).
"""
from __future__ import annotations

from .base import BlockGroup, Family

FLUX2 = Family(
    name="flux2",
    title="FLUX.2",
    transformer_classes=("Flux2Transformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "double", "text_image"),
            BlockGroup("single_transformer_blocks", "single", "joint")),
    pipeline_packing=2,
    cfg="separate",
    notes="text-stream statistics include padding tokens (no mask reaches the transformer)",
)
