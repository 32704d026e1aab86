"""Disruption results: :class:`DisruptionResult` (tables, intervals, the image grid) and its directory
layout (``disruption.json``, ``baseline/``, one ``configs/<key>/`` folder per configuration; JSON and PNG,
no pickle), written and read one configuration at a time so a sweep can resume."""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import MassActError, RunFileError
from ...files import atomic_write, read_result
from ...metrics import direction_arrow
from ...run import Run
from .plan import config_key

FORMAT = "massact_viz.disruption"


def _ikey(key: tuple) -> str:
    """The directory name of an ``images`` key: ``(set, k, draw)`` or ``(layer_set, set, k, draw)``."""
    return config_key(*key) if len(key) == 3 else config_key(key[1], key[2], key[3], key[0])


def _rkey(row: dict) -> str:
    return config_key(row["set"], row["k"], row["draw"], row.get("layer_set"))


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
        from ...intervals import mean_interval
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
        from ...intervals import compare
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
                write_config(path / "configs" / key, rows[key], ims,
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
            loaded = read_config(path / "configs" / _ikey(ikey))
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


def write_config(d: Path, row: dict, images: list, extra: dict | None = None) -> None:
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


def read_config(d: Path):
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
