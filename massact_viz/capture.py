"""Capture specs and the capture of one or more generations into a :class:`~massact_viz.run.Run`.

A :class:`Capture` says what to keep: statistics of which layers, steps and streams; raw
activation slices (:class:`Raw`) for a few (layer, step) pairs; and optional per-step previews
(the predicted clean image at each step, for timelines). Statistics are reduced inside the forward
on the model's device, so their memory depends on steps x layers x channels, never on tokens.
"""
from __future__ import annotations

import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from .errors import MassActError, check_index
from .hooks import CallState, Site, attach, watch_scheduler
from .nnsight_engine import DANGLING, drive, nnsight_model, read_call
from .run import Run, pil_images
from .specs import check_engine, check_num_steps, check_size, listify, resolve_steps
from .stats import StatsCollector
from .progress import pipeline_progress, progress_bar

if TYPE_CHECKING:
    from .dit import DiT


class MassActWarning(UserWarning):
    """Something in a run deserves attention (overflow, steps not as asked); the data is kept."""


BRANCHES = ("cond", "uncond")


@dataclass(frozen=True)
class Raw:
    """A raw activation slice to keep: one layer at one step, optionally a subset of channels/tokens.

    ``branch``: the conditional rows (default) or the unconditional rows of a CFG model (``"uncond"``;
    kept under the key ``raw_key(..., branch="uncond")``; nothing is kept for a model without CFG)."""

    layer: str | int
    step: int
    stream: str = "image"
    channels: Sequence[int] | None = None
    tokens: Sequence[int] | None = None
    branch: str = "cond"


@dataclass
class Capture:
    """What to capture. ``None`` for layers/steps means all of them; ``steps`` follows the one step-spec
    rule (:func:`massact_viz.specs.resolve_steps`): a step, a list or ``range`` of steps, or a tuple
    ``(start, stop)`` window."""

    layers: Sequence[str | int] | None = None
    steps: Any = None
    streams: Sequence[str] | None = None  # None: every stream the model has
    stats: bool = True
    sun: bool = True
    raw: Sequence[Raw] = ()
    #: transformer call kwargs to keep (the prompt conditioning, e.g. ``"pooled_projections"``), per
    #: branch, from each branch's first call; see :func:`input_key`
    inputs: Sequence[str] = ()
    previews: bool = False
    preview_size: int = 256  # longest side of stored previews, in pixels
    #: refuse a capture whose kept tensors (statistics, raw slices, previews) are estimated above this many GB,
    #: before anything runs; None: half of this machine's memory; ``float("inf")`` turns the check off
    max_gb: float | None = None

    @classmethod
    def nothing(cls) -> "Capture":
        """Capture nothing (plain generation through the same code path)."""
        return cls(stats=False)


@dataclass
class _RawRecorder:
    specs: list[tuple[str, int, Raw]]  # (layer name, step, spec)
    parts: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def __call__(self, site: Site) -> None:
        for name, step, spec in self.specs:
            if name != site.block.name or step != site.step:
                continue
            rows = site.state.rows(spec.branch)
            if rows.stop == rows.start:
                continue
            x = site.stream(spec.stream)
            if x is None:  # e.g. SD3's last block returns no text stream
                continue
            x = x[rows]
            if spec.tokens is not None:
                for t in spec.tokens:
                    check_index(t, x.shape[1], f"raw {spec.stream} token")
                x = x[:, list(spec.tokens)]
            if spec.channels is not None:
                x = x[..., list(spec.channels)]
            self.parts.setdefault(raw_key(name, step, spec.stream, spec.branch), []).append(
                x.detach().to("cpu", copy=True))

    def result(self) -> dict[str, torch.Tensor]:
        return {k: torch.cat(v, dim=0) for k, v in self.parts.items()}


def raw_key(layer: str, step: int, stream: str, branch: str = "cond") -> str:
    """Name of a raw slice in :attr:`Run.raw`, e.g. ``"double.3/step2/image"`` (conditional rows) or
    ``"double.3/step2/image/uncond"`` (unconditional rows)."""
    return f"{layer}/step{step}/{stream}" + ("" if branch == "cond" else f"/{branch}")


def input_key(name: str, branch: str = "cond") -> str:
    """Name in :attr:`Run.raw` of a transformer input kept with ``Capture(inputs=[name])``, e.g.
    ``"input/pooled_projections"`` or ``"input/pooled_projections/uncond"``."""
    return f"input/{name}" + ("" if branch == "cond" else f"/{branch}")


@dataclass
class _InputRecorder:
    """Keeps the named transformer call kwargs (the prompt conditioning) of each branch's first call."""

    names: Sequence[str]
    parts: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    _seen: set = field(default_factory=set)

    def begin(self) -> None:
        self._seen = set()

    def __call__(self, state: Any, kwargs: dict) -> None:
        for branch in BRANCHES:
            rows = state.rows(branch)
            if rows.stop == rows.start or branch in self._seen:
                continue
            self._seen.add(branch)
            for name in self.names:
                v = kwargs.get(name)
                if torch.is_tensor(v) and v.shape[0] == state.batch:
                    self.parts.setdefault(input_key(name, branch), []).append(v[rows].detach().to("cpu", copy=True))

    def result(self) -> dict[str, torch.Tensor]:
        return {k: torch.cat(v, dim=0) for k, v in self.parts.items()}


def _record_x0(store: list[torch.Tensor]):
    """A scheduler-step callback recording the predicted clean latent of each step (flow matching:
    ``x0 = x_t - sigma_t * v`` with the guided velocity the pipeline hands to ``scheduler.step``)."""
    def record(sched, model_output, sample):
        idx = sched.step_index if sched.step_index is not None else len(store)
        sigma = sched.sigmas[idx].to(sample.device, torch.float32)
        store.append((sample.float() - sigma * model_output.float()).detach())
    return record


#: pipeline kwargs that massact_viz sets itself (they decide the token grid, the steps, the prompts
#: the text masks are rebuilt from, and the image rows)
RESERVED_KWARGS = {"height": "size=(h, w)", "width": "size=(h, w)", "num_inference_steps": "num_steps=",
                   "steps": "num_steps= for the number of denoising steps (Capture(steps=...) picks the captured ones)",
                   "prompt": "the prompts argument", "generator": "seed=", "output_type": "nothing (PIL images)",
                   "prompt_2": "the prompts argument (the same text feeds every encoder)",
                   "prompt_3": "the prompts argument (the same text feeds every encoder)",
                   "num_images_per_prompt": "repeating the prompt"}


def check_probe_kwargs(run_kwargs: dict, probe: str, sets: Sequence[str], hint: str = "") -> None:
    """A probe's keyword arguments for :meth:`Model.run`, checked before any work: one it sets itself (``sets``)
    or one ``run()`` never takes (:data:`RESERVED_KWARGS`) is refused with one line saying what to use."""
    for k in sets:
        if k in run_kwargs:
            raise MassActError(f"{probe}() sets {k}= itself{'; ' + hint if hint else '.'}")
    for k in run_kwargs:
        if k in RESERVED_KWARGS:
            raise MassActError(f"do not pass {k}= to {probe}(); use {RESERVED_KWARGS[k]} instead.")


@dataclass
class Plan:
    """A validated capture: everything :func:`run_capture` needs, resolved against the model."""

    prompts: list[str]
    steps: int
    height: int
    width: int
    grid: tuple[int, int]
    blocks: list
    cap_steps: list[int]
    streams: list[str]
    raw_specs: list
    edit: Any = None  # the edit, validated against the model when it is an Edit / compose()


def plan_capture(model: "DiT", prompts: Sequence[str], *, num_steps: int, seed: int, size: Any,
                 guidance: float | None, capture: Capture, batch_size: int, pipe_kwargs: dict,
                 allow_empty_prompt: bool = False, edit: Any = None) -> Plan:
    """Validate a capture request against the model before anything runs (clear errors, nothing lost);
    an :class:`~massact_viz.edits.Edit` (or ``compose(...)``) is resolved against the model here."""
    prompts = check_prompts(prompts, allow_empty=allow_empty_prompt)
    check_num_steps(num_steps)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MassActError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MassActError(f"seed must be a non-negative integer, got {seed!r}.")
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float))
                                 or guidance != guidance or abs(guidance) == float("inf")):
        raise MassActError(f"guidance must be a finite number, got {guidance!r}.")
    for k in pipe_kwargs:
        if k in RESERVED_KWARGS:
            raise MassActError(f"do not pass {k}= to run(); use {RESERVED_KWARGS[k]} instead.")
    if not isinstance(capture.preview_size, int) or capture.preview_size < 8:
        raise MassActError(f"preview_size must be an integer of at least 8 pixels, got {capture.preview_size!r}.")
    fam, pipe = model.family, model.pipe
    model.check_no_cache()
    height, width = check_size(size) or fam.default_size(pipe)
    grid = fam.token_grid(pipe, height, width)
    blocks = model.resolve_layers(capture.layers)
    cap_steps = resolve_steps(capture.steps, num_steps)
    have = [s for s in ("image", "text") if any(s in b.streams for b in blocks)]
    streams = have if capture.streams is None else listify(capture.streams, "Capture.streams")
    for st in streams:
        if st not in have:
            raise MassActError(f"stream {st!r} is not available here: the chosen {fam.title} blocks have {have}.")
    raw_specs = []
    if isinstance(capture.raw, (str, Raw)):
        raise MassActError(f"Capture.raw takes a list of Raw(layer, step) specs, e.g. raw=[Raw('double.3', -1)]; "
                           f"got {capture.raw!r}.")
    for r in capture.raw:
        if not isinstance(r, Raw):
            raise MassActError(f"Capture.raw takes Raw(...) specs, got {r!r}.")
        b = model.layer(r.layer)
        if r.stream not in b.streams:
            raise MassActError(f"raw slice: layer {b.name} has no {r.stream!r} stream (it has {list(b.streams)}).")
        st = check_index(r.step, num_steps, "raw step", f"This run has {num_steps} steps.")
        chans, toks = listify(r.channels, "Raw.channels"), listify(r.tokens, "Raw.tokens")
        for i in chans or ():
            check_index(i, model.width, "raw channel")
        for i in (toks or ()) if r.stream == "image" else ():
            check_index(i, grid[0] * grid[1], "raw token")
        if r.branch not in BRANCHES:
            raise MassActError(f"Raw.branch must be one of {BRANCHES}, got {r.branch!r}.")
        spec = Raw(b.name, st, r.stream, chans, toks, r.branch)
        key = raw_key(b.name, st, r.stream, r.branch)
        if any(raw_key(n, s2, x.stream, x.branch) == key for n, s2, x in raw_specs):
            raise MassActError(f"two raw slices ask for {key}; merge their channels/tokens.")
        raw_specs.append((b.name, st, spec))
    if capture.previews and not previews_available(model):
        raise MassActError(f"per-step previews need a flow-matching Euler scheduler and a {fam.title} latent decoder; "
                           f"they are available for FLUX.1, SD3 and the embedded model. Use previews=False.")

    if edit is not None and hasattr(edit, "check"):
        edit = edit.check(model, num_steps, size)
    plan = Plan(prompts, num_steps, height, width, grid, blocks, cap_steps, streams, raw_specs, edit)
    _check_memory(plan, capture, model.width)
    return plan


def capture_bytes(plan: "Plan", capture: "Capture", width: int, text_tokens: int = 512) -> int:
    """Bytes of what a capture keeps (float32 statistics, raw slices, uint8 previews), estimated before it
    runs; raw text slices count ``text_tokens`` tokens (512, FLUX's longest prompt, unless given)."""
    from .stats import STATISTICS
    p = len(plan.prompts)
    n_stats = (len(STATISTICS) + (1 if capture.sun else 0)) if capture.stats else 0
    total = 4 * p * len(plan.cap_steps) * len(plan.blocks) * len(plan.streams) * (n_stats * width + 1) if n_stats else 0
    for _, _, r in plan.raw_specs:
        toks = len(r.tokens) if r.tokens is not None else (plan.grid[0] * plan.grid[1] if r.stream == "image"
                                                           else text_tokens)
        total += 4 * p * toks * (len(r.channels) if r.channels is not None else width)
    if capture.previews:
        side = min(capture.preview_size, max(plan.height, plan.width))
        total += plan.steps * p * side * side * 3
    return total


def _machine_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: no automatic bound
        return None


def _check_memory(plan: "Plan", capture: "Capture", width: int) -> None:
    limit = capture.max_gb
    if limit is None:
        machine = _machine_bytes()
        limit = None if machine is None else machine / 2 / 1e9
    if limit is None or limit == float("inf"):
        return
    need = capture_bytes(plan, capture, width) / 1e9
    if need > limit:
        raise MassActError(
            f"this capture would keep about {need:.1f} GB ({len(plan.prompts)} images x {len(plan.cap_steps)} steps x "
            f"{len(plan.blocks)} layers x {len(plan.streams)} streams x {width} channels, plus raw slices and previews), "
            f"more than the {limit:.1f} GB allowed; capture fewer steps or layers (Capture(steps=..., layers=...)), "
            f"scan fewer prompts at a time, or raise Capture(max_gb=...) (CLI: --force).")


def previews_available(model: "DiT") -> bool:
    """Whether ``Capture(previews=True)`` works for this model: a flow-matching Euler scheduler and a
    latent decoder for the family (FLUX.1, SD3 and the embedded model today)."""
    return (model.family.decodes_latents
            and type(model.pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler")


class _Recording:
    """What one capture keeps while an engine feeds it block sites: statistics, raw slices, kept inputs,
    and the edit applied before any of them (so what is captured is what the next block sees)."""

    def __init__(self, model: "DiT", plan: Plan, capture: Capture):
        edit = plan.edit
        self.collector = StatsCollector([b.name for b in plan.blocks], plan.cap_steps, plan.streams,
                                        len(plan.prompts), capture.sun) if capture.stats else None
        self.raws = _RawRecorder(plan.raw_specs)
        self.inputs = _InputRecorder(list(capture.inputs)) if capture.inputs else None
        self.edit = edit
        self._edit_call = getattr(edit, "on_call", None)  # an edit may also change the transformer's inputs
        hooks_on = list(model.blocks) if edit is not None else list(plan.blocks) if self.collector else []
        for n, _, _ in plan.raw_specs:  # one site per block, even with raw slices at several steps of it
            if model.layer(n) not in hooks_on:
                hooks_on.append(model.layer(n))
        self.blocks = hooks_on

    def on_site(self, site: Site) -> None:
        if self.edit is not None:
            self.edit(site)
        if self.collector is not None:
            self.collector(site)
        if self.raws.specs:
            self.raws(site)

    @property
    def on_call(self) -> Callable[[Any, dict], dict | None] | None:
        if self.inputs is None and self._edit_call is None:
            return None

        def on_call(state: Any, kwargs: dict) -> dict | None:
            if self.inputs is not None:
                self.inputs(state, kwargs)
            return self._edit_call(state, kwargs) if self._edit_call is not None else None
        return on_call

    def begin(self, first: int, n: int) -> None:
        if self.collector is not None:
            self.collector.begin(first, n)
        if self.inputs is not None:
            self.inputs.begin()

    def end(self) -> None:
        if self.collector is not None:
            self.collector.end()

    def finish(self, model: "DiT", plan: Plan, capture: Capture, *, images: list, previews: list,
               steps_seen: int | None, meta: dict) -> Run:
        """The :class:`Run`: statistics, kept tensors, images and metadata (``meta`` adds to the model's own);
        warnings for steps not as asked and non-finite statistics."""
        notes = []
        if steps_seen is not None and steps_seen != plan.steps:
            notes.append(f"the pipeline ran {steps_seen} denoising steps, not the {plan.steps} asked for "
                         f"(its scheduler or strength changed them); step indices refer to the steps that ran.")
        collector = self.collector
        stats = collector.result(plan.prompts) if collector is not None else None
        if collector is not None and collector.overflowed():
            if model.dtype == torch.float16:
                notes.append("non-finite statistics: the hidden state overflowed (with float16, massive activations "
                             "exceed 65504). The run is kept; load with dtype='bfloat16' or 'float32' for usable "
                             "numbers.")
            else:
                notes.append(f"non-finite statistics in a {str(model.dtype).replace('torch.', '')} run: a hidden "
                             f"state became inf or NaN (from an edit, the latents or the pipeline's inputs, not from "
                             f"overflow of the dtype). The run is kept and the affected entries are marked non-finite.")
        for n in notes:
            warnings.warn(n, MassActWarning, stacklevel=4)
        pipe = model.pipe
        full = model.metadata()
        full.update(prompts=plan.prompts, num_steps=plan.steps, size=[plan.height, plan.width],
                    token_grid=list(plan.grid), capture=_capture_meta(capture, plan.raw_specs),
                    edited=self.edit is not None, warnings=notes,
                    scheduler={"class": type(pipe.scheduler).__name__, "config": dict(pipe.scheduler.config)},
                    created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), python=platform.python_version())
        full.update(meta)
        kept = self.raws.result()
        if self.inputs is not None:
            kept.update(self.inputs.result())
        return Run(images, stats, full, kept, torch.cat(previews, dim=1) if previews else None)


def run_capture(model: "DiT", prompts: Sequence[str], *, num_steps: int, seed: int, size: tuple[int, int] | None,
                guidance: float | None, negative_prompt: str | None, capture: Capture, batch_size: int,
                progress: bool, pipe_kwargs: dict, edit: Callable[[Site], None] | None = None,
                seeds: Sequence[int] | None = None, allow_empty_prompt: bool = False, engine: str = "hooks") -> Run:
    """Generate ``prompts`` (in batches) on ``engine`` (``"hooks"`` or ``"nnsight"``, see
    :mod:`massact_viz.nnsight_engine`; the same statistics and images either way), returning a :class:`Run`.

    ``seeds`` (one non-negative int per prompt) overrides the default per-image seeds ``seed + i``;
    equal seeds give images the same initial noise (e.g. two prompts from one noise)."""
    check_engine(engine)
    plan = plan_capture(model, prompts, num_steps=num_steps, seed=seed, size=size, guidance=guidance, capture=capture,
                        batch_size=batch_size, pipe_kwargs=pipe_kwargs, allow_empty_prompt=allow_empty_prompt,
                        edit=edit)
    seeds = _check_seeds(seeds, len(plan.prompts)) if seeds is not None else \
        [seed + i for i in range(len(plan.prompts))]
    prompts, grid = plan.prompts, plan.grid
    fam, pipe = model.family, model.pipe
    rec = _Recording(model, plan, capture)

    base = dict(fam.call_defaults)
    base.update(model.defaults)
    base.update(num_inference_steps=num_steps, height=plan.height, width=plan.width, output_type="pil")
    if guidance is not None:
        base[model.guidance_kwarg] = guidance
    if negative_prompt is not None:
        base["negative_prompt"] = negative_prompt
    base.update(pipe_kwargs)

    images, previews, steps_seen, t0 = [], [], None, time.perf_counter()
    chunks = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    with pipeline_progress(pipe, progress and len(chunks) == 1):
        for ci, chunk in enumerate(progress_bar(chunks, desc="prompts", unit="batch", disable=not progress or len(chunks) == 1)):
            first = ci * batch_size
            gens = [torch.Generator("cpu").manual_seed(seeds[first + i]) for i in range(len(chunk))]
            kw = dict(base, prompt=chunk if len(chunk) > 1 else chunk[0], generator=gens if len(gens) > 1 else gens[0])
            rec.begin(first, len(chunk))
            x0: list[torch.Tensor] = []
            on_step = _record_x0(x0) if capture.previews else None
            if engine == "hooks":
                with attach(pipe, fam, rec.blocks, rec.on_site, n_images=len(chunk), n_image_tokens=grid[0] * grid[1],
                            prompts=chunk, on_scheduler_step=on_step, on_call=rec.on_call) as state:
                    out_images = pipe(**kw).images
            else:
                out_images, state = _call_nnsight(model, kw, rec, chunk, grid, on_step)
            rec.end()
            steps_seen = state.step + 1
            images.extend(out_images)
            if capture.previews:
                previews.append(_decode_previews(model, x0, plan.height, plan.width, capture.preview_size, progress))
    elapsed = time.perf_counter() - t0
    return rec.finish(model, plan, capture, images=images, previews=previews, steps_seen=steps_seen,
                      meta=dict(seeds=list(seeds), seed=seed, guidance=guidance, negative_prompt=negative_prompt,
                                call_kwargs={k: v for k, v in base.items() if _jsonable(v)}, engine=engine,
                                seconds=round(elapsed, 3)))


def _call_nnsight(model: "DiT", kw: dict, rec: _Recording, chunk: list[str], grid: tuple[int, int],
                  on_step: Callable | None) -> tuple[list, CallState]:
    """One pipeline call on the nnsight engine: the prompts in one invoke, the recording in its own, the
    images read in a third (after the pipeline call returns)."""
    nn = nnsight_model(model)
    fam, pipe = model.family, model.pipe
    call_kw = {k: v for k, v in kw.items() if k != "prompt"}
    state = CallState(n_images=len(chunk), n_image_tokens=grid[0] * grid[1])
    held: dict = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=DANGLING)   # a one-step run's worker waits past the end
        with watch_scheduler(pipe.scheduler, before=on_step):
            with nn.generate(**call_kw) as tracer:
                with tracer.invoke(kw["prompt"]):
                    pass
                with tracer.invoke():
                    read_call(*nn.inputs, fam, pipe)
                    drive(tracer, nn, fam, pipe, rec.blocks, rec.on_site, state, prompts=chunk, on_call=rec.on_call)
                with tracer.invoke():
                    held["images"] = nn.output.images
    return pil_images(held["images"]), state


class TracedCapture:
    """A capture recorded inside a user's own nnsight trace (made by :func:`nnsight_capture`). After the
    trace, :attr:`run` is the :class:`Run` that ``Model.run`` would have returned for the same call, and
    :attr:`stats` its :class:`~massact_viz.stats.ChannelStats`."""

    def __init__(self, model: "DiT", capture: Capture, edit: Any):
        self.model, self.capture, self.edit = model, capture, edit
        self._held: dict | None = None
        self._final: Any = None
        self._run: Run | None = None

    def _work(self, tracer: Any, nn: Any) -> None:
        """The recording worker's body (its own ``tracer.invoke()``): learn the call, plan, record."""
        model = self.model
        fam, pipe = model.family, model.pipe
        call = read_call(*nn.inputs, fam, pipe)
        plan = plan_capture(model, call.prompts, num_steps=call.num_steps, seed=0, size=(call.height, call.width),
                            guidance=None, capture=self.capture, batch_size=len(call.prompts), pipe_kwargs={},
                            edit=self.edit)
        rec = _Recording(model, plan, self.capture)
        state = CallState(n_images=len(plan.prompts), n_image_tokens=plan.grid[0] * plan.grid[1])
        rec.begin(0, len(plan.prompts))
        self._held = dict(rec=rec, plan=plan, call=call, state=state, t0=time.perf_counter())
        drive(tracer, nn, fam, pipe, rec.blocks, rec.on_site, state, prompts=plan.prompts, on_call=rec.on_call)

    def _images(self, nn: Any) -> None:
        """The images worker's body (a later ``tracer.invoke()``): the pipeline call's final images."""
        self._final = nn.output.images

    @property
    def run(self) -> Run:
        if self._run is None:
            if self._held is None or self._final is None:
                raise MassActError("this capture has no result yet: read .run (or .stats) after the nnsight trace "
                                   "it was attached to has finished (after its `with` block), and only if the "
                                   "traced pipeline call ran to the end.")
            h, model = self._held, self.model
            kw = h["call"].kwargs
            h["rec"].end()
            gens = kw.get("generator")
            gens = gens if isinstance(gens, (list, tuple)) else [gens] if gens is not None else []
            seeds = [int(g.initial_seed()) for g in gens] if len(gens) == len(h["plan"].prompts) else []
            self._run = h["rec"].finish(
                model, h["plan"], self.capture, images=pil_images(self._final), previews=[],
                steps_seen=h["state"].step + 1,
                meta=dict(seeds=seeds, seed=None, guidance=kw.get(model.guidance_kwarg),
                          negative_prompt=kw.get("negative_prompt"), engine="nnsight",
                          call_kwargs={k: v for k, v in kw.items() if k != "prompt" and _jsonable(v)},
                          seconds=round(time.perf_counter() - h["t0"], 3)))
        return self._run

    @property
    def stats(self):
        """The :class:`~massact_viz.stats.ChannelStats` of :attr:`run`."""
        return self.run.stats


def nnsight_capture(tracer: Any, model: "DiT", capture: Capture | None = None, *, edit: Any = None) -> TracedCapture:
    """Record this toolkit's statistics (and apply an edit) inside your own nnsight trace of ``model``.

    Call it inside ``with model.nnsight.generate(num_inference_steps=T, ...) as tracer:`` after the
    ``tracer.invoke(prompts)`` that gives the prompts; it adds one ``tracer.invoke()`` of its own (which
    sees the whole batch), so it composes with your interventions: invokes act in the order written, so
    the statistics describe what your earlier invokes left at each block. After the trace, ``.run`` is
    the :class:`Run` (statistics, raw slices, images) and ``.stats`` its channel statistics, equal to
    ``model.run(...)`` for the same call. With one denoising step nnsight may warn that the toolkit's worker
    "was never reached" for a second call: it cannot know there is none until the call ends; nothing is lost. ``capture`` is a :class:`Capture` (previews are not available
    here); ``edit`` an :class:`~massact_viz.edits.Edit`, ``compose(...)`` or a transport edit::

        with model.nnsight.generate(num_inference_steps=4, generator=g) as tracer:
            with tracer.invoke(["a red circle"]):
                for step in tracer.iter[:4]:
                    model.nnsight.transformer.transformer_blocks[1].output[1][:] *= 1.1   # yours
            cap = mv.nnsight_capture(tracer, model, mv.Capture(layers=["double.1", "single.3"]))
        cap.run.stats.ratio()
    """
    capture = capture or Capture()
    if not isinstance(capture, Capture):
        raise MassActError(f"capture must be a massact_viz Capture, got {capture!r}.")
    if capture.previews:
        raise MassActError("per-step previews are not available inside your own nnsight trace (they need the "
                           "scheduler's guided prediction); use model.run(..., engine='nnsight', "
                           "capture=Capture(previews=True)) or Capture(previews=False).")
    if not hasattr(tracer, "invoke"):
        raise MassActError("nnsight_capture needs the tracer of an nnsight trace: `with model.nnsight.generate("
                           "num_inference_steps=T) as tracer:`.")
    if getattr(tracer, "batcher", None) is None:
        raise MassActError("call nnsight_capture inside the nnsight trace it records (inside its `with` block).")
    try:
        direct = bool(tracer.envoy._batch_size(*tracer.args, **tracer.kwargs))
    except Exception:  # noqa: BLE001 an nnsight internal moved: let nnsight itself refuse a misuse
        direct = False
    if direct:
        raise MassActError("nnsight_capture opens its own tracer.invoke(), which a trace given its prompts directly "
                           "cannot hold: give the trace no prompt and pass the prompts to an invoke (`with "
                           "model.nnsight.generate(num_inference_steps=T) as tracer:` then `with tracer.invoke("
                           "prompts): ...`), then call nnsight_capture after that invoke, not inside it.")
    handle = TracedCapture(model, capture, edit)
    nn = nnsight_model(model)
    try:
        with tracer.invoke():
            handle._work(tracer, nn)
        with tracer.invoke():
            handle._images(nn)
    except ValueError as e:
        if "already running" not in str(e):
            raise
        raise MassActError("nnsight_capture was called inside an invoke; call it in the trace's body after your "
                           "`with tracer.invoke(prompts):` block (it opens invokes of its own).") from e
    from nnsight import save

    return save(handle)  # the handle survives the trace, as nnsight's own tracer.cache() view does


def _check_seeds(seeds: Any, n: int) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise MassActError(f"seeds must be a list of non-negative integers, one per prompt, got {seeds!r}.")
    out = list(seeds)
    if len(out) != n:
        raise MassActError(f"seeds has {len(out)} entries but there are {n} prompts; give one seed per prompt.")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise MassActError(f"seeds must hold non-negative integers, got {s!r}.")
    return [int(s) for s in out]


def check_prompts(prompts: str | Sequence[str], allow_empty: bool = False) -> list[str]:
    """A non-empty list of prompt strings, each non-empty unless ``allow_empty`` (``""`` is the null
    caption), or a clear error."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if prompts is None or not hasattr(prompts, "__iter__"):
        raise MassActError(f"prompts must be a string or a list of strings, got {prompts!r}.")
    prompts = list(prompts)
    if not prompts:
        raise MassActError("no prompts given: pass a prompt string or a non-empty list of them.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or (not allow_empty and not p.strip()):
            raise MassActError(f"prompt {i} is empty or not a string ({p!r}); every prompt needs some text.")
    return prompts


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str)) or (
        isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v))


def _capture_meta(c: Capture, raw_specs: Sequence | None = None) -> dict:
    """The capture spec as JSON data; raw slices as resolved against the run (layer names, step indices
    from the start, channel and token lists), so readers find them by the same keys as ``Run.raw``."""
    d = asdict(c)
    d["raw"] = [asdict(spec) for _, _, spec in raw_specs] if raw_specs is not None else [asdict(r) for r in c.raw]
    d["inputs"] = list(c.inputs)
    d.pop("max_gb", None)  # a guard for this machine, not part of what was captured
    return d


@torch.no_grad()
def _decode_previews(model: "DiT", x0: list[torch.Tensor], height: int, width: int, max_side: int,
                     progress: bool) -> torch.Tensor:
    """Decode predicted clean latents to uint8 images (steps, images, h, w, 3)."""
    import torch.nn.functional as F

    frames = []
    scale = min(1.0, max_side / max(height, width))
    for lat in progress_bar(x0, desc="previews", unit="step", disable=not progress, leave=False):
        img = model.family.decode_latents(model.pipe, lat, height, width)
        if scale < 1:
            img = F.interpolate(img, size=(round(height * scale), round(width * scale)), mode="area")
        frames.append((img * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())
    return torch.stack(frames)
