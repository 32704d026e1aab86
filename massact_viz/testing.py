"""Tiny, deterministic, random-weight diffusers pipelines that build fully offline.

Use them to test code that instruments diffusion transformers, with no download::

    import torch
    from massact_viz.testing import default_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline("flux", seed=0)
    image = pipe(prompt="a photo of a cat", num_inference_steps=2, output_type="pt",
                 generator=torch.Generator().manual_seed(0), **default_call_kwargs("flux")).images

Each pipeline is the real diffusers pipeline class wired to the real model classes, only
very narrow and shallow:

* the transformer is ``hidden=32`` wide (heads x head_dim, with head_dim from
  :data:`HEAD_DIM`) and :data:`DEFAULT_LAYERS` deep unless overridden;
* a 32x32 image becomes a 16x16 grid of 256 image tokens in every family (VAE scale
  factor 1, or 2 for Sana, instead of 8/32: about 2 pixels per token);
* tokenizers are built in memory from a fixed word list (no files, no Hub, no training):
  listed words are single tokens, other text falls back to characters/bytes;
* the same ``seed`` gives bit-identical weights, and bit-identical images for the same
  call with a seeded ``torch.Generator``; building leaves the global torch RNG untouched;
* every component is in eval mode with gradients off, the progress bar is disabled.

Family notes:

* ``flux``: FLUX.1-dev style (``guidance_embeds=True``, no CFG); CLIP + T5 text encoders.
* ``flux2``: ``Flux2KleinPipeline`` (FLUX.2 klein, undistilled "base" variant: CFG with a
  second transformer call per step); Qwen3 text encoder with 3 layers, so calls need
  ``text_encoder_out_layers=(1, 2, 3)`` (in :func:`default_call_kwargs`). Its first
  positional argument is ``image``: always pass ``prompt=`` by keyword.
* ``qwenimage``: Qwen2.5-VL text encoder (text tower used; a 1-layer vision tower exists
  but is unused for text-to-image). The tokenizer splits QwenImage's system prompt into
  exactly ``prompt_template_encode_start_idx`` (34) tokens, like the real one.
* ``sana``: Gemma2 text encoder, DC-AE VAE; called without the complex human instruction.
* ``sd3``: two CLIP encoders + T5, patch size 2 inside the transformer.
* ``pixart``: PixArt-Sigma with T5, patch size 2 inside the transformer.

A ``save_pretrained``/``from_pretrained`` round trip works offline; the reloaded
pipeline matches bit for bit except ``qwenimage`` (differences around 1e-6, from
memory-mapped weights at unaligned addresses taking another matmul path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

from .families import families as _families

#: the families with a tiny recipe (each family file declares its own: ``massact_viz/families/<name>.py``)
FAMILIES = tuple(name for name, fam in _families().items() if fam.tiny is not None)

#: Attention head width per family; ``hidden`` overrides change the number of heads.
HEAD_DIM = {name: _families()[name].tiny.head_dim for name in FAMILIES}

#: Default transformer depth per family: (num_layers, num_single_layers or None).
DEFAULT_LAYERS = {name: _families()[name].tiny.layers for name in FAMILIES}

DEFAULT_HIDDEN = 32
_MAX_SEQ = 32  # max_sequence_length used by default_call_kwargs


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def tiny_pipeline(
    family: str,
    *,
    seed: int = 0,
    num_layers: int | None = None,
    num_single_layers: int | None = None,
    hidden: int | None = None,
) -> DiffusionPipeline:
    """Build a tiny random-weight pipeline of ``family`` (one of :data:`FAMILIES`).

    ``num_layers`` is the number of double-stream blocks for ``flux``/``flux2`` and the
    block count for the single-kind families; ``num_single_layers`` is the number of
    single-stream blocks (``flux``/``flux2`` only, a ``ValueError`` elsewhere).
    ``hidden`` is the transformer width (heads x head_dim); it must be a positive
    multiple of ``HEAD_DIM[family]``. Text encoders and VAEs do not depend on these
    arguments, so their weights are the same for a given ``seed``.
    """
    _check_family(family)
    default_double, default_single = _recipe(family).layers
    if default_single is None and num_single_layers is not None:
        raise ValueError(f"family {family!r} has no single-stream blocks; use num_layers")
    layers = _count("num_layers", num_layers, default_double)
    single = None if default_single is None else _count("num_single_layers", num_single_layers, default_single, 0)
    width = _count("hidden", hidden, DEFAULT_HIDDEN)
    head_dim = _recipe(family).head_dim
    if width % head_dim:
        raise ValueError(f"hidden={width} is not a multiple of head_dim={head_dim} for {family!r}")
    heads = width // head_dim

    import torch

    with torch.random.fork_rng(devices=[]):
        pipeline_class, components = _recipe(family).build(seed, layers, single, heads)
    pipe = pipeline_class(**components)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def default_call_kwargs(family: str) -> dict[str, Any]:
    """Keyword arguments every call of ``tiny_pipeline(family)`` needs (a fresh dict).

    32x32 images, ``max_sequence_length=32``, and guidance that runs classifier-free
    guidance wherever the family has it: sana/sd3/pixart batch [uncond; cond] through one
    transformer call per step (``guidance_scale``); flux2 (``guidance_scale > 1``) and
    qwenimage (``true_cfg_scale > 1`` with a ``negative_prompt``) make a second transformer
    call per step; flux is guidance-distilled (``guidance_scale`` is an embedding, no CFG).
    Pass your own ``prompt=``, ``num_inference_steps``, ``generator`` and ``output_type``.
    """
    _check_family(family)
    return {"height": 32, "width": 32, "max_sequence_length": _MAX_SEQ, **_recipe(family).call_kwargs}




# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def _recipe(family: str):
    """The family's tiny recipe (a registered family of your own can declare one too)."""
    fam = _families().get(family)
    if fam is None or fam.tiny is None:
        have = [n for n, f in _families().items() if f.tiny is not None]
        raise ValueError(f"unknown family {family!r}; supported families: {', '.join(have)}")
    return fam.tiny


def _check_family(family: str) -> None:
    _recipe(family)


def _count(name: str, value: int | None, default: int, minimum: int = 1) -> int:
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value
