"""Probes: experiments built on Model.run, captures and edits.

* :mod:`massact_viz.probes.disruption`: :func:`disrupt` (edit top/bottom/random-k channels, score the images);
* :mod:`massact_viz.probes.localization`: do a layer's channels say where the object is (mIoU per layer).
"""
from .disruption import DisruptionResult, disrupt

__all__ = ["disrupt", "DisruptionResult"]
