"""Shared machinery of the notebook views: the anywidget base class, static fallbacks, export,
payload accounting and compact encodings.

Every view is an :class:`anywidget.AnyWidget` whose ES module is plain DOM/canvas/SVG shipped as
``.js`` files in this package (``js/common.js`` is prepended to each view's module); nothing is
fetched at render time. Heavy data is encoded once in Python: images as base64 PNG strings, arrays
as little-endian typed-array bytes (``uint8`` log-quantised magnitudes, ``float32`` coordinates).

Each view's ``_repr_mimebundle_`` carries, besides the live widget, a static ``image/png`` and a
self-contained ``text/html`` (every piece of user text passed through :func:`html.escape`), so a
saved notebook still shows something in nbconvert and on GitHub. ``save(path)`` writes ``.png``
(PIL), ``.html`` (self-contained) or ``.svg`` (the PNG embedded in an SVG image element).
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets

from ..errors import MassActError
from ..files import atomic_write
from ..palette import MARK_COLOR, js_constants, rgb

_JS = Path(__file__).with_name("js")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

#: 256-entry Viridis colour table (uint8 RGB), built from 9 anchors; the same table colours the
#: browser canvas and the static PNG.
_VIRIDIS_ANCHORS = np.array([
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]], dtype=np.float64)
VIRIDIS = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_VIRIDIS_ANCHORS)), _VIRIDIS_ANCHORS[:, c])
                    for c in range(3)], axis=1).round().astype(np.uint8)
EMPTY_RGB = (235, 235, 235)
#: top-k mark colour, as RGB
MARK = rgb(MARK_COLOR)


def esm(name: str) -> str:
    """The ES module of view ``name``: the palette (:mod:`massact_viz.palette`), ``js/common.js``, then
    ``js/<name>.js``."""
    return js_constants() + (_JS / "common.js").read_text() + "\n" + (_JS / f"{name}.js").read_text()


def esc(text: Any) -> str:
    """HTML-escape user text for static HTML (quotes included)."""
    return html.escape(str(text), quote=True)


def png_bytes(image: Any) -> bytes:
    """PNG bytes of a PIL image or an (H, W, 3) uint8 array/tensor."""
    from PIL import Image
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image.astype(np.uint8)))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def png_b64(image: Any) -> str:
    """Base64 PNG (no ``data:`` prefix) of a PIL image or an (H, W, 3) uint8 array."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def thumb(image: Any, size: int):
    """A PIL copy of ``image`` whose longest side is at most ``size`` (never upscaled)."""
    from PIL import Image
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image.astype(np.uint8)))
    image = image.convert("RGB")
    w, h = image.size
    f = size / max(w, h)
    if f < 1:
        image = image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
    return image


def enlarge(image, min_side: int = 192):
    """Nearest-neighbour upscale of a small PIL image so that its shortest side is >= ``min_side``."""
    from PIL import Image
    f = max(1, -(-min_side // min(image.size)))
    return image if f == 1 else image.resize((image.size[0] * f, image.size[1] * f), Image.NEAREST)


def log_quantize(v: np.ndarray, lo: float | None = None, hi: float | None = None) -> tuple[np.ndarray, float, float]:
    """uint8 codes of ``log10(v)`` on ``[lo, hi]`` (computed from finite positive values when None);
    code 0 means missing (zero, negative or NaN), codes 1..255 span the range.

    The step between codes is ``(hi - lo) / 254`` decades: for 6 decades of range, 2.5% in value.
    """
    v = np.asarray(v, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0)
    lg = np.zeros(v.shape)
    lg[ok] = np.log10(v[ok])
    if lo is None or hi is None:
        lo, hi = (float(lg[ok].min()), float(lg[ok].max())) if ok.any() else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    q = np.zeros(v.shape, dtype=np.uint8)
    q[ok] = (1 + np.clip(np.round((lg[ok] - lo) / (hi - lo) * 254), 0, 254)).astype(np.uint8)
    return q, float(lo), float(hi)


def log_dequantize(q: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values back from :func:`log_quantize` codes (NaN for code 0)."""
    q = np.asarray(q)
    out = np.full(q.shape, np.nan)
    ok = q > 0
    out[ok] = 10 ** (lo + (q[ok].astype(np.float64) - 1) / 254 * (hi - lo))
    return out


def payload_bytes(view: "View") -> int:
    """Bytes this view sends to the browser on first render: the synced state (bytes traits by
    their length, everything else as JSON), without the ES module and CSS."""
    total = 0
    for name in view.traits(sync=True):
        if name in ("_esm", "_css", "_anywidget_id", "_view_name", "_view_module", "_view_module_version",
                    "_model_name", "_model_module", "_model_module_version", "_view_count", "_dom_classes",
                    "tabbable", "tooltip", "layout", "comm", "keys", "log"):
            continue
        v = getattr(view, name)
        if isinstance(v, (bytes, bytearray, memoryview)):
            total += len(v)
        else:
            try:
                total += len(json.dumps(v, default=str))
            except (TypeError, ValueError):
                pass
    return total


class View(anywidget.AnyWidget):
    """Base of the massact_viz views: static fallbacks in the MIME bundle, ``save``, payload size.

    Subclasses implement :meth:`static_image` (a PIL image of the current state) and
    :meth:`static_html_body` (escaped HTML fragment; the PNG is added by :meth:`to_html`).
    """

    title = traitlets.Unicode("").tag(sync=True)

    #: add ``image/png`` and ``text/html`` to the MIME bundle (set False to keep notebooks small)
    static_fallback = True

    # ---------------------------------------------------------------- to implement
    def static_image(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def static_html_body(self) -> str:
        return ""

    # ---------------------------------------------------------------- shared
    @property
    def payload_bytes(self) -> int:
        """Bytes of synced state sent on first render (see :func:`payload_bytes`)."""
        return payload_bytes(self)

    def to_html(self) -> str:
        """A self-contained static HTML page of the view (no script, no external resource)."""
        img = png_b64(self.static_image())
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + esc(self.title or type(self).__name__)
                + "</title></head><body style=\"font-family: Helvetica, Arial, sans-serif; font-size: 13px\">"
                + self._fragment(img) + "</body></html>")

    def _fragment(self, img_b64: str) -> str:
        return (f"<div class='massact-static' data-view='{type(self).__name__}'>"
                f"<div style='font-weight:600'>{esc(self.title)}</div>"
                f"<img alt='{esc(type(self).__name__)}' style='max-width:100%' src='data:image/png;base64,{img_b64}'/>"
                f"{self.static_html_body()}</div>")

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):
            bundle = bundle[0]
        bundle = dict(bundle or {})
        if self.static_fallback:
            try:
                img = png_b64(self.static_image())
                bundle["image/png"] = img
                bundle["text/html"] = self._fragment(img)
            except Exception as e:  # noqa: BLE001 display must never fail: the live widget still shows
                bundle["text/plain"] = f"{bundle.get('text/plain', type(self).__name__)} (static fallback failed: {e})"
        return bundle

    def save(self, path) -> Path:
        """Write the view's current state to ``path``: ``.png`` (PIL), ``.html`` (self-contained,
        escaped, no script) or ``.svg`` (the PNG embedded in an SVG ``image``)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".png":
            return atomic_write(path, png_bytes(self.static_image()))
        if suffix == ".html":
            return atomic_write(path, self.to_html())
        if suffix == ".svg":
            im = self.static_image()
            w, h = im.size
            svg = (f"<svg xmlns='http://www.w3.org/2000/svg' xmlns:xlink='http://www.w3.org/1999/xlink' "
                   f"width='{w}' height='{h}' viewBox='0 0 {w} {h}'><title>{esc(self.title)}</title>"
                   f"<image width='{w}' height='{h}' href='data:image/png;base64,{png_b64(im)}'/></svg>")
            return atomic_write(path, svg)
        raise MassActError(f"cannot save a view as {path.name!r}: use a .png, .svg or .html path.")


def label(draw, xy, text, fill=(0, 0, 0)):
    """Draw ``text`` with PIL's default font (user text is drawn as pixels, never markup)."""
    text = str(text)
    try:
        draw.text(xy, text, fill=fill)
    except UnicodeError:  # PIL's bitmap default font is latin-1 only
        draw.text(xy, text.encode("latin-1", "replace").decode("latin-1"), fill=fill)


def log_colour_bar(width: int, lo: float, hi: float, title: str, empty: str | None = None):
    """A horizontal colour bar (PIL image, ``width`` pixels of gradient) for :func:`log_quantize` codes on
    ``[lo, hi]`` decades: the Viridis gradient, ticks at whole decades (or the two ends) labelled with their
    values, the ``title`` under it, and a grey swatch saying what ``empty`` cells mean when given."""
    from PIL import Image, ImageDraw
    width = max(60, int(width))
    h_bar, pad = 10, 4
    extra = 110 if empty else 0
    im = Image.new("RGB", (width + 40 + extra, h_bar + 34), "white")
    grad = VIRIDIS[np.linspace(0, 255, width).round().astype(int)][None].repeat(h_bar, 0)
    im.paste(Image.fromarray(grad.astype(np.uint8)), (pad, 0))
    d = ImageDraw.Draw(im)
    d.rectangle([pad - 1, 0, pad + width, h_bar], outline=(0, 0, 0))
    decades = [float(t) for t in range(int(np.ceil(lo)), int(np.floor(hi)) + 1)]
    if len(decades) < 2:
        decades = [lo, hi]
    while len(decades) > 6:
        decades = decades[::2]
    for t in decades:
        x = pad + int(round((t - lo) / (hi - lo) * (width - 1))) if hi > lo else pad
        d.line([x, h_bar, x, h_bar + 3], fill=(0, 0, 0))
        label(d, (max(0, x - 12), h_bar + 4), f"{10 ** t:.3g}")
    label(d, (pad, h_bar + 18), title)
    if empty:
        x0 = pad + width + 16
        d.rectangle([x0, 0, x0 + 10, h_bar], fill=EMPTY_RGB, outline=(120, 120, 120))
        label(d, (x0 + 14, 0), empty)
    return im


__all__ = ["View", "payload_bytes", "png_b64", "png_bytes", "log_quantize", "log_dequantize", "esc", "VIRIDIS"]
