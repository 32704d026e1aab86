"""``disrupt``: plan a sweep, then :func:`execute` it (on one process or shared over launched ones)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ...distributed import Ranks, ranks
from ...errors import MassActError
from ...progress import progress_bar
from ...run import Run
from .execution import load_baseline, run_baseline, run_config
from .plan import DisruptionPlan, plan_disruption
from .results import DisruptionResult

if TYPE_CHECKING:
    from ...model import Model


def disrupt(model: "Model", prompts: str | Sequence[str], *, ks: Sequence[int] = (1, 4, 8),
            sets: Any = ("top", "bottom", "random"), random_draws: int = 3, op: str = "zero",
            value: float | None = None, layers: Any = None, steps: Any = None, stream: str = "image",
            tokens: Any = None, branch: str = "both", stat: str = "abs_mean", seed: int = 0,
            num_steps: int | None = None, metrics: Sequence[str] = ("mse", "psnr", "ssim"),
            out: str | os.PathLike | None = None, progress: bool = True,
            layer_sets: Mapping[str, Any] | None = None, distributed: bool = False,
            **run_kwargs: Any) -> DisruptionResult | None:
    """Edit channel sets and compare each edited image with the unedited one (same seed).

    ``sets``: kinds ``"top"``, ``"bottom"``, ``"random"`` (chosen per layer and stream from the
    baseline by :func:`~massact_viz.analysis.select` with ``stat``, over the edited steps and all
    images; random draw ``d`` uses ``select(..., seed=d)``), and/or user sets as a dict
    ``{"mine": [3, 7]}`` or ``{"mine": {"double.0": [3], ...}}`` (run once, ``k`` = its size).
    ``op``/``value``/``layers``/``steps``/``stream``/``tokens``/``branch`` are the :class:`Edit`
    fields (``steps`` is the edited step window; ``num_steps`` the number of denoising steps).
    ``stream="both"`` chooses and edits the image and text channel sets separately.
    ``layer_sets``: ``{name: layer spec}`` (e.g. ``{"all": None, "early": range(0, 4), "single": "single"}``;
    not with ``layers=``) runs every configuration once per layer set, channels chosen per layer from
    the same baseline (which captures the union of the layers); rows get a ``layer_set`` field and
    ``images`` keys are ``(layer_set, set, k, draw)``. A ``{layer: channels}`` user set keeps its own layers.
    Other keywords (``size``, ``guidance``, ``batch_size``, pipeline kwargs) go to ``Model.run``.
    ``distributed=True``: share the configurations with the other processes launched by ``accelerate
    launch`` or ``torchrun`` (each given the same arguments; needs ``out``, the folder they share); the main
    process computes the baseline, every process runs its share of the configurations not done yet, and the
    main process merges and returns the result (the others return None).

    The same as ``execute(model, plan_disruption(model, prompts, ...), out=out, ...)``.
    """
    share = ranks() if distributed else Ranks()
    plan = plan_disruption(model, prompts, ks=ks, sets=sets, random_draws=random_draws, op=op, value=value,
                           layers=layers, steps=steps, stream=stream, tokens=tokens, branch=branch, stat=stat,
                           seed=seed, num_steps=num_steps, metrics=metrics, layer_sets=layer_sets, **run_kwargs)
    return execute(model, plan, out=out, progress=progress, share=share)


def execute(model: "Model", plan: DisruptionPlan, *, out: str | os.PathLike | None = None, progress: bool = True,
            share: Ranks | None = None) -> DisruptionResult | None:
    """Run a validated :class:`DisruptionPlan` (what :func:`disrupt` does after planning). ``share``: this
    process's part of a launched group (``massact_viz.distributed.ranks()``); the default is one process."""
    share = share if share is not None else Ranks()
    if share.world > 1 and out is None:
        raise MassActError("disrupt() on several processes needs out=: the folder where they share their work.")
    out = Path(out) if out is not None else None
    share.agree(plan.agreement(None if out is None else str(out.resolve())), "disruption sweep")
    if out is not None:
        hint = ("Resume it with the same arguments (model, prompts, seed, steps, op, layers, stream...; "
                "ks, random draws and layer sets may grow), or choose another out= to start over.")
        share.start_job(out, plan.manifest(), "disruption sweep", hint)

    if not share.main:   # the main process makes (or checks) the baseline; the others read it
        share.barrier()
        baseline = Run.load(out / "baseline")
    else:
        baseline = load_baseline(plan, out) if out is not None else None
        if baseline is None:
            baseline = run_baseline(model, plan, out)
        share.barrier()   # the baseline is on disk for the others

    configs = plan.configs
    have: list[int] = []
    if share.world > 1:   # a relaunch shares out only the configurations not done yet; the main process says which
        have = share.from_main([i for i, c in enumerate(configs) if (out / "configs" / c.key / "row.json").exists()]
                               if share.main else None)
    mine = share.share([i for i in range(len(configs)) if i not in have])
    desc = "disrupt" if share.world == 1 else f"disrupt (process {share.rank} of {share.world})"
    done = {}
    bar = progress_bar(mine, desc=desc, unit="config", disable=not progress)
    try:
        for i in bar:
            bar.set_postfix_str(configs[i].key, refresh=False)
            done[i] = run_config(model, plan, baseline, configs[i], out)
    finally:
        bar.close()
    if share.world > 1:
        share.barrier()   # every configuration is on disk
        if not share.main:
            share.barrier()   # the main process has merged
            return None
    table, images = [], {}
    for i, config in enumerate(configs):   # in order; the other processes' configurations are read from out
        row, ims = done[i] if i in done else run_config(model, plan, baseline, config, out)
        table.append(row)
        images[config.image_key] = ims
    result = DisruptionResult(table, images, baseline, plan.settings())
    if out is not None:
        result.save(out)
    share.barrier()   # the merged result is on disk
    return result
