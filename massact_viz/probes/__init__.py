"""Probes: experiments built on Model.run, captures and edits.

* :mod:`massact_viz.probes.disruption`: :func:`disrupt` (edit top/bottom/random-k channels, score the images);
* :mod:`massact_viz.probes.transport`: :func:`transport` (copy a source prompt's activations into a target run,
  with controls and metrics) and :func:`interpolate` (sweep k or alpha from the target toward the source);
* :mod:`massact_viz.probes.inversion`: :func:`invert` / :func:`image_source_run` (a reference image as a transport source);
* :mod:`massact_viz.probes.localization`: do a layer's channels say where the object is (mIoU per layer).

Each probe has one shape: a plan (``plan_disruption``, ``plan_localization``, ``plan_transport``: every
argument checked into an immutable plan before any generation), its execution (``execute(model, plan)``)
and its results (a class with ``save``/``load``).
"""
from .disruption import DisruptionPlan, DisruptionResult, disrupt, plan_disruption
from .inversion import Inversion, encode_image, image_source_run, invert
from .localization import LocalizationPlan, LocalizationResult, localize, plan_localization
from .sources import SourceCache, source_capture
from .transport import CONTROLS, Interpolation, TransportPlan, TransportResult, TransportStudy, interpolate, \
    plan_transport, transport, transport_edit, transport_metrics, transport_study

__all__ = ["disrupt", "plan_disruption", "DisruptionPlan", "DisruptionResult", "localize", "plan_localization",
           "LocalizationPlan", "LocalizationResult", "transport", "transport_edit", "plan_transport", "TransportPlan", "source_capture",
           "SourceCache", "TransportResult", "transport_metrics", "transport_study", "TransportStudy",
           "interpolate", "Interpolation", "CONTROLS",
           "invert", "Inversion", "encode_image", "image_source_run"]
