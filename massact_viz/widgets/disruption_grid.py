"""DisruptionGrid: the edited images of a :class:`~massact_viz.probes.DisruptionResult`, one row per
channel set (top / bottom / random / yours), one column per k after the unedited baseline, each cell
with its metric values (``result.summary()``: means over prompts and random draws).

Payload: every (set, k) image of every prompt once as PNG (draw 0), plus the baseline images:
``prompts x (sets x ks + 1)`` PNGs at most ``size`` px (default 192).
"""
from __future__ import annotations

import traitlets

from ..errors import MassActError, check_index
from ..metrics import direction_arrow
from .base import View, enlarge, esc, esm, label, png_b64, thumb


class DisruptionGrid(View):
    """``DisruptionGrid(result, *, image=0, layer_set=None, size=192)``.

    Synced traits: ``image`` (prompt index), ``layer_set`` ("" for a sweep without layer sets);
    state: ``sets``, ``ks``, ``metric_names`` (with their better direction), ``cells``
    (``[{"layer_set", "set", "k", "png": [b64 per prompt], "metrics": {name: mean}}]``), ``baseline``
    (b64 per prompt), ``prompts``.
    """

    _esm = esm("disruption_grid")

    image = traitlets.Int(0).tag(sync=True)
    layer_set = traitlets.Unicode("").tag(sync=True)
    layer_sets = traitlets.List(traitlets.Unicode()).tag(sync=True)
    sets = traitlets.List(traitlets.Unicode()).tag(sync=True)
    ks = traitlets.List(traitlets.Int()).tag(sync=True)
    metric_names = traitlets.List(traitlets.List()).tag(sync=True)
    cells = traitlets.List(traitlets.Dict()).tag(sync=True)
    baseline = traitlets.List(traitlets.Unicode()).tag(sync=True)
    prompts = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(self, result, *, image: int = 0, layer_set: str | None = None, size: int = 192):
        if not all(hasattr(result, a) for a in ("table", "images", "baseline", "summary")):
            raise MassActError(f"DisruptionGrid takes a DisruptionResult (massact_viz.probes.disrupt(...)), got "
                               f"{type(result).__name__}.")
        if not result.images or not result.baseline.images:
            raise MassActError("this DisruptionResult has no images; rerun disrupt().")
        self._result = result
        prompts = list(result.baseline.prompts) or [f"image {i}" for i in range(len(result.baseline.images))]
        lsets = result.layer_sets
        summary = {(r.get("layer_set", ""), r["set"], r["k"]): r for r in result.summary()}
        cells = []
        for key, ims in result.images.items():
            ls, s, k, d = key if len(key) == 4 else ("",) + tuple(key)
            if d != 0:
                continue
            row = summary.get((ls, s, k), {})
            cells.append({"layer_set": ls, "set": s, "k": int(k),
                          "png": [png_b64(enlarge(thumb(im, size), min(size, 96))) for im in ims],
                          "metrics": {m: row.get(m) for m in result.metrics}})
        self._pngs = None
        super().__init__()
        self.prompts = prompts
        self.layer_sets = lsets
        self.sets = list(dict.fromkeys(c["set"] for c in cells))
        self.ks = sorted({c["k"] for c in cells})
        self.metric_names = [[m, direction_arrow(m)] for m in result.metrics]
        self.cells = cells
        self.baseline = [png_b64(enlarge(thumb(im, size), min(size, 96))) for im in result.baseline.images]
        self.layer_set = (layer_set if layer_set is not None else (lsets[0] if lsets else ""))
        self.image = image
        s = result.settings or {}
        self.title = f"disruption: op {s.get('op', '?')} at layers {s.get('layers', '?')}, steps {s.get('steps', '?')}"

    @traitlets.validate("image")
    def _v_image(self, p):
        return check_index(p["value"], len(self.prompts), "image", f"This result has {len(self.prompts)} prompts.")

    @traitlets.validate("layer_set")
    def _v_layer_set(self, p):
        v = p["value"]
        if (self.layer_sets and v not in self.layer_sets) or (not self.layer_sets and v):
            raise MassActError(f"layer set {v!r} is not in this result; it has {self.layer_sets or 'none'}.")
        return v

    def cell(self, set_name: str, k: int) -> dict:
        """The cell of ``(set_name, k)`` in the current layer set."""
        for c in self.cells:
            if c["set"] == set_name and c["k"] == k and c["layer_set"] == self.layer_set:
                return c
        raise MassActError(f"no cell for set {set_name!r}, k={k}; sets {self.sets}, ks {self.ks}.")

    def static_image(self):
        import base64
        import io

        from PIL import Image, ImageDraw
        dec = lambda b: Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")  # noqa: E731
        base = dec(self.baseline[self.image])
        w, h = base.size
        texts = {(s, k): [f"{m} {'-' if (v := c['metrics'].get(m)) is None else f'{v:.3g}'}" for m, _ in self.metric_names]
                 for s in self.sets for k in self.ks if (c := self._cell_or_none(s, k)) is not None}
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        cw = max([w] + [int(probe.textlength(t)) + 6 for ts in texts.values() for t in ts])  # column width
        lw, th, mh = 70, 16, 12 * max(1, len(self.metric_names)) + 2
        lower = [m for m, a in self.metric_names if a == "\u2193"]
        higher = [m for m, a in self.metric_names if a == "\u2191"]
        notes = ([f"lower is better: {', '.join(lower)}"] if lower else []) + \
            ([f"higher is better: {', '.join(higher)}"] if higher else [])
        foot = 13 * (1 + len(notes))
        out = Image.new("RGB", (lw + (cw + 4) * (len(self.ks) + 1), th + (h + mh + 4) * len(self.sets) + foot + 2),
                        "white")
        d = ImageDraw.Draw(out)
        label(d, (lw, 2), "baseline")
        for j, k in enumerate(self.ks):
            label(d, (lw + (cw + 4) * (j + 1), 2), f"k={k}")
        for i, s in enumerate(self.sets):
            y = th + i * (h + mh + 4)
            label(d, (2, y + h // 2 - 6), s[:10])
            out.paste(base, (lw, y))
            for j, k in enumerate(self.ks):
                c = self._cell_or_none(s, k)
                if c is None:
                    continue
                x = lw + (cw + 4) * (j + 1)
                out.paste(dec(c["png"][self.image]), (x, y))
                for mi, t in enumerate(texts[(s, k)]):
                    label(d, (x, y + h + 1 + 12 * mi), t)
        for ni, note in enumerate(notes):
            label(d, (2, out.size[1] - foot + 13 * ni), note)
        label(d, (2, out.size[1] - 13), f"image {self.image}: {self.prompts[self.image][:80]}")
        return out

    def _cell_or_none(self, s: str, k: int):
        try:
            return self.cell(s, k)
        except MassActError:
            return None

    def static_html_body(self) -> str:
        head = "".join(f"<th>{esc(m)} {esc(a)}</th>" for m, a in self.metric_names)
        rows = ""
        for c in self.cells:
            if c["layer_set"] != self.layer_set:
                continue
            vals = "".join(f"<td>{'' if c['metrics'].get(m) is None else format(c['metrics'][m], '.4g')}</td>"
                           for m, _ in self.metric_names)
            rows += f"<tr><td>{esc(c['set'])}</td><td>{c['k']}</td>{vals}</tr>"
        return (f"<p>image {self.image}: {esc(self.prompts[self.image])}</p>"
                f"<table><tr><th>set</th><th>k</th>{head}</tr>{rows}</table>")
