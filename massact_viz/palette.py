"""The one colour source of every figure, widget (Python and JavaScript) and static fallback."""
from __future__ import annotations

import json

#: Okabe-Ito: distinguishable under the common colour-vision deficiencies; cluster c and channel line c
#: take PALETTE[c % 8] everywhere.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
#: Marker of the top-k cells and the selection outline.
MARK_COLOR = "#D55E00"
#: Line colour of the median in layer curves.
MEDIAN_COLOR = "#555555"


def rgb(color: str) -> tuple[int, int, int]:
    """``"#0072B2"`` -> ``(0, 114, 178)``."""
    h = color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


PALETTE_RGB = [rgb(c) for c in PALETTE]


def js_constants() -> str:
    """The same colours as JavaScript constants, prepended to every widget's ES module."""
    return (f"const MV_PALETTE = {json.dumps([list(c) for c in PALETTE_RGB])};\n"
            f"const MV_MARK = {json.dumps(MARK_COLOR)};\n")
