"""Running a :class:`~.plan.DisruptionPlan`: the unedited baseline, each configuration's edit (channels
chosen on the baseline's statistics) and its scores, read back from ``out`` where already done."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...analysis import select
from ...capture import Capture
from ...edits import Edit, compose
from ...errors import MassActError, RunFileError
from ...metrics import get_metric
from ...run import Run
from .plan import Config, DisruptionPlan
from .results import read_config, write_config

if TYPE_CHECKING:
    from ...model import Model


def load_baseline(plan: DisruptionPlan, out: Path) -> Run | None:
    """The baseline saved under ``out`` when it is whole and captured every edited layer, else None."""
    if not (out / "baseline" / "run.json").exists():
        return None
    try:
        baseline = Run.load(out / "baseline")
    except RunFileError:
        return None
    if plan.swept_layer_sets and (baseline.stats is None or not set(plan.edit_layers) <= set(baseline.stats.layers)):
        return None  # an added layer set reaches layers the saved baseline did not capture
    return baseline


def run_baseline(model: "Model", plan: DisruptionPlan, out: Path | None = None) -> Run:
    """The unedited run whose statistics choose the channels (saved under ``out/baseline`` when given)."""
    baseline = model.run(list(plan.prompts), capture=Capture(layers=list(plan.edit_layers), steps=list(plan.edit_steps)),
                         **plan.run_kw)
    if out is not None:
        baseline.save(out / "baseline")
    return baseline


def config_edit(model: "Model", plan: DisruptionPlan, baseline: Run, config: Config) -> Edit:
    """The edit of one configuration: a user's set as given; a kind's channels chosen per layer (and
    stream) on the baseline's statistics, random draw ``d`` with ``select(..., seed=d)``."""
    if not isinstance(config.spec, str):
        return config.spec
    edits = []
    for st in plan.streams:
        chans = {n: select(baseline.stats, config.spec, config.k, layer=n, stat=plan.stat, stream=st, seed=config.draw)
                 for n in plan.layer_sets[config.layer_set] if st in model.layer(n).streams}
        if chans:
            edits.append(Edit(channels=chans, stream=st, **plan.edit_kw()))
    return edits[0] if len(edits) == 1 else compose(*edits)


def run_config(model: "Model", plan: DisruptionPlan, baseline: Run, config: Config,
               out: Path | None = None) -> tuple[dict, list]:
    """The table row and images of one configuration: read from ``out`` when done, else run, scored
    against the baseline's images and saved there."""
    lname = config.layer_set
    loaded = read_config(out / "configs" / config.key) if out is not None else None
    if loaded is not None and len(loaded[1]) != len(plan.prompts):
        loaded = None  # damaged: recompute
    layers = list(plan.layer_sets[lname]) if lname is not None else None
    if loaded is not None and lname is not None and loaded[2].get("edit_layers") != layers:
        raise MassActError(f"{out}: layer set {lname!r} was run on layers {loaded[2].get('edit_layers')}, "
                           f"now {layers}; give the changed set another name or choose another out=.")
    if loaded is not None:
        ims = loaded[1]
    else:
        ims = model.run(list(plan.prompts), capture=Capture.nothing(), edit=config_edit(model, plan, baseline, config),
                        **plan.run_kw).images
    row = {} if lname is None else {"layer_set": lname}
    row.update({"set": config.name, "k": config.k, "draw": config.draw, "op": plan.op,
                "layers": plan.layers_of(config), "steps": plan.steps_spec, "stream": plan.stream})
    per = {}
    for m in plan.metrics:
        vals = [get_metric(m)(im, ref, prompt=p) for im, ref, p in zip(ims, baseline.images, plan.prompts)]
        row[m] = float(sum(vals) / len(vals))
        per[m] = [float(v) for v in vals]
    row["per_prompt"] = per
    if out is not None and loaded is None:
        write_config(out / "configs" / config.key, row, ims, None if lname is None else {"edit_layers": layers})
    return row, ims
