"""TransportTimeline: source, target and transported trajectories side by side, one column per step.

Takes a :class:`massact_viz.probes.TransportResult`. Rows are ``source``, ``target``,
``transported`` and any control rows found in ``result.previews`` (``random-k``, ``full-swap``, ...);
columns are the per-step predicted clean images (``result.previews[name]``, uint8 ``(steps, H, W,
3)``), with a step scrubber that enlarges that step of every row. Below: the final images large
(``source_image``, ``target_image``, ``image`` and ``result.controls``), the settings and
``result.metrics``. Without previews (empty dict) only the finals, settings and metrics show.

Payload: every thumbnail once as PNG (``thumb`` px, default 96) plus each row's step images at
``large`` px (default 256) and the finals: for 28 steps x 5 rows at 96 + 256 px, roughly 28 x 5 x
(~10 + ~60) kB ≈ 10 MB of PNG; lower ``large`` (or ``steps_every``) for long schedules.
"""
from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import traitlets

from ..errors import MassActError
from .base import View, enlarge, esc, esm, label, png_b64, thumb

BASE_ROWS = ("source", "target", "transported")


def _frames(name: str, t: Any) -> np.ndarray:
    a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise MassActError(f"result.previews[{name!r}] must be a uint8 (steps, H, W, 3) array, got "
                           f"{a.dtype} {a.shape}; capture previews with transport(..., previews=True).")
    return a


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list, tuple)):
        s = json.dumps(v, default=str)
        return s if len(s) <= 200 else s[:199] + "…"
    return str(v)


#: Step columns kept in the static picture (the live view has every step).
STATIC_COLUMNS = 8
#: Metrics printed under each final image in the static picture (the live view shows them all).
STATIC_METRICS = ("toward_source", "ssim_target", "composite")
#: how the static picture names them (the metrics' meaning: probes.transport.transport_metrics)
STATIC_METRIC_NAMES = {"toward_source": "toward source", "ssim_target": "SSIM to target", "composite": "composite"}
STATIC_METRIC_NOTE = ("toward source: 0 = the target's pixels, 1 = the source's;  SSIM to target: 1 = the target's "
                      "structure;  composite: high only when both")


class TransportTimeline(View):
    """``TransportTimeline(result, *, thumb=96, large=256, steps_every=1)``.

    Synced traits: ``step`` (scrubber position, an index into ``preview_steps``; -1 without previews),
    ``rows`` (``[{"name", "thumbs": [b64 PNG per step], "frames": [b64 PNG per step]}]``), ``finals``
    (``[{"name", "png"}]``), ``settings`` (``[[key, text]]``), ``metrics`` (``{row: {metric: value}}``).
    """

    _esm = esm("transport_timeline")

    step = traitlets.Int(-1).tag(sync=True)
    preview_steps = traitlets.List(traitlets.Int()).tag(sync=True)
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    finals = traitlets.List(traitlets.Dict()).tag(sync=True)
    settings = traitlets.List(traitlets.List()).tag(sync=True)
    metrics = traitlets.Dict().tag(sync=True)
    #: one line per metric name: what it measures (shown as the metrics table's last column and as tooltips)
    metric_notes = traitlets.Dict().tag(sync=True)

    def __init__(self, result, *, thumb_size: int = 96, large: int = 256, steps_every: int = 1):
        if not all(hasattr(result, a) for a in ("source_images", "target_images", "images")):
            raise MassActError(f"TransportTimeline takes a TransportResult (massact_viz.probes.transport(...)), got "
                               f"{type(result).__name__}.")
        if not result.images or not result.source_images or not result.target_images:
            raise MassActError("this TransportResult has no images; rerun transport().")
        if isinstance(steps_every, bool) or not isinstance(steps_every, int) or steps_every < 1:
            raise MassActError(f"steps_every must be a positive integer, got {steps_every!r}.")
        self._result = result
        previews = dict(getattr(result, "previews", {}) or {})
        names = [n for n in BASE_ROWS if n in previews] + [n for n in previews if n not in BASE_ROWS]
        frames = {n: _frames(n, previews[n]) for n in names}
        counts = {a.shape[0] for a in frames.values()}
        if len(counts) > 1:
            raise MassActError(f"previews have different step counts {sorted(counts)}; every row needs one image per step.")
        n_steps = counts.pop() if counts else 0
        self._frames = frames
        super().__init__()
        idx = list(range(0, n_steps, steps_every))
        if n_steps and idx[-1] != n_steps - 1:
            idx.append(n_steps - 1)
        self.preview_steps = idx
        self.rows = [{"name": n, "thumbs": [png_b64(thumb(frames[n][s], thumb_size)) for s in idx],
                      "frames": [png_b64(enlarge(thumb(frames[n][s], large), min(large, 128))) for s in idx]}
                     for n in names]
        finals = [("source", result.source_image), ("target", result.target_image), ("transported", result.image)]
        finals += [(n, ims[0]) for n, ims in (getattr(result, "controls", {}) or {}).items() if ims]
        self._finals = [(n, enlarge(thumb(im, large), min(large, 192))) for n, im in finals]
        self.finals = [{"name": n, "png": png_b64(im)} for n, im in self._finals]
        st = dict(result.settings or {})
        self.title = f"{st.get('source', '')} → {st.get('target', '')}".strip(" →") or "transport"
        self.settings = [[str(k), _value_text(v)] for k, v in st.items()] + \
            [["channels", _value_text(getattr(result, "channels", {}))]]
        self.metrics = {str(r): {str(m): (None if v is None else float(v)) for m, v in ms.items()}
                        for r, ms in (getattr(result, "metrics", {}) or {}).items()}
        from ..probes.transport.results import METRIC_NOTES
        self.metric_notes = {m: METRIC_NOTES.get(m, "") for ms in self.metrics.values() for m in ms}
        self.step = len(idx) - 1 if idx else -1

    @traitlets.validate("step")
    def _v_step(self, p):
        v = p["value"]
        n = len(self.preview_steps)
        if n == 0:
            if v != -1:
                raise MassActError("this result has no per-step previews (step stays -1); run transport(..., "
                                   "previews=True) on a family with a preview decoder (FLUX.1, SD3, shapes).")
            return v
        if not 0 <= v < n:
            raise MassActError(f"step must be 0..{n - 1} (a position among the preview steps {self.preview_steps}), got {v}.")
        return v

    # ---------------------------------------------------------------- static
    def static_image(self):
        from PIL import Image, ImageDraw
        lw, pad = 90, 4
        parts = []
        if self.rows:
            n = len(self.rows[0]["thumbs"])
            every = max(1, -(-n // STATIC_COLUMNS))  # the static picture keeps at most STATIC_COLUMNS steps
            cols = sorted(set(range(0, n, every)) | {n - 1} | ({self.step} if 0 <= self.step < n else set()))
            cells = [[Image.open(io.BytesIO(base64.b64decode(r["thumbs"][j]))) for j in cols] for r in self.rows]
            cw = max(im.size[0] for row in cells for im in row)
            ch = max(im.size[1] for row in cells for im in row)
            tl = Image.new("RGB", (lw + len(cells[0]) * (cw + pad), 16 + len(cells) * (ch + pad)), "white")
            d = ImageDraw.Draw(tl)
            label(d, (2, 2), "denoising step")
            for j, c in enumerate(cols):
                label(d, (lw + j * (cw + pad), 2), f"{self.preview_steps[c]}")
            for i, (r, row) in enumerate(zip(self.rows, cells)):
                label(d, (2, 16 + i * (ch + pad) + ch // 2 - 6), r["name"][:14])
                for j, im in enumerate(row):
                    tl.paste(im.convert("RGB"), (lw + j * (cw + pad), 16 + i * (ch + pad)))
            if self.step in cols:
                x = lw + cols.index(self.step) * (cw + pad) - 2
                d.rectangle([x, 14, x + cw + 3, tl.size[1] - 1], outline=(213, 94, 0), width=2)
            parts.append(tl)
        w = sum(im.size[0] + pad for _, im in self._finals)
        top = 14 * (1 + max((sum(1 for k in STATIC_METRICS if (self.metrics.get(n) or {}).get(k) is not None)
                             for n, _ in self._finals), default=0)) + 2
        fin = Image.new("RGB", (w, max(im.size[1] for _, im in self._finals) + top), "white")
        d = ImageDraw.Draw(fin)
        x = 0
        for n, im in self._finals:
            fin.paste(im, (x, top))
            label(d, (x + 2, 1), n[:30])
            m = self.metrics.get(n) or {}
            for li, k in enumerate(k for k in STATIC_METRICS if m.get(k) is not None):
                label(d, (x + 2, 15 + 14 * li), f"{STATIC_METRIC_NAMES[k]} {m[k]:.2f}")
            x += im.size[0] + pad
        parts.append(fin)
        if any(self.metrics.get(n) for n, _ in self._finals):
            tw = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(STATIC_METRIC_NOTE))
            note = Image.new("RGB", (max(w, tw + 8), 14), "white")
            label(ImageDraw.Draw(note), (2, 1), STATIC_METRIC_NOTE)
            parts.append(note)
        W = max(p.size[0] for p in parts)
        out = Image.new("RGB", (W, sum(p.size[1] + 8 for p in parts)), "white")
        y = 0
        for p in parts:
            out.paste(p, (0, y))
            y += p.size[1] + 8
        return out

    def static_html_body(self) -> str:
        srows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in self.settings)
        mnames = sorted({m for ms in self.metrics.values() for m in ms})
        mrows = "".join("<tr><td>" + esc(r) + "</td>" + "".join(
            f"<td>{'' if ms.get(m) is None else f'{ms[m]:.4g}'}</td>" for m in mnames) + "</tr>"
            for r, ms in self.metrics.items())
        mt = (f"<table><tr><th>row</th>{''.join(f'<th>{esc(m)}</th>' for m in mnames)}</tr>{mrows}</table>"
              if self.metrics else "")
        return f"<table><tr><th>setting</th><th>value</th></tr>{srows}</table>{mt}"
