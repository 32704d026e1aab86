"""The model as data: :class:`DiT` describes a loaded diffusers pipeline (family, blocks, width,
token grid, sampling defaults, provenance) without running it. :class:`massact_viz.Model` builds on it."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .errors import MassActError, check_index
from .families import Block, Family, detect
from .specs import check_engine, check_size

_CACHE_HOOK_WORDS = ("cache", "fbc_", "pyramid_attention", "layer_skip")  # diffusers/hooks names


class DiT:
    """A loaded DiT pipeline as data: its family adapter, blocks in execution order, hidden width, token
    grid, sampling defaults and provenance. Nothing here runs the pipeline; :class:`massact_viz.Model`
    (the object users hold) adds running, scanning and nnsight on top, and the capture runner, edits and
    probes read a model only through these members.

    ``pipe`` is the diffusers pipeline, ``family`` the adapter, ``blocks`` the transformer blocks in
    execution order.
    """

    def __init__(self, pipe: Any, *, family: Family | None = None, source: str | None = None,
                 dtype: torch.dtype | None = None, device: str | None = None, offload: str | None = None,
                 revision: str | None = None, defaults: dict[str, Any] | None = None, engine: str = "hooks"):
        self.pipe = pipe
        #: what runs captures and edits when run() is not told: "hooks" (PyTorch hooks) or "nnsight" (a
        #: worker in an nnsight trace); the same statistics and images either way (massact_viz.nnsight_engine)
        self.engine = check_engine(engine)
        #: pipeline kwargs every run starts from (the embedded model's recommended sampling:
        #: steps, true CFG, negative prompt); explicit arguments to run() win
        self.defaults: dict[str, Any] = dict(defaults or {})
        self.family = family or detect(pipe)
        self.source = source or type(pipe).__name__
        self.dtype = dtype or next(pipe.transformer.parameters()).dtype
        self.device = device or str(next(pipe.transformer.parameters()).device)
        self.offload, self.revision = offload, revision
        self.blocks: list[Block] = self.family.blocks(pipe.transformer)
        self._by_name = {b.name: b for b in self.blocks}
        self.check_no_cache()

    # ---------------------------------------------------------------- structure
    @property
    def width(self) -> int:
        """Hidden width (channels) of the block outputs."""
        cfg = self.pipe.transformer.config
        for a, b in (("num_attention_heads", "attention_head_dim"),):
            if hasattr(cfg, a) and hasattr(cfg, b):
                return int(getattr(cfg, a)) * int(getattr(cfg, b))
        raise MassActError("cannot read the hidden width from the transformer config.")

    def layer(self, layer: str | int | Block) -> Block:
        """A block by name (``"double.3"``) or by index in execution order."""
        if isinstance(layer, Block):
            return layer
        if isinstance(layer, str):
            if layer not in self._by_name:
                names = [b.name for b in self.blocks]
                raise MassActError(f"unknown layer {layer!r}; this {self.family.title} model has "
                                   f"{names[0]}..{names[-1]} ({len(names)} blocks; see print(model)).")
            return self._by_name[layer]
        return self.blocks[check_index(layer, len(self.blocks), "layer",
                                       f"This model has {len(self.blocks)} blocks; see print(model).")]

    def resolve_layers(self, layers: Sequence[str | int] | str | int | None) -> list[Block]:
        """Blocks (in execution order) for a layer spec, the one rule every feature uses: None (all), a name
        (``"double.3"``), an index (negative from the end), a kind (``"single"``: every block of it), or a
        list or ``range`` mixing them."""
        if layers is None:
            return list(self.blocks)
        items = [layers] if isinstance(layers, (str, int)) else layers
        if isinstance(items, (bytes, dict)) or not hasattr(items, "__iter__"):
            raise MassActError(f"layers must be None, a name, an index, a kind or a list of them; got {layers!r}.")
        kinds = {b.kind for b in self.blocks}
        out = []
        for x in items:
            out += [b for b in self.blocks if b.kind == x] if isinstance(x, str) and x in kinds else [self.layer(x)]
        if not out:
            raise MassActError("an empty layer list was given; pass None for all layers.")
        return sorted(set(out), key=lambda b: b.index)

    def token_grid(self, size: tuple[int, int] | int | None = None) -> tuple[int, int]:
        """(rows, cols) of image tokens at ``size`` (height, width) pixels (default: the pipeline's)."""
        h, w = check_size(size) or self.family.default_size(self.pipe)
        return self.family.token_grid(self.pipe, h, w)

    def check_no_cache(self) -> None:
        """Refuse diffusers block caching: cached blocks would return stale activations."""
        tr = self.pipe.transformer
        found = set()
        if getattr(tr, "is_cache_enabled", False):
            found.add("a cache enabled with transformer.enable_cache(...)")
        for _, m in tr.named_modules():
            reg = getattr(m, "_diffusers_hook", None)
            for hook_name in getattr(reg, "hooks", {}) or {}:
                if any(w in hook_name for w in _CACHE_HOOK_WORDS):
                    found.add(hook_name)
        if found:
            raise MassActError(
                f"diffusers block caching/skipping is active on this transformer ({', '.join(sorted(found))}); "
                f"cached or skipped blocks would make captured activations stale. Turn it off with "
                f"model.pipe.transformer.disable_cache() (or remove the hooks) and try again.")

    # ---------------------------------------------------------------- sampling
    @property
    def guidance_kwarg(self) -> str:
        """The pipeline kwarg that ``guidance=`` sets (true CFG where the defaults use it)."""
        return "true_cfg_scale" if "true_cfg_scale" in self.defaults else self.family.guidance_kwarg

    def calls_per_step(self, **pipe_kwargs: Any) -> int:
        """How many times one denoising step calls the transformer, for a run with these pipeline kwargs on
        top of the model's defaults and the pipeline's own: 2 with separate-call CFG (FLUX.1 true CFG,
        Qwen-Image, undistilled FLUX.2, the embedded model), else 1. In an nnsight trace each call is one ``tracer.iter`` occurrence, so a loop over
        every call of ``T`` steps is ``tracer.iter[:T * model.calls_per_step()]``."""
        kw = dict(self.family.call_defaults)
        kw.update(self.defaults)
        kw.update(pipe_kwargs)
        return self.family.calls_per_step(kw, self.pipe)

    def resolve_num_steps(self, num_steps: int | None) -> int:
        """``num_steps`` (denoising steps), or the model's recommended number (4 unless its defaults say
        otherwise)."""
        return int(self.defaults.get("num_inference_steps", 4)) if num_steps is None else num_steps

    # ---------------------------------------------------------------- description
    def metadata(self) -> dict[str, Any]:
        import diffusers
        import transformers

        from .version import __version__
        try:
            import nnsight
            nn_version = nnsight.__version__
        except Exception:  # pragma: no cover - nnsight is a dependency
            nn_version = None
        cfg = self.pipe.transformer.config
        return {"model": self.source, "revision": self.revision,
                "commit": getattr(getattr(self.pipe, "config", None), "_commit_hash", None),
                "pipeline": type(self.pipe).__name__, "transformer": type(self.pipe.transformer).__name__,
                "family": self.family.name, "dtype": str(self.dtype).replace("torch.", ""), "device": self.device,
                "offload": self.offload, "layers": [b.name for b in self.blocks], "width": self.width,
                "transformer_config": {k: v for k, v in dict(cfg).items() if not k.startswith("_")},
                "versions": {"massact_viz": __version__, "torch": torch.__version__,
                             "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                             "nnsight": nn_version}}

    def info(self, size: tuple[int, int] | int | None = None) -> dict[str, Any]:
        """Architecture summary as a dict (what ``print(model)`` and ``massact-viz info`` show)."""
        h, w = check_size(size) or self.family.default_size(self.pipe)
        grid = self.family.token_grid(self.pipe, h, w)
        kinds: dict[str, int] = {}
        for b in self.blocks:
            kinds[b.kind] = kinds.get(b.kind, 0) + 1
        return {"model": self.source, "family": self.family.name, "title": self.family.title,
                "pipeline": type(self.pipe).__name__, "transformer": type(self.pipe.transformer).__name__,
                "blocks": len(self.blocks), "block_kinds": kinds, "layers": [b.name for b in self.blocks],
                "streams": {b.name: list(b.streams) for b in self.blocks}, "width": self.width,
                "size": [h, w], "pixels_per_token": self.family.pixels_per_token(self.pipe),
                "token_grid": list(grid), "image_tokens": grid[0] * grid[1], "cfg": self.family.cfg,
                "dtype": str(self.dtype).replace("torch.", ""), "device": self.device, "notes": self.family.notes}

    def __repr__(self) -> str:
        return self.describe()

    def describe(self, size: tuple[int, int] | int | None = None) -> str:
        """The text of ``print(model)``, with the token grid at ``size``."""
        i = self.info(size)
        kinds = " + ".join(f"{n} {k}" for k, n in i["block_kinds"].items())
        first, last = i["layers"][0], i["layers"][-1]
        streams = sorted({s for v in i["streams"].values() for s in v})
        return (f"massact_viz.Model({i['model']!r})\n"
                f"  family      {i['title']} ({i['pipeline']}, {i['transformer']})\n"
                f"  blocks      {i['blocks']} in execution order: {kinds} ({first} .. {last})\n"
                f"  streams     {', '.join(streams)}; hidden width {i['width']}\n"
                f"  tokens      {i['token_grid'][0]}x{i['token_grid'][1]} = {i['image_tokens']} image tokens at "
                f"{i['size'][0]}x{i['size'][1]} px ({i['pixels_per_token']} px per token)\n"
                f"  CFG         {i['cfg']}\n"
                f"  dtype       {i['dtype']} on {i['device']}" + (f" (offload: {self.offload})" if self.offload else ""))
