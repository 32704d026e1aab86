"""Localization results: :class:`LocalizationResult` (IoU per set, layer, step and prompt; mIoU curves with
intervals, paired comparisons, the computed conclusion) saved as one strict JSON file."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import MassActError, RunFileError, check_index
from ...files import atomic_write, read_result

FORMAT = "massact_viz.localization"


@dataclass
class LocalizationResult:
    """IoU of every (set, layer, step, prompt) and its means; see :func:`localize`."""

    layers: list[str]
    steps: list[int]
    sets: list[str]
    prompts: list[str]
    iou: np.ndarray  # (sets, layers, steps, prompts); random: mean over the draws per prompt
    params: dict = field(default_factory=dict)
    channels: dict = field(default_factory=dict)  # "set/layer/stepS/i" -> channels (random: first draw)

    def miou(self, set: str = "top", layer: str | int | None = None, step: int = -1):
        """mIoU over prompts: a float for one layer, else a list aligned with ``layers``."""
        row = self.iou[self._set(set), :, self._step(step)].mean(-1)
        if layer is None:
            return [float(v) for v in row]
        return float(row[self._layer(layer)])

    def curves(self, step: int = -1) -> dict[str, list[float]]:
        """``{set: [mIoU per layer]}`` at one step (the paper's Figure 3D)."""
        return {s: self.miou(s, step=step) for s in self.sets}

    def interval(self, set: str = "top", layer: str | int = 0, step: int = -1):
        """mIoU of one set at one layer with its 95 % bootstrap interval over prompts
        (:class:`~massact_viz.intervals.Interval`, ``n`` = prompts)."""
        from ...intervals import mean_interval
        return mean_interval(self.iou[self._set(set), self._layer(layer), self._step(step)])

    def intervals(self, step: int = -1) -> dict[str, list]:
        """``{set: [Interval per layer]}``: the curves with their 95 % bootstrap intervals over prompts."""
        return {s: [self.interval(s, li, step) for li in range(len(self.layers))] for s in self.sets}

    def compare(self, a: str = "top", b: str = "bottom", layer: str | int | None = None, step: int = -1):
        """Paired comparison of two channel sets over the same prompts at ``layer`` (default: set ``a``'s
        best layer): a :class:`~massact_viz.intervals.Comparison` whose ``sentence`` claims a difference
        only when the interval of the per-prompt difference excludes 0."""
        from ...intervals import compare
        layer = self.best_layer(a, step) if layer is None else layer
        li, ti = self._layer(layer), self._step(step)
        c = compare(self.iou[self._set(a), li, ti], self.iou[self._set(b), li, ti], f"{a}-k" if a != "all" else
                    "all channels", f"{b}-k" if b != "all" else "all channels")
        return c

    def conclusion(self, step: int = -1) -> str:
        """Computed sentences on the paper's localization claim: at top-k's best layer, does top-k beat
        bottom-k and all channels? Each says only what the paired 95 % intervals support."""
        layer = self.best_layer("top", step)
        parts = [f"best top-{self.params.get('k', 'k')} layer {layer}"]
        for other in ("bottom", "random", "all"):
            if other in self.sets and "top" in self.sets:
                parts.append(self.compare("top", other, layer, step).sentence)
        n = len(self.prompts)
        note = (f" Note: the best layer is chosen on these same {n} prompts, which favours top-k; a held-out "
                f"check would be stricter.") if len(self.layers) > 1 else ""
        return "; ".join(parts) + "." + note

    def best_layer(self, set: str = "top", step: int = -1) -> str:
        """The layer with the highest mIoU for ``set``."""
        return self.layers[int(np.argmax(self.miou(set, step=step)))]

    def to_table(self) -> list[dict]:
        """One row per (layer, step, set): ``layer, step, set, miou, lo, hi, n`` (95 % bootstrap interval
        over the ``n`` prompts) and ``std`` over prompts."""
        rows = []
        for li, layer in enumerate(self.layers):
            for ti, step in enumerate(self.steps):
                for si, s in enumerate(self.sets):
                    v = self.iou[si, li, ti]
                    iv = self.interval(s, li, step)
                    rows.append({"layer": layer, "step": step, "set": s, "miou": round(float(v.mean()), 4),
                                 "lo": round(iv.lo, 4), "hi": round(iv.hi, 4), "n": iv.n,
                                 "std": round(float(v.std()), 4)})
        return rows

    def markdown(self, step: int = -1) -> str:
        """mIoU per layer and set with 95 % bootstrap intervals over the prompts."""
        c = self.intervals(step)
        lines = [f"mIoU [95 % interval], n = {len(self.prompts)} prompts, step {self.steps[self._step(step)]}",
                 "", "| layer | " + " | ".join(self.sets) + " |", "|---|" + "---|" * len(self.sets)]
        for i, layer in enumerate(self.layers):
            lines.append(f"| {layer} | " + " | ".join(c[s][i].fmt() for s in self.sets) + " |")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        doc = {"format": FORMAT, "version": 1, "layers": self.layers, "steps": self.steps, "sets": self.sets,
               "prompts": self.prompts, "iou": np.round(self.iou, 6).tolist(), "params": self.params,
               "channels": self.channels}
        return atomic_write(p, json.dumps(doc, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LocalizationResult":
        doc = read_result(path, FORMAT, "localization result")
        try:
            return cls(doc["layers"], doc["steps"], doc["sets"], doc["prompts"], np.asarray(doc["iou"], float),
                       doc.get("params", {}), doc.get("channels", {}))
        except (ValueError, KeyError, TypeError) as e:
            raise RunFileError(f"{str(path)!r} is not a localization result written by LocalizationResult.save "
                               f"({e!r} missing or malformed).") from e

    def _set(self, s: str) -> int:
        if s not in self.sets:
            raise MassActError(f"set {s!r} was not measured; this result has {self.sets}.")
        return self.sets.index(s)

    def _step(self, step: int) -> int:
        if step in self.steps:
            return self.steps.index(step)
        return check_index(step, len(self.steps), "step", f"measured steps are {self.steps}.")

    def _layer(self, layer: str | int) -> int:
        if isinstance(layer, str):
            if layer not in self.layers:
                raise MassActError(f"layer {layer!r} was not measured; this result has {self.layers}.")
            return self.layers.index(layer)
        return check_index(layer, len(self.layers), "layer")
