"""The ``shapes`` teaching model: a small FLUX.1-style text-to-image DiT in plain diffusers.

``build_shapes_pipeline(config)`` returns a randomly initialised
``diffusers.FluxPipeline``; ``load_shapes_pipeline(path)`` builds the same
pipeline and loads trained weights from ``path`` (``config.json`` +
``model.safetensors``, see ``save_shapes_weights``).  Everything is built in
memory (no Hub, no tokenizer files).

Components (default ``ShapesConfig``):

* ``vae``: ``PixelShuffleVAE(factor=2)`` - exact, weight-free space-to-depth, so
  ``pipe.vae_scale_factor == 2`` and FluxPipeline's 2x2 packing makes one token
  per 4x4 pixel patch: 32x32 px -> 8x8 = 64 image tokens x 48 channels.
* ``transformer``: ``FluxTransformer2DModel`` with 4 double-stream + 8 single-
  stream blocks, 4 heads x 32 = hidden 128, RoPE axes (8, 12, 12),
  ``guidance_embeds=False``, ``patch_size=1``, ``in_channels=48``.
* ``tokenizer_2`` / ``text_encoder_2`` (the T5 slot, per-token context): a
  ``T5TokenizerFast`` whose Unigram vocabulary has every word of the language as
  one piece (``"▁red"``), with single-character pieces as a fallback for other
  text, and a 3-layer ``T5EncoderModel`` (d_model 128).  The tokenizer is a
  small subclass (``ShapesT5Tokenizer``) that caps ``max_length`` at its
  ``model_max_length`` (16): FluxPipeline asks for ``max_sequence_length=512``
  by default, and every caption of the language fits in 14 tokens, so prompts are
  always padded to exactly 16 tokens, as in training.  (Flux does not mask pad
  tokens, so the pad length is part of the model's input; the cap keeps it fixed
  and keeps the sequence at 64 + 16 tokens.)
* ``tokenizer`` / ``text_encoder`` (the CLIP slot, pooled vector): a
  ``CLIPTokenizer`` whose byte-level BPE merges make every word of the language
  one token (``"red</w>"``), with max length 16, and a 2-layer ``CLIPTextModel``
  (hidden 64) whose ``pooler_output`` (the final-layer-norm state at the
  ``<|endoftext|>`` token, causal attention) feeds ``pooled_projections``.
* Both text encoders are trained jointly with the transformer from scratch (no
  pretrained weights exist offline); they are not CLIP/T5 in any semantic sense,
  only in architecture and interface.
* ``scheduler``: ``FlowMatchEulerDiscreteScheduler(shift=1.0,
  use_dynamic_shifting=False)``.  FluxPipeline still computes ``mu`` from
  ``calculate_shift`` and passes it, but with dynamic shifting off the scheduler
  ignores it, so sampling uses the plain sigmas ``linspace(1, 1/N, N)`` (then 0),
  matching training's uniform-in-time rectified flow.

Inference::

    pipe = load_shapes_pipeline("data/shapes")
    out = pipe("a red circle on a blue background", negative_prompt="",
               true_cfg_scale=4.0, num_inference_steps=20, height=32, width=32,
               generator=torch.Generator().manual_seed(0))
    out.images[0]  # 32x32 PIL image

``negative_prompt=""`` is the null caption used for caption dropout in training;
``true_cfg_scale > 1`` *and* a negative prompt turn on classifier-free guidance
(two transformer calls per step).  ``guidance_scale`` is ignored
(``guidance_embeds=False``).  ``pipe.default_sample_size`` is set so that
height/width default to 32.

Diffusers layout: ``pipe.save_pretrained(d)`` works, and
``DiffusionPipeline.from_pretrained(d)`` loads it back (outputs equal to ~1e-6)
provided ``massact_viz.shapes.model`` and ``massact_viz.shapes.vae`` are
imported first (diffusers 0.42 resolves the custom ``PixelShuffleVAE`` and
``ShapesT5Tokenizer`` from ``sys.modules`` only).  That route does not restore
``default_sample_size``: pass ``height=32, width=32``.  The shipped format is the
smaller ``config.json`` + ``model.safetensors`` pair read by
``load_shapes_pipeline``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast
from transformers import PreTrainedTokenizerFast  # noqa: F401  (diffusers' loader looks base classes up here)

from ..files import atomic_write, data_dir
from .scenes import VOCABULARY
from .vae import PixelShuffleVAE

__all__ = [
    "ShapesConfig",
    "ShapesT5Tokenizer",
    "build_t5_tokenizer",
    "build_clip_tokenizer",
    "build_shapes_pipeline",
    "load_shapes_pipeline",
    "save_shapes_weights",
    "shapes_state_dict",
    "load_shapes_state_dict",
    "default_weights_dir",
    "trainable_modules",
    "FORMAT",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
]

FORMAT = "massact_viz.shapes/1"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
COMPONENTS = ("transformer", "text_encoder", "text_encoder_2")


@dataclass
class ShapesConfig:
    """Architecture of the shapes pipeline (everything needed to rebuild it)."""

    image_size: int = 32  # native resolution (px)
    vae_factor: int = 2  # pixel-unshuffle factor; token = (2*vae_factor)^2 px patch
    # transformer
    num_layers: int = 4  # double-stream blocks
    num_single_layers: int = 8
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)
    # T5 slot
    max_text_length: int = 16
    t5_d_model: int = 128
    t5_d_ff: int = 256
    t5_num_layers: int = 3
    t5_num_heads: int = 4
    # CLIP slot
    clip_max_length: int = 16
    clip_hidden: int = 64
    clip_intermediate: int = 128
    clip_num_layers: int = 2
    clip_num_heads: int = 4
    # scheduler
    shift: float = 1.0
    # random init
    seed: int = 0

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["axes_dims_rope"] = list(self.axes_dims_rope)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ShapesConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ShapesConfig fields: {sorted(unknown)}")
        d = dict(d)
        if "axes_dims_rope" in d:
            d["axes_dims_rope"] = tuple(d["axes_dims_rope"])
        return cls(**d)


# --------------------------------------------------------------------------- tokenizers


class ShapesT5Tokenizer(T5TokenizerFast):
    """``T5TokenizerFast`` that never pads or truncates beyond ``model_max_length``.

    FluxPipeline calls ``tokenizer_2(prompt, padding="max_length",
    max_length=max_sequence_length)`` with ``max_sequence_length=512`` by
    default; capping ``max_length`` keeps the text sequence at the trained length
    whatever the caller passes.  Longer text is truncated (with the pipeline's
    usual warning)."""

    def __call__(self, *args, **kwargs):
        ml = kwargs.get("max_length")
        if ml is not None and self.model_max_length and ml > self.model_max_length:
            kwargs["max_length"] = self.model_max_length
        return super().__call__(*args, **kwargs)


def build_t5_tokenizer(max_length: int = 16) -> ShapesT5Tokenizer:
    """Deterministic in-memory T5 (Unigram) tokenizer: pad=0, eos=1, unk=2; every
    word of the language is a single piece, characters are the fallback."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + w, -1.0) for w in VOCABULARY]
    seen = {p for p, _ in pieces}
    for c in string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation:
        for p, s in ((c, -6.0), ("▁" + c, -6.5)):
            if p not in seen:
                pieces.append((p, s))
                seen.add(p)
    tok = ShapesT5Tokenizer(vocab=pieces, extra_ids=0)
    tok.model_max_length = max_length
    return tok


def _bpe_merges(words) -> list[tuple[str, str]]:
    """Tiny deterministic BPE trainer: merges until every word is one symbol
    (CLIP convention: the last character carries ``</w>``)."""
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in sorted(set(words))]
    merges = []
    while any(len(s) > 1 for s in seqs):
        counts: dict[tuple[str, str], int] = {}
        for s in seqs:
            for p in zip(s, s[1:]):
                counts[p] = counts.get(p, 0) + 1
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        a, b = pair
        new = []
        for s in seqs:
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new.append(out)
        seqs = new
    return merges


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2 / CLIP byte -> printable-unicode map (deterministic, unlike ByteLevel.alphabet()).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_clip_tokenizer(max_length: int = 16) -> CLIPTokenizer:
    """Deterministic in-memory CLIP (byte-level BPE) tokenizer: bos=0,
    eos=pad=1; every word of the language is one token, any other text falls
    back to byte symbols."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(_bytes_to_unicode().values()):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = _bpe_merges(VOCABULARY)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[(a, b) for a, b in merges])
    tok.model_max_length = max_length
    return tok


# --------------------------------------------------------------------------- build


def _eval_mode(pipe: FluxPipeline) -> FluxPipeline:
    for c in pipe.components.values():
        if isinstance(c, torch.nn.Module):
            c.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_shapes_pipeline(config: ShapesConfig | dict | None = None) -> FluxPipeline:
    """A randomly initialised shapes ``FluxPipeline`` (eval mode, grads off,
    progress bar off; deterministic given ``config.seed``)."""
    if config is None:
        config = ShapesConfig()
    elif isinstance(config, dict):
        config = ShapesConfig.from_dict(config)
    cfg = config
    if sum(cfg.axes_dims_rope) != cfg.attention_head_dim:
        raise ValueError("sum(axes_dims_rope) must equal attention_head_dim")
    if cfg.image_size % (2 * cfg.vae_factor):
        raise ValueError("image_size must be divisible by 2 * vae_factor")

    tok = build_clip_tokenizer(cfg.clip_max_length)
    tok2 = build_t5_tokenizer(cfg.max_text_length)
    vae = PixelShuffleVAE(factor=cfg.vae_factor, in_channels=3, sample_size=cfg.image_size)
    latent_ch = vae.config.latent_channels

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(cfg.seed)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * latent_ch,
            out_channels=None,
            num_layers=cfg.num_layers,
            num_single_layers=cfg.num_single_layers,
            attention_head_dim=cfg.attention_head_dim,
            num_attention_heads=cfg.num_attention_heads,
            joint_attention_dim=cfg.t5_d_model,
            pooled_projection_dim=cfg.clip_hidden,
            guidance_embeds=False,
            axes_dims_rope=tuple(cfg.axes_dims_rope),
        )
        torch.manual_seed(cfg.seed + 1)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tok),
                hidden_size=cfg.clip_hidden,
                intermediate_size=cfg.clip_intermediate,
                num_hidden_layers=cfg.clip_num_layers,
                num_attention_heads=cfg.clip_num_heads,
                max_position_embeddings=cfg.clip_max_length,
                projection_dim=cfg.clip_hidden,
                hidden_act="gelu",
                attention_dropout=0.0,
                dropout=0.0,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        )
        torch.manual_seed(cfg.seed + 2)
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tok2),
                d_model=cfg.t5_d_model,
                d_kv=cfg.t5_d_model // cfg.t5_num_heads,
                d_ff=cfg.t5_d_ff,
                num_layers=cfg.t5_num_layers,
                num_heads=cfg.t5_num_heads,
                relative_attention_num_buckets=16,
                relative_attention_max_distance=32,
                dropout_rate=0.0,
                feed_forward_proj="gated-gelu",
                decoder_start_token_id=tok2.pad_token_id,
                pad_token_id=tok2.pad_token_id,
                eos_token_id=tok2.eos_token_id,
            )
        )
    finally:
        torch.random.set_rng_state(gen_state)

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.shift, use_dynamic_shifting=False)
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tok2,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )
    # FluxPipeline's default height/width is default_sample_size * vae_scale_factor (128 * 2):
    # make the default the native size.
    pipe.default_sample_size = cfg.image_size // cfg.vae_factor
    pipe.shapes_config = cfg  # plain attribute, for tools that want the architecture
    return _eval_mode(pipe)


def trainable_modules(pipe: FluxPipeline) -> dict[str, torch.nn.Module]:
    """The three trained components, by pipeline attribute name."""
    return {name: getattr(pipe, name) for name in COMPONENTS}


# --------------------------------------------------------------------------- weights I/O


def shapes_state_dict(pipe_or_modules, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Flat state dict ``{component.param: tensor}`` of the trained components,
    tied duplicates removed (T5's ``encoder.embed_tokens`` = ``shared``).
    Accepts a pipeline, a ``{component: module}`` dict, or an existing flat
    state dict (returned cast to ``dtype``)."""
    if isinstance(pipe_or_modules, dict) and all(isinstance(v, torch.Tensor) for v in pipe_or_modules.values()):
        return {
            k: (v.detach().cpu().to(dtype) if dtype is not None and v.is_floating_point() else v.detach().cpu())
            .contiguous()
            .clone()
            for k, v in pipe_or_modules.items()
        }
    mods = trainable_modules(pipe_or_modules) if isinstance(pipe_or_modules, FluxPipeline) else pipe_or_modules
    out = {}
    for name in COMPONENTS:
        seen = set()
        for k, v in mods[name].state_dict().items():
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
            if key in seen:
                continue
            seen.add(key)
            t = v.detach().cpu()
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[f"{name}.{k}"] = t.contiguous().clone()
    return out


def load_shapes_state_dict(pipe_or_modules, state: dict[str, torch.Tensor]) -> None:
    """Load a ``shapes_state_dict`` into the components (casting to their dtype);
    only tied aliases may be missing."""
    mods = trainable_modules(pipe_or_modules) if isinstance(pipe_or_modules, FluxPipeline) else pipe_or_modules
    for name in COMPONENTS:
        m = mods[name]
        prefix = name + "."
        sd = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        ref = m.state_dict()
        sd = {k: v.to(ref[k].dtype) if k in ref else v for k, v in sd.items()}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        if unexpected:
            raise ValueError(f"{name}: unexpected keys {unexpected[:5]}")
        ptr = {}
        for k, v in ref.items():
            ptr.setdefault((v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)), []).append(k)
        for k in missing:
            group = next(g for g in ptr.values() if k in g)
            if not any(g in sd for g in group):
                raise ValueError(f"{name}: missing weights for {k}")


def save_shapes_weights(
    pipe_or_modules,
    path: str | os.PathLike,
    config: ShapesConfig,
    *,
    dtype: torch.dtype = torch.float16,
    metadata: dict | None = None,
) -> Path:
    """Write ``path/model.safetensors`` (``dtype``, default fp16) and
    ``path/config.json`` (architecture + free-form ``metadata``), atomically."""
    from safetensors.torch import save

    path = Path(path)
    state = shapes_state_dict(pipe_or_modules, dtype=dtype)
    atomic_write(path / WEIGHTS_NAME, save(state, metadata={"format": "pt", "shapes_format": FORMAT}))
    doc = {"format": FORMAT, "config": config.to_dict(), "dtype": str(dtype).replace("torch.", ""), **(metadata or {})}
    atomic_write(path / CONFIG_NAME, json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def default_weights_dir() -> Path:
    """``data/shapes`` of the project (``massact_viz.files.data_dir``; MASSACT_VIZ_DATA overrides)."""
    return data_dir() / "shapes"


def read_shapes_config(path: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a weights directory."""
    doc = json.loads((Path(path) / CONFIG_NAME).read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a shapes weights directory (format {doc.get('format')!r}, want {FORMAT!r})")
    return doc


def load_shapes_pipeline(
    path: str | os.PathLike | None = None,
    *,
    torch_dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> FluxPipeline:
    """Build the pipeline described by ``path/config.json`` and load
    ``path/model.safetensors`` (stored fp16 or fp32; cast to ``torch_dtype``,
    default fp32).  ``path`` defaults to ``default_weights_dir()``.  The result
    is in eval mode with gradients and the progress bar off."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else default_weights_dir()
    if not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"no shapes weights at {path / WEIGHTS_NAME}; train them with "
            "`python -m massact_viz.shapes.train --out data/shapes`"
        )
    doc = read_shapes_config(path)
    pipe = build_shapes_pipeline(ShapesConfig.from_dict(doc["config"]))
    load_shapes_state_dict(pipe, load_file(str(path / WEIGHTS_NAME)))
    pipe.shapes_metadata = doc
    if torch_dtype != torch.float32:
        pipe.to(dtype=torch_dtype)
    if device is not None:
        pipe.to(device)
    return pipe
