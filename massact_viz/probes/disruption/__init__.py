"""The disruption probe: edit top-k / bottom-k / random-k channels and measure the image damage.

``disrupt(model, prompts)`` runs the prompts once unedited (the baseline, whose statistics choose
the channels of each layer with :func:`massact_viz.analysis.select`, averaged over the edited steps
and the images), then once per configuration ``(set, k, draw)`` with an :class:`~massact_viz.edits.Edit`
at the same seed, and compares every edited image with its baseline image under the chosen metrics.

The code is split by purpose, like the transport probe's: :mod:`.plan` validates every setting into an
immutable :class:`~.plan.DisruptionPlan` (one :class:`~.plan.Config` per configuration) before anything
runs; :mod:`.execution` runs the baseline and each configuration; :mod:`.results` holds
:class:`DisruptionResult` and its directory layout; :mod:`.probe` has :func:`disrupt` (plan, then
:func:`execute`).

With ``out=`` each finished configuration is saved under ``out/configs/<key>/`` (and the baseline
under ``out/baseline/``); a rerun with the same settings skips what is done. Adding ks or draws to
a finished sweep only runs the new configurations. ``layer_sets={name: layer spec}`` adds a layer
dimension: every configuration runs once per layer set (channels chosen per layer from the same single
baseline, which captures the union of the layers); a rerun with an added layer set only runs its
configurations. The directory layout is the one :meth:`DisruptionResult.save`
writes (JSON and PNG, no pickle).
"""
from __future__ import annotations

from .plan import Config, DisruptionPlan, plan_disruption
from .probe import disrupt, execute
from .results import DisruptionResult

__all__ = ["disrupt", "execute", "plan_disruption", "DisruptionPlan", "Config", "DisruptionResult"]
