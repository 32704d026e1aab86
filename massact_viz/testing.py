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

import string
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

FAMILIES = ("flux", "flux2", "qwenimage", "sana", "sd3", "pixart")

#: Attention head width per family; ``hidden`` overrides change the number of heads.
HEAD_DIM = {"flux": 16, "flux2": 16, "qwenimage": 16, "sana": 8, "sd3": 8, "pixart": 8}

#: Default transformer depth per family: (num_layers, num_single_layers or None).
DEFAULT_LAYERS = {
    "flux": (2, 4),
    "flux2": (2, 4),
    "qwenimage": (2, None),
    "sana": (2, None),
    "sd3": (2, None),
    "pixart": (2, None),
}

DEFAULT_HIDDEN = 32
TEXT_DIM = 32  # width of the CLIP/T5 text encoders
_LM_DIM = 16  # width of the decoder-LM text encoders (Qwen3, Qwen2.5-VL, Gemma2)
_MAX_SEQ = 32  # max_sequence_length used by default_call_kwargs

# Words that the in-memory BPE tokenizers know as whole tokens; anything else falls
# back to characters/bytes. Includes the words of QwenImage's system prompt so that
# its 34-token prefix (``prompt_template_encode_start_idx``) is exactly 34 tokens here too.
_WORDS = (
    "a an the of and in on at with by to is are for from this that it its"
    " photo photograph picture painting drawing image portrait close up view"
    " cat cats dog dogs bird horse fish tree trees flower flowers house city street car"
    " mountain mountains river lake sea ocean beach forest sky sun moon star night day"
    " man woman person people child face hand eyes hair smile"
    " red green blue yellow black white orange purple pink brown gray golden"
    " small large big tiny old young happy sad bright dark beautiful"
    " sitting standing running dancing holding wearing looking eating sleeping flying"
    " table chair window door room wall floor book cup hat sign hello world"
    " bad quality blurry low detailed high resolution style art"
    " Describe describe detailing color shape size texture quantity text spatial"
    " relationships objects background system user assistant"
).split()


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
    default_double, default_single = DEFAULT_LAYERS[family]
    if default_single is None and num_single_layers is not None:
        raise ValueError(f"family {family!r} has no single-stream blocks; use num_layers")
    layers = _count("num_layers", num_layers, default_double)
    single = None if default_single is None else _count("num_single_layers", num_single_layers, default_single, 0)
    width = _count("hidden", hidden, DEFAULT_HIDDEN)
    if width % HEAD_DIM[family]:
        raise ValueError(f"hidden={width} is not a multiple of head_dim={HEAD_DIM[family]} for {family!r}")
    heads = width // HEAD_DIM[family]

    import torch

    with torch.random.fork_rng(devices=[]):
        pipeline_class, components = _BUILDERS[family](seed, layers, single, heads)
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
    return {"height": 32, "width": 32, "max_sequence_length": _MAX_SEQ, **_CALL_KWARGS[family]}


_CALL_KWARGS: dict[str, dict[str, Any]] = {
    "flux": {"guidance_scale": 3.5},
    "flux2": {"guidance_scale": 4.0, "text_encoder_out_layers": (1, 2, 3)},  # the Qwen3 encoder has 3 layers
    "qwenimage": {"true_cfg_scale": 4.0, "negative_prompt": " "},
    "sana": {"guidance_scale": 4.5, "use_resolution_binning": False, "clean_caption": False,
             "complex_human_instruction": None},
    "sd3": {"guidance_scale": 7.0},
    "pixart": {"guidance_scale": 4.5, "use_resolution_binning": False, "clean_caption": False},
}  # fmt: skip


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; supported families: {', '.join(FAMILIES)}")


def _count(name: str, value: int | None, default: int, minimum: int = 1) -> int:
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _seeded(seed: int, factory: Callable[[], Any]) -> Any:
    """Run ``factory`` right after seeding, so each component's weights depend only on ``seed``."""
    import torch

    torch.manual_seed(seed)
    return factory()


def _word_bpe(cls, base: list[str], words: list[str], specials: list[str] = (), **kwargs):
    """A ``cls`` BPE tokenizer whose vocabulary is built by rule (no training, so deterministic).

    Vocabulary: ``specials``, then the single symbols ``base``, then merges chosen so that
    standard BPE encoding turns each of ``words`` into exactly one token; other text
    falls back to smaller pieces. It is plain BPE, so ``save_pretrained`` and
    ``from_pretrained`` reproduce the same tokenization.
    """
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*specials, *base]))}
    ranks: dict[tuple[str, str], int] = {}

    def encode(symbols: list[str]) -> list[str]:  # BPE: merge the lowest-ranked pair first, leftmost on ties
        while True:
            pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
            rank, i = min(pairs, default=(len(ranks), 0))
            if rank == len(ranks):
                return symbols
            symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2 :]]

    for word in words:
        symbols = encode(list(word))
        while len(symbols) > 1:  # a new merge gets the highest rank, so encoding can resume from here
            ranks[(symbols[0], symbols[1])] = len(ranks)
            vocab.setdefault(symbols[0] + symbols[1], len(vocab))
            symbols = encode(symbols)
    return cls(vocab=vocab, merges=list(ranks), **kwargs)


_QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<think>", "</think>",
]  # fmt: skip

# Qwen-style chat template (Qwen3 semantics for ``enable_thinking=False``).
_QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


def _qwen_tokenizer():
    """Byte-level BPE with Qwen2's pre-tokenizer, chat special tokens and a chat template."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    to_bytes = ByteLevel(add_prefix_space=False, use_regex=False)
    words = sorted({to_bytes.pre_tokenize_str(p)[0][0] for w in _WORDS for p in (w, " " + w)})
    tok = _word_bpe(
        Qwen2Tokenizer, sorted(ByteLevel.alphabet()), words, _QWEN_SPECIALS[:1], model_max_length=2048
    )  # ByteLevel.alphabet() comes in a random order per call: sorted
    tok.add_special_tokens({"additional_special_tokens": _QWEN_SPECIALS[1:]})
    tok.chat_template = _QWEN_CHAT_TEMPLATE
    return tok


def _gemma_tokenizer():
    """Gemma layout: pad=0, eos=1, bos=2 (prepended), ``▁`` for spaces, byte fallback."""
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    base = [f"<0x{i:02X}>" for i in range(256)] + sorted(set(string.printable.strip()) | {"▁"})
    words = sorted({p for w in _WORDS for p in (w, "▁" + w)})
    return _word_bpe(GemmaTokenizer, base, words, specials, add_bos_token=True, model_max_length=2048)


def _clip_tokenizer():
    """Character-level CLIP BPE: 256 byte symbols and their ``</w>`` forms, no merges."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = 77
    return tok


def _t5_tokenizer():
    """Unigram tokenizer in T5's layout (pad=0, eos=1, unk=2), whole words for ``_WORDS``."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for ch in string.ascii_letters + string.digits + string.punctuation:
        pieces += [(ch, -5.0), ("▁" + ch, -5.5)]
    pieces += [("▁" + w, -1.0) for w in sorted(set(_WORDS))]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0)
    tok.model_max_length = 512
    return tok


# --------------------------------------------------------------------------------------
# text encoders
# --------------------------------------------------------------------------------------


def _clip_encoder(seed: int, cls_name: str, vocab_size: int):
    import transformers

    config = transformers.CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=TEXT_DIM, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size, hidden_act="gelu",
        projection_dim=TEXT_DIM, max_position_embeddings=77,
    )  # fmt: skip
    return _seeded(seed, lambda: getattr(transformers, cls_name)(config))


def _t5_encoder(seed: int, vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return _seeded(seed, lambda: T5EncoderModel(config))


def _t5_pair(seed: int) -> tuple[Any, Any]:
    tok = _t5_tokenizer()
    return tok, _t5_encoder(seed, len(tok))


def _qwen_text_kwargs(tok) -> dict[str, Any]:
    return dict(
        hidden_size=_LM_DIM, intermediate_size=2 * _LM_DIM, num_attention_heads=2, num_key_value_heads=2,
        vocab_size=len(tok), max_position_embeddings=2048, rope_theta=1_000_000.0,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# VAEs
# --------------------------------------------------------------------------------------


def _kl_vae(seed: int, latent_channels: int, cls_name: str = "AutoencoderKL", **extra):
    """One-level (scale factor 1) KL autoencoder, as in diffusers' tiny pipeline tests."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    return _seeded(
        seed,
        lambda: cls(
            sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), layers_per_block=1,
            latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
            use_post_quant_conv=False, **extra,
        ),
    )  # fmt: skip


def _flow_scheduler(**kwargs):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**kwargs)


# --------------------------------------------------------------------------------------
# family builders: each returns (pipeline class, constructor kwargs)
# --------------------------------------------------------------------------------------


def _build_flux(seed: int, layers: int, single: int, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers

    transformer = _seeded(
        seed,
        lambda: diffusers.FluxTransformer2DModel(
            patch_size=1, in_channels=4, num_layers=layers, num_single_layers=single, attention_head_dim=16,
            num_attention_heads=heads, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
            guidance_embeds=True, axes_dims_rope=[4, 4, 8],
        ),
    )  # fmt: skip
    clip_tok = _clip_tokenizer()
    t5_tok, t5 = _t5_pair(seed)
    return diffusers.FluxPipeline, {
        "scheduler": _flow_scheduler(),
        "vae": _kl_vae(seed, 1, shift_factor=0.0609, scaling_factor=1.5035),
        "text_encoder": _clip_encoder(seed, "CLIPTextModel", len(clip_tok)),
        "tokenizer": clip_tok,
        "text_encoder_2": t5,
        "tokenizer_2": t5_tok,
        "transformer": transformer,
        "image_encoder": None,
        "feature_extractor": None,
    }


def _build_flux2(seed: int, layers: int, single: int, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = _qwen_tokenizer()
    text_config = Qwen3Config(num_hidden_layers=3, head_dim=8, **_qwen_text_kwargs(tok))
    text_width = 3 * text_config.hidden_size  # the pipeline stacks 3 hidden-state layers
    transformer = _seeded(
        seed,
        lambda: diffusers.Flux2Transformer2DModel(
            patch_size=1, in_channels=4, num_layers=layers, num_single_layers=single, attention_head_dim=16,
            num_attention_heads=heads, joint_attention_dim=text_width, timestep_guidance_channels=256,
            axes_dims_rope=[4, 4, 4, 4], guidance_embeds=False,
        ),
    )  # fmt: skip
    return diffusers.Flux2KleinPipeline, {
        "scheduler": _flow_scheduler(),
        "vae": _kl_vae(seed, 1, "AutoencoderKLFlux2"),
        "text_encoder": _seeded(seed, lambda: Qwen3ForCausalLM(text_config)),
        "tokenizer": tok,
        "transformer": transformer,
        "is_distilled": False,
    }


def _build_qwenimage(seed: int, layers: int, single: None, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = _qwen_tokenizer()
    text_kwargs = _qwen_text_kwargs(tok)
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
        "scheduler": _flow_scheduler(),
        "vae": _seeded(
            seed,
            lambda: diffusers.AutoencoderKLQwenImage(
                base_dim=8, z_dim=z_dim, dim_mult=[1], num_res_blocks=1, temperal_downsample=[],
                latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim,
            ),
        ),
        "text_encoder": _seeded(seed, lambda: Qwen2_5_VLForConditionalGeneration(config)),
        "tokenizer": tok,
        "transformer": _seeded(
            seed,
            lambda: diffusers.QwenImageTransformer2DModel(
                patch_size=2, in_channels=4 * z_dim, out_channels=z_dim, num_layers=layers, attention_head_dim=16,
                num_attention_heads=heads, joint_attention_dim=text_kwargs["hidden_size"], guidance_embeds=False,
                axes_dims_rope=(8, 4, 4),
            ),
        ),
    }  # fmt: skip


def _build_sana(seed: int, layers: int, single: None, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers
    from transformers import Gemma2Config, Gemma2Model

    tok = _gemma_tokenizer()
    text_config = Gemma2Config(
        head_dim=8, hidden_size=_LM_DIM, intermediate_size=2 * _LM_DIM, num_attention_heads=2,
        num_hidden_layers=1, num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        attn_implementation="eager",
    )  # fmt: skip
    width = heads * HEAD_DIM["sana"]
    return diffusers.SanaPipeline, {
        "scheduler": _flow_scheduler(shift=3.0),
        "vae": _seeded(
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
        "text_encoder": _seeded(seed, lambda: Gemma2Model(text_config)),
        "tokenizer": tok,
        "transformer": _seeded(
            seed,
            lambda: diffusers.SanaTransformer2DModel(
                patch_size=1, in_channels=4, out_channels=4, num_layers=layers, num_attention_heads=heads,
                attention_head_dim=HEAD_DIM["sana"], num_cross_attention_heads=heads,
                cross_attention_head_dim=HEAD_DIM["sana"], cross_attention_dim=width,
                caption_channels=text_config.hidden_size, sample_size=16,
            ),
        ),
    }  # fmt: skip


def _build_sd3(seed: int, layers: int, single: None, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers

    width = heads * HEAD_DIM["sd3"]
    clip_tok = _clip_tokenizer()
    t5_tok, t5 = _t5_pair(seed)
    return diffusers.StableDiffusion3Pipeline, {
        "transformer": _seeded(
            seed,
            lambda: diffusers.SD3Transformer2DModel(
                sample_size=32, patch_size=2, in_channels=4, num_layers=layers, attention_head_dim=HEAD_DIM["sd3"],
                num_attention_heads=heads, caption_projection_dim=width, joint_attention_dim=TEXT_DIM,
                pooled_projection_dim=2 * TEXT_DIM, out_channels=4,
            ),
        ),
        "scheduler": _flow_scheduler(),
        "vae": _kl_vae(seed, 4, shift_factor=0.0609, scaling_factor=1.5035),
        "text_encoder": _clip_encoder(seed, "CLIPTextModelWithProjection", len(clip_tok)),
        "tokenizer": clip_tok,
        "text_encoder_2": _clip_encoder(seed + 1, "CLIPTextModelWithProjection", len(clip_tok)),
        "tokenizer_2": _clip_tokenizer(),
        "text_encoder_3": t5,
        "tokenizer_3": t5_tok,
        "image_encoder": None,
        "feature_extractor": None,
    }  # fmt: skip


def _build_pixart(seed: int, layers: int, single: None, heads: int) -> tuple[type, dict[str, Any]]:
    import diffusers

    width = heads * HEAD_DIM["pixart"]
    t5_tok, t5 = _t5_pair(seed)
    return diffusers.PixArtSigmaPipeline, {
        "tokenizer": t5_tok,
        "text_encoder": t5,
        "vae": _kl_vae(seed, 4),
        "transformer": _seeded(
            seed,
            lambda: diffusers.PixArtTransformer2DModel(
                sample_size=32, num_layers=layers, patch_size=2, attention_head_dim=HEAD_DIM["pixart"],
                num_attention_heads=heads, caption_channels=TEXT_DIM, in_channels=4, cross_attention_dim=width,
                out_channels=8, attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
            ),
        ),
        "scheduler": diffusers.DDIMScheduler(),
    }  # fmt: skip


_BUILDERS: dict[str, Callable[[int, int, int | None, int], tuple[type, dict[str, Any]]]] = {
    "flux": _build_flux,
    "flux2": _build_flux2,
    "qwenimage": _build_qwenimage,
    "sana": _build_sana,
    "sd3": _build_sd3,
    "pixart": _build_pixart,
}
