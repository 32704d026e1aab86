"""Learned metrics (CLIP, DINO) on tiny random-weight models saved to and loaded from local directories."""
import numpy as np
import pytest
import torch

import massact_viz as mv
from massact_viz.metrics import METRICS, clip_metrics, compare, dino_metric
from massact_viz.probes import disrupt

from test_capture import SIZE

LEARNED = ("clip_t", "clip_i", "dino")


def _clip_tokenizer():
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):  # sorted: alphabet() order varies per call
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = 77
    return tok


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    d = tmp_path_factory.mktemp("clip")
    tok = _clip_tokenizer()
    small = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    cfg = CLIPConfig(text_config=dict(small, vocab_size=len(tok), bos_token_id=0, eos_token_id=1, pad_token_id=1,
                                      max_position_embeddings=77),
                     vision_config=dict(small, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    d = tmp_path_factory.mktemp("dino")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                             image_size=32, patch_size=8)).save_pretrained(d)
    BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def learned(clip_dir, dino_dir):
    clip_metrics(clip_dir, device="cpu")
    dino_metric(dino_dir, device="cpu")
    yield
    for m in LEARNED:
        METRICS.pop(m, None)


def _images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b[:16] = 255 - b[:16]
    return a, b


def test_clip_and_dino_similarities(learned):
    a, b = _images()
    for m in ("clip_i", "dino"):
        assert METRICS[m](a, a) == pytest.approx(1.0, abs=1e-5), m
        assert METRICS[m](a, b) < 1 - 1e-4, m
    t = compare(a, b, ("clip_t", "mse"), prompt="a red cat")
    assert -1.0 <= t["clip_t"] <= 1.0
    assert METRICS["clip_t"](a, b, prompt="a red cat") == t["clip_t"]  # deterministic; reference unused
    assert METRICS["clip_t"](a, a, prompt="a blue car") != t["clip_t"]
    assert all(METRICS[m].higher_is_better for m in LEARNED)
    assert METRICS["clip_t"].needs_prompt and not METRICS["clip_i"].needs_prompt
    with pytest.raises(mv.MassActError, match="prompt"):
        METRICS["clip_t"](a, b)


@pytest.mark.parametrize("load", [clip_metrics, dino_metric])
def test_a_bad_path_says_how_to_get_the_weights(tmp_path, load):
    for src in (tmp_path / "nowhere", "no-such-user/no-such-model"):
        with pytest.raises(mv.MassActError, match="hf download .*local path"):
            load(src, device="cpu")


def test_disrupt_reports_learned_metric_columns(learned, tiny_model):
    res = disrupt(tiny_model("flux"), ["a red cat", "a blue car"], ks=(2,), sets=("top",), num_steps=2, size=SIZE,
                  progress=False, metrics=("mse", "clip_t", "dino"))
    row = res.table[0]
    assert -1.0 <= row["clip_t"] <= 1.0 and -1.0 <= row["dino"] <= 1.0 + 1e-6 and row["mse"] >= 0
    assert "clip_t ↑" in res.to_markdown() and "dino ↑" in res.to_markdown()
