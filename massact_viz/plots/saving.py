"""Figures to files: ``save_figure`` (.html self-contained with plotly.js packed, .json, .png/.svg/.pdf through
kaleido and a local Chromium, never downloaded), ``to_image``, and the Chromium kaleido keeps running.

``massact_viz.plots.saving.KEEP_BROWSER``: keep one headless Chromium after the first static export; set it
to False for a fresh browser per export."""
from __future__ import annotations

import atexit
import base64
import functools
import os
import re
import warnings
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from ..errors import MassActError
from ..files import atomic_write
from .style import _esc, short_text


STATIC_FORMATS = ("png", "svg", "pdf")
SUFFIXES = (".html", ".json") + tuple("." + f for f in STATIC_FORMATS)
CHROMIUM_HINT = ("Static export (PNG/SVG/PDF) needs a local Chromium: run `apt-get install -y chromium` "
                 "(Debian/Ubuntu, as root; `make test`/`make demo` do it), or set BROWSER_PATH to a "
                 "Chrome/Chromium executable. .html and .json export need no browser.")


def _find_browser() -> str:
    """Path of the Chromium kaleido would use, or a MassActError; never downloads one."""
    try:
        from choreographer.browsers.chromium import Chromium
        path = Chromium.find_browser(skip_local=False)
    except ImportError:
        raise MassActError("static export needs kaleido>=1 (a dependency of massact-viz): pip install 'kaleido>=1'.") from None
    except Exception:  # noqa: BLE001 (choreographer internals vary between versions)
        path = None
    if not path or not Path(path).is_file():
        raise MassActError(f"no Chrome/Chromium found for kaleido{f' (BROWSER_PATH={path!r})' if path else ''}. "
                           + CHROMIUM_HINT)
    return str(path)


#: Keep one headless Chromium running after the first static export (kaleido's sync server):
#: the first export costs a few seconds, later ones a fraction of a second. Closed at exit or by
#: :func:`close_browser`. Set to False for a fresh browser per export.
KEEP_BROWSER = True
_server_started = False


def _start_browser() -> None:
    global _server_started
    if not KEEP_BROWSER or _server_started:
        return
    try:
        import kaleido
        kaleido.start_sync_server(silence_warnings=True)
    except Exception:  # noqa: BLE001 older kaleido, or already running: fall back to one-shot exports
        return
    _server_started = True
    atexit.register(close_browser)


def close_browser() -> None:
    """Close the Chromium that static exports keep running (no-op when none is)."""
    global _server_started
    if not _server_started:
        return
    _server_started = False
    try:
        import kaleido
        kaleido.stop_sync_server(silence_warnings=True)
    except Exception:  # noqa: BLE001
        pass


def to_image(fig: go.Figure, fmt: str = "png", *, width: int | None = None, height: int | None = None,
             scale: float | None = None) -> bytes:
    """Static image bytes of ``fig`` (``png``, ``svg`` or ``pdf``) via kaleido and a local Chromium."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in STATIC_FORMATS:
        raise MassActError(f"unknown static format {fmt!r}; use one of {', '.join(STATIC_FORMATS)}.")
    _find_browser()
    _start_browser()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*kopts argument is ignored.*")
            return pio.to_image(fig, format=fmt, width=width, height=height, scale=scale, validate=False)
    except MassActError:
        raise
    except Exception as e:  # noqa: BLE001 kaleido/choreographer raise plain RuntimeErrors
        close_browser()  # a fresh browser next time
        msg = str(e)
        if "chrome" in msg.lower() or "browser" in msg.lower() or type(e).__name__.startswith("Browser"):
            raise MassActError(f"kaleido could not run Chromium ({type(e).__name__}: {short_text(msg, 200)}). "
                               + CHROMIUM_HINT) from None
        raise


#: the type of a figure's script in our HTML pages: it runs once :func:`plotlyjs_loader` has unpacked plotly.js
FIGURE_SCRIPT_TYPE = "text/x-plotly-figure"


@functools.lru_cache(maxsize=1)
def _plotlyjs_packed() -> str:
    """plotly.js gzip-compressed and base64-encoded (about 2.0 MB instead of 4.8 MB; deterministic)."""
    import gzip

    from plotly.offline import get_plotlyjs
    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), compresslevel=9, mtime=0)).decode("ascii")


def figure_fragment(fig: go.Figure) -> str:
    """``fig`` as an HTML fragment for a page that ends with :func:`plotlyjs_loader` (its script waits for it)."""
    frag = fig.to_html(full_html=False, include_plotlyjs=False, validate=False, config={"displaylogo": False})
    # plotly writes its call as <script> (7.x) or <script type="text/javascript"> (6.0): either waits
    frag, n = re.subn(r'<script(?: type="text/javascript")?>', f'<script type="{FIGURE_SCRIPT_TYPE}">', frag)
    if n == 0:
        raise MassActError("this plotly version writes its figures in a form massact_viz does not know; "
                           "install plotly 6 or 7 (pip install 'plotly>=6,<8').")
    return frag


def plotlyjs_loader() -> str:
    """The end of a self-contained page of figures: plotly.js, packed (:func:`_plotlyjs_packed`), is unpacked
    by the browser (``DecompressionStream``: Chrome/Edge 80+, Firefox 113+, Safari 16.4+), then the page's
    figure scripts run in order. Where it cannot be unpacked the page says so in one line; its text,
    tables and images read without it. Nothing is fetched."""
    return f"""<p id="mv-plotly-status" style="color:#555">Drawing the interactive figures...</p>
<script>(async () => {{
  const note = document.getElementById("mv-plotly-status");
  try {{
    if (typeof DecompressionStream === "undefined") throw new Error("no DecompressionStream");
    const bin = atob("{_plotlyjs_packed()}");
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const js = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
    const lib = document.createElement("script"); lib.textContent = js; document.head.appendChild(lib);
    for (const old of document.querySelectorAll('script[type="{FIGURE_SCRIPT_TYPE}"]')) {{
      const run = document.createElement("script"); run.textContent = old.textContent; old.replaceWith(run);
    }}
    note.remove();
  }} catch (err) {{
    note.textContent = "The interactive figures could not be drawn: this browser cannot unpack the embedded " +
      "plotly.js (" + err.message + "). Open the page in a current Chrome, Edge, Firefox or Safari.";
  }}
}})();</script>"""


def figure_page(fig: go.Figure, title: str = "figure") -> str:
    """A self-contained HTML page of one figure (what ``save_figure(fig, "x.html")`` writes)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title></head>'
            f"<body>{figure_fragment(fig)}{plotlyjs_loader()}</body></html>\n")


def save_figure(fig: go.Figure, path: str | os.PathLike, *, width: int | None = None,
                height: int | None = None, scale: float | None = None) -> Path:
    """Write ``fig`` to ``path``; the format follows the suffix.

    ``.html``: a self-contained page with the plotly.js bundle inlined (works offline, no CDN);
    ``.json``: the plotly figure JSON (``plotly.io.read_json`` reads it back);
    ``.png`` / ``.svg`` / ``.pdf``: a static image through kaleido, which needs a local Chromium
    (``apt-get install -y chromium``); a browser is never downloaded. ``width``/``height``/``scale``
    apply to static images. Parent directories are created; the file is written atomically.
    """
    if not isinstance(fig, go.Figure):
        raise MassActError(f"save_figure takes a plotly Figure, got {type(fig).__name__}.")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MassActError(f"cannot save a figure as {path.name!r}: unknown suffix {suffix or '(none)'!r}. "
                           f"Use one of {', '.join(SUFFIXES)}.")
    if suffix == ".html":
        data = figure_page(fig, path.stem).encode()
    elif suffix == ".json":
        data = pio.to_json(fig, validate=False).encode()
    else:
        data = to_image(fig, suffix[1:], width=width, height=height, scale=scale)
    return atomic_write(path, data)
