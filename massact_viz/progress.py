"""Progress bars of every long loop: tqdm with a label saying what it counts.

In a Jupyter kernel the bar is tqdm's notebook widget while it runs; when it finishes, its output is
replaced by one line of text (``denoising steps: 20/20 [00:03, 6.1step/s]``, or nothing for a
``leave=False`` bar). A saved notebook therefore refers to no progress widget: a closed widget
left in an output shows "Error displaying widget: model not found" (and logs a console error)
when the notebook is reopened. Outside a kernel it is plain tqdm.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Iterable


@functools.lru_cache(maxsize=1)
def _notebook_class():
    """tqdm's notebook bar, extended to turn into text when it closes; None outside a Jupyter kernel
    (or without ipywidgets). Made once per process: every bar of the process uses the same class."""
    try:
        from IPython import get_ipython
        ip = get_ipython()
        if ip is None or "IPKernelApp" not in ip.config:
            return None
        import ipywidgets  # noqa: F401  (tqdm's notebook bar needs it)
        from IPython.display import display
        from tqdm.notebook import tqdm as notebook_tqdm
    except Exception:
        return None

    class TextWhenDone(notebook_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["display"] = False
            super().__init__(*args, **kwargs)
            self._handle = None
            if not self.disable:
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self):
            if self.disable:  # already closed (tqdm closes again on garbage collection), or never shown
                return super().close()
            failed = bool(self.total and self.n < self.total)
            leave = self.leave
            super().close()
            if self._handle is not None:
                meter = dict(self.format_dict, ncols=0, bar_format=None)
                text = self.format_meter(**meter) if (leave or failed) else ""
                self._handle.update({"text/plain": text}, raw=True)
                self.container.close()
                self._handle = None

    return TextWhenDone


def progress_bar(iterable: Iterable | None = None, *, desc: str, unit: str, total: int | None = None,
                 disable: bool = False, leave: bool = True, initial: int = 0, **tqdm_kwargs: Any):
    """``tqdm(iterable, desc=desc, unit=unit, ...)``: a notebook bar that ends as text in a kernel, plain
    tqdm elsewhere. ``desc`` says what is counted (``"prompts"``, ``"denoising steps"``); other keywords
    (``position``, ``file``, ``ncols``, ...) go to tqdm."""
    cls = _notebook_class()
    if cls is None:
        from tqdm.std import tqdm as cls
    return cls(iterable, desc=desc, unit=unit, total=total, disable=disable, leave=leave, initial=initial,
               **tqdm_kwargs)


@contextmanager
def pipeline_progress(pipe: Any, enable: bool, desc: str = "denoising steps"):
    """Within the block, the diffusers pipeline's own step bar is :func:`progress_bar` (labelled ``desc``,
    shown only when ``enable``); the pipeline is given back as it was. What you set with diffusers'
    ``pipe.set_progress_bar_config(...)`` still holds (``desc``, ``leave``, ``position``, ``file``, ...), except
    ``disable``: whether the bar shows is ``Model.run(progress=...)``'s to say (the toolkit's own pipelines are
    built with ``disable=True`` so that calling them directly stays quiet)."""
    had = "progress_bar" in vars(pipe)
    before = vars(pipe).get("progress_bar")

    def bar(iterable=None, total=None):
        cfg = dict(getattr(pipe, "_progress_bar_config", None) or {})
        cfg.pop("disable", None)
        return progress_bar(iterable, total=total, desc=cfg.pop("desc", desc), unit=cfg.pop("unit", "step"),
                            disable=not enable, leave=cfg.pop("leave", True), **cfg)

    object.__setattr__(pipe, "progress_bar", bar)
    try:
        yield
    finally:
        if had:
            object.__setattr__(pipe, "progress_bar", before)
        else:
            object.__delattr__(pipe, "progress_bar")
