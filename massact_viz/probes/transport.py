"""Text-conditioned activation transport: copy a source prompt's activations into a target run.

``transport(model, source, target)`` generates both prompts from the **same initial noise** and, at
each transported (layer, step), replaces the target's block output under the mask ``M = p m^T``
(``p`` the chosen image tokens, ``m`` the chosen channels) by the source's (paper section 1.3 step 4)::

    X_target <- X_target * (1 - alpha M) + X_source * alpha M

``alpha = 1`` is the plain replacement; ``alpha = 0`` (or an all-False token mask) leaves the target
exactly as it was.

Modes:

* ``"cached"`` (default): the source runs once capturing raw activations (all tokens, all channels,
  conditional rows) of the transported layers and steps; the target then runs with an edit that
  writes them in. ``source_run=`` reuses such a run (from :func:`source_capture` or an earlier
  result) across many targets.
* ``"batched"``: one ``Model.run([source, target], seeds=[seed, seed])``; the edit copies the source
  row into the target row inside the same forward pass (no raw slices kept, twice the batch).

CFG branches (``branch``): ``"cond"`` (default) transports into the conditional rows only and leaves
the unconditional branch unedited (the source prompt acts through the conditional prediction, as in
the paper's text-conditioned setting; the unconditional branch of source and target is the same
negative prompt anyway). ``"both"`` (batched mode only) also copies the source's unconditional row
into the target's unconditional row. Guidance-distilled models (FLUX.1) have no CFG: every row is
conditional and the two choices agree.

Channels: ``"source"`` / ``"target"`` pick each layer's top-``k`` by ``stat`` (default ``abs_mean``)
of the unedited source / target run over the transported steps (:func:`massact_viz.analysis.select`),
``"union"`` takes the set union of both; a list gives the same channels at every layer, a
``{layer: list}`` dict its own per layer. With ``stream="both"`` chosen channels come from the
image-stream statistics and are transported in both streams; the text stream is always transported
over all its tokens (both prompts are padded to the same text length).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from ..analysis import select
from ..capture import Capture, Raw, raw_key
from ..edits import Edit, describe_layers, describe_steps, token_channel_index
from ..errors import MassActError, RunFileError, check_k
from ..run import Run, atomic_write

if TYPE_CHECKING:
    from ..hooks import Site
    from ..model import Model

FORMAT = "massact_viz.transport"
MODES = ("cached", "batched")
CHANNEL_KINDS = ("source", "target", "union")
_RESERVED = ("steps", "seed", "seeds", "capture", "edit", "progress", "prompt")


@dataclass
class TransportResult:
    """Source, unedited target and transported images (one each), the channels and the settings."""

    source_images: list
    target_images: list
    images: list
    channels: dict[str, list[int]]
    settings: dict = field(default_factory=dict)

    @property
    def source_image(self):
        return self.source_images[0]

    @property
    def target_image(self):
        return self.target_images[0]

    @property
    def image(self):
        return self.images[0]

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``transport.json`` and ``source.png``, ``target.png``, ``transported.png`` into ``path``."""
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not (path / "transport.json").exists():
            raise RunFileError(f"{path} exists and is not a transport directory; choose a new or empty one.")
        path.mkdir(parents=True, exist_ok=True)
        for name, ims in (("source", self.source_images), ("target", self.target_images),
                          ("transported", self.images)):
            for i, im in enumerate(ims):
                im.save(path / f"{name}{'' if i == 0 else f'-{i}'}.png")
        doc = {"format": FORMAT, "settings": self.settings, "channels": self.channels,
               "n_images": len(self.images)}
        atomic_write(path / "transport.json", json.dumps(doc, indent=1, default=repr))  # written last: marks completeness
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TransportResult":
        from PIL import Image

        path = Path(path)
        f = path / "transport.json"
        try:
            doc = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunFileError(f"{path} holds no readable transport.json ({e}).") from e
        if doc.get("format") != FORMAT:
            raise RunFileError(f"{f} is not a massact_viz transport result.")
        out = {}
        for name in ("source", "target", "transported"):
            ims = []
            for i in range(doc["n_images"]):
                try:
                    with Image.open(path / f"{name}{'' if i == 0 else f'-{i}'}.png") as im:
                        ims.append(im.convert("RGB"))
                except OSError as e:
                    raise RunFileError(f"{path}: image {name} {i} is missing or damaged ({e}).") from e
            out[name] = ims
        return cls(out["source"], out["target"], out["transported"],
                   {k: list(v) for k, v in doc["channels"].items()}, doc["settings"])


def _streams(stream: str) -> list[str]:
    return ["image", "text"] if stream == "both" else [stream]


def _blend(x: torch.Tensor, src: torch.Tensor, toks: torch.Tensor | None, chans: list[int], alpha: float) -> None:
    """``x[:, toks, chans] <- (1 - alpha) x + alpha src`` in place (``src`` broadcast over x's rows)."""
    idx = token_channel_index(x, chans, toks)
    if idx is None:
        return
    s = src.to(x.device, x.dtype)[idx]
    x[idx] = s if alpha == 1.0 else x[idx] * (1.0 - alpha) + s * alpha


class _Transport:
    """The edit function of both modes (a plain ``fn(site)``)."""

    def __init__(self, channels: dict[str, list[int]], steps: set[int], streams: list[str],
                 toks: torch.Tensor | None, alpha: float, branch: str, raw: Mapping[str, torch.Tensor] | None):
        self.channels, self.steps, self.streams = channels, steps, streams
        self.toks, self.alpha, self.branch, self.raw = toks, alpha, branch, raw

    def __call__(self, site: "Site") -> None:
        chans = self.channels.get(site.block.name)
        if not chans or site.step not in self.steps or self.alpha == 0.0:
            return
        cond = site.cond
        for name in self.streams:
            x = site.stream(name)
            if x is None:
                continue
            toks = self.toks if name == "image" else None
            if self.raw is not None:  # cached: the source's conditional rows, kept on the host
                if cond.stop == cond.start:
                    continue  # an unconditional call: left unedited
                src = self.raw[raw_key(site.block.name, site.step, name)]
                tgt = x[cond]
                if src.shape[1:] != tgt.shape[1:]:
                    raise MassActError(f"the source's {name} stream at {site.block.name} step {site.step} has shape "
                                       f"{tuple(src.shape[1:])}, the target's {tuple(tgt.shape[1:])}; run both at "
                                       f"the same size (text streams: the same padded text length).")
                _blend(tgt, src[:1], toks, chans, self.alpha)
            else:  # batched: rows are [source, target] within each branch
                groups = [cond] if self.branch == "cond" else \
                    [slice(0, x.shape[0] // 2), slice(x.shape[0] // 2, x.shape[0])] if x.shape[0] == 4 else \
                    [slice(0, 2)]
                for g in groups:
                    if g.stop - g.start != 2:
                        continue
                    _blend(x[g.start + 1:g.start + 2], x[g.start:g.start + 1], toks, chans, self.alpha)


def _check_channels(model: "Model", channels: Any, k: int, layer_names: list[str]) -> Any:
    if isinstance(channels, str):
        if channels not in CHANNEL_KINDS:
            raise MassActError(f"channels must be one of {CHANNEL_KINDS}, a list or {{layer: list}}; got {channels!r}.")
        check_k(k, model.width)
        return channels
    e = Edit("zero", channels, layers=layer_names if not isinstance(channels, Mapping) else None)
    e.check(model)  # channel indices and layer names
    if isinstance(e.channels, dict):
        return {model.layer(n).name: list(v) for n, v in e.channels.items()}
    return {n: list(e.channels) for n in layer_names}


def _choose(kind_stats: list, k: int, layers: list[str], steps: list[int], stream: str,
            stat: str) -> dict[str, list[int]]:
    """Top-k per layer by ``stat`` averaged over the transported ``steps``, from (stats, image) pairs,
    united over the pairs (the first pair's channels first, each highest first)."""
    out = {}
    for name in layers:
        chosen: list[int] = []
        for st, img in kind_stats:
            if list(st.steps) == list(steps):  # the capture holds exactly these steps: analysis.select
                top = select(st, "top", k, layer=name, stat=stat, stream=stream, image=img)
            else:  # e.g. a reused source_run captured more steps: average over the transported ones
                v = torch.stack([st.get(stat, layer=name, stream=stream, step=s, image=img) for s in steps]).mean(0)
                top = torch.topk(v, k).indices.tolist()
            chosen += [c for c in top if c not in chosen]
        out[name] = chosen
    return out


def source_capture(model: "Model", source: str, *, layers: Any = None, steps: Any = None, stream: str = "image",
                   seed: int = 0, num_steps: int | None = None, **run_kwargs: Any) -> Run:
    """The cached source run :func:`transport` makes (statistics + raw slices); pass it as ``source_run=``."""
    num_steps = model.resolve_steps(num_steps)
    probe = Edit("zero", [0], layers=layers, steps=steps, stream=stream).check(model, num_steps,
                                                                               run_kwargs.get("size"))
    names = sorted(probe._layer_names, key=lambda n: model.layer(n).index)
    st = sorted(probe._steps)
    raws = [Raw(n, s, name) for n in names for s in st for name in _streams(stream)
            if name in model.layer(n).streams]
    return model.run(source, steps=num_steps, seed=seed, progress=False,
                     capture=Capture(layers=names, steps=st, raw=raws), **run_kwargs)


def transport(model: "Model", source: str, target: str, *, channels: Any = "source", k: int = 4,
              tokens: Any = None, alpha: float = 1.0, layers: Any = None, steps: Any = None,
              stream: str = "image", mode: str = "cached", branch: str = "cond", stat: str = "abs_mean",
              seed: int = 0, num_steps: int | None = None, source_run: Run | None = None,
              **run_kwargs: Any) -> TransportResult:
    """Transport the source prompt's activations into the target prompt's run (see the module docstring).

    ``tokens``: ``None`` (all image tokens) or a boolean mask over the image tokens (``rows * cols``
    or shaped ``(rows, cols)``, see ``model.token_grid(size)``) or a list of token indices.
    ``layers``/``steps``/``stream`` are the :class:`~massact_viz.edits.Edit` specs (``steps`` a step,
    list or ``(start, stop)`` window of the ``num_steps`` denoising steps). Other keywords (``size``,
    ``guidance``, pipeline kwargs) go to ``Model.run``. Everything is validated before anything runs.
    """
    if not isinstance(source, str) or not isinstance(target, str) or not source.strip() or not target.strip():
        raise MassActError("source and target must each be one non-empty prompt string.")
    if mode not in MODES:
        raise MassActError(f"mode must be one of {MODES}, got {mode!r}.")
    if branch not in ("cond", "both"):
        raise MassActError(f"branch must be 'cond' or 'both', got {branch!r}.")
    if branch == "both" and mode == "cached":
        raise MassActError("branch='both' needs mode='batched' (the cached source keeps only its conditional rows).")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise MassActError(f"alpha must be a number in [0, 1], got {alpha!r}.")
    alpha = float(alpha)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MassActError(f"seed must be a non-negative integer, got {seed!r}.")
    for r in _RESERVED:
        if r in run_kwargs:
            raise MassActError(f"transport() sets {r}= itself; use seed= for the shared noise, num_steps= for the "
                               f"denoising steps and steps= for the transported step window.")
    if source_run is not None and mode != "cached":
        raise MassActError("source_run= is for mode='cached'.")
    num_steps = model.resolve_steps(num_steps)
    size = run_kwargs.get("size")
    probe = Edit("zero", [0], layers=layers, steps=steps, stream=stream, tokens=tokens).check(model, num_steps, size)
    names = sorted(probe._layer_names, key=lambda n: model.layer(n).index)
    st = sorted(probe._steps)
    streams = _streams(stream)
    chans = _check_channels(model, channels, k, names)
    if isinstance(chans, dict):
        names = sorted(chans, key=lambda n: model.layer(n).index)
    sel_stream = "text" if stream == "text" else "image"
    need = [(n, s, name) for n in names for s in st for name in streams if name in model.layer(n).streams]
    if source_run is not None:
        missing = [raw_key(*t) for t in need if raw_key(*t) not in source_run.raw]
        if missing:
            raise MassActError(f"source_run lacks raw slices {missing[:3]}{'...' if len(missing) > 3 else ''}; "
                               f"make it with source_capture(model, source, layers=..., steps=..., stream=...).")
        meta = source_run.meta
        if meta.get("prompts") != [source] or meta.get("steps") != num_steps or (meta.get("seeds") or [None])[0] != seed:
            raise MassActError(f"source_run was made for prompts {meta.get('prompts')}, {meta.get('steps')} steps, "
                               f"seeds {meta.get('seeds')}; transport() needs [{source!r}], {num_steps}, seed {seed}.")
        if channels in ("source", "union") and (source_run.stats is None
                                                or not set(names) <= set(source_run.stats.layers)):
            raise MassActError("source_run has no statistics of the transported layers to choose channels from; "
                               "give channels= explicitly or make it with source_capture().")
    toks = probe._token_index
    run_kw = dict(run_kwargs, steps=num_steps, progress=False)
    stats_cap = Capture(layers=names, steps=st)

    if mode == "cached":
        src = source_run if source_run is not None else source_capture(
            model, source, layers=names, steps=st, stream=stream, seed=seed, num_steps=num_steps, **run_kwargs)
        need_tstats = channels in ("target", "union")
        tgt = model.run(target, seed=seed, capture=stats_cap if need_tstats else Capture.nothing(), **run_kw)
        pools = {"source": [(src.stats, 0)], "target": [(tgt.stats, 0)],
                 "union": [(src.stats, 0), (tgt.stats, 0)]}
        raw = src.raw
        src_images, tgt_images = src.images, tgt.images
    else:
        base = model.run([source, target], seeds=[seed, seed],
                         capture=stats_cap if isinstance(channels, str) else Capture.nothing(), **run_kw)
        pools = {"source": [(base.stats, 0)], "target": [(base.stats, 1)],
                 "union": [(base.stats, 0), (base.stats, 1)]}
        raw = None
        src_images, tgt_images = base.images[:1], base.images[1:]
    if isinstance(chans, str):
        chans = _choose(pools[chans], k, names, st, sel_stream, stat)
    fn: Callable = _Transport(chans, set(st), streams, toks, alpha, branch, raw)
    if mode == "cached":
        images = model.run(target, seed=seed, capture=Capture.nothing(), edit=fn, **run_kw).images
    else:
        images = model.run([source, target], seeds=[seed, seed], capture=Capture.nothing(), edit=fn,
                           **run_kw).images[1:]
    settings = {"model": model.source, "source": source, "target": target, "mode": mode, "branch": branch,
                "channels": channels if isinstance(channels, str) else "explicit", "k": k, "stat": stat,
                "alpha": alpha, "layers": describe_layers(layers), "steps": describe_steps(steps),
                "transport_layers": names, "transport_steps": st, "stream": stream,
                "tokens": None if toks is None else toks.tolist(), "seed": seed, "num_steps": num_steps,
                "run_kwargs": {key: repr(v) for key, v in sorted(run_kwargs.items())}}
    return TransportResult(list(src_images), list(tgt_images), list(images), chans, settings)


__all__ = ["transport", "source_capture", "TransportResult"]
