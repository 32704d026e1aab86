"""The tiny offline pipelines of ``massact_viz.testing`` build, run and are deterministic."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from massact_viz.testing import DEFAULT_LAYERS, FAMILIES, HEAD_DIM, default_call_kwargs, tiny_pipeline

PROMPT = "a photo of a cat"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the
    OpenMP barriers of 2 threads turn 50 ms calls into seconds. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _generate(pipe, family: str, seed: int = 0) -> torch.Tensor:
    out = pipe(
        prompt=PROMPT,  # keyword: Flux2KleinPipeline's first positional argument is `image`
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **default_call_kwargs(family),
    )
    return out.images


def _block_lists(transformer) -> list[int]:
    names = ("transformer_blocks", "single_transformer_blocks")
    return [len(getattr(transformer, name)) for name in names if hasattr(transformer, name)]


@pytest.fixture(scope="module", params=FAMILIES)
def built(request):
    family = request.param
    pipe = tiny_pipeline(family, seed=0)
    return family, pipe, _generate(pipe, family)


def test_builds_and_generates_a_finite_image(built):
    family, pipe, image = built
    assert image.shape == (1, 3, 32, 32)
    assert torch.isfinite(image).all()
    assert image.std() > 0
    assert not pipe.transformer.training
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            assert not module.training
            assert not any(p.requires_grad for p in module.parameters())


def test_same_seed_gives_bit_identical_weights_and_images(built):
    family, pipe, image = built
    again = tiny_pipeline(family, seed=0)
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            theirs = again.components[name].state_dict()
            for key, value in module.state_dict().items():
                assert torch.equal(value, theirs[key]), (family, name, key)
    assert torch.equal(_generate(again, family), image)
    assert torch.equal(_generate(pipe, family), image)  # repeated calls too (no dropout, no state)


def test_other_seed_gives_other_weights(built):
    family, pipe, _ = built
    other = tiny_pipeline(family, seed=1)
    mine, theirs = pipe.transformer.state_dict(), other.transformer.state_dict()
    assert any(not torch.equal(mine[k], theirs[k]) for k in mine if mine[k].is_floating_point())


def test_default_layout_is_a_16x16_token_grid(built):
    family, pipe, _ = built
    assert _block_lists(pipe.transformer) == [n for n in DEFAULT_LAYERS[family] if n is not None]
    seen = []
    first = pipe.transformer.transformer_blocks[0]
    handle = first.register_forward_hook(lambda m, args, out: seen.append(out))
    try:
        _generate(pipe, family)
    finally:
        handle.remove()
    out = seen[0]
    image_tokens = out[1] if isinstance(out, tuple) else out  # (text, image) or the image stream
    assert image_tokens.shape[-2:] == (256, 32)


@pytest.mark.parametrize("family", FAMILIES)
def test_depth_and_width_overrides(family):
    two_kinds = DEFAULT_LAYERS[family][1] is not None
    kwargs = dict(num_layers=1, hidden=2 * HEAD_DIM[family])
    if two_kinds:
        kwargs["num_single_layers"] = 3
    pipe = tiny_pipeline(family, **kwargs)
    assert _block_lists(pipe.transformer) == ([1, 3] if two_kinds else [1])
    config = pipe.transformer.config
    assert config.num_attention_heads * config.attention_head_dim == 2 * HEAD_DIM[family]
    assert _generate(pipe, family).shape == (1, 3, 32, 32)


def test_flux_at_flux1_depth():
    pipe = tiny_pipeline("flux", num_layers=19, num_single_layers=38)
    assert _block_lists(pipe.transformer) == [19, 38]
    assert torch.isfinite(_generate(pipe, "flux")).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="flux, flux2, qwenimage, sana, sd3, pixart"):
        tiny_pipeline("sdxl")
    with pytest.raises(ValueError, match="flux, flux2"):
        default_call_kwargs("nope")
    with pytest.raises(ValueError, match="single-stream"):
        tiny_pipeline("sd3", num_single_layers=2)
    with pytest.raises(ValueError, match="multiple"):
        tiny_pipeline("flux", hidden=40)
    with pytest.raises(ValueError, match="num_layers"):
        tiny_pipeline("pixart", num_layers=0)


def test_building_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    tiny_pipeline("pixart", seed=123)
    assert torch.equal(state, torch.get_rng_state())


def test_call_kwargs_are_fresh_copies():
    kwargs = default_call_kwargs("sana")
    kwargs["height"] = 1024
    assert default_call_kwargs("sana")["height"] == 32


def test_qwen_template_prefix_matches_the_pipeline_drop_index():
    """QwenImage drops its system-prompt prefix by token count; the tiny tokenizer keeps that count."""
    pipe = tiny_pipeline("qwenimage")
    prefix = pipe.prompt_template_encode.split("{}")[0]
    assert len(pipe.tokenizer(prefix).input_ids) == pipe.prompt_template_encode_start_idx
