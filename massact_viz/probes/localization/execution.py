"""Running a :class:`~.plan.LocalizationPlan` one chunk of prompts at a time: generate with the raw image
tokens of every chosen layer and step, cluster them restricted to each channel set and score the
foreground against each prompt's mask."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...analysis import select
from ...capture import Capture, Raw
from ...stats import ChannelStats
from .clustering import cluster_features
from .masks import iou, resolve_masks, upsample
from .plan import LocalizationPlan

if TYPE_CHECKING:
    from ...model import Model


def mean_stats(model: "Model", plan: LocalizationPlan) -> ChannelStats:
    """The statistics of every prompt (no raw slices): what ``rank="mean"`` ranks channels by."""
    cap = Capture(layers=list(plan.layers), steps=list(plan.steps), streams=["image"], sun=False)
    return model.run(list(plan.prompts), seed=plan.seed, capture=cap, progress=False, **plan.run_kwargs).stats


def draws_of(plan: LocalizationPlan, stats: ChannelStats, s: str, layer: str, step: int, image: int | None,
             prompt_index: int, width: int) -> list[list[int]]:
    """The channel sets scored for set ``s`` (random-k: ``random_draws`` seeded draws for this prompt)."""
    if s == "all":
        return [list(range(width))]
    if s == "random":
        return [select(stats, "random", plan.k, layer=layer, step=step, image=image, stat=plan.stat,
                       seed=plan.seed * 1_000_003 + prompt_index * 1009 + d) for d in range(plan.random_draws)]
    return [select(stats, s, plan.k, layer=layer, step=step, image=image, stat=plan.stat)]


def score_chunk(model: "Model", plan: LocalizationPlan, start: int,
                mean: ChannelStats | None = None) -> tuple[np.ndarray, dict[str, list[int]]]:
    """IoU ``(sets, layers, steps, prompts of the chunk)`` of the chunk starting at prompt ``start`` (image
    ``i`` uses seed ``seed + i``), and the channels scored (``"set/layer/stepS/i"``; random: the first draw)."""
    part = plan.chunk_prompts(start)
    cap = Capture(layers=list(plan.layers), steps=list(plan.steps), streams=["image"], sun=False,
                  stats=plan.rank == "image", raw=[Raw(n, s) for n in plan.layers for s in plan.steps])
    run = model.run(part, seed=plan.seed + start, capture=cap, progress=False, **plan.run_kwargs)
    grid = tuple(run.meta["token_grid"])
    size = tuple(run.meta["size"])
    ppt = (size[0] // grid[0], size[1] // grid[1])
    gts = resolve_masks(plan.chunk_masks(start), run.images, part, size, grid)
    scores = np.zeros((len(plan.sets), len(plan.layers), len(plan.steps), len(part)))
    chans: dict[str, list[int]] = {}
    for j, gt in enumerate(gts):
        i = start + j
        stats, img = (run.stats, j) if plan.rank == "image" else (mean, None)
        for li, layer in enumerate(plan.layers):
            for ti, st in enumerate(plan.steps):
                x = run.raw[f"{layer}/step{st}/image"][j].float().numpy()

                def score(ch):
                    fg = cluster_features(x[:, ch], plan.k_clusters, plan.method, plan.foreground, plan.seed, None,
                                          grid)[2].reshape(grid)
                    return iou(upsample(fg, ppt) if gt.shape != grid else fg, gt)
                for si, s in enumerate(plan.sets):
                    draws = draws_of(plan, stats, s, layer, st, img, i, x.shape[1])
                    scores[si, li, ti, j] = float(np.mean([score(ch) for ch in draws]))
                    if s != "all":
                        chans[f"{s}/{layer}/step{st}/{i}"] = [int(c) for c in draws[0]]
    return scores, chans
