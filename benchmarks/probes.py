"""Benchmark: the localization probe's CPU-side costs at full FLUX.1 scale.

Measures, on synthetic image tokens shaped like FLUX.1 at 1024x1024 (a 64x64 token grid = 4096
tokens, 3072 channels, float32) with a planted square in 12 channels:

* K-means (``cluster_tokens``, K=2, ``n_init=10``) restricted to k=12 channels: one call timed
  (median of ``--reps``), then multiplied by 57 layers x 4 steps = 228 calls, the work of one
  prompt in ``localize`` over every FLUX.1 layer at 4 steps (the calls are independent and identical
  in cost, so the product is the sweep's clustering time);
* UMAP (``project(..., method="umap")``) on the 4096 tokens x 12 channels: the first fit in the
  process (numba compilation included), a second fit with ``cache=False``, and the cached call;
* PCA (``project(..., method="pca")``) on the same: uncached and cached.

One torch thread (as in the tests). Results go to stdout and ``benchmarks/probes_results.json``;
BENCHMARKS.md quotes them.

Usage: python benchmarks/probes.py [--reps 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from massact_viz.probes import localization as loc  # noqa: E402

ROWS = COLS = 64
WIDTH = 3072
K = 12
LAYERS, STEPS = 57, 4


def tokens(seed: int = 0) -> tuple[np.ndarray, list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, size=(ROWS * COLS, WIDTH)).astype(np.float32)
    mask = np.zeros((ROWS, COLS), bool)
    mask[16:40, 20:52] = True
    hot = sorted(rng.choice(WIDTH, K, replace=False).tolist())
    x[np.flatnonzero(mask.ravel())[:, None], hot] += 8.0
    return x, hot, mask


def timed(fn, reps: int) -> tuple[list[float], object]:
    out, ts = None, []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return ts, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).with_name("probes_results.json")))
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, hot, mask = tokens()
    res: dict = {"tokens": ROWS * COLS, "grid": [ROWS, COLS], "width": WIDTH, "k_channels": K,
                 "layers_x_steps": LAYERS * STEPS, "reps": args.reps, "torch_threads": torch.get_num_threads(),
                 "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                 "torch": torch.__version__}

    # (a) K-means on the top-12 channels of one (layer, step) slice, then the 57 x 4 sweep
    ts, c = timed(lambda: loc.cluster_tokens(x, (ROWS, COLS), channels=hot, k_clusters=2), args.reps)
    res["kmeans_one_call_s"] = {"median": statistics.median(ts), "min": min(ts), "all": ts}
    res["kmeans_iou_check"] = loc.iou(c.foreground, mask)
    res["kmeans_sweep_57x4_s_estimated"] = statistics.median(ts) * LAYERS * STEPS
    # the same on all 3072 channels (the "all" set), fewer reps: it is the expensive one
    ts_all, _ = timed(lambda: loc.cluster_tokens(x, (ROWS, COLS), k_clusters=2), max(1, args.reps // 2))
    res["kmeans_all_channels_one_call_s"] = {"median": statistics.median(ts_all), "min": min(ts_all), "all": ts_all}

    # (b) UMAP on 4096 tokens x 12 channels
    loc.clear_projection_cache()
    t0 = time.perf_counter()
    p = loc.project(x, (ROWS, COLS), method="umap", channels=hot)
    res["umap_first_fit_s"] = time.perf_counter() - t0  # numba compilation included
    ts_u, _ = timed(lambda: loc.project(x, (ROWS, COLS), method="umap", channels=hot, cache=False), 2)
    res["umap_second_fit_s"] = {"median": statistics.median(ts_u), "all": ts_u}
    ts_c, again = timed(lambda: loc.project(x, (ROWS, COLS), method="umap", channels=hot), args.reps)
    assert again is p
    res["umap_cached_s"] = {"median": statistics.median(ts_c), "max": max(ts_c)}

    # (c) PCA on the same
    ts_p, _ = timed(lambda: loc.project(x, (ROWS, COLS), method="pca", channels=hot, cache=False), args.reps)
    res["pca_fit_s"] = {"median": statistics.median(ts_p), "min": min(ts_p)}
    loc.project(x, (ROWS, COLS), method="pca", channels=hot)
    ts_pc, _ = timed(lambda: loc.project(x, (ROWS, COLS), method="pca", channels=hot), args.reps)
    res["pca_cached_s"] = {"median": statistics.median(ts_pc), "max": max(ts_pc)}

    print(json.dumps(res, indent=1))
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
