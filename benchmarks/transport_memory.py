"""Memory of the cached transport source: only the channels the transport and its controls need.

A FLUX.1-width transformer (hidden 3072, the real width; 1 double + 1 single block, random weights) runs a
cached text transport of the source's top-k channels with the random-k and bottom-k controls, and the bytes
the source cache actually holds are read back (``settings["source_cache_bytes"]``) and checked against the
plan's formula (``plan.cache_gb``: tokens x kept channels x slices x bytes per value). The formula then
gives the whole FLUX.1-dev run at 1024 px (4096 image tokens, 57 blocks, 28 steps, bfloat16, one guidance
branch), next to what caching every channel (the earlier design) would hold.

    python benchmarks/transport_memory.py        # writes benchmarks/transport_memory.json
"""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import massact_viz as mv  # noqa: E402
from massact_viz.probes import plan_transport, transport  # noqa: E402
from massact_viz.probes.transport.plan import cache_gb  # noqa: E402
from massact_viz.testing import tiny_pipeline  # noqa: E402

OUT = Path(__file__).resolve().parent / "transport_memory.json"
FLUX_DEV = {"tokens": 4096, "blocks": 57, "steps": 28, "bytes": 2, "width": 3072}


def flux_dev_gb(channels: int, branches: int = 1) -> float:
    f = FLUX_DEV
    return f["tokens"] * channels * f["bytes"] * f["blocks"] * f["steps"] * branches / 1e9


def main() -> None:
    model = mv.load(tiny_pipeline("flux", num_layers=1, num_single_layers=1, hidden=3072))
    kw = dict(num_steps=2, size=(32, 32), metrics=False, previews=False, progress=False)
    rows = []
    for k, controls in ((8, ()), (8, ("random-k", "bottom-k")), (64, ("random-k", "bottom-k"))):
        r = transport(model, "a photo of a dog", "a photo of a cat", k=k, controls=list(controls), **kw)
        plan = plan_transport(model, "a photo of a dog", "a photo of a cat", k=k, controls=controls,
                              run_kwargs={"size": (32, 32)}, num_steps=2)
        measured = r.settings["source_cache_bytes"]
        rows.append({"k": k, "controls": list(controls), "measured_bytes": measured,
                     "formula_bytes": round(cache_gb(model, plan) * 1e9),
                     "kept_channels_per_layer": k * (1 + len(controls)),
                     "flux_dev_1024px_gb": round(flux_dev_gb(k * (1 + len(controls))), 3)})
    full = flux_dev_gb(FLUX_DEV["width"])
    doc = {"model": "tiny FLUX.1 at width 3072 (1 double + 1 single block), 2 steps, 32x32 px", "rows": rows,
           "flux_dev_every_channel_gb": round(full, 1), "flux_dev": FLUX_DEV}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print("| k | controls | kept channels per layer | cache here: measured / formula (bytes) | "
          "FLUX.1-dev, 1024 px, 57 blocks x 28 steps, bf16 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {', '.join(r['controls']) or '-'} | {r['kept_channels_per_layer']} | "
              f"{r['measured_bytes']:,} / {r['formula_bytes']:,} | {r['flux_dev_1024px_gb']} GB |")
    print(f"| (every channel, the earlier cache) | | 3072 | | {full:.1f} GB |")


if __name__ == "__main__":
    main()
