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

from typing import Any

from . import tiny
from .base import BlockGroup, Family

_TINY_HEAD_DIM = 16


def _tiny(seed: int, layers: int, single: int, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = tiny.qwen_tokenizer()
    text_config = Qwen3Config(num_hidden_layers=3, head_dim=8, **tiny.qwen_text_kwargs(tok))
    text_width = 3 * text_config.hidden_size  # the pipeline stacks 3 hidden-state layers
    transformer = tiny.seeded(
        seed,
        lambda: diffusers.Flux2Transformer2DModel(
            patch_size=1, in_channels=4, num_layers=layers, num_single_layers=single, attention_head_dim=16,
            num_attention_heads=heads, joint_attention_dim=text_width, timestep_guidance_channels=256,
            axes_dims_rope=[4, 4, 4, 4], guidance_embeds=False,
        ),
    )  # fmt: skip
    return diffusers.Flux2KleinPipeline, {
        "scheduler": tiny.flow_scheduler(),
        "vae": tiny.kl_vae(seed, 1, "AutoencoderKLFlux2"),
        "text_encoder": tiny.seeded(seed, lambda: Qwen3ForCausalLM(text_config)),
        "tokenizer": tok,
        "transformer": transformer,
        "is_distilled": False,
    }


FLUX2 = Family(
    name="flux2",
    title="FLUX.2",
    transformer_classes=("Flux2Transformer2DModel",),
    groups=(BlockGroup("transformer_blocks", "double", "text_image"),
            BlockGroup("single_transformer_blocks", "single", "joint")),
    pipeline_packing=2,
    cfg="separate",
    notes="text-stream statistics include padding tokens (no mask reaches the transformer)",
    # the tiny Qwen3 encoder has 3 layers: text_encoder_out_layers names them all
    tiny=tiny.TinyRecipe(_tiny, head_dim=_TINY_HEAD_DIM, layers=(2, 4),
                         call_kwargs={"guidance_scale": 4.0, "text_encoder_out_layers": (1, 2, 3)}),
)
