"""Where a training step of the teaching model spends its time, and which way of running it is fastest.

Runs the trainer's own step (``massact_viz.shapes.train``) from the shipped weights, for each setting: eager at
``--batch``, 2x and 4x that batch, and (``--compile``) ``torch.compile`` at ``--batch``; reports images/s over
``--steps`` steps after ``--warmup`` steps, and for the first setting the share of the wall time the GPU kernels
were busy (a small share: the step waits on Python and kernel launches, so a larger batch or a compiled step
pays; a share near 100 %: the GPU is the limit). It then names the batch to train with: the largest whose
doubling still gave at least 1.5x the images/s (the step time grew by a third or less: at most a quarter fewer
optimizer steps a minute, which a warm-started model's progress also needs). Nothing is written to data/.

    python benchmarks/shapes_step_profile.py --device cuda --batch 512 --compile --json runs/gpu/profile.json
    python benchmarks/shapes_step_profile.py --device cpu --batch 8 --steps 3 --warmup 1   # a rehearsal
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from massact_viz.shapes.batches import step_batch
from massact_viz.shapes.model import read_shapes_config
from massact_viz.shapes.train import TrainArgs, _Training

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(weights: Path, device: str, batch: int, steps: int, warmup: int, compile: bool, workers: int,
            busy: bool = False) -> dict:
    """images/s of the trainer's step in one setting (and, with ``busy``, the GPU's busy share)."""
    cfg = read_shapes_config(weights)["config"]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainArgs(out=f"{tmp}/out", ckpt_dir=f"{tmp}/ckpt", batch=batch, lr=4e-4, warmup=200, device=device,
                         config=cfg, compile=compile, data_workers=workers, p_two=0.2, ema=0.998)
        run = _Training(args, torch.device(device))
        run.warm_start_from(weights, partial=False)
        try:
            t0 = time.perf_counter()
            for _ in range(warmup):
                run.train_step()
            _sync(run.device)
            start_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = run.train_step()
            float(loss)
            _sync(run.device)
            wall = time.perf_counter() - t0
            # the workers render ahead: batches queued during the slow first steps would flatter a short timing,
            # so the images/s is capped at what the workers can draw (one batch timed in this process)
            t0 = time.perf_counter()
            step_batch(args.seed, 0, batch, run.cfg.image_size, args.p_two, args.p_style_mention, args.cond_drop)
            drawn = max(1, workers) * batch / (time.perf_counter() - t0)
            out = {"batch": batch, "compile": compile, "step_ms": round(1000 * wall / steps, 1),
                   "images_per_s": round(min(batch * steps / wall, drawn), 1),
                   "data_images_per_s": round(drawn, 1), "first_steps_s": round(start_s, 1)}
            if busy and run.device.type == "cuda":
                try:
                    out.update(_busy_share(run))
                except Exception as e:   # the profiler is a reading, not the measurement: keep the timing
                    out["busy_error"] = f"{type(e).__name__}: {e}"[:200]
            return out
        finally:
            run.batches.close()


def _busy_share(run) -> dict:
    """The share of 5 steps' wall time the GPU's kernels were busy, kernels a step, the costliest kernels."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(5):
            loss = run.train_step()
        float(loss)
        _sync(run.device)
        wall5 = time.perf_counter() - t0
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    return {"gpu_busy_share": round(kernel_us / 1e6 / wall5, 3),
            "kernels_per_step": int(sum(e.count for e in events if e.device_type.name == "CUDA") / 5),
            "top_gpu_ops": [{"op": e.key[:60], "ms_per_step": round(e.self_device_time_total / 1e3 / 5, 2)}
                            for e in sorted(events, key=lambda e: -e.self_device_time_total)[:8]]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(ROOT / "data" / "shapes"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=40, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (allocation, kernel choice, compiling)")
    p.add_argument("--workers", type=int, default=6, help="--data-workers, as the training run will use")
    p.add_argument("--compile", action="store_true", help="also time torch.compile at --batch")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    settings = [(a.batch, False), (2 * a.batch, False), (4 * a.batch, False)] + ([(a.batch, True)] if a.compile else [])
    rows = []
    for i, (batch, comp) in enumerate(settings):
        try:
            r = measure(Path(a.weights), a.device, batch, a.steps, a.warmup, comp, a.workers, busy=(i == 0))
        except Exception as e:   # a setting that fails (e.g. no compiler on the machine) is reported, not fatal
            traceback.print_exc()
            r = {"batch": batch, "compile": comp, "error": f"{type(e).__name__}: {e}"[:300]}
        rows.append(r)
        print(json.dumps(r), flush=True)
    base = rows[0].get("images_per_s")
    comp = next((r for r in rows if r["compile"] and "images_per_s" in r), None)
    # the trainer compiles when that is at least 10 % faster at the same batch (compiling costs its first minute)
    use_compile = bool(base and comp and comp["images_per_s"] >= 1.1 * base)
    eager = [r for r in rows if not r["compile"]]
    batch = a.batch
    for small, big in zip(eager, eager[1:]):
        if "images_per_s" not in big or big["images_per_s"] < 1.5 * small.get("images_per_s", float("inf")):
            break
        batch = big["batch"]
    result = {"device": a.device, "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None,
              "torch": torch.__version__, "settings": rows, "use_compile": use_compile, "batch": batch}
    print(f"\n| setting | images/s | ms/step | images/s the {a.workers} workers draw | first {a.warmup} steps s |"
          "\n|---|---|---|---|---|")
    for r in rows:
        name = f"batch {r['batch']}{', compiled' if r['compile'] else ''}"
        print(f"| {name} | {r.get('images_per_s', r.get('error'))} | {r.get('step_ms', '-')} | "
              f"{r.get('data_images_per_s', '-')} | {r.get('first_steps_s', '-')} |")
    if "gpu_busy_share" in rows[0]:
        print(f"\nGPU kernels busy {100 * rows[0]['gpu_busy_share']:.0f} % of the wall time at batch {a.batch} "
              f"({rows[0]['kernels_per_step']} kernels a step)")
    print(f"train with: batch {batch}{', compiled' if use_compile else ''}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
