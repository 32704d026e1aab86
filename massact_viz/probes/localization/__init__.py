"""Localization probe: do the massive channels of one layer say *where* the object is?

The protocol (seed paper step 3, as pinned by the third-party reproduction; see
``shared/research/paper.md`` sections 1.3-1.4):

1. take the image tokens ``X`` (tokens x channels) of one layer at one denoising step and restrict
   them to a channel set (top-k, bottom-k, random-k, or all channels);
2. min-max normalise every channel across tokens (a constant channel becomes 0);
3. cluster the per-token vectors, K-means with K=2 by default (K settable) or HDBSCAN;
4. decide which cluster is the foreground (``foreground=``): ``"border"`` (default: every cluster but the
   one holding most of the grid's outer ring), the paper's ``"max_sum"`` (the higher mean summed
   normalised activation), ``"min_sum"``, ``"minority"``, or a function of your own;
5. reshape to the latent token grid, upsample (nearest neighbour) to pixels and score against a
   mask with IoU (two empty masks: IoU 1.0).

:func:`localize` sweeps this over layers, steps and channel sets on a model and returns per-layer
mIoU curves (the paper's Figure 3D shape). :func:`project` gives 2-D UMAP or PCA coordinates of
image tokens for linked widgets, cached in memory.

The code is split by purpose: :mod:`.tokens` (checks and normalisation of one image's tokens),
:mod:`.clustering` (:func:`cluster_tokens`, the foreground rules), :mod:`.masks` (up/downsampling, IoU,
mask files, the teaching model's colour masks), :mod:`.projection` (:func:`project`); the probe itself
like the other probes: :mod:`.plan` validates every setting into an immutable
:class:`~.plan.LocalizationPlan`, :mod:`.execution` scores one chunk of prompts, :mod:`.results` holds
:class:`LocalizationResult`, :mod:`.probe` has :func:`localize` (plan, then :func:`execute`).

Everything here is numpy in, numpy out; torch tensors are accepted. Bad input raises
:class:`~massact_viz.errors.MassActError`.
"""
from __future__ import annotations

from .clustering import DEFAULT_FOREGROUND, FOREGROUND_RULES, METHODS, TokenClusters, cluster_foreground, \
    cluster_legend, cluster_tokens
from .masks import downsample, iou, load_mask, shapes_masks, upsample
from .plan import SETS, LocalizationPlan, plan_localization
from .probe import execute, localize
from .projection import PROJECTIONS, Projection, clear_projection_cache, import_umap, project
from .results import FORMAT, LocalizationResult
from .tokens import normalize, token_grid

__all__ = ["localize", "execute", "plan_localization", "LocalizationPlan", "LocalizationResult", "cluster_tokens",
           "TokenClusters", "cluster_foreground", "cluster_legend", "upsample", "downsample", "iou", "load_mask",
           "shapes_masks", "project", "Projection", "clear_projection_cache", "import_umap", "normalize",
           "token_grid", "METHODS", "FOREGROUND_RULES", "DEFAULT_FOREGROUND", "SETS", "PROJECTIONS", "FORMAT"]
