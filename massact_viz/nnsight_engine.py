"""The nnsight engine: the same block sites as :mod:`massact_viz.hooks`, produced from inside an nnsight trace.

Two engines run a capture or an edit; they differ only in where the events come from:

* ``"hooks"`` (:func:`massact_viz.hooks.attach`): PyTorch hooks on the transformer and its blocks for the
  duration of one pipeline call;
* ``"nnsight"`` (this module): a worker inside an nnsight trace (its own ``tracer.invoke()``, which sees
  the whole batch) that, for every transformer call, reads ``transformer.inputs`` and then each chosen
  block's ``.output`` in execution order.

Both feed the same :class:`~massact_viz.hooks.CallState` (:meth:`~massact_viz.hooks.CallState.enter`:
step, call, branch rows, text mask) and the same :class:`~massact_viz.hooks.Site` views to the same
statistics, raw-slice and edit functions, so statistics and edited images are identical between the
engines. The denoising step advances when the scheduler's ``step_index`` changes between transformer calls
(it changes once per ``scheduler.step``; schedulers without one, such as DDIM, by a change of the
``timestep`` input), the rule the hooks engine implements by counting ``scheduler.step`` calls.

Because the worker is one ``tracer.invoke()`` among the user's own, the toolkit's statistics and edits
compose with a user's interventions in the same trace: invokes run in the order they are written, so
what the toolkit records at a block is what the user's earlier invoke left there.

Nothing but reduced statistics (steps x layers x channels), requested raw slices and the final images
leaves the worker; no full hidden state is kept (:func:`massact_viz.capture.capture_bytes` bounds it).
What stays on PyTorch hooks on either engine: per-step previews of ``Model.run`` (the scheduler's guided
prediction, :func:`massact_viz.hooks.watch_scheduler`) and image inversion's reading of the pipeline's
transformer calls (:func:`massact_viz.hooks.record_calls`); neither touches a block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .errors import MassActError
from .families import Block, Family
from .hooks import CallState, Site, block_site

__all__ = ["nnsight_model", "block_envoy", "PipelineCall", "read_call", "drive", "scheduled_steps", "DANGLING"]


def nnsight_model(model: Any) -> Any:
    """The nnsight ``DiffusionModel`` over ``model.pipe`` (built once per model, then reused): its envoy
    tree mirrors the pipeline (``nn.transformer.transformer_blocks[3].output``)."""
    nn = getattr(model, "_nnsight", None)
    if nn is None:
        from nnsight import DiffusionModel
        from nnsight.modeling.diffusion import _PipelineModule

        nn = DiffusionModel(_PipelineModule(model.pipe))
        nn.pipeline = model.pipe
        model._nnsight = nn
    return nn


@dataclass
class PipelineCall:
    """What a worker learns from the pipeline call's own arguments (the trace's inputs)."""

    prompts: list[str]
    num_steps: int
    height: int
    width: int
    kwargs: dict


def read_call(args: tuple, kwargs: dict, family: Family, pipe: Any) -> PipelineCall:
    """The prompts, number of denoising steps and size of a pipeline call, from the arguments nnsight
    passes to it (after batching the trace's invokes), or a clear error for a call the toolkit cannot
    follow."""
    prompt = kwargs.get("prompt", args[0] if args and isinstance(args[0], (str, list, tuple)) else None)
    if prompt is None:
        raise MassActError("the traced pipeline call has no text prompt (prompt_embeds only?); massact_viz "
                           "needs the prompts as text: pass them to tracer.invoke(...) or generate(prompt=...).")
    prompts = [prompt] if isinstance(prompt, str) else [str(p) for p in prompt]
    if int(kwargs.get("num_images_per_prompt") or 1) != 1:
        raise MassActError("num_images_per_prompt must be 1 in a traced call massact_viz records; repeat the "
                           "prompt (one invoke row per image) instead.")
    if kwargs.get("skip_guidance_layers"):
        raise MassActError("skip-layer guidance makes extra transformer calls at some steps only; the nnsight "
                           "engine cannot number them. Use the hooks engine (engine='hooks') for it.")
    if kwargs.get("output_type") not in (None, "pil", "np", "pt"):
        raise MassActError(f"output_type={kwargs.get('output_type')!r} gives no images; massact_viz keeps the final "
                           f"images: leave output_type unset (PIL), or use 'np' or 'pt'.")
    steps = kwargs.get("num_inference_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MassActError(f"pass num_inference_steps=<a positive integer> to the trace (got {steps!r}); nnsight "
                           f"defaults a traced diffusion call to 1 step.")
    h0, w0 = family.default_size(pipe)
    return PipelineCall(prompts, steps, int(kwargs.get("height") or h0), int(kwargs.get("width") or w0),
                        dict(kwargs))


def block_envoy(root: Any, path: str) -> Any:
    """The envoy at a dotted module path under ``root`` (``"transformer_blocks.3"``): a block's place in
    nnsight's tree, for ``nn.transformer`` and a block's ``path``."""
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def _step_marker(sched: Any, kwargs: dict) -> Any:
    """A value that changes exactly when the scheduler has stepped: its ``step_index`` where it keeps one
    (flow-matching and DPM-Solver schedulers; None before the first step), else the call's ``timestep``
    (schedulers such as DDIM, whose consecutive timesteps are distinct integers)."""
    if isinstance(getattr(type(sched), "step_index", None), property):
        return sched.step_index
    t = kwargs.get("timestep")
    return float(t.reshape(-1)[0]) if torch.is_tensor(t) else t


def scheduled_steps(sched: Any) -> int | None:
    """How many ``scheduler.step`` calls the pipeline call being traced will make, read at its first
    transformer call (after ``set_timesteps``): the scheduler's timesteps from its begin index on (img2img
    ``strength`` and custom ``sigmas`` / ``timesteps`` included; 2N-1 for Heun). None when unknown."""
    t = getattr(sched, "timesteps", None)
    if t is None:
        return None
    return len(t) - int(getattr(sched, "begin_index", None) or 0)


def drive(tracer: Any, nn: Any, family: Family, pipe: Any, blocks: Sequence[Block],
          fn: Callable[[Site], None], state: CallState, *, prompts: Sequence[str],
          on_call: Callable[[CallState, dict], dict | None] | None = None) -> None:
    """Run inside a worker of ``tracer``: for every transformer call of the traced pipeline call, update
    ``state`` (:meth:`CallState.enter`), let ``on_call(state, kwargs)`` replace the call's keyword
    arguments, then hand each of ``blocks`` (visited in execution order) to ``fn(site)``.

    It returns after the last call of the last step when it can tell which call that is: the number of
    scheduler steps comes from the scheduler, the calls per step from what step 0 made. With one step
    (nothing observed yet) or no step count, it keeps waiting for a call that never comes; nnsight then
    ends the worker when the pipeline call returns ("was never reached", by design: nothing is lost).
    Read what follows the pipeline call (its images) in another invoke."""
    order = sorted(blocks, key=lambda b: b.index)
    envoys = [(b, block_envoy(nn.transformer, b.path)) for b in order]
    sched = pipe.scheduler
    last_index: Any = object()
    step, total, calls_per_step = -1, None, None
    for _ in tracer.iter[:]:
        targs, tkw = nn.transformer.inputs
        index = _step_marker(sched, tkw)
        if index != last_index:
            if step == 0:
                calls_per_step = state.call + 1  # observed, not predicted
            if step == -1:
                total = scheduled_steps(sched)
            step, last_index = step + 1, index
        hidden = tkw.get("hidden_states", targs[0] if targs else None)
        state.enter(step, hidden, tkw, family, pipe, prompts)
        if on_call is not None:
            new = on_call(state, tkw)
            if new is not None:
                nn.transformer.inputs = (targs, new)
        for b, env in envoys:
            fn(block_site(family, b, state, env.output))
        if (total is not None and calls_per_step is not None and state.step == total - 1
                and state.call + 1 >= calls_per_step):
            break


#: what nnsight says when a worker waits for a transformer call that never comes (see :func:`drive`)
DANGLING = r"'.*transformer\.input\.i\d+' was never reached"
