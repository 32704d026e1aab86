"""Benchmark: cost of a full statistics capture against the plain pipeline, in the same process.

Measures, on a tiny random FLUX.1 pipeline at full FLUX.1 depth (19 double + 38 single blocks),
8 steps, 32x32 (256 image tokens), same prompt and seed, runs interleaved, medians:

* plain      the diffusers pipeline call alone
* hooks      massact_viz's capture (every block, both streams, every step; abs_mean, mean_abs,
             max_abs and the Sun criterion), i.e. ``Model.run``
* nnsight    the same capture on the nnsight engine, ``Model.run(engine="nnsight")`` (a worker in an
             nnsight trace of ``model.nnsight``; identical statistics and images)

then the two engines again at FLUX.1's full width (hidden 3072, ``--wide-blocks`` double + single
blocks, 2 steps), and the peak resident memory of a statistics capture with 4 vs 28 steps (each in a fresh
subprocess), against the size of the statistics tensors. Results go to stdout and
``benchmarks/results.json``; BENCHMARKS.md quotes them. Run with ``make bench``.

Usage: python benchmarks/capture_overhead.py [--reps 7] [--num-steps 8] [--size 32] [--hidden 512]
       python benchmarks/capture_overhead.py --part engines     # only the two engines, toy and full width
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import massact_viz as mv  # noqa: E402
from massact_viz.testing import tiny_pipeline  # noqa: E402

PROMPT = "a red fox in the snow"


def timed(fn, reps: int) -> list[float]:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return ts


def overhead(reps: int, steps: int, size: int) -> dict:
    model = mv.load(tiny_pipeline("flux", num_layers=19, num_single_layers=38))
    pipe = model.pipe
    plain = lambda: pipe(PROMPT, num_inference_steps=steps, height=size, width=size, output_type="pil",  # noqa: E731
                         generator=torch.Generator("cpu").manual_seed(0))
    hooks = lambda: model.run(PROMPT, num_steps=steps, size=(size, size), progress=False)  # noqa: E731
    no_sun = lambda: model.run(PROMPT, num_steps=steps, size=(size, size), progress=False,  # noqa: E731
                               capture=mv.Capture(sun=False))
    image_only = lambda: model.run(PROMPT, num_steps=steps, size=(size, size), progress=False,  # noqa: E731
                                   capture=mv.Capture(sun=False, streams=["image"]))
    nothing = lambda: model.run(PROMPT, num_steps=steps, size=(size, size), progress=False,  # noqa: E731
                                capture=mv.Capture.nothing())
    nns = lambda: model.run(PROMPT, num_steps=steps, size=(size, size), progress=False,  # noqa: E731
                            engine="nnsight")
    variants = {"plain": plain, "run_no_capture": nothing, "hooks": hooks, "hooks_no_sun": no_sun,
                "hooks_image_only_no_sun": image_only, "nnsight": nns}
    for f in variants.values():  # warm-up (nnsight compiles the trace body on first use)
        f()
    res = {k: [] for k in variants}
    for _ in range(reps):  # interleaved so drifts hit every variant alike
        for name, f in variants.items():
            res[name] += timed(f, 1)
    med = {k: statistics.median(v) for k, v in res.items()}
    best = {k: min(v) for k, v in res.items()}
    n_sites = steps * len(model.blocks)
    return {"blocks": len(model.blocks), "steps": steps, "size": size, "reps": reps, "median_s": med, "min_s": best,
            "ratio": {k: med[k] / med["plain"] for k in variants},
            "ratio_of_minima": {k: best[k] / best["plain"] for k in variants},
            "ms_per_block_output": {k: 1000 * (med[k] - med["plain"]) / n_sites for k in variants}}


def engines(reps: int, steps: int, size: int, hidden: int, layers: int) -> dict:
    """Plain pipeline vs the full capture on each engine, one model of width ``hidden`` and ``layers``
    double + ``layers`` single blocks, interleaved runs, medians."""
    model = mv.load(tiny_pipeline("flux", num_layers=layers, num_single_layers=layers, hidden=hidden))
    pipe = model.pipe
    variants = {
        "plain": lambda: pipe(PROMPT, num_inference_steps=steps, height=size, width=size, output_type="pil",
                              generator=torch.Generator("cpu").manual_seed(0)),
        "hooks": lambda: model.run(PROMPT, num_steps=steps, size=(size, size), progress=False, engine="hooks"),
        "nnsight": lambda: model.run(PROMPT, num_steps=steps, size=(size, size), progress=False, engine="nnsight"),
    }
    for f in variants.values():
        f()
    res = {k: [] for k in variants}
    for _ in range(reps):
        for name, f in variants.items():
            res[name] += timed(f, 1)
    med = {k: statistics.median(v) for k, v in res.items()}
    # each round ran every variant once: its ratios are paired; report their median and range over the rounds
    per_round = {"hooks": [h / p for h, p in zip(res["hooks"], res["plain"])],
                 "nnsight": [n / p for n, p in zip(res["nnsight"], res["plain"])],
                 "nnsight_over_hooks": [n / h for n, h in zip(res["nnsight"], res["hooks"])]}
    spread = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in per_round.items()}
    return {"hidden": hidden, "blocks": len(model.blocks), "steps": steps, "size": size, "reps": reps,
            "times_s": res, "median_s": med, "ratio": {k: med[k] / med["plain"] for k in variants},
            "nnsight_over_hooks": med["nnsight"] / med["hooks"], "per_round": spread}


def _peak_child(steps: int, hidden: int) -> None:
    model = mv.load(tiny_pipeline("flux", num_layers=19, num_single_layers=38, hidden=hidden))
    run = model.run(PROMPT, num_steps=steps, size=(32, 32), progress=False)
    stats_bytes = sum(t.numel() * t.element_size() for t in run.stats.values.values())
    stats_bytes += run.stats.median_abs.numel() * 4
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"steps": steps, "peak_rss_bytes": peak, "stats_bytes": stats_bytes}))


def memory(hidden: int) -> dict:
    out = {}
    for steps in (4, 28):
        r = subprocess.run([sys.executable, __file__, "--peak-child", str(steps), "--hidden", str(hidden)],
                           capture_output=True, text=True, check=True)
        out[steps] = json.loads(r.stdout.strip().splitlines()[-1])
    d_peak = out[28]["peak_rss_bytes"] - out[4]["peak_rss_bytes"]
    d_stats = out[28]["stats_bytes"] - out[4]["stats_bytes"]
    return {"hidden": hidden, "runs": out, "peak_diff_bytes": d_peak, "stats_diff_bytes": d_stats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--num-steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=512, help="width for the memory benchmark")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared 2-core box)")
    ap.add_argument("--peak-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--part", choices=["all", "engines"], default="all")
    ap.add_argument("--wide-blocks", type=int, default=2, help="double (and single) blocks at width 3072")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.peak_child:
        _peak_child(a.peak_child, a.hidden)
        return
    machine = {"cpu_count": os.cpu_count(), "threads": a.threads, "platform": platform.platform(),
               "torch": torch.__version__, "device": "cpu"}
    eng = {"toy": engines(a.reps, a.num_steps, a.size, 32, 4),
           "width_3072": engines(a.reps, 2, a.size, 3072, a.wide_blocks)}
    for name, e in eng.items():
        print(f"engines, {name} (hidden {e['hidden']}, {e['blocks']} blocks, {e['steps']} steps, {e['reps']} rounds; "
              f"per-round ratio, median [min, max]): "
              + "; ".join(f"{k} x{v['median']:.3f} [{v['min']:.3f}, {v['max']:.3f}]" for k, v in e["per_round"].items()),
              flush=True)
    out = Path(a.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    if a.part == "engines":
        old.update(engines=eng, engines_machine=machine)
        out.write_text(json.dumps(old, indent=1))
        return
    res = {"machine": machine, "engines": eng,
           "overhead": overhead(a.reps, a.num_steps, a.size), "memory": memory(a.hidden)}
    o = res["overhead"]
    print(f"capture overhead ({o['blocks']} blocks, {o['steps']} steps, {o['size']}x{o['size']}, median of {o['reps']}):")
    print(f"  plain pipeline call: {o['median_s']['plain'] * 1000:.1f} ms")
    for k, r in o["ratio"].items():
        print(f"  {k:<24} x{r:.3f} (medians)  x{o['ratio_of_minima'][k]:.3f} (minima)  "
              f"{o['ms_per_block_output'][k]:+.3f} ms per block output")
    m = res["memory"]
    print(f"peak RSS 28 vs 4 steps (hidden {m['hidden']}): +{m['peak_diff_bytes'] / 2**20:.1f} MiB; "
          f"stats tensors +{m['stats_diff_bytes'] / 2**20:.1f} MiB")
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
