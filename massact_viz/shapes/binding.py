"""Does the teaching model's T5 slot tell the two objects of a caption apart?  Measure it, and train it to.

In ``a red square left of a blue circle`` the transformer reads the caption only through the T5 slot's
per-token output (FLUX gives every text token the same position, 0): to draw the red object on the left,
the output at ``red`` must carry that it belongs to the first object, which is a square on the left.  A
text encoder whose output at each token depends on that token alone (a *bag of words*) leaves only the
colours, the shapes and the relation's axis to draw from; which colour wears which shape, and which object
goes on which side, are then coin flips.

:func:`word_context` measures it: the cosine similarity between a word's T5-slot output in a two-object
caption and in the same caption with the objects swapped (1.0: the encoder does not see where a word
stands).  The step-60767 weights measure 1.000 for every word (data/shapes/CARD.md): their T5 attention
is saturated, each head putting its whole weight on a word that every caption has (``</s>``, ``on``,
``a``), so no gradient reaches the attention pattern and it never learns from context.

Training remedies (``massact_viz.shapes.train``, both measured in the model card's pilots):

* :func:`soften_attention` divides the T5 slot's attention logits by a factor (its query weights; T5 does
  not scale its logits by 1/sqrt(d)), once, when a run starts from weights: the saturated pattern becomes
  soft again, and gradients reach it;
* :class:`BindingHead` is a training-only linear head on the T5 slot's output whose loss asks, at every
  word of an object (its ``a``, colour and shape), for that object's colour, shape and side (:data:`SIDES`;
  ``alone`` for a one-object caption).  The head is not part of the pipeline and is never shipped.

Every word of the language is one T5 piece (``model.build_t5_tokenizer``), so word ``i`` of a caption is
token ``i`` of its T5 ids (tested).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from . import scenes

__all__ = ["SIDES", "IGNORE", "word_targets", "token_targets", "BindingHead", "soften_attention",
           "swap_objects", "word_context"]

#: where an object stands: alone (one-object caption), or its side of the pair
SIDES: tuple[str, ...] = ("alone", "left", "right", "top", "bottom")
#: the target of a word that belongs to no object (cross-entropy's ignore_index)
IGNORE = -100
_COLOUR = {c: i for i, c in enumerate(scenes.COLOUR_NAMES)}
_SHAPE = {s: i for i, s in enumerate(scenes.SHAPES)}
#: relation -> (side of the first object, side of the second)
_PAIR_SIDES = {"left of": ("left", "right"), "right of": ("right", "left"), "above": ("top", "bottom"),
               "below": ("bottom", "top")}


@lru_cache(maxsize=50_000)
def _word_targets(caption: str) -> tuple[tuple[int, int, int], ...]:
    p = scenes.parse_caption(caption)
    words = scenes.normalize_caption(caption).split(" ")
    out = [(IGNORE, IGNORE, IGNORE)] * len(words)
    sides = _PAIR_SIDES[p["relation"]] if p["relation"] else ("alone",)
    starts = [0] if p["relation"] is None else [0, 3 + len(p["relation"].split(" "))]
    for obj, start, side in zip(p["objects"], starts, sides):
        label = (_COLOUR[obj["colour"]], _SHAPE[obj["shape"]], SIDES.index(side))
        out[start:start + 3] = [label] * 3   # 'a', the colour, the shape
    return tuple(out)


def word_targets(caption: str) -> np.ndarray:
    """(words, 3) int64: for each word of ``caption`` that belongs to an object (its ``a``, colour and shape),
    that object's colour, shape and side (indices into ``scenes.COLOUR_NAMES``, ``scenes.SHAPES``,
    :data:`SIDES`); :data:`IGNORE` for the other words. Raises ``ValueError`` for text outside the language."""
    return np.array(_word_targets(caption), dtype=np.int64).reshape(-1, 3)


def token_targets(captions: list[str], length: int) -> torch.Tensor:
    """(len(captions), length, 3) int64 targets aligned with the T5 slot's tokens (word i = token i);
    the empty caption (caption dropout) and the tokens past the words are :data:`IGNORE`."""
    out = np.full((len(captions), length, 3), IGNORE, dtype=np.int64)
    for i, c in enumerate(captions):
        if c:
            t = word_targets(c)[:length]
            out[i, :len(t)] = t
    return torch.from_numpy(out)


class BindingHead(torch.nn.Module):
    """A linear read-out of the T5 slot's per-token output: each object word's colour, shape and side of its
    object. Training only: the pipeline never calls it and it is never shipped."""

    def __init__(self, d_model: int, generator: torch.Generator | None = None):
        super().__init__()
        self.sizes = (len(scenes.COLOUR_NAMES), len(scenes.SHAPES), len(SIDES))
        self.proj = torch.nn.Linear(d_model, sum(self.sizes))
        with torch.no_grad():   # a seeded initialisation: every data-parallel process starts from the same head
            bound = d_model ** -0.5
            self.proj.weight.copy_(torch.rand(self.proj.weight.shape, generator=generator) * 2 * bound - bound)
            self.proj.bias.zero_()

    def forward(self, embeds: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracies): the mean of the three cross-entropies over the object words, and the (3,)
        accuracies of colour, shape and side. Sums are divided by ``counts`` (3,), by default this batch's own
        numbers of object words: a data-parallel slice passes its whole batch's numbers divided by the number of
        processes, so that the processes' average is the whole batch's mean. No object words: 0 loss, NaN
        accuracy."""
        logits = self.proj(embeds.float()).split(self.sizes, dim=-1)
        targets = targets.to(embeds.device)
        if counts is None:
            counts = (targets != IGNORE).sum(dim=tuple(range(targets.ndim - 1)))
        losses, accs = [], []
        for z, y, n in zip(logits, targets.unbind(-1), counts.to(embeds.device).float().unbind()):
            keep = y != IGNORE
            if not bool(n > 0):
                losses.append(z.sum() * 0.0)
                accs.append(torch.tensor(float("nan"), device=z.device))
                continue
            losses.append(F.cross_entropy(z[keep], y[keep], reduction="sum") / n)
            accs.append((z[keep].argmax(-1) == y[keep]).float().sum().detach() / n)
        return torch.stack(losses).mean(), torch.stack(accs)


@torch.no_grad()
def soften_attention(text_encoder_2, factor: float) -> None:
    """Divide the attention logits of every self-attention layer of the T5 slot by ``factor`` (scaling its query
    weights; the relative position bias stays). ``factor`` 1 changes nothing."""
    if not factor > 0:
        raise ValueError(f"the softening factor must be positive, got {factor}")
    for block in text_encoder_2.encoder.block:
        block.layer[0].SelfAttention.q.weight.mul_(1.0 / factor)


def swap_objects(caption: str) -> str:
    """The two-object ``caption`` with its objects exchanged (same relation, background and style words):
    every word stays the same word, only where it stands changes."""
    p = scenes.parse_caption(caption)
    if p["relation"] is None:
        raise ValueError(f"{caption!r} has one object: nothing to swap")
    words = scenes.normalize_caption(caption).split(" ")
    k = 3 + len(p["relation"].split(" "))
    return " ".join(words[k:k + 3] + words[3:k] + words[:3] + words[k + 3:])


@torch.no_grad()
def word_context(pipe, captions: list[str]) -> np.ndarray:
    """Per two-object caption, the mean cosine similarity between the T5-slot output at each of its object
    words (``a``, colour, shape of both objects) and the output at the same word in :func:`swap_objects`'
    caption, where it stands in the other object's place. 1.0 for a bag-of-words encoder; lower, the more
    the output says which object a word belongs to. NaN for a caption whose two objects are equal (its swap
    is the same caption)."""
    swapped = [swap_objects(c) for c in captions]
    embeds = pipe.encode_prompt(prompt=list(captions) + swapped, prompt_2=None,
                                device=pipe.text_encoder_2.device)[0].float()   # what the transformer reads
    a, b = embeds[:len(captions)], embeds[len(captions):]
    out = []
    for i, c in enumerate(captions):
        if swapped[i] == scenes.normalize_caption(c):   # two equal objects: swapping changes nothing
            out.append(float("nan"))
            continue
        k = 3 + len(scenes.parse_caption(c)["relation"].split(" "))
        first, second = list(range(3)), list(range(k, k + 3))
        # the word at position j of the caption sits at position m(j) of the swapped one
        pos_a = first + second
        pos_b = second + first
        sims = F.cosine_similarity(a[i, pos_a], b[i, pos_b], dim=-1)
        out.append(float(sims.mean()))
    return np.array(out)
