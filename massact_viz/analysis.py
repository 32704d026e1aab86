"""Analyses over :class:`~massact_viz.stats.ChannelStats` and raw activation slices (no plotting).

Every function is pure: torch tensors in, torch tensors (float32, CPU) or plain lists/dicts out.
Keywords follow :meth:`ChannelStats.get`: ``stat=`` (``"abs_mean"`` by default), ``layer=`` (a name
such as ``"double.3"`` or an index), ``stream=`` (``"image"`` by default), ``step=`` and ``image=``
(``None`` averages over the captured steps / images, as :meth:`ChannelStats.get` does; an integer
picks one). Per-layer results are ``(layers,)`` tensors aligned with ``stats.layers`` and hold NaN
where the layer has no such stream (e.g. the text stream of the last SD3 block).

* channel selections: :func:`select`, :func:`selections` (top-k, bottom-k, random-k per layer);
* set agreement: :func:`jaccard`, :func:`statistic_agreement` (``abs_mean`` vs ``mean_abs``);
* Sun et al. 2024's element criterion: :func:`sun_counts`, :func:`element_ratio`;
* stability: :func:`stability` (top-k Jaccard across steps, images or layers),
  :func:`magnitude_trace` and :func:`variance_split` (timestep vs prompt);
* bias vs content of raw activations: :func:`bias_content`.

Bad input raises :class:`~massact_viz.errors.MassActError` saying what to do.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import torch

from .errors import MassActError, check_index, check_k
from .stats import ChannelStats, _require_finite, as_stats, check_stat

KINDS = ("top", "bottom", "random")
OVER = ("steps", "images", "layers")


# ------------------------------------------------------------------ helpers
def _layer_name(stats: ChannelStats, layer: str | int) -> str:
    return stats.layers[stats.layer_index(layer)]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MassActError(f"seed must be an integer, got {seed!r}.")
    return seed


def _random_generator(seed: int, layer: str, stream: str) -> torch.Generator:
    """A generator that depends only on (seed, layer name, stream), stable across processes."""
    digest = hashlib.sha256(f"massact_viz/random-k/{seed}/{layer}/{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _channels(channels: Sequence[int], width: int) -> list[int]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Iterable):
        raise MassActError(f"channels must be a list of channel indices, got {channels!r}; "
                           "e.g. select(stats, 'top', 4, layer=...).")
    out = [check_index(c.item() if isinstance(c, torch.Tensor) else c, width, "channel",
                       f"This model has {width} channels.") for c in channels]
    if not out:
        raise MassActError("channels is empty: pass at least one channel index.")
    return out


# --------------------------------------------------------------- selections
def select(stats: ChannelStats, kind: str, k: int, *, layer: str | int, stat: str = "abs_mean",
           stream: str = "image", step: int | None = None, image: int | None = None,
           seed: int = 0) -> list[int]:
    """``k`` channel indices at ``layer`` chosen by the per-channel score ``stat``.

    The score is ``stats.get(stat, layer=layer, stream=stream, step=step, image=image)``: the mean
    over captured steps and images unless one is given. ``kind``:

    * ``"top"``: the ``k`` highest scores (the massive channels), highest first;
    * ``"bottom"``: the ``k`` lowest scores, lowest first (the seed paper's "low-statistic"
      control);
    * ``"random"``: ``k`` channels drawn uniformly **from those outside the top-k** (SPARK's
      random-K control), sorted ascending. The draw depends only on ``(seed, layer name, stream)``,
      so it is reproducible across processes and the same for ``layer="double.3"`` and its index;
      it needs ``2k <= channels``.
    """
    as_stats(stats)
    if kind not in KINDS:
        raise MassActError(f"kind must be one of {KINDS}, got {kind!r}.")
    check_stat(stats, stat)
    name = _layer_name(stats, layer)
    v = stats.get(stat, layer=name, stream=stream, step=step, image=image)
    _require_finite(v, name, stream)
    width = v.numel()
    check_k(k, width)
    if kind == "top":
        return torch.topk(v, k).indices.tolist()
    if kind == "bottom":
        return torch.topk(v, k, largest=False).indices.tolist()
    _check_seed(seed)
    if 2 * k > width:
        raise MassActError(f"random-k draws {k} channels from the {width - k} outside the top-{k}, so k must be "
                           f"at most {width // 2} (half of the {width} channels); use a smaller k.")
    return random_outside(torch.topk(v, k).indices.tolist(), k, width, seed=seed, layer=name, stream=stream)


def random_outside(top: Sequence[int], k: int, width: int, *, seed: int, layer: str, stream: str = "image") -> list[int]:
    """``k`` channels drawn uniformly without replacement from the ``width`` channels outside ``top``, sorted:
    the one random-k rule of every probe. The draw depends only on ``(seed, layer name, stream)``."""
    keep = torch.ones(width, dtype=torch.bool)
    keep[list(top)] = False
    pool = keep.nonzero().flatten()
    if k > pool.numel():
        raise MassActError(f"random-k needs {k} channels outside the {len(set(top))} excluded ones; only "
                           f"{pool.numel()} of {width} remain. Use a smaller k.")
    return sorted(pool[torch.randperm(pool.numel(), generator=_random_generator(seed, layer, stream))[:k]].tolist())


def selections(stats: ChannelStats, kind: str, k: int, *, stat: str = "abs_mean", stream: str = "image",
               step: int | None = None, image: int | None = None, seed: int = 0) -> dict[str, list[int]]:
    """:func:`select` at every layer: ``{layer name: channels}`` in execution order.

    Layers without the stream (e.g. the last SD3 block's text stream) are left out of the dict.
    """
    as_stats(stats)
    check_stat(stats, stat)
    v = stats.get(stat, stream=stream, step=step, image=image)  # validates stream, step, image
    out = {name: select(stats, kind, k, layer=name, stat=stat, stream=stream, step=step, image=image, seed=seed)
           for li, name in enumerate(stats.layers) if torch.isfinite(v[li]).all()}
    if not out:
        raise MassActError(f"no layer of this capture has finite {stream}-stream statistics; use stream='image'.")
    return out


# ------------------------------------------------------------------ agreement
def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """Jaccard index |a ∩ b| / |a ∪ b| of two channel sets (order and duplicates ignored).

    1 means the same channels, 0 no channel in common. Two **empty** sets count as identical (1.0),
    the convention of the seed paper's reproduction for empty masks.
    """
    sa, sb = _as_set(a, "a"), _as_set(b, "b")
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


def _as_set(x, what: str) -> set[int]:
    if isinstance(x, torch.Tensor):
        x = x.flatten().tolist()
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        raise MassActError(f"jaccard: {what} must be a collection of channel indices, got {x!r}.")
    out = set()
    for c in x:
        if isinstance(c, bool) or not isinstance(c, int):
            raise MassActError(f"jaccard: {what} must hold integer channel indices, got {c!r}.")
        out.add(c)
    return out


def statistic_agreement(stats: ChannelStats, k: int, *, stream: str = "image", step: int | None = None,
                        image: int | None = None) -> dict[str, torch.Tensor]:
    """Does the choice of statistic matter? Per-layer Jaccard of the channel sets picked by
    ``abs_mean`` (|mean over tokens|, the seed paper's formula) and ``mean_abs`` (mean over tokens
    of |x|, SPARK's).

    Returns ``{"top": (layers,), "bottom": (layers,)}``: the Jaccard of the two top-k sets and of
    the two bottom-k sets at each layer (1 = both statistics pick the same channels; NaN where the
    layer lacks the stream). Channels of consistent sign score alike under both; a channel of large
    magnitude and mixed sign (mean near 0) is high under ``mean_abs`` but low under ``abs_mean``,
    which is where the two disagree, mostly in the bottom-k.
    """
    as_stats(stats)
    a = stats.get("abs_mean", stream=stream, step=step, image=image)
    b = stats.get("mean_abs", stream=stream, step=step, image=image)
    check_k(k, a.shape[-1])
    out = {"top": torch.full((len(stats.layers),), float("nan")),
           "bottom": torch.full((len(stats.layers),), float("nan"))}
    for li in range(len(stats.layers)):
        if not (torch.isfinite(a[li]).all() and torch.isfinite(b[li]).all()):
            continue
        for key, largest in (("top", True), ("bottom", False)):
            out[key][li] = jaccard(torch.topk(a[li], k, largest=largest).indices,
                                   torch.topk(b[li], k, largest=largest).indices)
    return out


# ------------------------------------------------------------ Sun criterion
def _require_sun(stats: ChannelStats) -> None:
    if "sun_count" not in stats.values:
        raise MassActError("this capture has no Sun et al. statistics (it was made with Capture(sun=False) or "
                           "--no-sun); capture again with sun=True.")


def sun_counts(stats: ChannelStats, *, stream: str = "image", step: int | None = None,
               image: int | None = None) -> torch.Tensor:
    """Per layer, the number of elements of one hidden state that meet Sun et al. 2024's criterion
    (|x| > 100 and |x| > 1000 x median |x| of that hidden state), i.e. ``sun_count`` summed over
    channels, then averaged over the captured images and steps (or at the given ``step``/``image``).

    Returns ``(layers,)``; 0 means no massive element in the Sun sense (the usual reading on
    random weights); NaN where the layer lacks the stream.
    """
    as_stats(stats)
    _require_sun(stats)
    t = stats.rows(stats.values["sun_count"][:, :, :, stats.stream_index(stream)], step=step, image=image)
    return torch.nanmean(t.sum(dim=-1).flatten(0, 1), dim=0)  # (L,)


def element_ratio(stats: ChannelStats, *, stream: str = "image", step: int | None = None,
                  image: int | None = None) -> torch.Tensor:
    """Sun et al.'s element-level top-1 / median per layer: the largest |x| of the whole hidden
    state (max over channels of ``max_abs``) divided by the median |x| of that same hidden state
    (``median_abs``), computed per image and step and then averaged over them.

    Returns ``(layers,)``. This is a ratio of single *elements*, unlike :meth:`ChannelStats.ratio`
    (a ratio of per-channel scores): the maximum of a few thousand Gaussian elements alone is
    several times their median, so random weights read about 4-9 here; Sun et al.'s massive
    activations read 1000 or more. NaN where the layer lacks the stream; inf if the median is 0.
    """
    as_stats(stats)
    _require_sun(stats)
    si = stats.stream_index(stream)
    top1 = stats.rows(stats.values["max_abs"][:, :, :, si], step=step, image=image).amax(dim=-1)  # (P, S, L)
    med = stats.rows(stats.median_abs[:, :, :, si], step=step, image=image)
    return torch.nanmean((top1 / med).flatten(0, 1), dim=0)


# ------------------------------------------------------------------ stability
def stability(stats: ChannelStats, k: int, *, over: str = "steps", layer: str | int | None = None,
              stat: str = "abs_mean", stream: str = "image", step: int | None = None,
              image: int | None = None) -> torch.Tensor:
    """How stable is the top-k? A symmetric ``(n, n)`` matrix of Jaccard indices between top-k sets.

    * ``over="steps"``: each captured step's own top-k at ``layer`` (mean over images, or the given
      ``image``); rows follow ``stats.steps``.
    * ``over="images"``: each image's (prompt's) own top-k at ``layer`` (mean over steps, or the
      given ``step``); rows follow the image rows (``stats.prompts``).
    * ``over="layers"``: each layer's top-k (averaged as in :meth:`ChannelStats.get`); rows follow
      ``stats.layers``; ``layer`` must be None. Layers without the stream get NaN rows and columns.

    The diagonal is 1; an off-diagonal 1 means the same channels are on top in both.
    """
    as_stats(stats)
    if over not in OVER:
        raise MassActError(f"over must be one of {OVER}, got {over!r}.")
    check_stat(stats, stat)
    if over == "layers":
        if layer is not None:
            raise MassActError("stability(over='layers') compares all layers: leave layer=None.")
        v = stats.get(stat, stream=stream, step=step, image=image)  # (L, D)
    else:
        if layer is None:
            raise MassActError(f"stability(over={over!r}) compares top-k at one layer: pass layer= (a name "
                               f"such as {stats.layers[0]!r} or an index).")
        li, si = stats.layer_index(layer), stats.stream_index(stream)
        t = stats.values[stat][:, :, li, si].float()  # (P, S, D)
        if over == "steps":
            if step is not None:
                raise MassActError("stability(over='steps') compares the steps: leave step=None.")
            t = stats.rows(t, image=image)
            v = torch.nanmean(t, dim=0)  # (S, D)
        else:
            if image is not None:
                raise MassActError("stability(over='images') compares the images: leave image=None.")
            t = stats.rows(t, step=step)
            v = torch.nanmean(t, dim=1)  # (P, D)
        if not torch.isfinite(v).all():
            _require_finite(v, _layer_name(stats, layer), stream)
    check_k(k, v.shape[-1])
    ok = torch.isfinite(v).all(dim=-1).tolist()
    sets = [set(torch.topk(row, k).indices.tolist()) if good else None for row, good in zip(v, ok)]
    n = len(sets)
    m = torch.full((n, n), float("nan"))
    for i in range(n):
        for j in range(i, n):
            if sets[i] is not None and sets[j] is not None:
                m[i, j] = m[j, i] = jaccard(sets[i], sets[j])
    return m


def magnitude_trace(stats: ChannelStats, channels: Sequence[int], *, layer: str | int, stat: str = "abs_mean",
                    stream: str = "image") -> torch.Tensor:
    """The mean score ``stat`` of ``channels`` at ``layer``, per image and captured step.

    Returns ``(images, steps)``: row i is image i (``stats.prompts[i]``), column j is step
    ``stats.steps[j]``. Read along a row for "does it change with the timestep", down a column for
    "does it change with the prompt"; :func:`variance_split` puts numbers on both.
    """
    as_stats(stats)
    check_stat(stats, stat)
    li, si = stats.layer_index(layer), stats.stream_index(stream)
    t = stats.values[stat][:, :, li, si].float()  # (P, S, D)
    ch = _channels(channels, t.shape[-1])
    out = t[..., ch].mean(dim=-1)
    if not torch.isfinite(out).all():
        _require_finite(out, _layer_name(stats, layer), stream)
    return out


def variance_split(stats: ChannelStats, channels: Sequence[int], *, layer: str | int, stat: str = "abs_mean",
                   stream: str = "image") -> dict[str, float]:
    """What share of the variation of ``channels``' magnitude comes from the step vs the prompt?

    On the trace ``T[i, s] = magnitude_trace(...)`` (P images x S steps, grand mean ``m``, image
    means ``m_i.``, step means ``m_.s``), the two-way decomposition without replication::

        SS_total = Σ_is (T[i,s] - m)²
        SS_step  = P · Σ_s (m_.s - m)²                  between-step variance of the step means
        SS_image = S · Σ_i (m_i. - m)²                  between-image variance of the image means
        SS_resid = Σ_is (T[i,s] - m_i. - m_.s + m)²     the step x image interaction (what's left)

    These add up exactly (SS_total = SS_step + SS_image + SS_resid). Returns the shares
    ``{"step": SS_step/SS_total, "image": SS_image/SS_total, "residual": SS_resid/SS_total}``,
    which sum to 1; ``"step"`` near 1 says the timestep drives the magnitude (Gan et al.'s reading),
    ``"image"`` near 1 says the prompt does. With one image (or one step) that share is 0 and the
    residual is 0 too. All three are NaN when the trace is constant (SS_total = 0).
    """
    t = magnitude_trace(stats, channels, layer=layer, stat=stat, stream=stream).double()
    m = t.mean()
    mi, ms = t.mean(dim=1, keepdim=True), t.mean(dim=0, keepdim=True)
    ss = {"step": float(t.shape[0] * ((ms - m) ** 2).sum()),
          "image": float(t.shape[1] * ((mi - m) ** 2).sum()),
          "residual": float(((t - mi - ms + m) ** 2).sum())}
    total = float(((t - m) ** 2).sum())
    if not total > 0:
        return {key: float("nan") for key in ss}
    return {key: val / total for key, val in ss.items()}


# ------------------------------------------------------------ bias vs content
def bias_content(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split each channel of raw activations into a constant over tokens (bias) and the per-token
    remainder (content), and say how much of the channel's energy each holds.

    ``x`` is ``(images, tokens, channels)``, as in ``run.raw["double.3/step2/image"]``. Per image
    and channel, with ``N`` tokens and mean ``μ`` over them, the energy ``Σ_n x²`` splits exactly into
    ``N·μ²`` (bias) plus ``Σ_n (x - μ)²`` (content), so::

        bias_share    = N·μ² / Σ_n x²       1 = the channel is a constant offset (Sun et al.'s "bias")
        content_share = 1 - bias_share      1 = zero-mean, token-dependent signal

    Both are averaged over images and returned as ``{"bias_share": (channels,), "content_share":
    (channels,)}`` (float32); a channel that is exactly 0 everywhere gets NaN.
    """
    if not isinstance(x, torch.Tensor):
        raise MassActError(f"bias_content expects a torch tensor (images, tokens, channels), got "
                           f"{type(x).__name__}; e.g. run.raw['double.3/step2/image'].")
    if x.ndim != 3 or x.shape[1] == 0 or x.shape[0] == 0 or x.shape[2] == 0:
        raise MassActError(f"bias_content expects a non-empty (images, tokens, channels) tensor, got shape "
                           f"{tuple(x.shape)}; for one image use x[None].")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise MassActError("bias_content: x holds NaN or inf (an overflowed float16 capture?); "
                           "capture in float32 or bfloat16.")
    n = x.shape[1]
    energy = (x ** 2).sum(dim=1)  # (P, D)
    bias = n * x.mean(dim=1) ** 2
    share = torch.where(energy > 0, bias / energy.clamp_min(torch.finfo(torch.float64).tiny),
                        torch.full_like(energy, float("nan"))).clamp(0, 1)
    bias_share = torch.nanmean(share, dim=0).float()
    return {"bias_share": bias_share, "content_share": 1 - bias_share}


__all__ = ["select", "selections", "jaccard", "statistic_agreement", "sun_counts", "element_ratio", "stability",
           "magnitude_trace", "variance_split", "bias_content", "KINDS"]
