"""The first UMAP fit of a new kernel, cold (an empty numba cache) and warm (a second kernel), for a plain
``import umap`` and for :func:`massact_viz.probes.localization.import_umap` (numba's on-disk cache on).

    python benchmarks/umap_warm_start.py        # about 3 minutes on 2 CPU cores; prints a Markdown table

Each measurement is a fresh Python process (what a new notebook kernel is) with its own empty
``NUMBA_CACHE_DIR``; the warm run reuses the cold run's directory. The fit is ``project(..., method="umap")``
on 256 tokens x 16 channels, as the projection widget and notebook 03 do.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t = time.perf_counter()
import numpy as np
if sys.argv[1] == "plain":
    import umap  # noqa: F401  (what project() did before import_umap)
    import massact_viz.probes.localization.projection as loc
    loc.import_umap = lambda: sys.modules["umap"]
from massact_viz.probes.localization import project
x = np.random.RandomState(0).randn(256, 16).astype("float32")
project(x, (16, 16), method="umap", cache=False)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def first_fit(mode: str, cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    rows = []
    for mode, label in (("plain", "plain `import umap`"), ("cached", "`import_umap()` (numba cache on)")):
        with tempfile.TemporaryDirectory() as d:
            cold, warm = first_fit(mode, d), first_fit(mode, d)
        rows.append((label, cold, warm))
        print(f"{label}: first kernel {cold:.1f} s, second kernel {warm:.1f} s", file=sys.stderr)
    print("| import | first kernel (cold cache), s | second kernel, s |\n|---|---|---|")
    for label, cold, warm in rows:
        print(f"| {label} | {cold:.1f} | {warm:.1f} |")


if __name__ == "__main__":
    main()
