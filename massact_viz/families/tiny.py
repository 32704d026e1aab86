"""Tiny random-weight parts the families' test recipes are built from (:mod:`massact_viz.testing` builds
the pipelines): in-memory tokenizers (no files, no Hub, no training), narrow text encoders and VAEs, and
:class:`TinyRecipe`, what each family file declares about its tiny pipeline.

Every part is seeded (:func:`seeded`), so the same seed gives bit-identical weights. diffusers and
transformers are imported inside the functions: importing a family costs nothing.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Callable

TEXT_DIM = 32  # width of the CLIP/T5 text encoders
LM_DIM = 16  # width of the decoder-LM text encoders (Qwen3, Qwen2.5-VL, Gemma2)


@dataclass(frozen=True)
class TinyRecipe:
    """A family's tiny pipeline: ``build(seed, layers, single, heads) -> (pipeline class, components)``,
    the attention head width, the default depth ``(layers, single layers or None)`` and the keyword
    arguments every call needs (besides size and ``max_sequence_length``)."""

    build: Callable[[int, int, Any, int], tuple[type, dict[str, Any]]]
    head_dim: int
    layers: tuple[int, Any]
    call_kwargs: dict[str, Any] = field(default_factory=dict)


# Words that the in-memory BPE tokenizers know as whole tokens; anything else falls
# back to characters/bytes. Includes the words of QwenImage's system prompt so that
# its 34-token prefix (``prompt_template_encode_start_idx``) is exactly 34 tokens here too.
WORDS = (
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


def seeded(seed: int, factory: Callable[[], Any]) -> Any:
    """Run ``factory`` right after seeding, so each component's weights depend only on ``seed``."""
    import torch

    torch.manual_seed(seed)
    return factory()


def word_bpe(cls, base: list[str], words: list[str], specials: list[str] = (), **kwargs):
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


def qwen_tokenizer():
    """Byte-level BPE with Qwen2's pre-tokenizer, chat special tokens and a chat template."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    to_bytes = ByteLevel(add_prefix_space=False, use_regex=False)
    words = sorted({to_bytes.pre_tokenize_str(p)[0][0] for w in WORDS for p in (w, " " + w)})
    tok = word_bpe(
        Qwen2Tokenizer, sorted(ByteLevel.alphabet()), words, _QWEN_SPECIALS[:1], model_max_length=2048
    )  # ByteLevel.alphabet() comes in a random order per call: sorted
    tok.add_special_tokens({"additional_special_tokens": _QWEN_SPECIALS[1:]})
    tok.chat_template = _QWEN_CHAT_TEMPLATE
    return tok


def gemma_tokenizer():
    """Gemma layout: pad=0, eos=1, bos=2 (prepended), ``▁`` for spaces, byte fallback."""
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    base = [f"<0x{i:02X}>" for i in range(256)] + sorted(set(string.printable.strip()) | {"▁"})
    words = sorted({p for w in WORDS for p in (w, "▁" + w)})
    return word_bpe(GemmaTokenizer, base, words, specials, add_bos_token=True, model_max_length=2048)


def clip_tokenizer():
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


def t5_tokenizer():
    """Unigram tokenizer in T5's layout (pad=0, eos=1, unk=2), whole words for ``WORDS``."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for ch in string.ascii_letters + string.digits + string.punctuation:
        pieces += [(ch, -5.0), ("▁" + ch, -5.5)]
    pieces += [("▁" + w, -1.0) for w in sorted(set(WORDS))]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0)
    tok.model_max_length = 512
    return tok


def clip_encoder(seed: int, cls_name: str, vocab_size: int):
    import transformers

    config = transformers.CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=TEXT_DIM, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size, hidden_act="gelu",
        projection_dim=TEXT_DIM, max_position_embeddings=77,
    )  # fmt: skip
    return seeded(seed, lambda: getattr(transformers, cls_name)(config))


def t5_encoder(seed: int, vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return seeded(seed, lambda: T5EncoderModel(config))


def t5_pair(seed: int) -> tuple[Any, Any]:
    tok = t5_tokenizer()
    return tok, t5_encoder(seed, len(tok))


def qwen_text_kwargs(tok) -> dict[str, Any]:
    return dict(
        hidden_size=LM_DIM, intermediate_size=2 * LM_DIM, num_attention_heads=2, num_key_value_heads=2,
        vocab_size=len(tok), max_position_embeddings=2048, rope_theta=1_000_000.0,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
    )  # fmt: skip


def kl_vae(seed: int, latent_channels: int, cls_name: str = "AutoencoderKL", **extra):
    """One-level (scale factor 1) KL autoencoder, as in diffusers' tiny pipeline tests."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    return seeded(
        seed,
        lambda: cls(
            sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), layers_per_block=1,
            latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
            use_post_quant_conv=False, **extra,
        ),
    )  # fmt: skip


def flow_scheduler(**kwargs):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**kwargs)
