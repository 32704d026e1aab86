"""The T5 slot's binding: targets, the object swap, the bag-of-words measurement, softening, the training-only
head, and the trainer's options around them."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from massact_viz.shapes import binding as B
from massact_viz.shapes import scenes as S

from test_shapes_scenes import TINY

I = B.IGNORE


def _label(colour, shape, side):
    return [S.COLOUR_NAMES.index(colour), S.SHAPES.index(shape), B.SIDES.index(side)]


def test_each_object_word_is_asked_for_its_objects_colour_shape_and_side():
    t = B.word_targets("a red square left of a blue circle on a plain green background")
    red, blue = _label("red", "square", "left"), _label("blue", "circle", "right")
    want = [red] * 3 + [[I] * 3] * 2 + [blue] * 3 + [[I] * 3] * 5
    assert t.tolist() == want
    t = B.word_targets("a white triangle below a white triangle on a black background")   # a one-word relation
    assert t[:3].tolist() == [_label("white", "triangle", "bottom")] * 3
    assert t[3].tolist() == [I] * 3 and t[4:7].tolist() == [_label("white", "triangle", "top")] * 3
    one = B.word_targets("A yellow circle on a speckled red background.")   # normalised like every caption
    assert one[:3].tolist() == [_label("yellow", "circle", "alone")] * 3 and (one[3:] == I).all()
    with pytest.raises(ValueError, match="outside the shapes language"):
        B.word_targets("a purple hexagon on a blue background")


def test_targets_line_up_with_the_t5_slots_tokens():
    from massact_viz.shapes.model import build_t5_tokenizer

    tok = build_t5_tokenizer(16)
    caps = S.heldout_captions(40, seed=3) + S.heldout_captions(40, seed=4, p_two=1.0)
    targets = B.token_targets(caps + [""], 16)
    assert targets.shape == (81, 16, 3) and targets.dtype == torch.int64
    for i, c in enumerate(caps):
        words = c.split(" ")
        pieces = tok.convert_ids_to_tokens(tok(c, padding="max_length", max_length=16).input_ids)
        assert pieces[:len(words)] == ["\u2581" + w for w in words] and pieces[len(words)] == tok.eos_token
        for j, w in enumerate(words):   # colour and shape tokens are asked for their own word's meaning too
            if w in S.COLOURS and (targets[i, j] != I).all():
                assert S.COLOUR_NAMES[targets[i, j, 0]] == w
            if w in S.SHAPES:
                assert S.SHAPES[targets[i, j, 1]] == w
        assert (targets[i, len(words):] == I).all()
    assert (targets[-1] == I).all()                                       # a dropped caption asks nothing
    assert B.token_targets([caps[-1]], 4).shape == (1, 4, 3)              # cut at the encoder's length


def test_swapping_objects_moves_words_and_keeps_the_rest():
    c = "a red square left of a blue circle on a plain green background"
    s = B.swap_objects(c)
    assert s == "a blue circle left of a red square on a plain green background"
    assert B.swap_objects(s) == c and sorted(s.split()) == sorted(c.split())
    p, q = S.parse_caption(c), S.parse_caption(B.swap_objects("a green triangle above a red circle on a blue background"))
    assert q["objects"] == [{"colour": "red", "shape": "circle"}, {"colour": "green", "shape": "triangle"}]
    assert q["relation"] == "above" and p["relation"] == "left of"
    with pytest.raises(ValueError, match="one object"):
        B.swap_objects("a red circle on a blue background")


@pytest.fixture()
def tiny_pipe():
    from massact_viz.shapes.model import build_shapes_pipeline

    return build_shapes_pipeline({**TINY, "t5_num_layers": 2})


def test_word_context_reads_one_for_a_bag_of_words_and_less_for_context(tiny_pipe):
    caps = ["a red square left of a blue circle on a plain green background",
            "a white triangle above a black square on a blue background",
            "a red square left of a red square on a blue background"]   # equal objects: the swap is itself
    fresh = B.word_context(tiny_pipe, caps)
    assert np.isnan(fresh[2]) and (fresh[:2] < 0.999).all(), fresh       # attention mixes words: context
    with torch.no_grad():                                                 # attention adds nothing: a bag of words
        for block in tiny_pipe.text_encoder_2.encoder.block:
            block.layer[0].SelfAttention.o.weight.zero_()
    bag = B.word_context(tiny_pipe, caps)
    assert np.allclose(bag[:2], 1.0, atol=1e-5), bag


def test_softening_divides_the_attention_logits(tiny_pipe):
    t5 = tiny_pipe.text_encoder_2
    ids = torch.tensor([tiny_pipe.tokenizer_2("a red square left of a blue circle on a green background",
                                              padding="max_length", max_length=16).input_ids])
    attn = lambda: t5.set_attn_implementation("eager") or t5(ids, output_attentions=True).attentions   # noqa: E731
    before = [a.clone() for a in attn()]
    q = [b.layer[0].SelfAttention.q.weight.clone() for b in t5.encoder.block]
    B.soften_attention(t5, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(attn(), before))
    B.soften_attention(t5, 4.0)
    assert all(torch.allclose(b.layer[0].SelfAttention.q.weight, w / 4) for b, w in zip(t5.encoder.block, q))
    entropy = lambda ps: [float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean()) for p in ps]   # noqa: E731
    assert all(e1 > e0 for e0, e1 in zip(entropy(before), entropy(attn())))   # flatter, as logits / 4 are
    for bad in (0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            B.soften_attention(t5, bad)


def test_the_binding_head_learns_the_targets_and_ignores_the_rest():
    gen = torch.Generator().manual_seed(0)
    head, again = B.BindingHead(8, generator=gen), B.BindingHead(8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(head.proj.weight, again.proj.weight)               # seeded: the same head everywhere
    embeds = torch.randn(4, 6, 8, generator=gen)
    targets = torch.full((4, 6, 3), I)
    loss, accs = head(embeds, targets)
    assert float(loss.detach()) == 0.0 and torch.isnan(accs).all()        # nothing asked: no loss
    loss.backward()
    targets[:, :3] = torch.tensor([2, 1, 3])
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        loss, accs = head(embeds, targets)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.1 * first and torch.equal(accs, torch.ones(3))
    # data-parallel slices divide by their whole batch's counts / 2: the two halves average to the whole's mean,
    # also when the halves hold different numbers of object words
    targets[0, 3:5] = torch.tensor([1, 2, 0])
    whole, whole_acc = head(embeds, targets)
    counts = (targets != I).sum(dim=(0, 1)) / 2
    halves = [head(embeds[s], targets[s], counts) for s in (slice(0, 1), slice(1, 4))]
    assert torch.allclose((halves[0][0] + halves[1][0]) / 2, whole)
    assert torch.allclose((halves[0][1] + halves[1][1]) / 2, whole_acc)
    own = head(embeds[:1], targets[:1])[0]
    assert not torch.allclose((own + head(embeds[1:], targets[1:])[0]) / 2, whole)   # the plain means do not


COMMON = dict(batch=8, lr=3e-3, warmup=5, config=TINY, eval_n=0, val_n=0, progress=False, log_every=1, threads=1,
              p_two=0.7, binding_loss=0.1, binding_lr=1e-2, soften_text_attention=4.0)


def test_binding_training_resumes_bit_for_bit_and_ships_no_head(tmp_path):
    from safetensors.torch import load_file

    from massact_viz.shapes import train as T

    straight = T.train(T.TrainArgs(out=str(tmp_path / "a"), ckpt_dir=str(tmp_path / "ca"), steps=12, **COMMON))
    T.train(T.TrainArgs(out=str(tmp_path / "b"), ckpt_dir=str(tmp_path / "cb"), steps=6, **COMMON))
    T.train(T.TrainArgs(out=str(tmp_path / "b"), ckpt_dir=str(tmp_path / "cb"), steps=12, **COMMON))
    ca, cb = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("ca", "cb"))
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])   # softened once, not on resume
    assert all(torch.equal(ca["binding_head"][k], cb["binding_head"][k]) for k in ca["binding_head"])
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not any("binding" in k for k in wa)                           # the head never ships
    plain = T.train(T.TrainArgs(out=str(tmp_path / "p"), ckpt_dir=str(tmp_path / "cp"), steps=1,
                                **{**COMMON, "binding_loss": 0.0, "binding_lr": None, "soften_text_attention": 1.0}))
    assert load_file(str(tmp_path / "p" / "model.safetensors")).keys() == wa.keys()
    assert "binding" not in plain["history"][-1]
    logged = [json.loads(line) for line in (tmp_path / "ca" / "log.jsonl").read_text().splitlines()]
    assert len(logged) == 12 and set(logged[-1]["binding"]) == {"loss", "colour", "shape", "side"}
    assert straight["history"][-1]["binding"]["loss"] < logged[0]["binding"]["loss"]
    line = json.loads((tmp_path / "a" / "config.json").read_text())["training"]["history"][-1]
    assert "T5 attention logits divided by 4 at the start" in line and "binding loss 0.1" in line
    assert "T5 slot and binding head at lr 0.01" in line
    # the T5 slot trains at --binding-lr, the rest at --lr (both on the schedule)
    run = T._Training(T.TrainArgs(out=str(tmp_path / "x"), ckpt_dir=str(tmp_path / "cx"), steps=1, **COMMON),
                      torch.device("cpu"))
    t5 = {id(p) for p in run.pipe.text_encoder_2.parameters()} | {id(p) for p in run.aux_params}
    for g in run.opt.param_groups:
        assert g["lr_scale"] == (1e-2 / 3e-3 if all(id(p) in t5 for p in g["params"]) else 1.0)
        assert all(id(p) in t5 for p in g["params"]) or not any(id(p) in t5 for p in g["params"])


def test_a_checkpoint_resumes_only_with_the_binding_head_it_was_trained_with(tmp_path):
    from massact_viz.shapes import train as T

    T.train(T.TrainArgs(out=str(tmp_path / "o"), ckpt_dir=str(tmp_path / "c"), steps=2, **COMMON))
    with pytest.raises(ValueError, match="trained with a binding head"):
        T.train(T.TrainArgs(out=str(tmp_path / "o"), ckpt_dir=str(tmp_path / "c"), steps=4,
                            **{**COMMON, "binding_loss": 0.0}))
    plain = {**COMMON, "binding_loss": 0.0, "binding_lr": None}
    T.train(T.TrainArgs(out=str(tmp_path / "p"), ckpt_dir=str(tmp_path / "cp"), steps=2, **plain))
    with pytest.raises(ValueError, match="trained without a binding head"):
        T.train(T.TrainArgs(out=str(tmp_path / "p"), ckpt_dir=str(tmp_path / "cp"), steps=4, **COMMON))


@pytest.mark.parametrize("bad, match", [({"binding_loss": -0.1}, "binding-loss"), ({"binding_lr": 0.0}, "binding-lr"),
                                        ({"soften_text_attention": 0.0}, "soften-text-attention")])
def test_bad_binding_options_are_refused_before_anything_is_built(tmp_path, bad, match):
    from massact_viz.shapes import train as T

    with pytest.raises(ValueError, match=match):
        T.train(T.TrainArgs(out=str(tmp_path / "o"), ckpt_dir=str(tmp_path / "c"), steps=1, **{**COMMON, **bad}))
    assert not (tmp_path / "c").exists()
