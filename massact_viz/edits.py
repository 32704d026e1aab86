"""Activation edits applied inside the trace: zero, mean-ablate or scale chosen channels.

An :class:`Edit` is a callable for ``Model.run(..., edit=...)``. It changes the block outputs in
place, at chosen layers, denoising steps, streams, image tokens and CFG branches::

    from massact_viz.edits import Edit, compose
    e = Edit("zero", channels=[3, 7], layers="double", steps=(0, 2))   # steps 0 and 1 (a window)
    run = model.run("a red fox", edit=e)
    both = compose(Edit("zero", [3], stream="image"), Edit("scale", [5], stream="text", value=0.5))

Ops:

* ``"zero"``: set the selected entries to 0 (the seed paper's disruption probe);
* ``"mean"``: replace each selected channel by its mean over the selected tokens, per image row
  (Sun et al. 2024's control: the per-token content goes, the channel's bias stays);
* ``"scale"``: multiply the selected entries by ``value``.

Specs:

* ``channels``: a list of channel indices (same at every layer) or ``{layer name: list}`` (per layer;
  with ``layers=None`` the dict's layers are the edited ones);
* ``layers``: ``None`` (all), a name (``"double.3"``), an index, a kind (``"single"``), or a list /
  ``range`` of them;
* ``steps``: ``None`` (all), one step, a list (or ``range``) of steps, or a **tuple** ``(start, stop)``:
  the window ``start <= step < stop``;
* ``stream``: ``"image"``, ``"text"`` or ``"both"``; layers without the stream are left alone;
* ``tokens``: ``None`` (all) or a mask over the **image** tokens: a boolean sequence/array/tensor of
  length ``rows * cols`` (or shaped ``(rows, cols)``), or a list of token indices. The text stream is
  always edited over all its tokens (padding included);
* ``branch``: ``"both"`` (every CFG branch, the default) or ``"cond"`` (only the conditional rows).

:meth:`Edit.check` validates an edit against a model (layers, steps, channels, tokens) and returns a
resolved copy; ``Model.run`` calls it for you, so a bad edit fails before anything runs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from .errors import MassActError, check_index
from .specs import resolve_steps

if TYPE_CHECKING:
    from .hooks import Site
    from .dit import DiT

OPS = ("zero", "mean", "scale")
STREAMS = ("image", "text", "both")
BRANCHES = ("both", "cond")


def _int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_operation(op: str, value: Any = None, stream: str = "image", branch: str = "both") -> None:
    """What an edit does (op and its value) and to which stream and CFG branch; one clear error otherwise."""
    if op not in OPS:
        raise MassActError(f"Edit op must be one of {OPS}, got {op!r}.")
    if stream not in STREAMS:
        raise MassActError(f"Edit stream must be one of {STREAMS}, got {stream!r}.")
    if branch not in BRANCHES:
        raise MassActError(f"Edit branch must be 'both' (every CFG branch) or 'cond', got {branch!r}.")
    if op == "scale":
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise MassActError(f"Edit('scale', ...) needs a finite numeric value= (the factor), got {value!r}.")
    elif value is not None:
        raise MassActError(f"value= only applies to op='scale'; op={op!r} takes no value.")


@dataclass(frozen=True)
class Scope:
    """Where an edit (or a transport) applies, resolved against a model: block names in execution order, the
    denoising steps, the stream(s) and the image tokens (indices; None: all)."""

    layers: tuple[str, ...]
    steps: tuple[int, ...]
    stream: str
    tokens: torch.Tensor | None


def resolve_scope(model: "DiT", *, layers: Any = None, steps: Any = None, stream: str = "image", tokens: Any = None,
                  num_steps: int | None = None, size: Any = None) -> Scope:
    """Resolve the where-specs of an edit against ``model`` (a run of ``num_steps`` steps at ``size``): layers by
    the one layer rule (:meth:`~massact_viz.dit.DiT.resolve_layers`), steps by the one step rule
    (:func:`~massact_viz.specs.resolve_steps`), a stream at least one chosen layer has, and a token mask over
    the image-token grid. Every probe resolves its specs here; one clear error otherwise."""
    if stream not in STREAMS:
        raise MassActError(f"stream must be one of {STREAMS}, got {stream!r}.")
    if isinstance(layers, (list, tuple, range)) and not len(layers):
        raise MassActError("layers is an empty list: pass None for all layers.")
    blocks = model.resolve_layers(layers)
    want = ("image", "text") if stream == "both" else (stream,)
    if not any(s in b.streams for b in blocks for s in want):
        raise MassActError(f"none of the chosen layers has a {stream!r} stream; choose other layers or stream='image'.")
    step_list = resolve_steps(steps, model.resolve_num_steps(num_steps), "edit step")
    token_index = None
    if tokens is not None:
        rows, cols = model.token_grid(size)
        token_index = _token_index(tokens, rows * cols)
    return Scope(tuple(b.name for b in blocks), tuple(step_list), stream, token_index)


@dataclass
class Edit:
    """One in-place edit of block outputs (see the module docstring for every field)."""

    op: str = "zero"
    channels: Sequence[int] | Mapping[str, Sequence[int]] = ()
    layers: Any = None
    steps: Any = None
    stream: str = "image"
    tokens: Any = None
    branch: str = "both"
    value: float | None = None  # the factor of op="scale"
    # resolved by check(): layer names, step set, token indices (None: not resolved / all)
    _layer_names: frozenset | None = field(default=None, init=False, repr=False, compare=False)
    _steps: frozenset | None = field(default=None, init=False, repr=False, compare=False)
    _token_index: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _checked: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        check_operation(self.op, self.value, self.stream, self.branch)
        if isinstance(self.channels, Mapping):
            if not self.channels:
                raise MassActError("channels is an empty dict: give {layer name: [channel, ...]}.")
            self.channels = {str(k): self._channel_list(v, f"channels[{k!r}]") for k, v in self.channels.items()}
        else:
            self.channels = self._channel_list(self.channels, "channels")

    @staticmethod
    def _channel_list(v: Any, what: str) -> list[int]:
        if isinstance(v, torch.Tensor):
            v = v.tolist()
        if _int(v):
            v = [v]
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise MassActError(f"{what} must be a list of channel indices, got {v!r}.")
        out = list(v)
        if not out:
            raise MassActError(f"{what} is empty: give at least one channel index.")
        for c in out:
            if not _int(c):
                raise MassActError(f"{what} must hold integer channel indices, got {c!r}.")
        return [int(c) for c in out]

    # ---------------------------------------------------------------- validation
    def check(self, model: "DiT", num_steps: int | None = None, size: Any = None) -> "Edit":
        """A copy resolved against ``model`` (and a run of ``num_steps`` steps at ``size``), or MassActError."""
        new = dataclasses.replace(self)
        per_layer = isinstance(self.channels, dict)
        if per_layer:
            for name in self.channels:
                model.layer(name)  # unknown layer names raise
        scope = resolve_scope(model, layers=list(self.channels) if per_layer and self.layers is None else self.layers,
                              steps=self.steps, stream=self.stream, tokens=self.tokens, num_steps=num_steps,
                              size=size)
        if per_layer:
            missing = sorted(set(scope.layers) - set(self.channels))
            if missing:
                raise MassActError(f"per-layer channels give no channels for {missing}; add them to the dict or "
                                   f"leave those layers out of layers=.")
        width = model.width
        for chans in (self.channels.values() if per_layer else [self.channels]):
            for c in chans:
                check_index(c, width, "edit channel", f"This model has {width} channels.")
        new._layer_names, new._steps, new._token_index = frozenset(scope.layers), frozenset(scope.steps), scope.tokens
        new._checked = True
        return new

    def _layer_spec(self):
        if isinstance(self.layers, range):
            return list(self.layers)
        if isinstance(self.layers, (list, tuple)) and not self.layers:
            raise MassActError("layers is an empty list: pass None for all layers.")
        return self.layers

    # ---------------------------------------------------------------- matching
    def _matches_layer(self, block) -> bool:
        if self._layer_names is not None:
            return block.name in self._layer_names
        if isinstance(self.channels, dict) and block.name not in self.channels:
            return False
        spec = self._layer_spec()
        if spec is None:
            return True
        items = [spec] if isinstance(spec, (str, int)) else list(spec)
        for x in items:
            if isinstance(x, str) and x in (block.name, block.kind):
                return True
            if _int(x):
                if x < 0:
                    raise MassActError("negative layer indices need the model: call edit.check(model) first.")
                if x == block.index:
                    return True
        return False

    def _matches_step(self, step: int) -> bool:
        if self._steps is not None:
            return step in self._steps
        s = self.steps
        if s is None:
            return True
        if isinstance(s, tuple) and len(s) == 2:
            if min(s) < 0:
                raise MassActError("negative steps need the run length: call edit.check(model, steps) first.")
            return s[0] <= step < s[1]
        s = [s] if _int(s) else list(s)
        if any(v < 0 for v in s):
            raise MassActError("negative steps need the run length: call edit.check(model, steps) first.")
        return step in s

    # ---------------------------------------------------------------- applying
    def __call__(self, site: "Site") -> None:
        if not self._matches_layer(site.block) or not self._matches_step(site.step):
            return
        chans = self.channels.get(site.block.name) if isinstance(self.channels, dict) else self.channels
        if not chans:
            return
        rows = site.cond if self.branch == "cond" else slice(None)
        for name in (("image", "text") if self.stream == "both" else (self.stream,)):
            x = site.image if name == "image" else site.text
            if x is None:
                continue
            x = x[rows]
            if x.shape[0] == 0:
                continue
            toks = None
            if name == "image" and self.tokens is not None:
                toks = self._token_index if self._token_index is not None else _token_index(self.tokens, x.shape[1])
                if toks.numel() and int(toks.max()) >= x.shape[1]:
                    raise MassActError(f"edit tokens reach index {int(toks.max())} but this run has {x.shape[1]} "
                                       f"image tokens; build the mask for the run's size.")
            self._apply(x, chans, toks)

    def _apply(self, x: torch.Tensor, chans: list[int], toks: torch.Tensor | None) -> None:
        idx = token_channel_index(x, chans, toks)
        if idx is None:
            return
        sub = x[idx]  # (rows, tokens, channels), a copy
        if self.op == "zero":
            new = torch.zeros_like(sub)
        elif self.op == "scale":
            new = sub * self.value
        else:
            new = sub.float().mean(dim=1, keepdim=True).expand_as(sub).to(sub.dtype)
        x[idx] = new

    def describe(self) -> str:
        """A short human description, e.g. ``zero 2 channels of image at double.0 steps all``."""
        n = (f"{len(self.channels)} channels" if not isinstance(self.channels, dict)
             else f"per-layer channels ({len(self.channels)} layers)")
        extra = f" x{self.value}" if self.op == "scale" else ""
        return (f"{self.op}{extra} {n} of {self.stream} at layers {describe_layers(self.layers)} "
                f"steps {describe_steps(self.steps)}")


def describe_layers(layers: Any) -> str:
    if layers is None:
        return "all"
    if isinstance(layers, range):
        return f"{layers.start}..{layers.stop - 1}"
    if isinstance(layers, (str, int)):
        return str(layers)
    return ",".join(str(x) for x in layers)


def describe_steps(steps: Any) -> str:
    if steps is None:
        return "all"
    if isinstance(steps, tuple):
        return f"[{steps[0]},{steps[1]})"
    if isinstance(steps, range):
        return f"[{steps.start},{steps.stop})"
    if _int(steps):
        return str(steps)
    return ",".join(str(x) for x in steps)


def _token_index(tokens: Any, n: int) -> torch.Tensor:
    """Token indices (long, sorted) from a boolean mask over ``n`` image tokens or a list of indices."""
    if isinstance(tokens, (str, bytes)):
        raise MassActError(f"tokens must be a boolean mask or a list of token indices, got {tokens!r}.")
    t = tokens.detach().cpu() if isinstance(tokens, torch.Tensor) else torch.as_tensor(np.asarray(tokens))
    if t.dtype == torch.bool:
        if t.numel() != n:
            raise MassActError(f"the token mask has {t.numel()} entries but the run has {n} image tokens "
                               f"(rows x cols); build it with model.token_grid(size).")
        return t.reshape(-1).nonzero().squeeze(1)
    if t.dtype.is_floating_point or t.dim() != 1:
        raise MassActError(f"tokens must be a boolean mask or a 1-D list of integer token indices, got dtype "
                           f"{t.dtype} and shape {tuple(t.shape)}.")
    if t.numel() == 0:
        raise MassActError("tokens is empty: pass None for all tokens.")
    return torch.tensor(sorted({check_index(int(v), n, "edit token", f"The run has {n} image tokens.")
                                for v in t.tolist()}), dtype=torch.long)


@dataclass
class Composed:
    """Several edits applied in order at every site (see :func:`compose`)."""

    edits: tuple

    def __call__(self, site: "Site") -> None:
        for e in self.edits:
            e(site)

    def check(self, model: "DiT", steps: int | None = None, size: Any = None) -> "Composed":
        return Composed(tuple(e.check(model, steps, size) if hasattr(e, "check") else e for e in self.edits))

    def describe(self) -> str:
        return " + ".join(e.describe() if hasattr(e, "describe") else repr(e) for e in self.edits)


def compose(*edits) -> Composed:
    """One edit applying ``edits`` in order (Edits, Composed, or plain ``fn(site)`` callables)."""
    flat = []
    for e in edits:
        if isinstance(e, Composed):
            flat.extend(e.edits)
        elif callable(e):
            flat.append(e)
        else:
            raise MassActError(f"compose() takes Edit objects or functions of a site, got {e!r}.")
    if not flat:
        raise MassActError("compose() needs at least one edit.")
    return Composed(tuple(flat))


def token_channel_index(x: torch.Tensor, chans: list[int], toks: torch.Tensor | None):
    """Index of ``x[:, toks, chans]`` (all rows) for reading and in-place writing; None for no tokens."""
    ch = torch.as_tensor(chans, device=x.device)
    if toks is None:
        return (slice(None), slice(None), ch)
    if toks.numel() == 0:
        return None
    return (slice(None), toks.to(x.device)[:, None], ch[None, :])
