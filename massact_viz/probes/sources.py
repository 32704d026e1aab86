"""Source runs for transport: the source prompt's activations, kept where a transport will read them.

:func:`source_capture` runs the source once and keeps, for chosen layers, steps and streams, the raw
block outputs of the conditional and (under CFG) unconditional branches, restricted to the channels
a transport needs, plus the transformer's prompt inputs of each branch (``Family.conditioning_kwargs``).
:class:`SourceCache` reads such a run back by (layer, step, stream, branch, channels). The memory is
``tokens x kept channels x slices`` in the model's dtype, so transporting top-8 of a whole FLUX.1 run
at 1024 px keeps about 0.1 GB per branch rather than the ~40 GB of every channel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from ..capture import BRANCHES, Capture, Raw, input_key, previews_available, raw_key
from ..edits import resolve_scope
from ..errors import MassActError
from ..run import Run

if TYPE_CHECKING:
    from ..model import Model

STREAM_SPECS = ("image", "text", "both")


def _streams(stream: str) -> tuple[str, ...]:
    if stream not in STREAM_SPECS:
        raise MassActError(f"stream must be one of {STREAM_SPECS}, got {stream!r}.")
    return ("image", "text") if stream == "both" else (stream,)


def source_capture(model: "Model", source: str, *, layers: Any = None, steps: Any = None, stream: str = "image",
                   channels: Mapping[str, Sequence[int] | None] | None = None, branch: str = "both",
                   conditioning: bool = True, stats: bool = True, raw: bool = True, seed: int = 0, num_steps: int | None = None,
                   previews: bool | None = None, extra_raw: Any = (), **run_kwargs: Any) -> Run:
    """Run ``source`` once and keep what a cached transport copies from it; pass it as ``source_run=``.

    ``layers`` / ``steps`` / ``stream``: the transported slices (:class:`~massact_viz.edits.Edit` specs);
    ``channels``: ``None`` keeps every channel, or ``{layer: list or None}`` the listed channels of each
    layer (``None``: all of that layer); ``branch``: ``"both"`` also keeps the unconditional branch of a CFG
    model (a model without CFG has none), ``"cond"`` only the conditional one; ``conditioning``: keep the
    prompt inputs of each branch (for ``transport(conditioning="source")``); ``stats``: also capture the
    statistics of those layers and steps (the transport's channel choice reads them); ``raw=False``
    keeps none of those slices (statistics, previews and ``extra_raw`` only); ``previews``:
    per-step previews (default: when the family has them); ``extra_raw``: more :class:`Raw` slices.
    """
    if branch not in ("both", "cond"):
        raise MassActError(f"branch must be 'both' or 'cond', got {branch!r}.")
    num_steps = model.resolve_num_steps(num_steps)
    scope = resolve_scope(model, layers=layers, steps=steps, stream=stream, num_steps=num_steps,
                          size=run_kwargs.get("size"))
    names = list(scope.layers)
    if channels is not None:
        unknown = sorted(set(channels) - set(names))
        if unknown:
            raise MassActError(f"channels names layers {unknown} outside the kept layers {names}.")
    step_list = list(scope.steps)
    branches = BRANCHES if branch == "both" else ("cond",)
    raws = []
    for n in names if raw else ():
        chans = None if channels is None else channels.get(n)
        chans = None if chans is None else sorted({int(c) for c in chans})
        for s in step_list:
            for st in _streams(stream):
                if st in model.layer(n).streams:
                    raws += [Raw(n, s, st, chans, None, b) for b in branches]
    have = {raw_key(r.layer, r.step, r.stream, r.branch) for r in raws}
    raws += [r for r in extra_raw if raw_key(model.layer(r.layer).name, r.step, r.stream, r.branch) not in have]
    want = previews_available(model) if previews is None else bool(previews)
    inputs = model.family.conditioning_kwargs if conditioning else ()
    return model.run(source, num_steps=num_steps, seed=seed, progress=False,
                     capture=Capture(layers=names, steps=step_list, stats=stats, raw=raws, previews=want,
                                     inputs=inputs), **run_kwargs)


class SourceCache:
    """Reads a source run's kept slices by (layer, step, stream, branch) and channel numbers.

    A slice the run asked for but never received (a block without that stream, e.g. SD3's last block has
    no text output; an unconditional branch in a run without CFG) counts as present and empty: the edited
    run meets no such output either."""

    def __init__(self, model: "Model", run: Run):
        self.run = run
        self._channels: dict[str, list[int] | None | str] = {}
        for spec in (run.meta.get("capture") or {}).get("raw", []):
            if not isinstance(spec, dict):
                continue
            key = raw_key(model.layer(spec["layer"]).name, int(spec["step"]), spec.get("stream", "image"),
                          spec.get("branch", "cond"))
            ch = spec.get("channels")
            self._channels[key] = None if ch is None else [int(c) for c in ([ch] if isinstance(ch, int) else ch)]
            if spec.get("tokens") is not None:
                self._channels[key] = "tokens"  # a token subset cannot serve a transport
        self._pos: dict[str, dict[int, int]] = {}

    def has(self, layer: str, step: int, stream: str, branch: str, channels: Sequence[int] | None) -> bool:
        """Whether ``channels`` (None: every channel) of that slice can be read (or the run never met it)."""
        key = raw_key(layer, step, stream, branch)
        kept = self._channels.get(key, "missing")
        if kept in ("missing", "tokens"):
            return False
        if key not in self.run.raw:
            return True  # asked for, never produced: nothing to copy there
        if kept is None:
            return True
        return channels is not None and set(channels) <= set(kept)

    def missing(self, layers, steps, streams, branches, channels: dict | None = None) -> list[str]:
        """Keys of the slices a transport over these would need and cannot read (``channels``: per-layer
        lists, None for every channel)."""
        out = []
        for n in layers:
            for s in steps:
                for st in streams:
                    for b in branches:
                        if not self.has(n, s, st, b, None if channels is None else channels.get(n)):
                            out.append(raw_key(n, s, st, b))
        return out

    def get(self, layer: str, step: int, stream: str, branch: str, channels: Sequence[int]) -> torch.Tensor:
        """``(rows, tokens, len(channels))`` of the kept slice, columns in the order of ``channels``."""
        key = raw_key(layer, step, stream, branch)
        if not self.has(layer, step, stream, branch, channels):
            raise MassActError(f"the source run keeps no {key} slice with channels {list(channels)[:8]}...; make "
                               f"it with source_capture(model, source, layers=..., steps=..., stream=..., "
                               f"channels=..., branch=...) covering the transport.")
        x = self.run.raw[key]
        kept = self._channels[key]
        if kept is None:
            return x[..., list(channels)]
        pos = self._pos.setdefault(key, {c: i for i, c in enumerate(kept)})
        return x[..., [pos[c] for c in channels]]

    def input(self, name: str, branch: str) -> torch.Tensor | None:
        return self.run.raw.get(input_key(name, branch))


__all__ = ["source_capture", "SourceCache"]
