"""The localization plan: every setting of a sweep, validated against the model before any work.

:func:`plan_localization` checks the arguments of :func:`~massact_viz.probes.localization.localize` and
returns an immutable :class:`LocalizationPlan`; nothing runs until :mod:`.execution` is handed the plan.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ...analysis import KINDS
from ...capture import check_probe_kwargs
from ...errors import MassActError, check_k
from ...specs import resolve_steps
from .clustering import DEFAULT_FOREGROUND, check_cluster_args
from .tokens import check_seed

if TYPE_CHECKING:
    from ...model import Model

SETS = KINDS + ("all",)   # the selection kinds of analysis.select, and every channel
RANKS = ("image", "mean")


@dataclass(frozen=True, eq=False)  # identity == and hash: fields hold tensors and mappings
class LocalizationPlan:
    """Everything a localization sweep does, resolved and validated (see :func:`plan_localization`)."""

    model_source: str | None
    dtype: str
    prompts: tuple[str, ...]
    masks: Any                      # one mask per prompt, a function (image, prompt) -> mask, or "shapes"
    layers: tuple[str, ...]         # the blocks with an image stream, in execution order
    steps: tuple[int, ...]          # the denoising steps scored
    num_steps: int
    k: int
    sets: tuple[str, ...]
    random_draws: int
    seed: int
    stat: str
    rank: str
    k_clusters: int
    method: str
    foreground: Any
    chunk: int
    run_kwargs: Mapping[str, Any]   # Model.run's keywords (num_steps included)

    @property
    def starts(self) -> list[int]:
        """The first prompt index of every chunk (the sweep's units of work)."""
        return list(range(0, len(self.prompts), self.chunk))

    def chunk_prompts(self, start: int) -> list[str]:
        return list(self.prompts[start:start + self.chunk])

    def chunk_masks(self, start: int) -> Any:
        """The ``masks=`` of one chunk: the rule as given, or the chunk's slice of the list."""
        if isinstance(self.masks, str) or callable(self.masks):
            return self.masks
        return list(self.masks)[start:start + len(self.chunk_prompts(start))]

    def agreement(self) -> dict:
        """What every launched process must have been given alike."""
        return {"prompts": list(self.prompts), "layers": list(self.layers), "steps": list(self.steps), "k": self.k,
                "sets": list(self.sets), "draws": self.random_draws, "seed": self.seed, "stat": self.stat,
                "rank": self.rank, "clusters": self.k_clusters, "method": self.method,
                "foreground": repr(self.foreground), "chunk": self.chunk,
                "masks": self.masks if isinstance(self.masks, str) else repr(type(self.masks)),
                "run_kwargs": repr(sorted(self.run_kwargs.items()))}

    def manifest(self) -> dict:
        """What a resumable sweep's parts folder pins: a relaunch must agree on all of it (rules by name,
        masks by a digest of their contents, never by memory address)."""
        return {"prompts": list(self.prompts), "layers": list(self.layers), "steps": list(self.steps), "k": self.k,
                "sets": list(self.sets), "draws": self.random_draws, "seed": self.seed, "stat": self.stat,
                "rank": self.rank, "clusters": self.k_clusters, "method": self.method,
                "foreground": identity(self.foreground), "chunk": self.chunk, "model": self.model_source,
                "dtype": self.dtype, "masks": identity(self.masks),
                "run_kwargs": repr(sorted(self.run_kwargs.items()))}

    def params(self) -> dict:
        """The settings a :class:`~.results.LocalizationResult` keeps (plain JSON data)."""
        fg = self.foreground if isinstance(self.foreground, str) else getattr(self.foreground, "__name__", "custom")
        return {"k": self.k, "random_draws": self.random_draws, "seed": self.seed, "stat": self.stat,
                "rank": self.rank, "k_clusters": self.k_clusters, "method": self.method, "foreground": fg,
                "model": self.model_source, "total_steps": self.num_steps,
                "run_kwargs": {kk: v for kk, v in self.run_kwargs.items() if isinstance(v, (int, float, str, list, tuple))}}


def identity(x: Any) -> Any:
    """What a resumable sweep's manifest records of a rule or a mask set, the same in every process: a
    function by its qualified name (not its address), arrays and files by a digest of their contents."""
    if isinstance(x, str):
        return x
    if callable(x):
        return f"{getattr(x, '__module__', '?')}.{getattr(x, '__qualname__', type(x).__name__)}"
    h = hashlib.sha256()
    for m in x:
        h.update(Path(m).read_bytes() if isinstance(m, (str, os.PathLike)) else np.ascontiguousarray(np.asarray(m)).tobytes())
    return f"sha256:{h.hexdigest()}"


def _own_copy(mask: Any) -> Any:
    """A mask the plan alone holds: arrays and tensors copied read-only, PIL images copied, paths as given."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    if isinstance(mask, np.ndarray):
        mask = mask.copy()
        mask.flags.writeable = False
        return mask
    if hasattr(mask, "copy") and hasattr(mask, "convert"):   # PIL
        return mask.copy()
    return mask


def plan_localization(model: "Model", prompts: str | Sequence[str], masks: Any, *, layers: Any = None,
                      steps: Any = -1, k: int = 4, sets: Sequence[str] = SETS, random_draws: int = 3, seed: int = 0,
                      stat: str = "abs_mean", rank: str = "image", k_clusters: int = 2, method: str = "kmeans",
                      foreground: Any = DEFAULT_FOREGROUND, chunk: int = 8, num_steps: int | None = None,
                      **run_kwargs: Any) -> LocalizationPlan:
    """Validate :func:`~massact_viz.probes.localization.localize`'s arguments (the same names) into a
    :class:`LocalizationPlan`; every error is raised here, before anything runs."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise MassActError("prompts is empty: pass at least one prompt.")
    sets = [sets] if isinstance(sets, str) else list(sets)
    for s in sets:
        if s not in SETS:
            raise MassActError(f"unknown channel set {s!r}; choose from {SETS}.")
    if not sets:
        raise MassActError(f"sets is empty; choose from {SETS}.")
    seed = check_seed(seed)
    check_k(k, model.width)
    if "random" in sets and 2 * k > model.width:
        raise MassActError(f"random-k needs k <= {model.width // 2} (half the channels); use a smaller k.")
    if isinstance(random_draws, bool) or not isinstance(random_draws, int) or random_draws < 1:
        raise MassActError(f"random_draws must be a positive integer, got {random_draws!r}.")
    if rank not in RANKS:
        raise MassActError(f"rank must be 'image' (per-image ranking) or 'mean' (over prompts), got {rank!r}.")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise MassActError(f"chunk must be a positive integer, got {chunk!r}.")
    for key in ("out", "distributed", "progress"):
        if key in run_kwargs:
            raise MassActError(f"{key}= is how a plan is run, not part of it: execute(model, plan, {key}=...).")
    check_probe_kwargs(run_kwargs, "localize", ("capture", "prompt"),
                       "pass the prompts as localize's first argument and the layers and steps as its own arguments.")
    check_cluster_args(None, k_clusters, method, foreground)
    blocks = [b for b in model.resolve_layers(layers) if "image" in b.streams]
    if not blocks:
        raise MassActError("none of the chosen layers has an image stream.")
    total = model.resolve_num_steps(num_steps)
    run_kwargs["num_steps"] = total
    if not (isinstance(masks, str) or callable(masks)) and hasattr(masks, "__len__") and len(masks) != len(prompts):
        raise MassActError(f"{len(masks)} masks for {len(prompts)} prompts: give one mask per prompt.")
    if not (isinstance(masks, str) or callable(masks)) and hasattr(masks, "__len__"):
        masks = tuple(_own_copy(m) for m in masks)   # later changes to the caller's masks cannot reach the plan
    return LocalizationPlan(
        model_source=getattr(model, "source", None), dtype=str(getattr(model, "dtype", "")), prompts=tuple(prompts),
        masks=masks, layers=tuple(b.name for b in blocks), steps=tuple(resolve_steps(steps, total)), num_steps=total,
        k=k, sets=tuple(sets), random_draws=random_draws, seed=seed, stat=stat, rank=rank, k_clusters=k_clusters,
        method=method, foreground=foreground, chunk=chunk, run_kwargs=MappingProxyType(dict(run_kwargs)))
