"""Family adapters: which DiT architectures massact_viz understands, and how to add one."""
from __future__ import annotations

from typing import Any

from ..errors import UnsupportedArchitectureError
from .base import Block, BlockGroup, Family, LAYOUTS, STREAMS
from .flux import FLUX
from .flux2 import FLUX2
from .pixart import PIXART
from .qwenimage import QWENIMAGE
from .sana import SANA
from .sd3 import SD3

_REGISTRY: dict[str, Family] = {f.name: f for f in (FLUX, FLUX2, QWENIMAGE, SANA, SD3, PIXART)}


def families() -> dict[str, Family]:
    """All registered families by name."""
    return dict(_REGISTRY)


def register(family: Family) -> Family:
    """Add (or replace) a family adapter, e.g. for a new DiT class."""
    _REGISTRY[family.name] = family
    return family


def detect(pipe: Any) -> Family:
    """The family of ``pipe``'s transformer, or an error naming the supported ones."""
    for fam in _REGISTRY.values():
        if fam.matches(pipe):
            return fam
    tr = getattr(pipe, "transformer", None)
    got = type(tr).__name__ if tr is not None else f"a {type(pipe).__name__} without a .transformer"
    supported = "; ".join(f"{f.title} ({', '.join(f.transformer_classes)})" for f in _REGISTRY.values())
    raise UnsupportedArchitectureError(
        f"unsupported architecture: {got}. massact_viz supports {supported}. To add one, describe "
        f"its block lists with massact_viz.families.Family(...) and call "
        f"massact_viz.families.register(...) (see massact_viz/families/flux.py for an example).")


__all__ = ["Block", "BlockGroup", "Family", "LAYOUTS", "STREAMS", "families", "register", "detect"]
