"""The disruption probe: edit top-k / bottom-k / random-k channels and measure the image damage.

``disrupt(model, prompts)`` runs the prompts once unedited (the baseline, whose statistics choose
the channels of each layer with :func:`massact_viz.analysis.select`, averaged over the edited steps
and the images), then once per configuration ``(set, k, draw)`` with an :class:`~massact_viz.edits.Edit`
at the same seed, and compares every edited image with its baseline image under the chosen metrics.

With ``out=`` each finished configuration is saved under ``out/configs/<key>/`` (and the baseline
under ``out/baseline/``); a rerun with the same settings skips what is done. Adding ks or draws to
a finished sweep only runs the new configurations. ``layer_sets={name: layer spec}`` adds a layer
dimension: every configuration runs once per layer set (channels chosen per layer from the same single
baseline, which captures the union of the layers); a rerun with an added layer set only runs its
configurations. The directory layout is the one :meth:`DisruptionResult.save`
writes (JSON and PNG, no pickle).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..analysis import KINDS, select
from ..capture import Capture, check_probe_kwargs, check_prompts
from ..edits import Edit, check_operation, compose, describe_layers, describe_steps, resolve_scope
from ..errors import MassActError, RunFileError, check_k
from ..metrics import direction_arrow, get_metric
from ..files import atomic_write, read_result, resume_manifest
from ..run import Run
from ..distributed import Ranks, ranks
from ..progress import progress_bar

if TYPE_CHECKING:
    from ..model import Model

FORMAT = "massact_viz.disruption"


def _key(set_name: str, k: int, draw: int, layer_set: str | None = None) -> str:
    return f"{set_name}-k{k}-d{draw}" if layer_set is None else f"{layer_set}@{set_name}-k{k}-d{draw}"


def _ikey(key: tuple) -> str:
    """The directory name of an ``images`` key: ``(set, k, draw)`` or ``(layer_set, set, k, draw)``."""
    return _key(*key) if len(key) == 3 else _key(key[1], key[2], key[3], key[0])


def _rkey(row: dict) -> str:
    return _key(row["set"], row["k"], row["draw"], row.get("layer_set"))


@dataclass
class DisruptionResult:
    """Rows of metrics per configuration, the edited images, and the baseline run."""

    table: list[dict]
    images: dict[tuple, list]  # (set, k, draw) or (layer_set, set, k, draw) -> PIL images, one per prompt
    baseline: Run
    settings: dict = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return list(self.settings.get("metrics", []))

    @property
    def layer_sets(self) -> list[str]:
        """The layer set names in sweep order; empty for a sweep without ``layer_sets=``."""
        return list(dict.fromkeys(r["layer_set"] for r in self.table if "layer_set" in r))

    def per_prompt(self, metric: str, set: str, k: int, layer_set: str | None = None) -> list[float]:
        """One value per prompt of ``metric`` for (set, k) (random-k: averaged over its draws first)."""
        rows = [r for r in self.table if r["set"] == set and r["k"] == k and r.get("layer_set") == layer_set]
        if not rows:
            raise MassActError(f"no configuration ({layer_set or ''} {set}, k={k}) in this result.")
        if any(metric not in (r.get("per_prompt") or {}) for r in rows):
            raise MassActError(f"this result keeps no per-prompt {metric!r} values (saved by an older version?); "
                               f"rerun disrupt() for intervals.")
        vals = [[float(v) for v in r["per_prompt"][metric]] for r in rows]
        return [sum(col) / len(col) for col in zip(*vals)]

    def summary(self) -> list[dict]:
        """Rows averaged over random draws: one per (set, k), or per (layer_set, set, k), each metric with
        its 95 % bootstrap interval over prompts (``<metric>_lo`` / ``<metric>_hi``) and ``n`` prompts."""
        from ..intervals import mean_interval
        groups: dict[tuple, list[dict]] = {}
        for r in self.table:
            groups.setdefault((r.get("layer_set"), r["set"], r["k"]), []).append(r)
        out = []
        for (lset, name, k), rows in groups.items():
            lead = ("layer_set",) if "layer_set" in rows[0] else ()
            row = {key: rows[0][key] for key in lead + ("set", "k", "op", "layers", "steps", "stream")}
            row["draws"] = len(rows)
            for m in self.metrics:
                row[m] = float(sum(r[m] for r in rows) / len(rows))
                try:
                    iv = mean_interval(self.per_prompt(m, name, k, lset))
                except MassActError:
                    iv = None
                ok = iv is not None and all(math.isfinite(v) for v in (iv.mean, iv.lo, iv.hi))
                row[f"{m}_lo"], row[f"{m}_hi"] = (iv.lo, iv.hi) if ok else (math.nan, math.nan)
                row["n"] = iv.n if iv is not None else len(self.settings.get("prompts", []))
            out.append(row)
        return out

    def compare(self, metric: str = "mse", a: str = "top", b: str = "random", k: int | None = None,
                layer_set: str | None = None):
        """Paired comparison of two channel sets on the same prompts (random-k averaged over its draws):
        a :class:`~massact_viz.intervals.Comparison` whose ``sentence`` claims a difference only when the
        interval of the per-prompt difference excludes 0. ``k`` defaults to the largest k swept."""
        from ..intervals import compare
        if k is None:
            k = max(r["k"] for r in self.table if r["set"] == a)
        return compare(self.per_prompt(metric, a, k, layer_set), self.per_prompt(metric, b, k, layer_set),
                       f"{a}-{k} {metric}", f"{b}-{k}")

    def to_markdown(self, summary: bool = False) -> str:
        """The table (or :meth:`summary`, with 95 % intervals over prompts) as Markdown; arrows say which
        direction is better."""
        rows = self.summary() if summary else self.table
        lead = ["layer_set"] if self.layer_sets else []
        cols = lead + ["set", "k"] + ([] if summary else ["draw"]) + ["op", "layers", "steps", "stream"]
        head = cols + [f"{m} {direction_arrow(m)}" for m in self.metrics]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            ms = [_fmt(r[m]) + (f" [{_fmt(r[m + '_lo'])}, {_fmt(r[m + '_hi'])}]"
                                if summary and math.isfinite(r.get(m + "_lo", math.nan)) else "")
                  for m in self.metrics]
            lines.append("| " + " | ".join([str(r[c]) for c in cols] + ms) + " |")
        if summary and rows:
            lines.append(f"\nmean [95 % bootstrap interval over n = {rows[0]['n']} prompts]")
        return "\n".join(lines)

    def grid(self, image: int = 0, draw: int = 0, cell: int | None = None, layer_set: str | None = None):
        """One PIL image: a baseline column, then one column per k; one row per channel set.

        For a sweep with layer sets, ``layer_set`` picks one (default: the first)."""
        from PIL import Image, ImageDraw

        names = self.layer_sets
        if names:
            if layer_set is None:
                layer_set = names[0]
            elif layer_set not in names:
                raise MassActError(f"layer set {layer_set!r} is not in this result; it has {names}.")
            view = {key[1:]: ims for key, ims in self.images.items() if key[0] == layer_set}
        elif layer_set is not None:
            raise MassActError("this result was swept without layer_sets=; leave layer_set= out.")
        else:
            view = self.images
        base = self.baseline.images[image]
        if cell is None:  # tiny images are blown up so the labels fit
            f = max(1, math.ceil(96 / min(base.size)))
            w, h = base.size[0] * f, base.size[1] * f
        else:
            w, h = cell, cell
        sets = list(dict.fromkeys(s for s, _, _ in view))
        ks = sorted({k for _, k, _ in view})
        lw, th = 70, 14
        canvas = Image.new("RGB", (lw + w * (len(ks) + 1), th + h * len(sets)), "white")
        d = ImageDraw.Draw(canvas)
        d.text((lw + 2, 1), "baseline", fill="black")
        for j, k in enumerate(ks):
            d.text((lw + w * (j + 1) + 2, 1), f"k={k}", fill="black")
        for i, s in enumerate(sets):
            y = th + h * i
            d.text((2, y + h // 2 - 5), s[:11], fill="black")
            canvas.paste(base.convert("RGB").resize((w, h), Image.NEAREST), (lw, y))
            for j, k in enumerate(ks):
                ims = view.get((s, k, draw)) or view.get((s, k, 0))
                if ims:
                    canvas.paste(ims[image].convert("RGB").resize((w, h), Image.NEAREST), (lw + w * (j + 1), y))
        return canvas

    # ---------------------------------------------------------------- disk
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path``: ``disruption.json``, ``baseline/`` (a run directory) and ``configs/<key>/``."""
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not (path / "disruption.json").exists() \
                and not (path / "manifest.json").exists():
            raise RunFileError(f"{path} exists and is not a disruption directory; choose a new or empty one.")
        path.mkdir(parents=True, exist_ok=True)
        if not (path / "baseline" / "run.json").exists():
            self.baseline.save(path / "baseline")
        rows = {_rkey(r): r for r in self.table}
        for ikey, ims in self.images.items():
            key = _ikey(ikey)
            if not (path / "configs" / key / "row.json").exists():
                ls = self.settings.get("layer_sets", {}).get(ikey[0]) if len(ikey) == 4 else None
                _write_config(path / "configs" / key, rows[key], ims,
                              None if ls is None else {"edit_layers": ls["edit_layers"]})
        doc = {"format": FORMAT, "settings": self.settings, "table": [_encode_row(r) for r in self.table],
               "configs": [list(ikey) for ikey in self.images]}
        atomic_write(path / "disruption.json", json.dumps(doc, indent=1, default=_json_default))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DisruptionResult":
        path = Path(path)
        doc = read_result(path / "disruption.json", FORMAT, "disruption result")
        images = {}
        for c in doc["configs"]:
            ikey = tuple(c)
            loaded = _read_config(path / "configs" / _ikey(ikey))
            if loaded is None:
                raise RunFileError(f"{path}: configuration {_ikey(ikey)} is missing or damaged.")
            images[ikey] = loaded[1]
        table = [_decode_row(r) for r in doc["table"]]
        return cls(table, images, Run.load(path / "baseline"), doc["settings"])


def _fmt(v: float) -> str:
    return "inf" if v == math.inf else f"{v:.4g}"


def _json_default(o):
    if isinstance(o, (range, tuple, set, frozenset)):
        return list(o)
    return repr(o)


def _jsonable_float(v: float):
    return "inf" if v == math.inf else ("-inf" if v == -math.inf else v)


def _unjson(v):
    return math.inf if v == "inf" else (-math.inf if v == "-inf" else v)


def _encode_row(row: dict) -> dict:
    """A table row as strict JSON data (infinite PSNR of identical images as "inf", NaN as null)."""
    def enc(v):
        if isinstance(v, float):
            return None if math.isnan(v) else _jsonable_float(v)
        if isinstance(v, dict):
            return {k: enc(x) for k, x in v.items()}
        if isinstance(v, list):
            return [enc(x) for x in v]
        return v
    return enc(row)


def _decode_row(row: dict) -> dict:
    def dec(v):
        if isinstance(v, dict):
            return {k: dec(x) for k, x in v.items()}
        if isinstance(v, list):
            return [dec(x) for x in v]
        return math.nan if v is None else _unjson(v)
    return {k: dec(v) for k, v in row.items()}


def _write_config(d: Path, row: dict, images: list, extra: dict | None = None) -> None:
    tmp = d.parent / f".{d.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for i, im in enumerate(images):
            im.save(tmp / f"{i:03d}.png")
        (tmp / "row.json").write_text(json.dumps({"row": _encode_row(row), "n_images": len(images), **(extra or {})},
                                                 indent=1, default=_json_default))
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_config(d: Path):
    from PIL import Image

    try:
        doc = json.loads((d / "row.json").read_text())
        ims = []
        for i in range(doc["n_images"]):
            with Image.open(d / f"{i:03d}.png") as im:
                ims.append(im.convert("RGB"))
        return _decode_row(doc["row"]), ims, doc
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None


def _channel_sets(sets: Any) -> dict[str, Any]:
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


def disrupt(model: "Model", prompts: str | Sequence[str], *, ks: Sequence[int] = (1, 4, 8),
            sets: Any = ("top", "bottom", "random"), random_draws: int = 3, op: str = "zero",
            value: float | None = None, layers: Any = None, steps: Any = None, stream: str = "image",
            tokens: Any = None, branch: str = "both", stat: str = "abs_mean", seed: int = 0,
            num_steps: int | None = None, metrics: Sequence[str] = ("mse", "psnr", "ssim"),
            out: str | os.PathLike | None = None, progress: bool = True,
            layer_sets: Mapping[str, Any] | None = None, distributed: bool = False,
            **run_kwargs: Any) -> DisruptionResult | None:
    """Edit channel sets and compare each edited image with the unedited one (same seed).

    ``sets``: kinds ``"top"``, ``"bottom"``, ``"random"`` (chosen per layer and stream from the
    baseline by :func:`~massact_viz.analysis.select` with ``stat``, over the edited steps and all
    images; random draw ``d`` uses ``select(..., seed=d)``), and/or user sets as a dict
    ``{"mine": [3, 7]}`` or ``{"mine": {"double.0": [3], ...}}`` (run once, ``k`` = its size).
    ``op``/``value``/``layers``/``steps``/``stream``/``tokens``/``branch`` are the :class:`Edit`
    fields (``steps`` is the edited step window; ``num_steps`` the number of denoising steps).
    ``stream="both"`` chooses and edits the image and text channel sets separately.
    ``layer_sets``: ``{name: layer spec}`` (e.g. ``{"all": None, "early": range(0, 4), "single": "single"}``;
    not with ``layers=``) runs every configuration once per layer set, channels chosen per layer from
    the same baseline (which captures the union of the layers); rows get a ``layer_set`` field and
    ``images`` keys are ``(layer_set, set, k, draw)``. A ``{layer: channels}`` user set keeps its own layers.
    Other keywords (``size``, ``guidance``, ``batch_size``, pipeline kwargs) go to ``Model.run``.
    ``distributed=True``: share the configurations with the other processes launched by ``accelerate
    launch`` or ``torchrun`` (each given the same arguments; needs ``out``, the folder they share); the main
    process computes the baseline, every process runs its share of the configurations not done yet, and the
    main process merges and returns the result (the others return None).
    """

    prompts = check_prompts(prompts)
    share = ranks() if distributed else Ranks()
    if share.world > 1 and out is None:
        raise MassActError("disrupt() on several processes needs out=: the folder where they share their work.")
    num_steps = model.resolve_num_steps(num_steps)
    size = run_kwargs.get("size")
    check_probe_kwargs(run_kwargs, "disrupt", ("num_steps", "seed", "capture", "edit", "progress"),
                       "use num_steps= for the denoising steps and steps= for the edited step window.")
    for m in metrics:
        get_metric(m)
    csets = _channel_sets(sets)
    ks = list(ks)
    if not ks:
        raise MassActError("ks is empty: give at least one k.")
    width = model.width
    for k in ks:
        check_k(k, width)
    if isinstance(random_draws, bool) or not isinstance(random_draws, int) or random_draws < 1:
        raise MassActError(f"random_draws must be a positive integer, got {random_draws!r}.")
    by_index = lambda names: sorted(names, key=lambda n: model.layer(n).index)  # noqa: E731
    lsets: dict[str | None, Any]
    if layer_sets is not None:
        if layers is not None:
            raise MassActError("give layers= or layer_sets=, not both (add the layers as one more layer set).")
        if not isinstance(layer_sets, Mapping) or not layer_sets:
            raise MassActError(f"layer_sets must be a non-empty {{name: layer spec}} dict, got {layer_sets!r}.")
        for name in layer_sets:
            if not isinstance(name, str) or not name or "@" in name or "/" in name or "\\" in name \
                    or name.startswith("."):
                raise MassActError(f"layer set names are non-empty strings without '@', '/' or a leading '.'; "
                                   f"got {name!r}.")
        lsets = dict(layer_sets)
    else:
        lsets = {None: layers}
    ls_layers: dict[str | None, list[str]] = {}
    for lname, lspec in lsets.items():
        check_operation(op, value, stream, branch)  # op, value and branch errors before anything runs
        scope = resolve_scope(model, layers=lspec, steps=steps, stream=stream, tokens=tokens, num_steps=num_steps,
                              size=size)  # every spec error before anything runs
        ls_layers[lname] = list(scope.layers)
    edit_layers = by_index({n for names in ls_layers.values() for n in names})
    edit_steps = list(scope.steps)
    streams = ["image", "text"] if stream == "both" else [stream]
    configs = []
    for lname, lspec in lsets.items():
        for name, spec in csets.items():
            if isinstance(spec, str):
                for k in ks:
                    for d in (range(random_draws) if spec == "random" else [0]):
                        if spec == "random" and 2 * k > width:
                            raise MassActError(f"random-{k} needs k <= {width // 2} (half the channels).")
                        configs.append((lname, name, spec, k, d))
            else:
                user = Edit(op, spec, layers=lspec if not isinstance(spec, Mapping) else None, steps=steps,
                            stream=stream, tokens=tokens, branch=branch, value=value).check(model, num_steps, size)
                chans = user.channels
                k = len(chans) if not isinstance(chans, dict) else max(len(v) for v in chans.values())
                configs.append((lname, name, user, k, 0))

    settings = {"model": model.source, "prompts": prompts, "seed": seed, "num_steps": num_steps,
                "op": op, "value": value, "layers": describe_layers(layers), "edit_layers": edit_layers,
                "steps": describe_steps(steps), "edit_steps": edit_steps, "stream": stream,
                "tokens": None if tokens is None else hashlib.sha256(repr(scope.tokens.tolist()).encode()).hexdigest(),
                "branch": branch, "stat": stat,
                "user_sets": {n: repr(s.channels) for _, n, s, _, _ in configs if not isinstance(s, str)},
                "run_kwargs": {k: repr(v) for k, v in sorted(run_kwargs.items())}}
    if layer_sets is not None:
        # the manifest must not change when a layer set is added: the layer sets (and their union) are
        # checked per configuration instead, and recorded in disruption.json's settings
        settings["layers"], settings["edit_layers"] = "layer_sets", "layer_sets"
    out = Path(out) if out is not None else None
    share.agree({"settings": settings, "ks": ks, "sets": repr(csets), "draws": random_draws, "metrics": list(metrics),
                 "layer_sets": {str(k): repr(v) for k, v in lsets.items()},
                 "out": None if out is None else str(out.resolve())}, "disruption sweep")
    if out is not None:
        hint = ("Resume it with the same arguments (model, prompts, seed, steps, op, layers, stream...; "
                "ks, random draws and layer sets may grow), or choose another out= to start over.")
        if share.main:   # the main process starts (or checks) the job, then the others check it
            resume_manifest(out, settings, "disruption sweep", hint)
        share.barrier()
        if not share.main:
            resume_manifest(out, settings, "disruption sweep", hint)
    ls_desc = {lname: describe_layers(lspec) for lname, lspec in lsets.items()}
    if layer_sets is not None:
        settings["edit_layers"] = edit_layers
        settings["layer_sets"] = {n: {"layers": ls_desc[n], "edit_layers": ls_layers[n]} for n in lsets}

    run_kw = dict(run_kwargs, num_steps=num_steps, seed=seed, progress=False)
    baseline = None
    if not share.main:   # the main process makes (or checks) the baseline; the others read it
        share.barrier()
        baseline = Run.load(out / "baseline")
    elif out is not None and (out / "baseline" / "run.json").exists():
        try:
            baseline = Run.load(out / "baseline")
        except RunFileError:
            baseline = None
        if baseline is not None and layer_sets is not None and (
                baseline.stats is None or not set(edit_layers) <= set(baseline.stats.layers)):
            baseline = None  # an added layer set reaches layers the saved baseline did not capture
    if baseline is None:
        baseline = model.run(prompts, capture=Capture(layers=edit_layers, steps=edit_steps), **run_kw)
        if out is not None:
            baseline.save(out / "baseline")
    if share.main:
        share.barrier()   # the baseline is on disk for the others

    def one(config):
        """The table row and images of one configuration: read from ``out`` when done, else run and saved."""
        lname, name, spec, k, d = config
        key = _key(name, k, d, lname)
        loaded = _read_config(out / "configs" / key) if out is not None else None
        if loaded is not None and len(loaded[1]) != len(prompts):
            loaded = None  # damaged: recompute
        if loaded is not None and lname is not None and loaded[2].get("edit_layers") != ls_layers[lname]:
            raise MassActError(f"{out}: layer set {lname!r} was run on layers {loaded[2].get('edit_layers')}, "
                               f"now {ls_layers[lname]}; give the changed set another name or choose "
                               f"another out=.")
        if loaded is not None:
            ims = loaded[1]
        else:
            edit = spec if not isinstance(spec, str) else _set_edit(
                baseline, spec, k, d, streams, stat, ls_layers[lname], model, op=op, value=value, steps=steps,
                tokens=tokens, branch=branch)
            ims = model.run(prompts, capture=Capture.nothing(), edit=edit, **run_kw).images
        row = {} if lname is None else {"layer_set": lname}
        row.update({"set": name, "k": k, "draw": d, "op": op,
                    "layers": settings["layers"] if lname is None else ls_desc[lname],
                    "steps": settings["steps"], "stream": stream})
        per = {}
        for m in metrics:
            vals = [get_metric(m)(im, ref, prompt=p) for im, ref, p in zip(ims, baseline.images, prompts)]
            row[m] = float(sum(vals) / len(vals))
            per[m] = [float(v) for v in vals]
        row["per_prompt"] = per
        if out is not None and loaded is None:
            _write_config(out / "configs" / key, row, ims,
                          None if lname is None else {"edit_layers": ls_layers[lname]})
        return row, ims

    have: list[int] = []
    if share.world > 1:   # a relaunch shares out only the configurations not done yet; the main process says which
        have = share.from_main([i for i, (lname, name, _, k, d) in enumerate(configs)
                                if (out / "configs" / _key(name, k, d, lname) / "row.json").exists()]
                               if share.main else None)
    mine = share.share([i for i in range(len(configs)) if i not in have])
    desc = "disrupt" if share.world == 1 else f"disrupt (process {share.rank} of {share.world})"
    done = {}
    bar = progress_bar(mine, desc=desc, unit="config", disable=not progress)
    try:
        for i in bar:
            lname, name, _, k, d = configs[i]
            bar.set_postfix_str(_key(name, k, d, lname), refresh=False)
            done[i] = one(configs[i])
    finally:
        bar.close()
    settings["metrics"] = list(metrics)
    if share.world > 1:
        share.barrier()   # every configuration is on disk
        if not share.main:
            share.barrier()   # the main process has merged
            return None
    table, images = [], {}
    for i, config in enumerate(configs):   # in order; the other processes' configurations are read from out
        row, ims = done[i] if i in done else one(config)
        lname, name, _, k, d = config
        table.append(row)
        images[(name, k, d) if lname is None else (lname, name, k, d)] = ims
    result = DisruptionResult(table, images, baseline, settings)
    if out is not None:
        result.save(out)
    share.barrier()   # the merged result is on disk
    return result


def _set_edit(baseline: Run, kind: str, k: int, draw: int, streams: list[str], stat: str, layers: list[str],
              model: "Model", **edit_kw):
    """The edit of one (kind, k, draw): per-layer channels chosen on the baseline's statistics."""
    edits = []
    for st in streams:
        chans = {n: select(baseline.stats, kind, k, layer=n, stat=stat, stream=st, seed=draw)
                 for n in layers if st in model.layer(n).streams}
        if chans:
            edits.append(Edit(channels=chans, stream=st, **edit_kw))
    return edits[0] if len(edits) == 1 else compose(*edits)
