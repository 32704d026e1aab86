"""One look for every figure: the plotly template (palette, font, colour scales) and the label helpers
(HTML-escaping user text, log-axis ticks, layer axes) the figure modules share."""
from __future__ import annotations

import html
import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from ..palette import PALETTE
from ..stats import ChannelStats


# ---------------------------------------------------------------- one look for every figure
#: Sequential colour scale of every magnitude heatmap and surface.
SEQUENTIAL = "Viridis"
#: Colour scale of 0..1 agreement matrices (Jaccard).
AGREEMENT = "Blues"
FONT = dict(family="Inter, 'Helvetica Neue', Helvetica, Arial, sans-serif", size=13, color="#222222")

TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(
    font=FONT, colorway=list(PALETTE), title=dict(font=dict(size=16), x=0.02, xanchor="left"),
    colorscale=dict(sequential=SEQUENTIAL), hoverlabel=dict(font=dict(family=FONT["family"], size=12)),
    legend=dict(font=dict(size=12)), margin=dict(l=80, r=30, t=70, b=60))
pio.templates["massact"] = TEMPLATE  # registered for reuse; never made the default


MIME_PLOTLY = "application/vnd.plotly.v1+json"

# ---------------------------------------------------------------- helpers
def _esc(text: Any) -> str:
    """HTML-escape ``< > &`` (plotly renders HTML-like markup in names, hover text and titles).

    Quotes are left alone: plotly.js does not decode ``&quot;``, so escaping them would show the entity.
    """
    return html.escape(str(text), quote=False)


def short_text(text: str, n: int = 40) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis (labels, captions, messages)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _log10(v: np.ndarray) -> np.ndarray:
    """log10 of non-negative magnitudes; zeros, negatives and NaN become NaN (an empty cell)."""
    v = np.asarray(v, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v) & (v > 0)
    out[ok] = np.log10(v[ok])
    return out


def _log_ticks(*arrays: Any) -> dict:
    """Tick settings of a log axis over these values, every label a whole number (no plotly "2 3 .. 9"
    digits that make 0.3 read as 3): powers of ten when the values span two decades or more, else the
    1-2-5 steps between them (0.2, 0.5, 1, 2, 5)."""
    v = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0 or math.log10(v.max() / v.min()) >= 2:
        return dict(dtick=1)
    lo, hi = math.floor(math.log10(v.min())) - 1, math.ceil(math.log10(v.max())) + 1
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1) for m in (1, 2, 5) if v.min() / 2 <= m * 10.0 ** e <= v.max() * 2]
    return dict(tickmode="array", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def _layer_axis(layers: Sequence[str], *, reverse: bool = False) -> dict:
    ax = dict(type="category", categoryorder="array", categoryarray=list(layers), title="layer")
    if reverse:
        ax["autorange"] = "reversed"
    return ax


def _prompt_label(stats: ChannelStats, i: int, n: int = 40) -> str:
    p = stats.prompts[i] if i < len(stats.prompts) else ""
    return f"image {i}: {_esc(short_text(p, n))}"
