"""Transport results: images of every row, per-step previews, settings, metrics; save and load.

``transport.json`` is strict JSON (undefined scores are ``null``, never a bare ``NaN``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import RunFileError
from ...files import atomic_write, read_result, strict_json

FORMAT = "massact_viz.transport"


@dataclass
class TransportResult:
    """Source, unedited target and transported images (one each), the channels and the settings."""

    source_images: list
    target_images: list
    images: list
    channels: dict[str, list[int]]
    settings: dict = field(default_factory=dict)
    # Per-step predicted clean images of the first image of each row, uint8 (steps, H, W, 3), keyed by row
    # name: "source", "target", "transported" and each control's name (empty when previews were not asked
    # for or the family has no preview decoder).
    previews: dict[str, torch.Tensor] = field(default_factory=dict)
    # Final images of the controls, keyed by name: "random-k", "bottom-k", "full-swap", "pixel-blend",
    # "latent-blend" (only those asked for), and "reconstruction" for an image-conditioned source.
    controls: dict[str, list] = field(default_factory=dict)
    # metrics[row][metric] -> float or None for rows "transported" and each control (see transport_metrics()).
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)

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
        """Write ``source.png``, ``target.png``, ``transported.png``, ``control-<name>.png``,
        ``previews.safetensors`` and ``transport.json`` (settings, channels, metrics; strict JSON, written
        last) into ``path``."""
        from safetensors.torch import save as st_save

        path = Path(path)
        if path.exists() and any(path.iterdir()) and not (path / "transport.json").exists():
            raise RunFileError(f"{path} exists and is not a transport directory; choose a new or empty one.")
        path.mkdir(parents=True, exist_ok=True)
        for name, ims in self._rows():
            for i, im in enumerate(ims):
                im.save(path / f"{name}{'' if i == 0 else f'-{i}'}.png")
        if self.previews:
            atomic_write(path / "previews.safetensors",
                         st_save({k: v.contiguous() for k, v in self.previews.items()}))
        doc = {"format": FORMAT, "settings": self.settings, "channels": self.channels,
               "n_images": len(self.images), "controls": list(self.controls), "previews": sorted(self.previews),
               "metrics": self.metrics}
        atomic_write(path / "transport.json", strict_json(doc, indent=1))  # written last: marks completeness
        return path

    def _rows(self):
        yield from (("source", self.source_images), ("target", self.target_images), ("transported", self.images))
        yield from ((f"control-{k}", v) for k, v in self.controls.items())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TransportResult":
        from PIL import Image
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        path = Path(path)
        doc = read_result(path / "transport.json", FORMAT, "transport result")

        def images(name: str) -> list:
            ims = []
            for i in range(doc["n_images"]):
                try:
                    with Image.open(path / f"{name}{'' if i == 0 else f'-{i}'}.png") as im:
                        ims.append(im.convert("RGB"))
                except OSError as e:
                    raise RunFileError(f"{path}: image {name} {i} is missing or damaged ({e}).") from e
            return ims

        previews = {}
        if doc.get("previews"):
            try:
                previews = st_load((path / "previews.safetensors").read_bytes())
            except (OSError, SafetensorError, ValueError) as e:
                raise RunFileError(f"{path}/previews.safetensors is missing or damaged ({e}); the images and "
                                   f"settings are intact - rerun transport() for the timeline.") from e
        return cls(images("source"), images("target"), images("transported"),
                   {k: list(v) for k, v in doc["channels"].items()}, doc["settings"], previews,
                   {c: images(f"control-{c}") for c in doc.get("controls", [])}, doc.get("metrics") or {})


# ------------------------------------------------------------------------------------------ metrics
def _hmean(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isnan(a + b):
        return None
    a, b = min(max(a, 0.0), 1.0), min(max(b, 0.0), 1.0)
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def judge_row(image, caption: str) -> dict[str, float] | None:
    """The teaching model's procedural judge of one row against one caption, credited only when the
    image is a valid scene (``scenes.validity``): ``valid`` (1/0), ``validity`` (its margin score),
    ``judge`` (fraction of the caption's attributes found, 0 when invalid), ``colour`` (1 when every colour
    is right and the image is valid). None when the caption is not in the teaching model's language."""
    from ...shapes.scenes import judge, validity

    try:
        j = judge(image, caption)
    except ValueError:
        return None
    v = validity(image)
    parts = [j["colour_ok"], j["shape_ok"]] + ([] if j["relation_ok"] is None else [j["relation_ok"]])
    ok = 1.0 if v["valid"] else 0.0
    return {"valid": ok, "validity": v["score"], "judge": ok * sum(bool(p) for p in parts) / len(parts),
            "colour": ok * float(bool(j["colour_ok"]))}


#: one line per metric of :func:`transport_metrics`, what a view shows beside the number
METRIC_NOTES = {
    "toward_source": "1 - mse(row, source) / mse(target, source): 0 = the target, 1 = the source (pixels)",
    "ssim_target": "SSIM to the unedited target: the structure kept (1 = the target)",
    "mse_source": "pixel MSE to the source image, [0, 1] units",
    "mse_target": "pixel MSE to the target image, [0, 1] units",
    "semantic": "progress toward the source's meaning (CLIP-T gain when CLIP is registered, else toward_source)",
    "composite": "harmonic mean of semantic and ssim_target: high only when it moved and kept the structure",
    "clip_t_source": "CLIP text-image similarity to the source prompt",
    "clip_t_target": "CLIP text-image similarity to the target prompt",
    "dino_target": "DINO similarity to the target image",
    "valid": "1 when the image is a scene at all (teaching model's judge; noise earns 0)",
    "validity": "the judge's scene-validity score",
    "judge_source": "fraction of the source caption's attributes the judge finds",
    "judge_target": "fraction of the target caption's attributes the judge finds",
    "colour_source": "1 when every colour of the source caption is right (valid scenes only)",
    "colour_target": "1 when every colour of the target caption is right (valid scenes only)",
}


class MetricsTable:
    """A transport's metrics as a table: renders as a table in notebooks (Markdown), as text with ``print``;
    the rows under it say what each column measures (:data:`METRIC_NOTES`)."""

    def __init__(self, metrics: dict, columns: list[str], rows: list[str], digits: int = 3):
        self.metrics, self.columns, self.rows, self.digits = metrics, columns, rows, digits

    def _cell(self, row: str, col: str) -> str:
        v = self.metrics.get(row, {}).get(col)
        return "-" if v is None else f"{v:.{self.digits}f}"

    def __str__(self) -> str:
        lines = ["| row | " + " | ".join(self.columns) + " |", "|---|" + "---:|" * len(self.columns)]
        lines += [f"| {r} | " + " | ".join(self._cell(r, c) for c in self.columns) + " |" for r in self.rows]
        notes = [f"* `{c}`: {METRIC_NOTES[c]}" for c in self.columns if c in METRIC_NOTES]
        return "\n".join(lines + ([""] + notes if notes else []))

    def _repr_markdown_(self) -> str:
        return str(self)


def metrics_table(result: Any, columns: Any = ("toward_source", "ssim_target", "composite"),
                  rows: Any = None, digits: int = 3) -> MetricsTable:
    """The metrics of ``result`` (a TransportResult) for ``rows`` (default: every row) and ``columns``,
    as a table that renders in a notebook; columns a row lacks show ``-``."""
    metrics = dict(getattr(result, "metrics", {}) or {})
    return MetricsTable(metrics, list(columns), list(rows) if rows is not None else list(metrics), digits)


def transport_metrics(result: TransportResult) -> dict[str, dict[str, float | None]]:
    """Score every row (``target``, ``transported``, each control, ``source``; first image) of a result.

    Per row:

    * ``ssim_target``: SSIM to the unedited target image, the **structure kept** (1 for the target);
    * ``mse_source`` / ``mse_target``: pixel MSE (``[0, 1]`` units) to the source / target image;
    * ``toward_source``: ``1 - mse(row, source) / mse(target, source)``, the pixel-space progress from the
      target (0) to the source (1); negative when the row moved away from both; ``None`` when source and
      target are identical;
    * ``clip_t_source`` / ``clip_t_target``: CLIP text-image similarity to each prompt, when
      :func:`massact_viz.metrics.clip_metrics` has registered ``clip_t``; ``dino_target``: DINO
      similarity to the target image when :func:`~massact_viz.metrics.dino_metric` has registered it;
    * on the embedded model (captions in its language), :func:`judge_row` against each caption:
      ``valid`` (1 when the image is a scene at all: one background, clean objects of plausible size, no
      noise or confetti), ``validity``, and ``judge_source`` / ``judge_target`` (fraction of that caption's
      attributes found) and ``colour_source`` / ``colour_target`` (every colour right), all 0 for an invalid
      image: noise earns no credit for colours;
    * ``semantic``: how far the row moved toward the source's meaning: the CLIP-T gain
      ``(clip_t_source(row) - clip_t_source(target)) / (clip_t_source(source) - clip_t_source(target))``
      when CLIP is registered (image-conditioned transport: the same gain of ``clip_i_source``, the CLIP
      image similarity to the reference), else ``toward_source``;
    * ``composite``: the harmonic mean of ``semantic`` and ``ssim_target``, each clipped to [0, 1]: high only
      when the image moved toward the source *and* kept the target's structure (the target and the source
      themselves score 0 and about ``ssim(source, target)`` at most).
    """
    from ...metrics import METRICS, mse, ssim

    src, tgt = result.source_image, result.target_image
    rows = {"target": tgt, "transported": result.image}
    rows.update({name: ims[0] for name, ims in result.controls.items()})
    rows["source"] = src
    d0 = mse(tgt, src)
    s_prompt, t_prompt = result.settings.get("source", ""), result.settings.get("target", "")
    by_image = "source_image" in result.settings  # image-conditioned: the source is a reference image
    clip_t = METRICS.get("clip_t") if (s_prompt.strip() and not by_image) else None
    clip_i = METRICS.get("clip_i") if by_image else None
    dino = METRICS.get("dino")
    sem = None  # (metric name, fn) of the semantic score
    if clip_t is not None:
        sem = ("clip_t_source", lambda im: clip_t(im, None, s_prompt))
    elif clip_i is not None:
        sem = ("clip_i_source", lambda im: clip_i(im, src))
    base = {} if sem is None else {"t": sem[1](tgt), "s": sem[1](src)}
    out: dict[str, dict[str, float | None]] = {}
    for name, img in rows.items():
        m: dict[str, float | None] = {"ssim_target": ssim(img, tgt), "mse_source": mse(img, src),
                                      "mse_target": mse(img, tgt)}
        m["toward_source"] = 1.0 - m["mse_source"] / d0 if d0 > 0 else None
        if sem is not None:
            m[sem[0]] = sem[1](img)
        if METRICS.get("clip_t") is not None:  # the target prompt is always there to score against
            m["clip_t_target"] = METRICS["clip_t"](img, None, t_prompt)
        if dino is not None:
            m["dino_target"] = dino(img, tgt)
        for which in ("source", "target"):
            j = judge_row(img, result.settings[which]) if result.settings.get(which, "").strip() else None
            if j is not None:
                m["valid"], m["validity"] = j["valid"], j["validity"]
                m[f"judge_{which}"], m[f"colour_{which}"] = j["judge"], j["colour"]
        if sem is not None and base["s"] != base["t"]:
            m["semantic"] = (m[sem[0]] - base["t"]) / (base["s"] - base["t"])
        else:
            m["semantic"] = m["toward_source"]
        m["composite"] = _hmean(m["semantic"], m["ssim_target"])
        out[name] = m
    return out


__all__ = ["TransportResult", "transport_metrics", "judge_row", "FORMAT"]
