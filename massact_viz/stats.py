"""Per-channel statistics of block outputs, indexed by (image, step, layer, stream, channel).

Statistics (all over the *image tokens* of the conditional branch; text-stream statistics over
the non-padding text tokens):

``abs_mean``  |mean over tokens|, the seed paper's score (arXiv 2605.13974), the default.
``mean_abs``  mean over tokens of |x| (SPARK and later reproductions).
``max_abs``   max over tokens of |x|.
``sun_count`` number of elements per channel with |x| > 100 and |x| > 1000 x the median |x| of
              that hidden state (Sun et al. 2024's element criterion), with ``median_abs`` kept;
              the median is exact up to 65,536 elements, else taken over evenly strided tokens
              (every channel kept).

Missing entries (a text stream that a block does not have, steps or layers not captured) are NaN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import MassActError, check_index, check_k

STATISTICS = ("abs_mean", "mean_abs", "max_abs")
SUN_THRESHOLD = 100.0
SUN_RATIO = 1000.0
#: The Sun median is taken over about this many elements per hidden state (every channel of evenly
#: strided tokens; exact below it). A full median of a FLUX-scale state costs as much as a block.
SUN_MEDIAN_SAMPLE = 1 << 16


@dataclass
class ChannelStats:
    """Captured statistics; tensors are (images, steps, layers, streams, channels) float32 on CPU."""

    values: dict[str, torch.Tensor]  # name -> (P, S, L, St, D); includes "sun_count"
    median_abs: torch.Tensor  # (P, S, L, St)
    layers: list[str]
    steps: list[int]
    streams: list[str]
    prompts: list[str]  # one per image row

    # ------------------------------------------------------------ indexing
    @property
    def width(self) -> int:
        return int(next(iter(self.values.values())).shape[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.values.values())).shape)

    def layer_index(self, layer: str | int) -> int:
        if isinstance(layer, str):
            if layer not in self.layers:
                raise MassActError(f"unknown layer {layer!r}; this capture has {_preview(self.layers)}.")
            return self.layers.index(layer)
        return check_index(layer, len(self.layers), "layer", f"Names: {_preview(self.layers)}.")

    def rows(self, t: torch.Tensor, *, image: int | None = None, step: int | None = None) -> torch.Tensor:
        """Keep one image and/or one captured step of an ``(images, steps, ...)`` tensor of these statistics
        (dimensions kept)."""
        if image is not None:
            t = t[[check_index(image, t.shape[0], "image", f"This capture has {t.shape[0]} images.")]]
        if step is not None:
            t = t[:, [self.step_index(step)]]
        return t

    def step_index(self, step: int) -> int:
        """Position of denoising step ``step`` among the captured steps (negative: from the end)."""
        if isinstance(step, bool) or not isinstance(step, int):
            raise MassActError(f"step must be an integer, got {step!r}.")
        if step in self.steps:
            return self.steps.index(step)
        if -len(self.steps) <= step < 0:
            return step % len(self.steps)
        raise MassActError(f"step {step} was not captured; captured steps are {self.steps}.")

    def stream_index(self, stream: str) -> int:
        if stream not in self.streams:
            raise MassActError(f"unknown stream {stream!r}; this capture has {self.streams}.")
        return self.streams.index(stream)

    def get(self, stat: str = "abs_mean", *, layer: str | int | None = None, step: int | None = None,
            stream: str = "image", image: int | None = None) -> torch.Tensor:
        """Select a statistic; ``None`` for step/image averages over them (NaN-aware).

        Returns (layers, D) when ``layer`` is None, else (D,).
        """
        if stat not in self.values:
            raise MassActError(f"unknown statistic {stat!r}; available: {sorted(self.values)}.")
        t = self.values[stat][:, :, :, self.stream_index(stream)].float()  # (P, S, L, D)
        t = t[[check_index(image, t.shape[0], "image")]] if image is not None else t
        t = t[:, [self.step_index(step)]] if step is not None else t
        t = torch.nanmean(t.flatten(0, 1), dim=0)  # (L, D)
        return t if layer is None else t[self.layer_index(layer)]

    def top_k(self, k: int, *, layer: str | int, stat: str = "abs_mean", stream: str = "image",
              step: int | None = None, image: int | None = None) -> tuple[list[int], list[float]]:
        """Indices and scores of the ``k`` largest channels at ``layer`` (averaged as in :meth:`get`)."""
        if layer is None:
            raise MassActError("top_k needs a layer (a name like 'double.3' or an index); see stats.layers.")
        v = self.get(stat, layer=layer, step=step, stream=stream, image=image)
        _require_finite(v, layer, stream)
        check_k(k, v.numel())
        s, i = torch.topk(v, k)
        return i.tolist(), s.tolist()

    def ratio(self, *, stat: str = "abs_mean", stream: str = "image", step: int | None = None,
              image: int | None = None) -> torch.Tensor:
        """Top-1 / median channel score per layer (NaN where the stream is absent); of one image's scores
        with ``image=``, else of the scores averaged over images."""
        v = self.get(stat, step=step, stream=stream, image=image)
        return v.max(dim=-1).values / v.median(dim=-1).values

    def ratio_interval(self, layer: str | int, *, stat: str = "abs_mean", stream: str = "image",
                       step: int | None = None):
        """Top-1 / median of ``layer`` per image, as a mean over the images with its 95 % bootstrap interval
        (:class:`massact_viz.intervals.Interval`; ``n`` = images)."""
        from .intervals import mean_interval
        li = self.layer_index(layer)
        return mean_interval([float(self.ratio(stat=stat, stream=stream, step=step, image=i)[li])
                              for i in range(len(self.prompts))])

    def summary(self, k: int = 5, *, stat: str = "abs_mean", step: int | None = None) -> list[dict]:
        """Per (layer, stream): top-k channels and scores, the median score and top-1/median.

        Non-finite values are kept visible, never dropped: ``non_finite`` counts the channels whose value is
        inf or NaN (an overflow, NaN latents or an edit), the other numbers describe the finite channels
        (``None`` when there are none). Text-stream rows of blocks without a text stream are left out."""
        check_k(k, self.width)
        rows = []
        for st in self.streams:
            v = self.get(stat, step=step, stream=st)
            for li, name in enumerate(self.layers):
                ok = torch.isfinite(v[li])
                if st != "image" and v[li].isnan().all():
                    continue  # this block has no such stream (or nothing of it survived: the image row says so)
                fin = v[li][ok]
                s, i = torch.topk(fin, min(k, fin.numel())) if fin.numel() else (fin, fin.long())
                i = ok.nonzero().flatten()[i] if fin.numel() else i
                med = float(fin.median()) if fin.numel() else None
                top = float(s[0]) if fin.numel() else None
                rows.append({"layer": name, "stream": st, "top_channels": i.tolist(),
                             "top_scores": [float(x) for x in s], "median_score": med,
                             "ratio": None if top is None else (top / med if med > 0 else None),
                             "non_finite": int((~ok).sum())})
        return rows


def as_stats(obj) -> ChannelStats:
    """``obj`` itself if it is a ChannelStats, or ``obj.stats`` (a Run); a clear error otherwise."""
    st = getattr(obj, "stats", obj)
    if not isinstance(st, ChannelStats):
        raise MassActError(f"expected a ChannelStats or a Run (run.stats), got {type(obj).__name__}. "
                           "Capture statistics with model.run(...) or load a run with Run.load(path).")
    return st


def check_stat(stats: ChannelStats, stat: str) -> None:
    """A clear error when ``stat`` is not one of the captured statistics."""
    if stat not in stats.values:
        raise MassActError(f"unknown statistic {stat!r}; available: {sorted(stats.values)}.")


def _preview(names: Sequence[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _require_finite(v: torch.Tensor, layer, stream: str) -> None:
    if not torch.isfinite(v).all():
        raise MassActError(
            f"no finite {stream}-stream statistics at layer {layer!r}: this block has no {stream} stream "
            f"(or it was not captured, or it overflowed). Use stream='image' or another layer.")


class StatsCollector:
    """Reduces block outputs to per-channel statistics inside the forward, on the model's device.

    Memory is (images x steps x layers x streams x channels) per statistic, whatever the number of
    tokens. The device buffer holds one batch (allocated on its first block output, one write per
    block output, no host sync); :meth:`end` moves it to the CPU result after each batch.
    """

    def __init__(self, layers: Sequence[str], steps: Sequence[int], streams: Sequence[str],
                 n_images: int, sun: bool = True):
        self.layers, self.steps, self.streams = list(layers), list(steps), list(streams)
        self._layer_pos = {n: i for i, n in enumerate(self.layers)}
        self._step_pos = {s: i for i, s in enumerate(self.steps)}
        self.names = STATISTICS + (("sun_count",) if sun else ())
        self.n_images, self.sun = n_images, sun
        self.values: torch.Tensor | None = None  # CPU (statistics, P, S, L, St, D)
        self.median: torch.Tensor | None = None  # CPU (P, S, L, St)
        self.written: torch.Tensor | None = None  # CPU (P, S, L, St) bool: entries a block output filled
        self._dev: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.offset, self.batch = 0, n_images

    def begin(self, offset: int, batch: int) -> None:
        """Start a pipeline call whose images are rows ``offset .. offset + batch`` of the result."""
        self.offset, self.batch, self._dev = offset, batch, None

    def __call__(self, site) -> None:
        s_pos = self._step_pos.get(site.step)
        l_pos = self._layer_pos.get(site.block.name)
        rows = site.cond
        if s_pos is None or l_pos is None or rows.stop == rows.start:
            return
        for st_pos, stream in enumerate(self.streams):
            x = site.stream(stream)
            if x is None:
                continue
            x, mask = x[rows], None
            if stream == "text" and site.text_mask is not None:
                if site.text_index is not None:
                    x = x.index_select(1, site.text_index)
                else:
                    mask = site.text_mask[rows]
            if self._dev is None:
                shape = (self.batch, len(self.steps), len(self.layers), len(self.streams))
                self._dev = (torch.full((len(self.names),) + shape + (x.shape[-1],), float("nan"), device=x.device),
                             torch.full(shape, float("nan"), device=x.device),
                             torch.zeros(shape, dtype=torch.bool, device=x.device))
            stacked, med = reduce_stack(x, mask, self.sun)
            buf, median, written = self._dev
            buf[:, :, s_pos, l_pos, st_pos] = stacked
            written[:, s_pos, l_pos, st_pos] = True
            if med is not None:
                median[:, s_pos, l_pos, st_pos] = med

    def end(self) -> None:
        """Move the current batch's statistics to the CPU result."""
        if self._dev is None:
            return
        buf, median, written = (t.cpu() for t in self._dev)
        if self.values is None:
            shape = (self.n_images,) + tuple(buf.shape[2:5])
            self.values = torch.full((len(self.names),) + shape + (buf.shape[-1],), float("nan"))
            self.median = torch.full(shape, float("nan"))
            self.written = torch.zeros(shape, dtype=torch.bool)
        p = slice(self.offset, self.offset + self.batch)
        self.values[:, p], self.median[p], self.written[p] = buf, median, written
        self._dev = None

    def result(self, prompts: Sequence[str]) -> ChannelStats:
        self.end()
        if self.values is None:
            raise MassActError("nothing was captured: check the capture's layers, steps and streams.")
        return ChannelStats({n: self.values[i] for i, n in enumerate(self.names)}, self.median, self.layers,
                            self.steps, self.streams, list(prompts))

    def overflowed(self) -> bool:
        """True when a filled entry is not finite (an overflowing hidden state, typically float16)."""
        if self.values is None:
            return False
        bad = ~torch.isfinite(self.values).all(dim=-1).all(dim=0)  # (P, S, L, St)
        return bool((bad & self.written).any())


def reduce_stack(x: torch.Tensor, mask: torch.Tensor | None = None, sun: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-channel statistics of ``x`` (B, N, D) over tokens, stacked as (statistics, B, D), and the
    median |x| per row (or None without ``sun``). ``mask`` (B, N) bool selects tokens per row.

    Order: ``abs_mean, mean_abs, max_abs[, sun_count]``. Accumulates in float32 whatever the dtype.
    No host synchronisation, so it is cheap to call from a forward hook on a GPU.
    """
    a = x.abs()
    if mask is None:
        out = [x.mean(dim=1, dtype=torch.float32).abs_(), a.mean(dim=1, dtype=torch.float32), a.amax(dim=1).float()]
    else:
        w = mask.to(torch.float32)
        w = w / w.sum(dim=1, keepdim=True).clamp_min(1.0)
        keep = mask[..., None]
        out = [torch.einsum("bnd,bn->bd", x.float(), w).abs_(), torch.einsum("bnd,bn->bd", a.float(), w),
               a.masked_fill(~keep, 0).amax(dim=1).float()]
    med = None
    if sun:
        d = x.shape[-1]
        stride = max(1, -(-x.shape[1] * d // SUN_MEDIAN_SAMPLE))  # subsample tokens, keep every channel
        sub = a[:, ::stride].float()
        if mask is not None:
            sub = sub.masked_fill(~mask[:, ::stride, None], float("nan"))
        med = sub.flatten(1).nanmedian(dim=1).values  # (B,)
        thr = (SUN_RATIO * med).clamp_min_(SUN_THRESHOLD)
        hit = a > thr[:, None, None]   # element by element in float32 (on a GPU without a float32 copy of x)
        if mask is not None:
            hit &= keep
        out.append(hit.sum(dim=1, dtype=torch.float32))
    return torch.stack(out), med


def reduce_channels(x: torch.Tensor, mask: torch.Tensor | None = None, sun: bool = True) -> dict[str, torch.Tensor]:
    """:func:`reduce_stack` as a dict by statistic name (plus ``median_abs`` with ``sun``)."""
    stacked, med = reduce_stack(x, mask, sun)
    names = STATISTICS + (("sun_count",) if sun else ())
    out = {n: stacked[i] for i, n in enumerate(names)}
    if med is not None:
        out["median_abs"] = med
    return out
