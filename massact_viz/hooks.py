"""Named hook sites on DiT blocks, keyed by (layer, denoising step, branch).

This is the one place where massact_viz registers PyTorch hooks on module forwards (the "hooks"
engine; :mod:`massact_viz.nnsight_engine` produces the same sites from inside an nnsight trace):
:func:`attach` for the blocks (what captures and edits use) and :func:`record_calls` for the
transformer's own inputs and outputs (what image inversion reads to learn a pipeline's guidance).
:func:`attach` installs a pre-hook on the transformer (:meth:`CallState.enter`: the denoising step,
the call index within the step, the text length and the text mask) and a forward hook on each chosen
block. For every block output it calls ``fn(site)`` with a :class:`Site`: views of the image and
text streams, the step, and which batch rows are the conditional branch. Statistics capture reads
the views; edits (zeroing, transport) write into them in place.

Step and branch rules (the same for every family):

* the denoising step is the number of ``scheduler.step`` calls made so far in this pipeline call
  (the scheduler is wrapped for the duration), so steps stay distinct even when two timesteps
  round to the same bf16 value;
* within a step, transformer calls are numbered; with separate-call CFG (FLUX true CFG, Qwen-Image, FLUX.2)
  call 0 is the conditional pass and later calls (unconditional, skip-layer guidance) are not;
* with batched CFG (SD3, PixArt, SANA) a call has ``2 n`` rows ``[uncond; cond]`` for ``n``
  images, and the conditional rows are the second half.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from .errors import MassActError
from .families import Block, Family


@dataclass
class CallState:
    """What the transformer pre-hook learned about the current call."""

    n_images: int
    n_image_tokens: int
    step: int = -1
    call: int = -1  # index of this transformer call within the step
    first_batch: int = 0  # batch size of the step's first call (2n: batched CFG, so later calls are extra passes)
    scheduler_steps: int = 0  # scheduler.step calls so far
    batch: int = 0
    text_len: int | None = None
    text_mask: torch.Tensor | None = None  # (batch, text_len) bool, on the model device
    text_index: torch.Tensor | None = None  # real text token positions when every row has the same
    latents: torch.Tensor | None = None  # the transformer's image input of this call
    _mask_cache: dict = field(default_factory=dict)

    @property
    def cond(self) -> slice:
        """Rows of the conditional branch in this call (empty for an unconditional call)."""
        return self.rows("cond")

    @property
    def uncond(self) -> slice:
        """Rows of the unconditional branch in this call: the first half of a batched-CFG call, or all
        rows of the second call of a step with separate CFG calls; empty otherwise (the conditional
        call, models without CFG, and extra calls such as skip-layer guidance)."""
        return self.rows("uncond")

    def enter(self, step: int, hidden: torch.Tensor, kwargs: dict, family: Family, pipe: Any,
              prompts: Sequence[str]) -> None:
        """Start a transformer call at denoising step ``step`` (its image input ``hidden``, its kwargs): the
        call index within the step, the batch, the text length and mask. Both engines call this."""
        if self.step != step:  # the scheduler moved on: a new denoising step
            self.step, self.call = step, 0
        else:
            self.call += 1
        self.batch = int(hidden.shape[0])
        if self.call == 0:
            self.first_batch = self.batch
        self.latents = hidden
        enc = kwargs.get("encoder_hidden_states")
        self.text_len = int(enc.shape[1]) if torch.is_tensor(enc) and enc.dim() == 3 else None
        self.text_mask = text_mask_for(self, family, pipe, prompts, kwargs, hidden.device)
        self.text_index = None
        if self.text_mask is not None and bool((self.text_mask == self.text_mask[:1]).all()):
            self.text_index = self.text_mask[0].nonzero().squeeze(1)  # one host sync per call, not per block

    def rows(self, branch: str) -> slice:
        """Rows of ``branch`` (``"cond"`` or ``"uncond"``) in this call, possibly empty."""
        n = self.n_images
        if self.batch == 2 * n:
            if self.call != 0:
                return slice(0, 0)
            return slice(n, 2 * n) if branch == "cond" else slice(0, n)
        if self.batch == n:
            if self.call > 0 and self.first_batch == 2 * n:
                return slice(0, 0)  # an extra pass after a batched-CFG call (SD3 skip-layer guidance)
            return slice(0, n) if self.call == (0 if branch == "cond" else 1) else slice(0, 0)
        raise MassActError(
            f"the transformer was called with batch {self.batch} for {n} images; massact_viz "
            f"expects {n} (no CFG or separate CFG calls) or {2 * n} (batched CFG). Pass prompts as "
            f"a list to Model.run rather than prompt_embeds of another size.")


@dataclass
class Site:
    """One block output at one step: what a hook function sees."""

    block: Block
    state: CallState
    image: torch.Tensor  # (batch, image tokens, D) view into the block output
    text: torch.Tensor | None  # (batch, text tokens, D) view, or None

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def cond(self) -> slice:
        return self.state.cond

    @property
    def uncond(self) -> slice:
        return self.state.uncond

    @property
    def text_mask(self) -> torch.Tensor | None:
        return self.state.text_mask

    @property
    def text_index(self) -> torch.Tensor | None:
        return self.state.text_index

    def stream(self, name: str) -> torch.Tensor | None:
        if name == "image":
            return self.image
        if name == "text":
            return self.text
        raise MassActError(f"unknown stream {name!r}: use 'image' or 'text'.")


@contextlib.contextmanager
def attach(pipe: Any, family: Family, blocks: Sequence[Block], fn: Callable[[Site], None], *,
           n_images: int, n_image_tokens: int, prompts: Sequence[str] = (),
           on_scheduler_step: Callable[[Any, torch.Tensor, torch.Tensor], None] | None = None,
           on_call: Callable[[CallState, dict], dict | None] | None = None,
           ) -> Iterator[CallState]:
    """Install hooks for one pipeline call; ``fn(site)`` runs after each chosen block's forward.

    ``on_scheduler_step(scheduler, model_output, sample)`` runs before each scheduler step (the
    guided prediction and the current latents, e.g. for previews). ``on_call(state, kwargs)`` runs
    before each transformer call, after ``state`` knows the step and branch rows; it may return new
    keyword arguments for the call (e.g. another prompt's conditioning), or None to keep them.
    """
    tr, sched = pipe.transformer, pipe.scheduler
    state = CallState(n_images=n_images, n_image_tokens=n_image_tokens)

    def pre_hook(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        state.enter(state.scheduler_steps, hidden, kwargs, family, pipe, prompts)
        if on_call is not None:
            new = on_call(state, kwargs)
            if new is not None:
                return args, new
        return None

    def count_step() -> None:
        state.scheduler_steps += 1

    def make_hook(block: Block):
        def hook(module, args, output):
            fn(block_site(family, block, state, output))
            return None  # never replace the output: edits happen in place on the views
        return hook

    handles = [tr.register_forward_pre_hook(pre_hook, with_kwargs=True)]
    try:
        with watch_scheduler(sched, before=on_scheduler_step, after=count_step):
            for b in blocks:
                handles.append(tr.get_submodule(b.path).register_forward_hook(make_hook(b)))
            yield state
    finally:
        for h in handles:
            h.remove()


def block_site(family: Family, block: Block, state: CallState, output: Any) -> Site:
    """The :class:`Site` of one block output (views into ``output``, so in-place writes edit the model)."""
    views = family.split(output, block, state.text_len, state.n_image_tokens)
    return Site(block, state, views["image"], views["text"])


@contextlib.contextmanager
def watch_scheduler(sched: Any, before: Callable[[Any, torch.Tensor, torch.Tensor], None] | None = None,
                    after: Callable[[], None] | None = None) -> Iterator[None]:
    """Within the block, ``before(scheduler, model_output, sample)`` runs before each ``sched.step`` call
    (the guided prediction and the current latents) and ``after()`` after it; the scheduler is restored on
    exit. (The scheduler is not a module, so this wraps its method for the duration.)"""
    orig_step = sched.step
    had_own = "step" in vars(sched)

    def scheduler_step(model_output, timestep, sample, *args, **kwargs):
        if before is not None:
            before(sched, model_output, sample)
        out = orig_step(model_output, timestep, sample, *args, **kwargs)
        if after is not None:
            after()
        return out

    sched.step = scheduler_step
    try:
        yield
    finally:
        if had_own:
            sched.step = orig_step
        else:
            del sched.step  # back to the class's method


def text_mask_for(state: CallState, family: Family, pipe: Any, prompts: Sequence[str], kwargs: dict,
                  device: torch.device) -> torch.Tensor | None:
    """The text padding mask ``(batch, text_len)`` of the current call: the transformer's own mask kwarg
    where the family has one, else rebuilt from the prompts by the family's tokenizer rule (the
    unconditional rows of a batched-CFG call count whole); None when unknown."""
    st = state
    if st.text_len is None:
        return None
    if family.text_mask_kwarg and torch.is_tensor(kwargs.get(family.text_mask_kwarg)):
        m = kwargs[family.text_mask_kwarg]
        return m.bool() if m.shape == (st.batch, st.text_len) else None
    key = (st.batch, st.text_len)
    if key not in st._mask_cache:
        m = family.text_mask(pipe, list(prompts), st.text_len) if prompts else None
        if m is not None and m.shape == (len(prompts), st.text_len) and len(prompts) == st.n_images:
            m = m.to(device)
            if st.batch == 2 * st.n_images:  # uncond rows: negative prompts, counted whole
                m = torch.cat([torch.ones_like(m), m], dim=0)
        else:
            m = None
        st._mask_cache[key] = m
    return st._mask_cache[key].to(device) if st._mask_cache[key] is not None else None


@contextlib.contextmanager
def record_calls(transformer: torch.nn.Module) -> Iterator[tuple[list[dict], list[torch.Tensor]]]:
    """Within the block, every call of ``transformer`` appends its keyword arguments to ``calls`` and a
    detached copy of its output tensor to ``outputs`` (yielded as ``(calls, outputs)``); the hooks are
    removed on exit. Positional arguments are refused: the pipelines massact_viz knows pass keywords."""
    calls: list[dict] = []
    outputs: list[torch.Tensor] = []

    def pre(module, args, kwargs):
        if args:
            raise MassActError("the pipeline calls its transformer with positional arguments; image inversion "
                               "only knows pipelines that pass keyword arguments (FluxPipeline, SD3).")
        calls.append(dict(kwargs))

    def post(module, args, kwargs, output):
        outputs.append((output[0] if isinstance(output, (tuple, list)) else output.sample).detach().clone())

    handles = [transformer.register_forward_pre_hook(pre, with_kwargs=True),
               transformer.register_forward_hook(post, with_kwargs=True)]
    try:
        yield calls, outputs
    finally:
        for h in handles:
            h.remove()
