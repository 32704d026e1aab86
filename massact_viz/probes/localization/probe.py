"""``localize``: plan a sweep, then :func:`execute` it chunk by chunk (resumable with ``out=``; on one
process or shared over launched ones)."""
from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ...distributed import Ranks, ranks
from ...files import atomic_write
from ...progress import progress_bar
from ...run import check_output_file
from .clustering import DEFAULT_FOREGROUND
from .execution import mean_stats, score_chunk
from .plan import SETS, LocalizationPlan, plan_localization
from .results import LocalizationResult

if TYPE_CHECKING:
    from ...model import Model


def localize(model: "Model", prompts: str | Sequence[str], masks: Any, *, layers: Any = None, steps: Any = -1,
             k: int = 4, sets: Sequence[str] = SETS, random_draws: int = 3, seed: int = 0, stat: str = "abs_mean",
             rank: str = "image", k_clusters: int = 2, method: str = "kmeans", foreground: Any = DEFAULT_FOREGROUND,
             chunk: int = 8, num_steps: int | None = None, progress: bool = True, distributed: bool = False,
             out: str | os.PathLike | None = None, **run_kwargs: Any) -> LocalizationResult:
    """Sweep the localization probe over layers, steps and channel sets on ``model``.

    Generates ``prompts`` (image *i* uses seed ``seed + i``; ``seed`` also seeds K-means and the
    random-k draws), captures statistics and the raw image tokens of every chosen layer at the chosen ``steps`` (negative:
    from the end; default the last step), and for each prompt, layer, step and set clusters the
    tokens restricted to the set and scores the foreground against the prompt's mask.

    * ``masks``: one per prompt (bool array at pixel size ``(H, W)`` or token size ``(rows, cols)``,
      a PIL image, or a ``.npy``/image file), a function ``(image, prompt) -> mask`` applied to each
      generated image, or ``"shapes"`` (the teaching model's colour masks, :func:`shapes_masks`).
      Pixel masks are compared with the token mask upsampled by nearest neighbour.
    * ``sets``: ``top``, ``bottom``, ``random`` (``random_draws`` seeded draws outside the top-k, IoU
      averaged per prompt first) and ``all``; channels are ranked by ``stat`` **per image, layer and
      step** (``rank="image"``, the reproduction's protocol) or by its mean over the prompts
      (``rank="mean"``).
    * ``num_steps``: denoising steps of the generation (``Model.run``'s ``num_steps=``; None: the
      model's default). Other ``run_kwargs`` go to :meth:`Model.run` (``size=``, ``guidance=``,
      ...). Prompts run ``chunk`` at a time so raw slices stay bounded.
    * ``distributed=True``: share the chunks with the other processes launched by ``accelerate launch`` or
      ``torchrun`` (each given the same arguments); their scores are gathered, so every process returns
      the single-process result (with ``rank="mean"`` every process first runs the statistics of all prompts).
    * ``out``: the result's file (``.json``), saved there at the end; while the sweep runs, each finished
      chunk's scores are kept in ``<out>.parts/``, so the same call again after an interruption (or a process
      that died; with any number of processes) runs only the chunks not done and gives the same result.
      Other arguments are refused with a clear message; the parts folder is removed once the result is saved.

    The same as ``execute(model, plan_localization(model, prompts, masks, ...), out=out, ...)``.
    """
    plan = plan_localization(model, prompts, masks, layers=layers, steps=steps, k=k, sets=sets,
                             random_draws=random_draws, seed=seed, stat=stat, rank=rank, k_clusters=k_clusters,
                             method=method, foreground=foreground, chunk=chunk, num_steps=num_steps, **run_kwargs)
    return execute(model, plan, out=out, progress=progress, share=ranks() if distributed else Ranks())


def execute(model: "Model", plan: LocalizationPlan, *, out: str | os.PathLike | None = None, progress: bool = True,
            share: Ranks | None = None) -> LocalizationResult:
    """Run a validated :class:`LocalizationPlan` (what :func:`localize` does after planning). ``share``: this
    process's part of a launched group (``massact_viz.distributed.ranks()``); the default is one process."""
    share = share if share is not None else Ranks()
    if out is not None:
        out = check_output_file(out, (".json",), "localization result")   # before any work
    n = len(plan.prompts)
    iou_arr = np.zeros((len(plan.sets), len(plan.layers), len(plan.steps), n))
    chans: dict[str, list[int]] = {}
    share.agree(plan.agreement(), "localization sweep")
    parts_dir = None
    if out is not None:
        parts_dir = out.parent / f"{out.name}.parts"
        hint = f"Resume it with the same arguments, or delete {parts_dir} (or choose another out=) to start over."
        share.start_job(parts_dir, plan.manifest(), "partial localization sweep", hint)
    mean = mean_stats(model, plan) if plan.rank == "mean" else None  # rank over every prompt first
    starts = plan.starts
    have = share.from_main([s0 for s0 in starts if (parts_dir / f"{s0:06d}.json").exists()]
                           if parts_dir is not None and share.main else [])
    for s0 in have:   # chunks finished before: their scores from disk
        doc = json.loads((parts_dir / f"{s0:06d}.json").read_text(encoding="utf-8"))
        iou_arr[..., s0:s0 + plan.chunk] = np.array(doc["iou"], dtype=float)
        chans.update(doc["chans"])
    mine = share.share([s0 for s0 in starts if s0 not in have])
    bar = progress_bar(total=sum(len(plan.chunk_prompts(s)) for s in mine), unit="prompt", disable=not progress,
                       desc="localize: prompts clustered" + ("" if share.world == 1 else
                                                             f" (process {share.rank} of {share.world})"))
    for start in mine:
        scores, got = score_chunk(model, plan, start, mean)
        iou_arr[..., start:start + scores.shape[-1]] = scores
        chans.update(got)
        if parts_dir is not None:
            atomic_write(parts_dir / f"{start:06d}.json",
                         json.dumps({"start": start, "iou": scores.tolist(), "chans": got}))
        bar.update(scores.shape[-1])
    bar.close()
    if share.world > 1:   # every process gets every process's prompts (a collective: also the barrier)
        merged: dict[str, list[int]] = dict(chans)
        for got_starts, got_iou, got_chans in share.gather((list(mine), iou_arr, chans)):
            for s0 in got_starts:
                iou_arr[..., s0:s0 + plan.chunk] = got_iou[..., s0:s0 + plan.chunk]
            merged.update(got_chans)
        chans = merged
    chans = {key: chans[key] for i in range(n) for layer in plan.layers for st in plan.steps for s in plan.sets
             if (key := f"{s}/{layer}/step{st}/{i}") in chans}   # one order, however the chunks were shared
    result = LocalizationResult(list(plan.layers), list(plan.steps), list(plan.sets), list(plan.prompts), iou_arr,
                                plan.params(), chans)
    if out is not None:
        if share.main:
            result.save(out)
            shutil.rmtree(parts_dir)
        share.barrier()   # the result is on disk before any process returns
    return result
