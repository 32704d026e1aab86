"""Probes: experiments built on Model.run, captures and edits.

* :mod:`massact_viz.probes.disruption`: :func:`disrupt` (edit top/bottom/random-k channels, score the images);
* :mod:`massact_viz.probes.transport`: :func:`transport` (copy a source prompt's activations into a target run);
* :mod:`massact_viz.probes.localization`: do a layer's channels say where the object is (mIoU per layer).
"""
from .disruption import DisruptionResult, disrupt
from .transport import TransportResult, source_capture, transport

__all__ = ["disrupt", "DisruptionResult", "transport", "source_capture", "TransportResult"]
