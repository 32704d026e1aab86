"""Image-comparison metrics: a small registry, offline by default.

``METRICS[name]`` is a :class:`Metric`: ``fn(image, reference) -> float`` and ``higher_is_better``.
Images are PIL images or arrays (``(H, W)``, ``(H, W, 3)``): uint8 arrays and PIL images are read as
``value / 255``; float arrays are taken as already in ``[0, 1]``. Built in (numpy/scipy only):

* ``mse``: mean squared error over pixels and channels, in ``[0, 1]`` units (lower is better);
* ``psnr``: ``10 log10(1 / mse)`` in dB, ``inf`` for identical images (higher is better);
* ``ssim``: the structural similarity of Wang et al. 2004 with their Gaussian window (11 taps,
  sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, data range 1, population (not sample) covariances,
  computed **per RGB channel and averaged** (grayscale images: on the one channel); the SSIM map is
  averaged after cropping the 5-pixel border the window does not cover (higher is better, 1 for
  identical images);
* on the embedded teaching model (captions in its language): ``scene_valid`` (1 when the image is a clean
  scene at all, 0 for noise or confetti), ``judge_colour`` / ``judge_shape`` (1 when the image is a valid
  scene showing every colour / shape of its caption; need the prompt), the procedural judge of
  :mod:`massact_viz.shapes.scenes`: what "generation collapsed" means there.

Learned metrics, registered when you have the weights (loaded with ``transformers`` from a Hub id or a
local directory; nothing is downloaded when ``HF_HUB_OFFLINE=1``):

* :func:`clip_metrics` registers ``clip_t`` (cosine similarity of the image's and the prompt's CLIP
  embeddings; needs the prompt) and ``clip_i`` (cosine similarity of the two images' CLIP image
  embeddings); both higher is better;
* :func:`dino_metric` registers ``dino`` (cosine similarity of the two images' DINO CLS embeddings,
  higher is better).

LPIPS is not provided: it needs torchvision's pretrained AlexNet/VGG weights, and torchvision cannot be
installed beside this project's torch build. Register your own with :func:`register_metric` if you
have it.

Add any other metric with :func:`register_metric`; it then works everywhere a metric name is accepted
(e.g. ``probes.disrupt(metrics=(..., "dino"))``). A metric with ``needs_prompt=True`` is called as
``fn(image, reference, prompt)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import MassActError


@dataclass(frozen=True)
class Metric:
    """``fn(image, reference) -> float`` (``fn(image, reference, prompt)`` when ``needs_prompt``)
    and which direction is better."""

    fn: Callable[..., float]
    higher_is_better: bool
    description: str = ""
    needs_prompt: bool = False

    def __call__(self, image: Any, reference: Any, prompt: str | None = None) -> float:
        if not self.needs_prompt:
            return float(self.fn(image, reference))
        if not isinstance(prompt, str):
            raise MassActError("this metric scores an image against its prompt; pass prompt=.")
        return float(self.fn(image, reference, prompt))


def to_array(image: Any) -> np.ndarray:
    """A float64 ``(H, W, C)`` array in ``[0, 1]`` from a PIL image or an array."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        image = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    a = np.asarray(image)
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    else:
        raise MassActError(f"images must be PIL images, uint8 arrays or float arrays in [0, 1]; got dtype {a.dtype}.")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise MassActError(f"an image array must be (H, W) or (H, W, C), got shape {a.shape}.")
    return a


def _pair(image: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_array(image), to_array(reference)
    if a.shape != b.shape:
        raise MassActError(f"images to compare differ in shape: {a.shape} vs {b.shape}; generate them at one size.")
    return a, b


def mse(image: Any, reference: Any) -> float:
    a, b = _pair(image, reference)
    return float(np.mean((a - b) ** 2))


def psnr(image: Any, reference: Any) -> float:
    m = mse(image, reference)
    return float("inf") if m == 0 else float(10.0 * np.log10(1.0 / m))


def ssim(image: Any, reference: Any, *, sigma: float = 1.5, win: int = 11, k1: float = 0.01,
         k2: float = 0.03) -> float:
    from scipy.ndimage import gaussian_filter

    a, b = _pair(image, reference)
    if min(a.shape[:2]) < win:
        raise MassActError(f"SSIM needs images of at least {win}x{win} pixels, got {a.shape[1]}x{a.shape[0]}.")
    c1, c2 = (k1 * 1.0) ** 2, (k2 * 1.0) ** 2
    truncate = ((win - 1) / 2) / sigma  # an 11-tap window
    pad = (win - 1) // 2

    def f(x):
        return gaussian_filter(x, sigma=sigma, truncate=truncate, mode="reflect")

    vals = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        vals.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(vals))


def scene_valid(image: Any, reference: Any = None) -> float:
    """1.0 when ``image`` is a scene at all by the teaching model's rules (one background, clean objects
    of plausible size, no noise or confetti; :func:`massact_viz.shapes.scenes.validity`), else 0.0."""
    from .shapes.scenes import validity
    return 1.0 if validity(image)["valid"] else 0.0


def _judged(image: Any, prompt: str, key: str) -> float:
    from .shapes.scenes import judge, validity
    try:
        j = judge(image, prompt)
    except ValueError as e:
        raise MassActError(f"judge metrics score the teaching model's captions only ({e}).") from None
    return 1.0 if (validity(image)["valid"] and j[key]) else 0.0


def judge_colour(image: Any, reference: Any, prompt: str) -> float:
    """1.0 when the image is a valid scene and every colour of the caption (objects, background) is right."""
    return _judged(image, prompt, "colour_ok")


def judge_shape(image: Any, reference: Any, prompt: str) -> float:
    """1.0 when the image is a valid scene and every shape of the caption is drawn (template IoU >= 0.75)."""
    return _judged(image, prompt, "shape_ok")


METRICS: dict[str, Metric] = {
    "mse": Metric(mse, higher_is_better=False, description="pixel mean squared error in [0, 1] units"),
    "psnr": Metric(psnr, higher_is_better=True, description="peak signal-to-noise ratio in dB (inf if identical)"),
    "ssim": Metric(ssim, higher_is_better=True, description="SSIM, Gaussian 11/1.5 window, mean over RGB channels"),
    "scene_valid": Metric(scene_valid, higher_is_better=True,
                          description="teaching model: 1 if the image is a clean scene (no noise/confetti), else 0"),
    "judge_colour": Metric(judge_colour, higher_is_better=True, needs_prompt=True,
                           description="teaching model: 1 if a valid scene with every captioned colour, else 0"),
    "judge_shape": Metric(judge_shape, higher_is_better=True, needs_prompt=True,
                          description="teaching model: 1 if a valid scene with every captioned shape, else 0"),
}


def register_metric(name: str, fn: Callable[..., float], higher_is_better: bool, description: str = "",
                    *, replace: bool = False, needs_prompt: bool = False) -> Metric:
    """Add ``fn(image, reference) -> float`` (or ``fn(image, reference, prompt)`` with ``needs_prompt``)
    to :data:`METRICS` under ``name``."""
    if not isinstance(name, str) or not name:
        raise MassActError(f"a metric name must be a non-empty string, got {name!r}.")
    if not callable(fn):
        raise MassActError(f"metric {name!r}: fn must be callable as fn(image, reference) -> float.")
    if not isinstance(higher_is_better, bool):
        raise MassActError(f"metric {name!r}: higher_is_better must be True or False.")
    if name in METRICS and not replace:
        raise MassActError(f"metric {name!r} is already registered; pass replace=True to replace it.")
    METRICS[name] = Metric(fn, higher_is_better, description, bool(needs_prompt))
    return METRICS[name]


def direction_arrow(metric: str) -> str:
    """"↑" (higher is better) or "↓" for a registered metric; "" for one this session has not registered
    (e.g. a metric named in a loaded result)."""
    m = METRICS.get(metric)
    return "" if m is None else ("↑" if m.higher_is_better else "↓")


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise MassActError(f"unknown metric {name!r}; registered: {sorted(METRICS)} (add one with register_metric).")
    return METRICS[name]


def compare(image: Any, reference: Any, metrics=("mse", "psnr", "ssim"), *, prompt: str | None = None
            ) -> dict[str, float]:
    """``{name: value}`` of each metric of ``image`` against ``reference`` (``prompt``: for ``clip_t``)."""
    return {m: get_metric(m)(image, reference, prompt=prompt) for m in metrics}


# ------------------------------------------------------------------ learned metrics (transformers)
def _pil(image: Any):
    from PIL import Image

    a = np.round(to_array(image) * 255).astype(np.uint8)
    return Image.fromarray(a[..., 0] if a.shape[2] == 1 else a[..., :3]).convert("RGB")


def _device(device):
    import torch

    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


def _load(what: str, model_id_or_path, load, example: str):
    """``load()`` or a :class:`MassActError` saying how to get the weights."""
    try:
        return load()
    except (OSError, ValueError) as e:
        raise MassActError(
            f"could not load the {what} weights from {str(model_id_or_path)!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Without Hub access, run `hf download {example}` on a "
            f"machine that has it, copy the directory over and pass its local path.") from e


def _cosine(a, b) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)[0])


def _features(out):
    """A tensor from ``get_*_features`` (transformers 5 returns an output object)."""
    return out if hasattr(out, "dim") else out.pooler_output


def clip_metrics(model_id_or_path, *, device=None, replace: bool = True) -> tuple[Metric, Metric]:
    """Register ``clip_t`` and ``clip_i`` from a ``transformers`` CLIP model (Hub id or local directory).

    ``clip_t``: cosine similarity of the image's CLIP embedding and the prompt's (the reference is not
    used). ``clip_i``: cosine similarity of the two images' CLIP embeddings. Both are higher-is-better.
    """
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    dev = _device(device)
    src = str(model_id_or_path)

    def load():  # the PIL image processor: torchvision is not needed
        return (CLIPModel.from_pretrained(src).to(dev).eval(), AutoTokenizer.from_pretrained(src),
                AutoImageProcessor.from_pretrained(src, backend="pil"))
    model, tokenizer, processor = _load("CLIP", src, load, "openai/clip-vit-base-patch32")

    @torch.no_grad()
    def image_emb(image):
        px = processor(images=[_pil(image)], return_tensors="pt")["pixel_values"].to(dev)
        return _features(model.get_image_features(pixel_values=px))

    @torch.no_grad()
    def clip_t(image, reference, prompt):
        t = tokenizer([prompt], padding=True, truncation=True, return_tensors="pt").to(dev)
        return _cosine(image_emb(image), _features(model.get_text_features(**t)))

    def clip_i(image, reference):
        return _cosine(image_emb(image), image_emb(reference))

    return (register_metric("clip_t", clip_t, True, f"CLIP image-prompt cosine similarity ({src})",
                            replace=replace, needs_prompt=True),
            register_metric("clip_i", clip_i, True, f"CLIP image-image cosine similarity ({src})", replace=replace))


def dino_metric(model_id_or_path, *, device=None, replace: bool = True) -> Metric:
    """Register ``dino``: cosine similarity of the two images' CLS embeddings from a ``transformers``
    DINO model (``Dinov2Model`` or any ``AutoModel`` whose first output token is CLS). Higher is better."""
    import torch
    from transformers import AutoImageProcessor, AutoModel

    dev = _device(device)
    src = str(model_id_or_path)

    def load():
        return AutoModel.from_pretrained(src).to(dev).eval(), AutoImageProcessor.from_pretrained(src, backend="pil")
    model, processor = _load("DINO", src, load, "facebook/dinov2-small")

    @torch.no_grad()
    def cls(image):
        px = processor(images=[_pil(image)], return_tensors="pt")["pixel_values"].to(dev)
        return model(pixel_values=px).last_hidden_state[:, 0]

    def dino(image, reference):
        return _cosine(cls(image), cls(reference))

    return register_metric("dino", dino, True, f"DINO CLS cosine similarity ({src})", replace=replace)
