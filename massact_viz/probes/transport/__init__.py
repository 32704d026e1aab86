"""Text-conditioned activation transport: copy a source prompt's activations into a target run.

``transport(model, source, target)`` generates both prompts from the **same initial noise** and, at
each transported (layer, step), replaces the target's block output under the mask ``M = p m^T``
(``p`` the chosen image tokens, ``m`` the chosen channels) by the source's (paper section 1.3 step 4)::

    X_target <- X_target * (1 - alpha M) + X_source * alpha M

``alpha = 1`` is the plain replacement; ``alpha = 0`` (or an all-False token mask) leaves the target
exactly as it was.

The code is split by purpose: :mod:`.plan` validates every setting into an immutable
:class:`~.plan.TransportPlan` before anything runs; :mod:`.execution` runs the unedited source and
target, chooses the channels, caches the source and runs each edited row (:func:`execute` runs a plan);
:mod:`.results` holds :class:`TransportResult` (save / load) and :func:`transport_metrics`; :mod:`.study`
repeats a transport over many pairs and seeds (:func:`transport_study`, intervals over pairs).

Modes:

* ``"cached"`` (default): the unedited source and target run once each; the source then runs once
  more keeping only the channels, streams and branches the transported row and its controls need
  (:func:`~massact_viz.probes.sources.source_capture`), and each edited target reads them back.
  ``source_run=`` reuses a source run across many targets (keep every channel in it).
* ``"batched"``: source and target in one batch from the same noise; the edit copies the source row
  into the target row inside the same forward pass (nothing cached, twice the batch).

CFG branches (``branch``): ``"both"`` (default) transports into each branch from the source's
**matching** branch (conditional from conditional, unconditional from unconditional), for separate-call
CFG (FLUX true CFG, Qwen-Image, FLUX.2, the embedded model) and batched CFG (SD3, PixArt, SANA) alike,
in both modes. ``"cond"`` edits only the conditional branch and leaves the unconditional one on the
target's own trajectory: guidance ``uncond + s (cond - uncond)`` then amplifies the mismatch at every
step (measured on the embedded model, CFG 4: swapping every channel of both streams that way gives noise
88.7 uint8 levels from the source, matched branches a clean scene 17.4 levels away; tests/test_transport_invariants.py
and BENCHMARKS.md "Defaults by measurement"), so it is an option for study, not the default. Guidance-distilled models (FLUX.1 without true CFG) have only conditional
calls and the two settings agree.

Conditioning (``conditioning``): ``"target"`` (default) keeps the target's prompt inputs outside the
blocks' token streams; ``"source"`` also takes those from the source at the transported steps (the
family's ``conditioning_kwargs``: for FLUX and SD3 the text embeddings and the pooled vector that
drives every block's AdaLN and the final norm). Together with the ``full-swap`` control at every layer
and step this reproduces the source image (tested).

Channels: ``"source"`` / ``"target"`` pick each layer's top-``k`` by ``stat`` (default ``abs_mean``)
of the unedited source / target run over the transported steps, ``"union"`` takes the set union of
both; a list gives the same channels at every layer, a ``{layer: list}`` dict its own per layer. With
``stream="both"`` chosen channels come from the image-stream statistics and are transported in both
streams; the text stream is always transported over all its tokens (FLUX and SD3 pad every prompt to one
length; Qwen-Image encodes each to its own length, so cached mode needs prompts of equal token length for
the text stream, the prompt inputs or the full swap, checked in the plan; batched mode pads the pair).
"""
from __future__ import annotations

from ..sources import SourceCache, source_capture
from .execution import RowEdit, TransportEdit, cache_bytes, cache_source, choose, row_edits, run_baseline, run_row
from .plan import BRANCHES, CHANNEL_KINDS, CONDITIONING, CONTROLS, MAX_CACHE_GB, MODES, TransportPlan, check_alpha, \
    plan_transport
from .probe import Interpolation, execute, interpolate, transport, transport_edit
from .results import MetricsTable, TransportResult, judge_row, metrics_table, transport_metrics
from .study import TransportStudy, read_pairs, transport_study


__all__ = ["transport", "transport_edit", "execute", "plan_transport", "TransportPlan", "source_capture", "SourceCache",
           "transport_study", "TransportStudy", "read_pairs",
           "TransportResult", "transport_metrics", "metrics_table", "MetricsTable", "judge_row", "interpolate", "Interpolation", "TransportEdit",
           "RowEdit", "CONTROLS", "BRANCHES", "CONDITIONING", "MODES", "CHANNEL_KINDS"]
