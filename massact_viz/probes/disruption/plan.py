"""The disruption plan: every setting of a sweep, validated against the model before any work.

:func:`plan_disruption` checks the arguments of :func:`~massact_viz.probes.disruption.disrupt` and
returns an immutable :class:`DisruptionPlan` holding one :class:`Config` per configuration
``(layer set, channel set, k, draw)``; nothing runs until :mod:`.execution` is handed the plan.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ...analysis import KINDS
from ...capture import check_probe_kwargs, check_prompts
from ...edits import Edit, check_operation, describe_layers, describe_steps, resolve_scope
from ...errors import MassActError, check_k
from ...metrics import get_metric

if TYPE_CHECKING:
    from ...model import Model


def config_key(set_name: str, k: int, draw: int, layer_set: str | None = None) -> str:
    """The folder name of one configuration under ``out/configs/``."""
    return f"{set_name}-k{k}-d{draw}" if layer_set is None else f"{layer_set}@{set_name}-k{k}-d{draw}"


@dataclass(frozen=True)
class Config:
    """One configuration of a sweep: a channel set (a kind from ``analysis.KINDS``, chosen on the
    baseline, or a user's checked :class:`~massact_viz.edits.Edit`) at one ``k`` and random ``draw``,
    in one layer set (``None`` for a sweep without ``layer_sets=``)."""

    layer_set: str | None
    name: str
    spec: str | Edit
    k: int
    draw: int

    @property
    def key(self) -> str:
        return config_key(self.name, self.k, self.draw, self.layer_set)

    @property
    def image_key(self) -> tuple:
        """The key of its images in :attr:`DisruptionResult.images`."""
        base = (self.name, self.k, self.draw)
        return base if self.layer_set is None else (self.layer_set,) + base


@dataclass(frozen=True, eq=False)  # identity == and hash: fields hold tensors and mappings
class DisruptionPlan:
    """Everything a disruption sweep does, resolved and validated (see :func:`plan_disruption`)."""

    model_source: str
    prompts: tuple[str, ...]
    seed: int
    num_steps: int
    op: str
    value: float | None
    steps: Any                      # the user's edited-step spec, as given to every Edit
    stream: str
    tokens: Any                     # the user's token spec, as given to every Edit
    tokens_digest: str | None
    branch: str
    stat: str
    metrics: tuple[str, ...]
    ks: tuple[int, ...]
    random_draws: int
    configs: tuple[Config, ...]
    edit_layers: tuple[str, ...]    # the union of every layer set's layers, in execution order
    edit_steps: tuple[int, ...]
    layer_sets: Mapping[str | None, tuple[str, ...]]   # layer set name -> its layers ({None: ...} without sets)
    layers_spec: str                # describe_layers of layers= (the sweep without layer sets)
    steps_spec: str
    layer_set_specs: Mapping[str | None, str]          # name -> describe_layers of its spec
    swept_layer_sets: bool
    sets_repr: str                  # the channel sets as given, for the processes' agreement
    layer_sets_repr: Mapping[str, str]
    run_kwargs: Mapping[str, Any]

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams whose channels are chosen and edited separately."""
        return ("image", "text") if self.stream == "both" else (self.stream,)

    @property
    def run_kw(self) -> dict:
        """Keyword arguments of every ``Model.run`` of this sweep."""
        return dict(self.run_kwargs, num_steps=self.num_steps, seed=self.seed, progress=False)

    def edit_kw(self) -> dict:
        """The :class:`~massact_viz.edits.Edit` fields every chosen-set configuration shares."""
        return {"op": self.op, "value": self.value, "steps": self.steps, "tokens": self.tokens, "branch": self.branch}

    def layers_of(self, config: Config) -> str:
        """The ``layers`` column of a configuration's table row."""
        return self.layers_spec if config.layer_set is None else self.layer_set_specs[config.layer_set]

    def manifest(self) -> dict:
        """What a resumable sweep's ``manifest.json`` pins: a rerun must agree on all of it. Ks, draws and
        layer sets may grow, so they are checked per configuration instead."""
        out = {"model": self.model_source, "prompts": list(self.prompts), "seed": self.seed,
               "num_steps": self.num_steps, "op": self.op, "value": self.value, "layers": self.layers_spec,
               "edit_layers": list(self.edit_layers), "steps": self.steps_spec, "edit_steps": list(self.edit_steps),
               "stream": self.stream, "tokens": self.tokens_digest, "branch": self.branch, "stat": self.stat,
               "user_sets": {c.name: repr(c.spec.channels) for c in self.configs if not isinstance(c.spec, str)},
               "run_kwargs": {k: repr(v) for k, v in sorted(self.run_kwargs.items())}}
        if self.swept_layer_sets:
            out["layers"], out["edit_layers"] = "layer_sets", "layer_sets"
        return out

    def settings(self) -> dict:
        """The plan as plain JSON data (what ``disruption.json`` keeps)."""
        out = self.manifest()
        if self.swept_layer_sets:
            out["edit_layers"] = list(self.edit_layers)
            out["layer_sets"] = {n: {"layers": self.layer_set_specs[n], "edit_layers": list(self.layer_sets[n])}
                                 for n in self.layer_sets}
        out["metrics"] = list(self.metrics)
        return out

    def agreement(self, out: str | None) -> dict:
        """What every launched process must have been given alike."""
        return {"settings": self.manifest(), "ks": list(self.ks), "sets": self.sets_repr, "draws": self.random_draws,
                "metrics": list(self.metrics), "layer_sets": dict(self.layer_sets_repr), "out": out}


def channel_sets(sets: Any) -> dict[str, Any]:
    """``{name: kind or user channels}`` from a tuple of kinds and/or a dict of named sets."""
    if isinstance(sets, str):
        sets = (sets,)
    out: dict[str, Any] = {}
    items = list(sets.items()) if isinstance(sets, Mapping) else [(s, s) for s in sets]
    for name, spec in items:
        if isinstance(spec, Mapping) and not isinstance(sets, Mapping):
            for n2, s2 in spec.items():
                out[str(n2)] = s2
            continue
        if not isinstance(name, str):
            raise MassActError(f"channel sets are 'top', 'bottom', 'random' or {{name: channels}}; got {name!r}.")
        if isinstance(spec, str) and spec not in KINDS:
            raise MassActError(f"unknown channel set {spec!r}; use one of {KINDS} or {{name: [channels]}}.")
        out[name] = spec
    if not out:
        raise MassActError("no channel sets given: use sets=('top', 'bottom', 'random') or {name: [channels]}.")
    return out


def _check_layer_sets(layer_sets: Any, layers: Any) -> dict[str | None, Any]:
    if layer_sets is None:
        return {None: layers}
    if layers is not None:
        raise MassActError("give layers= or layer_sets=, not both (add the layers as one more layer set).")
    if not isinstance(layer_sets, Mapping) or not layer_sets:
        raise MassActError(f"layer_sets must be a non-empty {{name: layer spec}} dict, got {layer_sets!r}.")
    for name in layer_sets:
        if not isinstance(name, str) or not name or "@" in name or "/" in name or "\\" in name \
                or name.startswith("."):
            raise MassActError(f"layer set names are non-empty strings without '@', '/' or a leading '.'; "
                               f"got {name!r}.")
    return dict(layer_sets)


def plan_disruption(model: "Model", prompts: str | Sequence[str], *, ks: Sequence[int] = (1, 4, 8),
                    sets: Any = ("top", "bottom", "random"), random_draws: int = 3, op: str = "zero",
                    value: float | None = None, layers: Any = None, steps: Any = None, stream: str = "image",
                    tokens: Any = None, branch: str = "both", stat: str = "abs_mean", seed: int = 0,
                    num_steps: int | None = None, metrics: Sequence[str] = ("mse", "psnr", "ssim"),
                    layer_sets: Mapping[str, Any] | None = None, **run_kwargs: Any) -> DisruptionPlan:
    """Validate :func:`~massact_viz.probes.disruption.disrupt`'s arguments (the same names) into a
    :class:`DisruptionPlan`; every error is raised here, before anything runs."""

    prompts = check_prompts(prompts)
    num_steps = model.resolve_num_steps(num_steps)
    size = run_kwargs.get("size")
    for k in ("out", "distributed"):
        if k in run_kwargs:
            raise MassActError(f"{k}= is how a plan is run, not part of it: execute(model, plan, {k}=...).")
    check_probe_kwargs(run_kwargs, "disrupt", ("num_steps", "seed", "capture", "edit", "progress"),
                       "use num_steps= for the denoising steps and steps= for the edited step window.")
    # the plan keeps its own copies: changing the caller's objects later cannot change what it runs
    steps, tokens, sets = copy.deepcopy(steps), copy.deepcopy(tokens), copy.deepcopy(sets)
    for m in metrics:
        get_metric(m)
    csets = channel_sets(sets)
    ks = list(ks)
    if not ks:
        raise MassActError("ks is empty: give at least one k.")
    width = model.width
    for k in ks:
        check_k(k, width)
    if isinstance(random_draws, bool) or not isinstance(random_draws, int) or random_draws < 1:
        raise MassActError(f"random_draws must be a positive integer, got {random_draws!r}.")
    lsets = _check_layer_sets(layer_sets, layers)
    check_operation(op, value, stream, branch)  # op, value and branch errors before anything runs
    ls_layers: dict[str | None, tuple[str, ...]] = {}
    for lname, lspec in lsets.items():
        scope = resolve_scope(model, layers=lspec, steps=steps, stream=stream, tokens=tokens, num_steps=num_steps,
                              size=size)  # every spec error before anything runs
        ls_layers[lname] = tuple(scope.layers)
    edit_layers = tuple(sorted({n for names in ls_layers.values() for n in names}, key=lambda n: model.layer(n).index))
    configs = []
    for lname, lspec in lsets.items():
        for name, spec in csets.items():
            if isinstance(spec, str):
                for k in ks:
                    for d in (range(random_draws) if spec == "random" else [0]):
                        if spec == "random" and 2 * k > width:
                            raise MassActError(f"random-{k} needs k <= {width // 2} (half the channels).")
                        configs.append(Config(lname, name, spec, k, d))
            else:
                user = Edit(op, spec, layers=lspec if not isinstance(spec, Mapping) else None, steps=steps,
                            stream=stream, tokens=tokens, branch=branch, value=value).check(model, num_steps, size)
                chans = user.channels
                k = len(chans) if not isinstance(chans, dict) else max(len(v) for v in chans.values())
                configs.append(Config(lname, name, user, k, 0))
    return DisruptionPlan(
        model_source=model.source, prompts=tuple(prompts), seed=seed, num_steps=num_steps, op=op, value=value,
        steps=steps, stream=stream, tokens=tokens,
        tokens_digest=None if tokens is None else hashlib.sha256(repr(scope.tokens.tolist()).encode()).hexdigest(),
        branch=branch, stat=stat, metrics=tuple(metrics), ks=tuple(ks), random_draws=random_draws,
        configs=tuple(configs), edit_layers=edit_layers, edit_steps=tuple(scope.steps),
        layer_sets=MappingProxyType(ls_layers), layers_spec=describe_layers(layers), steps_spec=describe_steps(steps),
        layer_set_specs=MappingProxyType({n: describe_layers(s) for n, s in lsets.items()}),
        swept_layer_sets=layer_sets is not None, sets_repr=repr(csets),
        layer_sets_repr=MappingProxyType({str(k): repr(v) for k, v in lsets.items()}),
        run_kwargs=MappingProxyType(dict(run_kwargs)))
