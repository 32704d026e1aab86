"""Procedural scenes with captions and exact ground-truth masks (numpy only).

This is the data side of the ``shapes`` teaching model: small RGB images of one
or two flat-coloured shapes on a flat, shaded (gradient) or speckled (noise)
background, the caption that describes each image, and a rule-based
``judge`` that scores any image against any caption.

Language
--------
Captions are lower-case, single-spaced, with no trailing full stop (``parse_caption``
normalises case, whitespace and a trailing ``.``)::

    caption     := object [ " " relation " " object ] " on a " background
    object      := "a " COLOUR " " SHAPE
    relation    := "left of" | "right of" | "above" | "below"
    background  := [ STYLE " " ] COLOUR " background"
    COLOUR      := "red" | "green" | "blue" | "yellow" | "white" | "black"
    SHAPE       := "circle" | "square" | "triangle"
    STYLE       := "plain" | "shaded" | "speckled"

Constraints: the background colour differs from every object colour (the two
objects may share a colour).  Examples::

    a red circle on a blue background                       (the base form)
    a red circle on a speckled blue background
    a white triangle above a red square on a shaded black background

Meaning
-------
* ``STYLE`` picks the background texture: ``plain`` = flat colour, ``shaded`` =
  a linear brightness ramp (+-36 levels) along a random direction, ``speckled`` =
  i.i.d. per-pixel noise (uniform +-24 levels per channel).  A caption without a
  STYLE word means "any style": the generator draws one of the three uniformly.
  Both textures stay well inside the nearest-palette cell of the background
  colour, so ``judge`` reads them as that colour.
* Objects are always flat (exactly their palette RGB), axis-aligned, and hard-
  edged, so the foreground mask is exact: a pixel is foreground iff its colour
  is an object colour.  Circle = disc, square = axis-aligned square, triangle =
  upward isosceles triangle whose bounding box is a square (apex at top centre,
  base along the bottom).  ``size`` is the half-extent of that bounding box.
* ``A left of B`` means A's centre is left of B's and the horizontal offset
  dominates the vertical one (|dx| > |dy|); likewise for the other relations.
  The two objects never overlap (their boxes are separated along the relation
  axis by a gap).
* Position and size are not in the language: they are drawn at random.

Geometry is in normalised image coordinates ([0, 1] x [0, 1], x to the right,
y downwards), so the same ``Scene`` renders at any resolution; pixels are sampled
at their centres.

Held-out captions
-----------------
``is_heldout(caption)`` deterministically marks 1/8 of all caption strings (by a
CRC32 of the canonical caption) as held out; ``dataset_batch`` never emits them
by default, and ``heldout_captions`` draws evaluation captions from them.  These
include style-mentioning variants of single-object captions and many
two-object combinations, so evaluating on them tests composition, not recall.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

__all__ = [
    "COLOURS",
    "SHAPES",
    "RELATIONS",
    "STYLES",
    "STYLE_WORDS",
    "VOCABULARY",
    "SceneObject",
    "Scene",
    "caption",
    "normalize_caption",
    "parse_caption",
    "render",
    "sample_scene",
    "scene_from_caption",
    "dataset_batch",
    "is_heldout",
    "heldout_captions",
    "all_single_captions",
    "judge",
    "MIN_IOU",
    "classify_shape",
    "nearest_colour",
]

# --------------------------------------------------------------------------- vocabulary

#: palette: name -> RGB (uint8).  Minimum pairwise distance ~157 (green/black),
#: so nearest-palette classification tolerates +-78 of perturbation.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)  # (6, 3)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: relation word(s) -> (axis, sign): axis 0 = x, 1 = y; sign of (A - B) along axis.
RELATIONS: dict[str, tuple[int, int]] = {
    "left of": (0, -1),
    "right of": (0, +1),
    "above": (1, -1),
    "below": (1, +1),
}

#: background styles (internal names) and the caption word for each.
STYLES: tuple[str, ...] = ("flat", "gradient", "noise")
STYLE_WORDS: dict[str, str] = {"flat": "plain", "gradient": "shaded", "noise": "speckled"}
_WORD_TO_STYLE = {v: k for k, v in STYLE_WORDS.items()}

GRADIENT_AMPLITUDE = 36.0  # +- levels at the ends of the ramp
NOISE_AMPLITUDE = 24  # +- levels per channel, uniform integers

#: every word of the language, in a fixed order (tokenizers build on this).
VOCABULARY: tuple[str, ...] = (
    ("a", "on", "background", "left", "right", "of", "above", "below")
    + COLOUR_NAMES
    + SHAPES
    + tuple(STYLE_WORDS[s] for s in STYLES)
)

# sizes (half-extent, fraction of the image side)
SINGLE_SIZE = (0.17, 0.34)
PAIR_SIZE = (0.15, 0.23)
MARGIN = 0.02  # min distance of a bounding box from the image border
PAIR_GAP = 0.06  # min gap between the two boxes along the relation axis


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class SceneObject:
    """One flat shape.  ``cx, cy`` is the bounding-box centre and ``size`` its
    half-extent, all as fractions of the image side."""

    shape: str
    colour: str
    cx: float
    cy: float
    size: float


@dataclass(frozen=True)
class Scene:
    """A full scene description; ``render`` turns it into pixels.

    ``objects`` holds one object or two (``objects[0]`` is the caption's first,
    ``relation`` relates it to ``objects[1]``).  ``style`` is the actual
    background texture; ``style_mentioned`` says whether the caption names it.
    ``texture_seed`` fixes the noise texture, ``gradient_angle`` (radians) the ramp
    direction (brightness increases along (cos, sin))."""

    objects: tuple[SceneObject, ...]
    background: str
    relation: str | None = None
    style: str = "flat"
    style_mentioned: bool = False
    texture_seed: int = 0
    gradient_angle: float = 0.0

    def __post_init__(self):
        if len(self.objects) not in (1, 2):
            raise ValueError("a scene has one or two objects")
        if (len(self.objects) == 2) != (self.relation is not None):
            raise ValueError("two objects need a relation, one object must have none")
        if self.relation is not None and self.relation not in RELATIONS:
            raise ValueError(f"unknown relation {self.relation!r}")
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; expected one of {STYLES}")
        if self.background not in COLOURS:
            raise ValueError(f"unknown background colour {self.background!r}")
        for o in self.objects:
            if o.shape not in SHAPES:
                raise ValueError(f"unknown shape {o.shape!r}")
            if o.colour not in COLOURS:
                raise ValueError(f"unknown colour {o.colour!r}")
            if o.colour == self.background:
                raise ValueError("object colour must differ from the background colour")

    def attributes(self) -> dict:
        """The caption-level attributes (what ``parse_caption`` returns)."""
        return {
            "objects": [{"colour": o.colour, "shape": o.shape} for o in self.objects],
            "relation": self.relation,
            "background": self.background,
            "style": self.style if self.style_mentioned else None,
        }


def caption(scene: Scene) -> str:
    """The canonical caption of ``scene``."""
    objs = [f"a {o.colour} {o.shape}" for o in scene.objects]
    head = objs[0] if scene.relation is None else f"{objs[0]} {scene.relation} {objs[1]}"
    bg = f"{STYLE_WORDS[scene.style]} {scene.background}" if scene.style_mentioned else scene.background
    return f"{head} on a {bg} background"


# --------------------------------------------------------------------------- parsing


def normalize_caption(text: str) -> str:
    """Lower-case, collapse whitespace, drop one trailing full stop."""
    t = " ".join(str(text).lower().split())
    if t.endswith("."):
        t = t[:-1].rstrip()
    return t


def _lang_error(text: str, why: str) -> ValueError:
    return ValueError(
        f"caption {text!r} is outside the shapes language ({why}). Expected "
        "'a {colour} {shape} [left of|right of|above|below a {colour} {shape}] "
        "on a [plain|shaded|speckled] {colour} background' with colour in "
        f"{list(COLOUR_NAMES)} and shape in {list(SHAPES)}, e.g. "
        "'a red circle on a blue background'."
    )


def parse_caption(text: str) -> dict:
    """Parse a caption of the language into attributes.

    Returns ``{"objects": [{"colour", "shape"}, ...], "relation": str | None,
    "background": str, "style": "flat" | "gradient" | "noise" | None}``
    (``style`` is None when the caption does not name one).  Raises
    ``ValueError`` with a description of the language otherwise."""
    norm = normalize_caption(text)
    w = norm.split(" ")
    pos = 0

    def expect(word, what):
        nonlocal pos
        if pos >= len(w):
            raise _lang_error(text, f"caption ends where {what} was expected")
        if word is not None and w[pos] != word:
            raise _lang_error(text, f"expected {what} at word {pos + 1}, got {w[pos]!r}")
        pos += 1
        return w[pos - 1]

    def colour(what):
        c = expect(None, what)
        if c not in COLOURS:
            raise _lang_error(text, f"unknown colour {c!r} (word {pos})")
        return c

    def obj():
        expect("a", "'a'")
        c = colour("a colour")
        s = expect(None, "a shape")
        if s not in SHAPES:
            raise _lang_error(text, f"unknown shape {s!r} (word {pos})")
        return {"colour": c, "shape": s}

    objects = [obj()]
    relation = None
    if pos < len(w) and w[pos] != "on":
        if w[pos] in ("left", "right") and pos + 1 < len(w) and w[pos + 1] == "of":
            relation = f"{w[pos]} of"
            pos += 2
        elif w[pos] in ("above", "below"):
            relation = w[pos]
            pos += 1
        else:
            raise _lang_error(text, f"expected 'on' or a relation after the first object, got {w[pos]!r}")
        objects.append(obj())
    expect("on", "'on'")
    expect("a", "'a'")
    style = None
    if pos < len(w) and w[pos] in _WORD_TO_STYLE:
        style = _WORD_TO_STYLE[w[pos]]
        pos += 1
    bg = colour("the background colour")
    expect("background", "'background'")
    if pos != len(w):
        raise _lang_error(text, f"unexpected trailing words {' '.join(w[pos:])!r}")
    for o in objects:
        if o["colour"] == bg:
            raise _lang_error(text, f"object colour {bg!r} equals the background colour")
    return {"objects": objects, "relation": relation, "background": bg, "style": style}


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, :], c[:, None]  # u (1, W) varies along x, v (H, 1) along y


def _inside(shape: str, dx, dy, r):
    """Point-in-shape test on offsets (dx, dy) from the box centre, half-extent r."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":
        # apex (0, -r), base from (-r, r) to (r, r)
        return (dy <= r) & (np.abs(dx) <= (dy + r) * 0.5)
    raise ValueError(f"unknown shape {shape!r}")


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of one shape (pixel-centre sampling)."""
    u, v = _grid(size)
    return _inside(shape, u - cx, v - cy, r)


def _background(scene: Scene, size: int) -> np.ndarray:
    base = _PALETTE[COLOUR_NAMES.index(scene.background)]
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if scene.style == "gradient":
        u, v = _grid(size)
        ramp = (u - 0.5) * np.cos(scene.gradient_angle) + (v - 0.5) * np.sin(scene.gradient_angle)
        ramp = np.clip(ramp / 0.5, -1.0, 1.0) * GRADIENT_AMPLITUDE
        img = img + ramp[..., None]
    elif scene.style == "noise":
        trng = np.random.default_rng(scene.texture_seed)
        img = img + trng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=(size, size, 3)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(scene: Scene, size: int = 32) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Render ``scene`` at ``size`` x ``size``.

    Returns ``(image uint8 (H, W, 3), foreground mask bool (H, W), [per-object
    bool masks])``.  Object pixels are exactly the object's palette colour;
    background pixels never equal any object colour of the scene."""
    img = _background(scene, size)
    masks = []
    for o in scene.objects:
        m = shape_mask(o.shape, o.cx, o.cy, o.size, size)
        img[m] = COLOURS[o.colour]
        masks.append(m)
    fg = np.logical_or.reduce(masks) if len(masks) > 1 else masks[0].copy()
    return img, fg, masks


# --------------------------------------------------------------------------- sampling


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def _sample_style(rng, style, mention_p):
    if style is None:
        style = _pick(rng, STYLES)
        mentioned = bool(rng.random() < mention_p)
    else:
        mentioned = True
    return style, mentioned


def _place_single(rng, shape, colour):
    r = float(rng.uniform(*SINGLE_SIZE))
    lo, hi = r + MARGIN, 1.0 - r - MARGIN
    return (SceneObject(shape, colour, float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)), r),)


def _place_pair(rng, a, b, relation):
    """Place objects a, b = (shape, colour) so that 'a <relation> b' holds."""
    axis, sign = RELATIONS[relation]
    for _ in range(100):
        ra, rb = (float(x) for x in rng.uniform(*PAIR_SIZE, size=2))
        slack = 1.0 - 2 * MARGIN - 2 * ra - 2 * rb - PAIR_GAP
        if slack < 0:
            continue
        s0, s1 = np.sort(rng.uniform(0.0, slack, size=2))  # split slack: before / between / after
        first_r, second_r = (ra, rb) if sign < 0 else (rb, ra)
        first = MARGIN + s0 + first_r
        second = first + first_r + PAIR_GAP + (s1 - s0) + second_r
        main_a, main_b = (first, second) if sign < 0 else (second, first)
        d_main = abs(main_a - main_b)
        lo_a, hi_a = ra + MARGIN, 1.0 - ra - MARGIN
        lo_b, hi_b = rb + MARGIN, 1.0 - rb - MARGIN
        cross_a = float(rng.uniform(lo_a, hi_a))
        # cross-axis offset must stay below the main-axis offset (relation dominates)
        lim = 0.8 * d_main
        lo, hi = max(lo_b, cross_a - lim), min(hi_b, cross_a + lim)
        if lo > hi:
            continue
        cross_b = float(rng.uniform(lo, hi))
        if axis == 0:
            pa, pb = (main_a, cross_a), (main_b, cross_b)
        else:
            pa, pb = (cross_a, main_a), (cross_b, main_b)
        return (
            SceneObject(a[0], a[1], pa[0], pa[1], ra),
            SceneObject(b[0], b[1], pb[0], pb[1], rb),
        )
    raise RuntimeError("could not place two objects")  # pragma: no cover - never seen


def _finish(rng, objects, bg, relation, style, mentioned) -> Scene:
    return Scene(
        objects=objects,
        background=bg,
        relation=relation,
        style=style,
        style_mentioned=mentioned,
        texture_seed=int(rng.integers(2**31 - 1)),
        gradient_angle=float(rng.uniform(0.0, 2 * np.pi)),
    )


def sample_scene(
    rng: np.random.Generator,
    *,
    p_two: float = 0.5,
    p_style_mention: float = 0.5,
    p_same_colour: float = 0.1,
) -> Scene:
    """Draw a random scene from the training distribution.

    ``p_two``: probability of a two-object scene.  ``p_style_mention``: probability
    that the caption names the background style.  ``p_same_colour``: probability
    that the two objects share a colour."""
    two = rng.random() < p_two
    style, mentioned = _sample_style(rng, None, p_style_mention)
    if not two:
        fg = _pick(rng, COLOUR_NAMES)
        bg = _pick(rng, [c for c in COLOUR_NAMES if c != fg])
        return _finish(rng, _place_single(rng, _pick(rng, SHAPES), fg), bg, None, style, mentioned)
    ca = _pick(rng, COLOUR_NAMES)
    cb = ca if rng.random() < p_same_colour else _pick(rng, [c for c in COLOUR_NAMES if c != ca])
    bg = _pick(rng, [c for c in COLOUR_NAMES if c not in (ca, cb)])
    relation = _pick(rng, tuple(RELATIONS))
    objs = _place_pair(rng, (_pick(rng, SHAPES), ca), (_pick(rng, SHAPES), cb), relation)
    return _finish(rng, objs, bg, relation, style, mentioned)


def scene_from_caption(text: str, rng: np.random.Generator) -> Scene:
    """A random scene whose canonical caption equals ``normalize_caption(text)``
    (ground truth for any caption of the language)."""
    att = parse_caption(text)
    style, mentioned = _sample_style(rng, att["style"], 0.0)
    o = att["objects"]
    if att["relation"] is None:
        objs = _place_single(rng, o[0]["shape"], o[0]["colour"])
    else:
        objs = _place_pair(rng, (o[0]["shape"], o[0]["colour"]), (o[1]["shape"], o[1]["colour"]), att["relation"])
    return _finish(rng, objs, att["background"], att["relation"], style, mentioned)


# --------------------------------------------------------------------------- split


def is_heldout(text: str) -> bool:
    """True for the ~1/8 of caption strings reserved for evaluation."""
    return zlib.crc32(normalize_caption(text).encode()) % 8 == 0


def all_single_captions(style_words: bool = False) -> list[str]:
    """All single-object captions (90 base form; 360 with style variants)."""
    out = []
    for fg in COLOUR_NAMES:
        for s in SHAPES:
            for bg in COLOUR_NAMES:
                if bg == fg:
                    continue
                out.append(f"a {fg} {s} on a {bg} background")
                if style_words:
                    out += [f"a {fg} {s} on a {STYLE_WORDS[st]} {bg} background" for st in STYLES]
    return out


def heldout_captions(n: int = 100, seed: int = 20240601, **sample_kw) -> list[str]:
    """``n`` distinct held-out captions, drawn from the training distribution
    (``sample_scene``) restricted to ``is_heldout``.  Deterministic."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen = set()
    for _ in range(1_000_000):
        c = caption(sample_scene(rng, **sample_kw))
        if c not in seen and is_heldout(c):
            seen.add(c)
            out.append(c)
            if len(out) == n:
                return out
    raise RuntimeError("not enough held-out captions")  # pragma: no cover


# --------------------------------------------------------------------------- batches


def dataset_batch(
    rng: np.random.Generator,
    batch: int,
    size: int = 32,
    *,
    exclude_heldout: bool = True,
    **sample_kw,
) -> dict:
    """A training batch: ``{"images": uint8 (B, H, W, 3), "masks": bool (B, H, W),
    "captions": [str], "scenes": [Scene]}``.  Deterministic given ``rng``'s state;
    held-out captions are resampled away unless ``exclude_heldout=False``."""
    images = np.empty((batch, size, size, 3), np.uint8)
    masks = np.empty((batch, size, size), bool)
    caps, scenes = [], []
    for i in range(batch):
        while True:
            sc = sample_scene(rng, **sample_kw)
            c = caption(sc)
            if not (exclude_heldout and is_heldout(c)):
                break
        images[i], masks[i], _ = render(sc, size)
        caps.append(c)
        scenes.append(sc)
    return {"images": images, "masks": masks, "captions": caps, "scenes": scenes}


# --------------------------------------------------------------------------- judge


def nearest_colour(image) -> np.ndarray:
    """Per-pixel index into ``COLOUR_NAMES`` of the nearest palette colour."""
    x = _as_uint8(image).astype(np.float32)
    d = ((x[..., None, :] - _PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


def _as_uint8(image) -> np.ndarray:
    if hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("RGB"))
    x = np.asarray(image)
    if x.ndim == 3 and x.shape[0] == 3 and x.shape[-1] != 3:  # CHW
        x = np.moveaxis(x, 0, -1)
    if x.dtype != np.uint8:
        x = np.asarray(x, np.float32)
        if x.max() <= 1.0 + 1e-6:
            x = x * 255.0
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {x.shape}")
    return x


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected component labels (0 = none, 1..n) of a boolean mask."""
    h, w = mask.shape
    lab = np.zeros((h, w), np.int32)
    n = 0
    ys, xs = np.nonzero(mask)
    for y0, x0 in zip(ys.tolist(), xs.tolist()):
        if lab[y0, x0]:
            continue
        n += 1
        lab[y0, x0] = n
        stack = [(y0, x0)]
        while stack:
            y, x = stack.pop()
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not lab[yy, xx]:
                    lab[yy, xx] = n
                    stack.append((yy, xx))
    return lab, n


def classify_shape(mask: np.ndarray) -> tuple[str, dict[str, float]]:
    """Classify one object's boolean mask by best-fit template IoU.

    Each template (circle, square, triangle) starts from the mask's bounding box
    (half-extent = half the larger side; the triangle is anchored at the bottom
    edge) and is refined over a small grid of +-0.5 px shifts and radius changes,
    rendered with the same point-in-shape rule as the data.  Returns
    ``(best shape, {shape: IoU})``."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return "none", {s: 0.0 for s in SHAPES}
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    pad = 2
    cy0, cx0 = max(0, y0 - pad), max(0, x0 - pad)
    crop = mask[cy0 : y1 + pad, cx0 : x1 + pad]
    area = crop.sum()
    u = np.arange(crop.shape[1], dtype=np.float32)[None, :] + cx0 + 0.5  # pixel units
    v = np.arange(crop.shape[0], dtype=np.float32)[:, None] + cy0 + 0.5
    r0 = max(x1 - x0, y1 - y0) / 2
    cx = (x0 + x1) / 2
    steps = (-0.5, 0.0, 0.5)
    ious = {}
    for s in SHAPES:
        best = 0.0
        for dr in steps:
            r = r0 + dr
            base_cy = (y1 - r) if s == "triangle" else (y0 + y1) / 2
            for ox in steps:
                for oy in steps:
                    t = _inside(s, u - (cx + ox), v - (base_cy + oy), r)
                    inter = np.count_nonzero(t & crop)
                    best = max(best, inter / (area + np.count_nonzero(t) - inter))
        ious[s] = float(best)
    return max(ious, key=ious.get), ious


#: ``validity`` thresholds: every one of 1,000 ground-truth renders is valid (smallest margins: background
#: 53 %, smoothness 0.94, palette distance 30), and none of the noise / confetti images a broken edit
#: produces is; see tests/test_shapes_scenes.py.
VALID_MIN_BACKGROUND = 0.40  # share of pixels in the background colour
VALID_MAX_FRAGMENTS = 0.04  # share of pixels in foreground bits outside the two largest objects
VALID_MIN_SMOOTHNESS = 0.85  # share of neighbouring pixel pairs with the same palette colour
VALID_MAX_PALETTE_DISTANCE = 75.0  # mean RGB distance to the nearest palette colour (speckled scenes ~50-60, full-frame noise ~100)


def validity(image, *, min_area: float = 0.025, max_area: float = 0.55) -> dict:
    """Whether an image is a scene at all, whatever its caption: one background colour that covers a
    good share of the image, one or two clean object regions of plausible size, few stray fragments,
    colours near the palette, neighbouring pixels mostly alike (noise and confetti fail).

    Returns ``{"valid": bool, "score": float in [0, 1], "background_share", "fragments", "smoothness",
    "palette_distance", "largest_area", "reasons": [str]}``; ``score`` is the smallest of the
    per-criterion margins (1 = comfortably a scene, 0 = fails at least one criterion)."""
    img = _as_uint8(image)
    h, w, _ = img.shape
    x = img.astype(np.float32)
    d = np.sqrt(((x[..., None, :] - _PALETTE) ** 2).sum(-1))
    cls = d.argmin(-1)
    pal_dist = float(d.min(-1).mean())
    ring = np.concatenate([cls[0], cls[-1], cls[1:-1, 0], cls[1:-1, -1]])
    bg_idx = int(np.bincount(ring, minlength=len(COLOUR_NAMES)).argmax())
    bg_share = float((cls == bg_idx).mean())
    same = np.concatenate([(cls[1:] == cls[:-1]).ravel(), (cls[:, 1:] == cls[:, :-1]).ravel()])
    smooth = float(same.mean())
    lab, n = _components(cls != bg_idx)
    areas = np.sort(np.bincount(lab.ravel(), minlength=n + 1)[1:])[::-1] if n else np.zeros(0, int)
    largest = float(areas[0] / (h * w)) if n else 0.0
    fragments = float(areas[2:].sum() / (h * w)) if n > 2 else 0.0
    reasons = []
    if bg_share < VALID_MIN_BACKGROUND:
        reasons.append(f"background covers {bg_share:.0%} < {VALID_MIN_BACKGROUND:.0%}")
    if not min_area <= largest <= max_area:
        reasons.append(f"largest object covers {largest:.1%}, outside [{min_area:.1%}, {max_area:.0%}]")
    if fragments > VALID_MAX_FRAGMENTS:
        reasons.append(f"stray fragments cover {fragments:.1%} > {VALID_MAX_FRAGMENTS:.0%}")
    if smooth < VALID_MIN_SMOOTHNESS:
        reasons.append(f"neighbouring pixels alike {smooth:.0%} < {VALID_MIN_SMOOTHNESS:.0%}")
    if pal_dist > VALID_MAX_PALETTE_DISTANCE:
        reasons.append(f"mean distance to the palette {pal_dist:.0f} > {VALID_MAX_PALETTE_DISTANCE:.0f}")
    margins = [
        (bg_share - VALID_MIN_BACKGROUND) / (1 - VALID_MIN_BACKGROUND),
        min(largest - min_area, max_area - largest) / ((max_area - min_area) / 2),
        (VALID_MAX_FRAGMENTS - fragments) / VALID_MAX_FRAGMENTS,
        (smooth - VALID_MIN_SMOOTHNESS) / (1 - VALID_MIN_SMOOTHNESS),
        (VALID_MAX_PALETTE_DISTANCE - pal_dist) / VALID_MAX_PALETTE_DISTANCE,
    ]
    return {"valid": not reasons, "score": float(np.clip(min(margins), 0.0, 1.0)) if not reasons else 0.0,
            "background_share": bg_share, "fragments": fragments, "smoothness": smooth,
            "palette_distance": pal_dist, "largest_area": largest, "reasons": reasons}


def _aspect(xs: np.ndarray, ys: np.ndarray) -> float:
    """Bounding-box shorter side / longer side (1 = as wide as tall; the data's squares and circles are >= 0.9)."""
    w, h = int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
    return min(w, h) / max(w, h)


#: the judge's template-IoU bar: an object's shape counts as drawn when its best-fitting template is the caption's
#: shape and fits at least this well
MIN_IOU = 0.75


def judge(image, text: str, *, min_iou: float = MIN_IOU, min_area: float = 0.025, max_area: float = 0.55) -> dict:
    """Score an image against a caption with the procedural ground truth rules.

    * Pixels are classified to the nearest palette colour.  The background
      colour is the majority class of the 1-pixel border ring; foreground pixels
      are those of any other class.
    * Objects are 4-connected foreground components covering between
      ``min_area`` and ``max_area`` of the image (the data's objects cover
      4.5%-46%; the bounds keep single 4x4-pixel token blocks and "everything
      is foreground" images from counting), coloured by their majority class.  One-object captions use the
      largest component; two-object captions try every ordered pair among the
      three largest and keep the best reading (colours, then relation, then
      shapes).
    * A shape is right when the template IoU argmax (``classify_shape``) equals
      the caption's shape and its IoU is at least ``min_iou``.

    Returns a dict with ``colour_ok`` (background and every object colour right),
    ``shape_ok`` (every object's shape right), ``relation_ok`` (None for one
    object), ``ok`` (all of them), ``background`` (predicted), ``objects`` (per
    object: colour, shape, iou, colour_ok, shape_ok, area, centroid, aspect = bounding-box shorter / longer
    side), ``n_objects``
    (components found) and ``clean`` (fraction of foreground pixels inside the
    judged objects)."""
    att = parse_caption(text)
    img = _as_uint8(image)
    h, w, _ = img.shape
    cls = nearest_colour(img)
    ring = np.concatenate([cls[0], cls[-1], cls[1:-1, 0], cls[1:-1, -1]])
    bg_idx = int(np.bincount(ring, minlength=len(COLOUR_NAMES)).argmax())
    bg = COLOUR_NAMES[bg_idx]
    fg = cls != bg_idx
    lab, n = _components(fg)
    comps = []
    if n:
        areas = np.bincount(lab.ravel(), minlength=n + 1)
        order = [k for k in np.argsort(-areas[1:]) + 1 if areas[k] <= max_area * h * w]
        for k in order[:3]:
            if areas[k] < max(1, min_area * h * w):
                break
            m = lab == k
            colour = COLOUR_NAMES[int(np.bincount(cls[m], minlength=len(COLOUR_NAMES)).argmax())]
            shape, ious = classify_shape(m)
            ys, xs = np.nonzero(m)
            comps.append(
                {
                    "mask": m,
                    "colour": colour,
                    "shape": shape,
                    "ious": ious,
                    "area": int(areas[k]),
                    "centroid": ((xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h),
                    "aspect": _aspect(xs, ys),
                }
            )

    want = att["objects"]

    def obj_report(c, t):
        if c is None:
            return {"colour": None, "shape": None, "iou": 0.0, "colour_ok": False, "shape_ok": False,
                    "area": 0, "centroid": None, "aspect": None}
        iou = c["ious"][t["shape"]]
        return {
            "colour": c["colour"],
            "shape": c["shape"],
            "iou": iou,
            "colour_ok": c["colour"] == t["colour"],
            "shape_ok": c["shape"] == t["shape"] and iou >= min_iou,
            "area": c["area"],
            "centroid": tuple(float(v) for v in c["centroid"]),
            "aspect": c["aspect"],
        }

    relation_ok = None
    if att["relation"] is None:
        reports = [obj_report(comps[0] if comps else None, want[0])]
        used = comps[:1]
    else:
        axis, sign = RELATIONS[att["relation"]]

        def rel_ok(a, b):
            d = np.subtract(a["centroid"], b["centroid"])
            return bool(np.sign(d[axis]) == sign and abs(d[axis]) > abs(d[1 - axis]))

        best, best_key = None, None
        for i, a in enumerate(comps):
            for j, b in enumerate(comps):
                if i == j:
                    continue
                ra, rb = obj_report(a, want[0]), obj_report(b, want[1])
                ro = rel_ok(a, b)
                key = (ra["colour_ok"] + rb["colour_ok"], ro, ra["shape_ok"] + rb["shape_ok"], a["area"] + b["area"])
                if best_key is None or key > best_key:
                    best_key, best = key, (ra, rb, ro, [a, b])
        if best is None:
            reports = [obj_report(comps[0] if comps else None, want[0]), obj_report(None, want[1])]
            relation_ok, used = False, comps[:1]
        else:
            reports, relation_ok, used = [best[0], best[1]], best[2], best[3]
    background_ok = bg == att["background"]
    colour_ok = background_ok and all(r["colour_ok"] for r in reports)
    shape_ok = all(r["shape_ok"] for r in reports)
    fg_total = int(fg.sum())
    clean = (sum(c["area"] for c in used) / fg_total) if fg_total else 0.0
    return {
        "colour_ok": bool(colour_ok),
        "shape_ok": bool(shape_ok),
        "relation_ok": relation_ok,
        "background_ok": bool(background_ok),
        "ok": bool(colour_ok and shape_ok and (relation_ok is not False)),
        "background": bg,
        "objects": reports,
        "n_objects": len(comps),
        "clean": float(clean),
    }
