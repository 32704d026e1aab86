"""Real-size shapes with random weights: the toolkit at the widths and depths users run, measured against the
plain pipeline in the same process.

    python benchmarks/real_size.py                     # CPU, float32: pixart, sana and flux-width (--reps 3
                                                       # took over 28 min on 2 idle cores; one at a time with
                                                       # --configs flux-width; each writes real_size.json)
    python benchmarks/real_size.py --device cuda --configs flux-full --size 1024   # a lent GPU, bfloat16

Real weights cannot be downloaded here, but their shapes can be built: each configuration is the family's
tiny offline pipeline (:func:`massact_viz.testing.tiny_pipeline`: tiny text encoders and VAE, no download)
with the transformer at a published width and depth:

* ``pixart``      PixArt-Sigma: 28 blocks x 1152 channels (full depth and width)
* ``sana``        SANA 1600M: 20 blocks x 2240 channels (full depth and width)
* ``flux-width``  FLUX.1 at full width (3072 channels), 2 double + 4 single blocks (of 19 + 38)
* ``flux-full``   FLUX.1 at full width and depth, 19 + 38 blocks (a GPU; about 12 B parameters)

The head width is the tiny recipe's (8 or 16 channels: more heads of the same total width), so attention
costs differ slightly from the published models; channel width, depth, MLP size and token count are the
real ones. The tiny VAE keeps 1 pixel per latent pixel, so ``--size S`` gives (S/2)^2 image tokens for FLUX
(packed 2x2) and (S/2)^2 for the patch-2 families: ``--size 128`` is FLUX's 4096 tokens at 1024x1024.

For each configuration, interleaved repeats of: the plain pipeline call, ``Model.run`` with the full
statistics capture (every block, both streams, every step, the Sun criterion) on the hooks engine and on the
nnsight engine (``engine="nnsight"``, the same numbers), a transport (k=4, every block
and step) and a localization (one prompt, every block, last step, top/bottom/random sets); medians, the
capture overhead as a ratio against the plain call, and the peak resident memory of a fresh process per
configuration. Writes ``benchmarks/real_size.json`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = {
    "pixart": dict(family="pixart", num_layers=28, hidden=1152),
    "sana": dict(family="sana", num_layers=20, hidden=2240),
    "flux-width": dict(family="flux", num_layers=2, num_single_layers=4, hidden=3072),
    "flux-full": dict(family="flux", num_layers=19, num_single_layers=38, hidden=3072),
    "smoke": dict(family="flux", num_layers=1, num_single_layers=1, hidden=32),   # seconds: checks the script
}
PROMPT = "a red fox in the snow"

CHILD = r"""
import json, resource, statistics, sys, time
import torch
import massact_viz as mv
from massact_viz.probes import transport
from massact_viz.probes.localization import localize
from massact_viz.testing import default_call_kwargs, tiny_pipeline

cfg, size, steps, reps, device, dtype = json.loads(sys.argv[1])
family = cfg.pop("family")
torch.manual_seed(0)
if device == "cuda":   # initialise the random weights on the GPU (12 B parameters take minutes on the CPU)
    try:
        with torch.device("cuda"):
            pipe = tiny_pipeline(family, **cfg)
    except Exception as e:
        print(f"building on the GPU failed ({type(e).__name__}: {e}); building on the CPU", file=sys.stderr)
        torch.cuda.empty_cache()
        pipe = tiny_pipeline(family, **cfg)
else:
    pipe = tiny_pipeline(family, **cfg)
model = mv.load(pipe, device=device, dtype=dtype)
params = sum(p.numel() for p in model.pipe.transformer.parameters())
kw = {k: v for k, v in default_call_kwargs(family).items() if k not in ("height", "width")}
sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)

def plain():
    model.pipe(prompt=PROMPT, num_inference_steps=steps, height=size, width=size, output_type="pil",
               generator=torch.Generator("cpu").manual_seed(0), **kw)

# every call gets the same pipeline kwargs as the plain one (text length, guidance, ...): without them the
# toolkit's calls would run the pipeline's defaults (for FLUX, 512 text tokens against the plain call's 32)
def captured():
    model.run(PROMPT, num_steps=steps, size=(size, size), progress=False, **kw)

def captured_nnsight():
    model.run(PROMPT, num_steps=steps, size=(size, size), progress=False, engine="nnsight", **kw)

def transported():
    transport(model, "a photo of a dog", PROMPT, k=4, num_steps=steps, size=(size, size), previews=False,
              progress=False, **kw)

def centre(image, prompt):   # a stand-in object mask: the middle quarter of the image
    import numpy as np
    m = np.zeros((image.height, image.width), bool)
    m[image.height // 4: 3 * image.height // 4, image.width // 4: 3 * image.width // 4] = True
    return m

def localized():
    localize(model, [PROMPT], centre, num_steps=steps, size=(size, size), k=4,
             sets=("top", "bottom", "random"), random_draws=1, progress=False, **kw)

PROMPT = PROMPT_VALUE
fns = {"plain": plain, "capture": captured, "capture_nnsight": captured_nnsight, "transport": transported,
       "localize": localized}
try:
    import nnsight  # noqa: F401
except Exception as e:   # a bare GPU machine: time the hooks engine only
    print(f"nnsight does not import ({type(e).__name__}: {e}): the nnsight engine is not timed", file=sys.stderr)
    del fns["capture_nnsight"]
times = {n: [] for n in fns}
for n, f in fns.items():   # warm-up
    f()
for _ in range(reps):
    for n, f in fns.items():
        sync(); t = time.perf_counter(); f(); sync()
        times[n].append(time.perf_counter() - t)
peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
if device == "cuda":
    peak_gb = {"rss": peak_gb, "cuda": torch.cuda.max_memory_allocated() / 1e9}
tokens = model.run(PROMPT, num_steps=1, size=(size, size), progress=False,
                   capture=mv.Capture.nothing(), **kw).meta["token_grid"]
print(json.dumps({"params": params, "width": model.width, "blocks": len(model.blocks), "times": times,
                  "peak_gb": peak_gb, "tokens": tokens}))
""".replace("PROMPT_VALUE", repr(PROMPT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["pixart", "sana", "flux-width"], choices=list(CONFIGS))
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (see the docstring for tokens)")
    ap.add_argument("--num-steps", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: float32 on the CPU, bfloat16 on a GPU")
    ap.add_argument("--json", type=Path, default=HERE / "real_size.json", help="where the results go")
    args = ap.parse_args()
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    results = {}
    for name in args.configs:
        arg = json.dumps([dict(CONFIGS[name]), args.size, args.num_steps, args.reps, args.device, dtype])
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", CHILD, arg], env=env, capture_output=True, text=True)
        if r.returncode:
            results[name] = {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
            print(f"{name}: {results[name]['error']}", file=sys.stderr)
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["wall_s"] = time.perf_counter() - t
        results[name] = res
        doc = {"size": args.size, "num_steps": args.num_steps, "reps": args.reps, "device": args.device,
               "dtype": dtype, "cpu_count": os.cpu_count(), "torch_threads": os.environ.get("OMP_NUM_THREADS"),
               "results": results}
        # after every configuration, so a run stopped part-way keeps what it finished
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{name}: done in {res['wall_s']:.0f} s", file=sys.stderr, flush=True)
    print(f"| configuration ({args.size}x{args.size} px, {args.num_steps} steps, {args.device} {dtype}, n = "
          f"{args.reps} rounds) | parameters | plain s | capture s | capture / plain | nnsight engine / plain | "
          f"transport s | localize s | peak GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error']} |")
            continue
        m = {k: statistics.median(v) for k, v in r["times"].items()}
        peak = r["peak_gb"] if not isinstance(r["peak_gb"], dict) else r["peak_gb"]["cuda"]
        grid = f", {r['tokens'][0]}x{r['tokens'][1]} tokens" if r.get("tokens") else ""
        print(f"| {name}: {r['blocks']} blocks x {r['width']} channels{grid} | {r['params'] / 1e9:.2f} B | {m['plain']:.2f} | "
              f"{m['capture']:.2f} | {paired_ratio(r['times'], 'capture')} | "
              + (paired_ratio(r["times"], "capture_nnsight") if "capture_nnsight" in m else "-")
              + f" | {m['transport']:.2f} | {m['localize']:.2f} | {peak:.1f} |")
    print("\nTimes: medians over the rounds. Ratios: each round's time over the plain call of the same round, "
          "median [min, max] over the rounds.")


def paired_ratio(times: dict, name: str) -> str:
    """``name`` over the plain call, round by round (interleaved in the same process): median [min, max]."""
    rs = [a / b for a, b in zip(times[name], times["plain"])]
    return f"{statistics.median(rs):.2f}x [{min(rs):.2f}, {max(rs):.2f}]"


if __name__ == "__main__":
    main()
