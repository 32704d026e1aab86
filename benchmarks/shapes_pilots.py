"""Training levers for the ``shapes`` teaching model, measured at equal CPU time.

Two parts, both with nothing else running on the machine:

* ``throughput``: images per second of the trainer in its steady state for each
  (batch, threads, compile) setting, from the trainer's own log (median over its
  25-step windows after the first), plus the start-up cost (compilation).
* ``pilots``: each lever continues the same starting weights (``--init`` , by default
  the shipped ``data/shapes``; fresh AdamW, 100 warm-up steps) for the same CPU time:
  ``minutes x`` that setting's measured steady-state images/s (the ``throughput``
  part, which must run first), as a step budget, so the result does not depend on
  what else the machine did meanwhile; then it is judged on one fixed yardstick: shape and colour
  accuracy on 180 one-object captions (60 per shape, style variants included,
  ``train.one_object_eval_captions``) with a 95 % Wilson interval, and the
  fixed-noise validation loss (``train.validation_loss``, 512 scenes).

* ``judge``: an architecture pilot trained with the trainer itself (its own command line, e.g. a finer
  token grid warm-started from the shipped weights with ``--init-partial``), judged on the same yardstick
  and recorded beside the shipped weights' own score, with the CPU minutes and images its training took.

Usage::

    python benchmarks/shapes_pilots.py --minutes 8            # both parts
    python benchmarks/shapes_pilots.py --part throughput
    python -m massact_viz.shapes.train --out runs/shapes-g16/out --ckpt-dir runs/shapes-g16/ckpt \
        --init-from data/shapes --init-partial --config '{"vae_factor": 1}' --batch 32 --lr 3e-4 \
        --warmup 100 --lr-schedule cosine --steps 1300 --minutes 40 --p-two 0.2 --threads 2 --eval-n 0
    python benchmarks/shapes_pilots.py --part judge --weights runs/shapes-g16/out \
        --name "token grid 16x16 (vae_factor 1), partial warm start"

Results go to ``benchmarks/shapes_pilots.json`` (finished rows are kept and skipped on
a rerun with the same settings) and a Markdown table is printed; the model card
(``python benchmarks/shapes_card.py``) copies the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from massact_viz.files import atomic_write  # noqa: E402
from massact_viz.shapes import train as T  # noqa: E402
from massact_viz.shapes.model import load_shapes_pipeline  # noqa: E402
from massact_viz.intervals import compare, wilson_interval  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "shapes_pilots.json"

THROUGHPUT = {  # name -> TrainArgs overrides
    "batch 32, 1 thread": dict(batch=32, threads=1),
    "batch 32, 2 threads": dict(batch=32, threads=2),
    "batch 64, 2 threads": dict(batch=64, threads=2),
    "batch 128, 2 threads": dict(batch=128, threads=2),
    "batch 64, 2 threads, torch.compile": dict(batch=64, threads=2, compile=True),
}

PILOTS = {  # name -> (throughput row giving its speed, TrainArgs overrides); all: 2 threads, warm start,
    # 100 warm-up steps, constant lr
    "batch 32, lr 2e-4 (the earlier recipe)": ("batch 32, 2 threads", dict(batch=32, lr=2e-4)),
    "batch 64, lr 3e-4": ("batch 64, 2 threads", dict(batch=64, lr=3e-4)),
    "batch 64, lr 6e-4": ("batch 64, 2 threads", dict(batch=64, lr=6e-4)),
    "batch 64, lr 3e-4, one object 80 %": ("batch 64, 2 threads", dict(batch=64, lr=3e-4, p_two=0.2)),
}


def _args(out: Path, init: str, minutes: float, **over) -> T.TrainArgs:
    base = dict(out=str(out / "w"), ckpt_dir=str(out / "ckpt"), init_from=init, minutes=minutes, threads=2,
                warmup=100, eval_n=0, val_n=0, progress=False, fresh=True, ckpt_every=1e9)
    return T.TrainArgs(**{**base, **over})


def judge(weights: Path, n_captions: int, n_val: int) -> dict:
    pipe = load_shapes_pipeline(weights)
    caps = T.one_object_eval_captions(n_captions)
    res = T.evaluate(pipe, caps, seed=0)
    recs = res["records"]
    out = {"n": len(recs)}
    for key in ("shape", "colour"):
        k = sum(bool(r[f"{key}_ok"]) for r in recs)
        out[key] = {"k": k, "n": len(recs), "p": k / len(recs), "ci95": list(wilson_interval(k, len(recs)))}
    per_shape = {}
    for s in ("circle", "square", "triangle"):
        rs = [r for r in recs if f" {s} " in r["caption"]]
        k = sum(bool(r["shape_ok"]) for r in rs)
        per_shape[s] = {"k": k, "n": len(rs), "p": k / len(rs), "ci95": list(wilson_interval(k, len(rs)))}
    out["shape_by_kind"] = per_shape
    out["shape_ok"] = [bool(r["shape_ok"]) for r in recs]   # per caption, for paired comparisons
    out["val_loss"] = T.validation_loss(pipe, n_val)
    return out


def run_throughput(results: dict, init: str, minutes: float) -> None:
    done = results.setdefault("throughput", {})
    for name, over in THROUGHPUT.items():
        if name in done and done[name]["minutes"] == minutes:
            continue
        with tempfile.TemporaryDirectory() as d:
            t0 = time.time()
            s = T.train(_args(Path(d), init, minutes, lr=1e-5, log_every=5, **over))
            wall = time.time() - t0
        rates = [h["it_s"] for h in s["history"] if "it_s" in h][1:]
        b = over["batch"]
        first_window = next((h for h in s["history"] if "it_s" in h), None)
        done[name] = {"minutes": minutes, "steps": s["step"], "images_per_s": round(b * statistics.median(rates), 1),
                      "startup_s": round(5 / first_window["it_s"] - 5 / statistics.median(rates), 1)
                      if first_window else None, "wall_s": round(wall, 1), "settings": over}
        print(f"{name}: {done[name]['images_per_s']} images/s, start-up {done[name]['startup_s']} s", flush=True)
        _save(results)


def run_pilots(results: dict, init: str, minutes: float, n_captions: int, n_val: int) -> None:
    done = results.setdefault("pilots", {})
    if "start" not in done:
        done["start"] = {"minutes": 0, "images": 0, "settings": {}, "judge": judge(Path(init), n_captions, n_val)}
        _save(results)
    speeds = results.get("throughput", {})
    for name, (speed_row, over) in PILOTS.items():
        if name in done and done[name]["minutes"] == minutes:
            continue
        if speed_row not in speeds:
            raise SystemExit(f"run --part throughput first: no measured speed for {speed_row!r}")
        ips = speeds[speed_row]["images_per_s"]
        steps = int(round(ips * minutes * 60 / over["batch"]))
        with tempfile.TemporaryDirectory() as d:
            s = T.train(_args(Path(d), init, None, steps=steps, **over))
            j = judge(Path(d) / "w", n_captions, n_val)
        done[name] = {"minutes": minutes, "images": s["images_seen"], "steps": s["step"], "images_per_s": ips,
                      "wall_minutes": round(s["train_minutes"], 1), "settings": over, "judge": j}
        print(f"{name}: {_row(name, done[name])}", flush=True)
        _save(results)


def run_judge(results: dict, init: str, weights: str, name: str, n_captions: int, n_val: int) -> None:
    """Judge a pilot the trainer wrote to ``weights`` (and the starting weights once), under ``architecture``."""
    rows = results.setdefault("architecture", {})
    start_cfg = json.loads((Path(init) / "config.json").read_text())
    start = f"shipped weights (step {start_cfg['training']['step']}, 8x8 tokens)"
    if start not in rows:
        rows[start] = {"minutes": 0, "images": 0, "config": start_cfg["config"], "judge": judge(Path(init), n_captions, n_val)}
        _save(results)
    cfg = json.loads((Path(weights) / "config.json").read_text())
    tr = cfg.get("training", {})
    minutes = tr.get("train_minutes", 0)
    rows[name] = {"minutes": round(minutes, 1), "images": tr.get("images_seen"),
                  "images_per_s": round(tr.get("images_seen", 0) / (60 * minutes), 1) if minutes else "-",
                  "steps": tr.get("step"), "config": cfg["config"], "warm_start": tr.get("warm_start"),
                  "args": tr.get("args"), "judge": judge(Path(weights), n_captions, n_val)}
    print(f"{name}: {_row(name, rows[name])}", flush=True)
    # the same captions and seeds: a paired difference says more than two overlapping intervals
    if "shape_ok" in rows[start]["judge"]:
        c = compare(rows[name]["judge"]["shape_ok"], rows[start]["judge"]["shape_ok"], name, start)
        rows[name]["shape_vs_start"] = c.to_dict()
        print(f"one-object shape, paired: {c.sentence}", flush=True)
    _save(results)


def _fmt(x: dict) -> str:
    return f"{100 * x['p']:.0f} % [{100 * x['ci95'][0]:.0f}, {100 * x['ci95'][1]:.0f}]"


def _row(name: str, r: dict) -> str:
    j = r["judge"]
    per = " / ".join(f"{100 * j['shape_by_kind'][s]['p']:.0f}" for s in ("circle", "square", "triangle"))
    ips = r.get("images_per_s", "-")
    return (f"| {name} | {r['minutes']} | {ips} | {r['images']} | {_fmt(j['shape'])} | {per} | {_fmt(j['colour'])} | "
            f"{j['val_loss']['one']:.4f} / {j['val_loss']['two']:.4f} |")


def table(results: dict) -> str:
    lines = []
    if results.get("throughput"):
        lines += ["| setting | images/s (steady) | start-up s |", "|---|---|---|"]
        for name, r in results["throughput"].items():
            lines.append(f"| {name} | {r['images_per_s']} | {r['startup_s']} |")
        lines.append("")
    if results.get("pilots"):
        p = results["pilots"]
        n = next(iter(p.values()))["judge"]["n"]
        lines += [f"| lever | minutes | images/s | images | one-object shape (n = {n}) | circle / square / triangle % "
                  "| one-object colour | val loss one / two objects |", "|---|---|---|---|---|---|---|---|"]
        for name, r in p.items():
            lines.append(_row(name, r))
    if results.get("architecture"):
        p = results["architecture"]
        n = next(iter(p.values()))["judge"]["n"]
        lines += ["", "Architecture pilots and GPU segments (trained by the trainer's own command line, then "
                  "judged here; minutes are the training time of the row's own segment: CPU minutes on this 2-core "
                  "machine, or GPU minutes where the row names a GPU):", "",
                  f"| pilot | minutes | images/s | images | one-object shape (n = {n}) | circle / square / triangle % "
                  "| one-object colour | val loss one / two objects |", "|---|---|---|---|---|---|---|---|"]
        for name, r in p.items():
            lines.append(_row(name, r))
    return "\n".join(lines)


def _save(results: dict) -> None:
    atomic_write(RESULTS, json.dumps(results, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["throughput", "pilots", "both", "judge"], default="both")
    ap.add_argument("--weights", help="--part judge: the pilot's weights (the trainer's --out)")
    ap.add_argument("--name", help="--part judge: the pilot's name in the table")
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock minutes per pilot")
    ap.add_argument("--throughput-minutes", type=float, default=1.5, help="minutes per throughput setting")
    ap.add_argument("--init", default=str(HERE.parent / "data" / "shapes"), help="starting weights")
    ap.add_argument("--captions", type=int, default=180, help="one-object captions judged per pilot")
    ap.add_argument("--val-n", type=int, default=512, help="scenes in the validation loss")
    a = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__}
    if a.part != "judge":   # the lever pilots' starting weights (an architecture pilot records its own)
        results["init"] = {"path": os.path.relpath(a.init, HERE.parent),
                           "step": json.loads((Path(a.init) / "config.json").read_text())["training"]["step"]}
    if a.part == "judge":
        if not (a.weights and a.name):
            raise SystemExit("--part judge needs --weights DIR and --name TEXT")
        run_judge(results, a.init, a.weights, a.name, a.captions, a.val_n)
    if a.part in ("throughput", "both"):
        run_throughput(results, a.init, a.throughput_minutes)
    if a.part in ("pilots", "both"):
        run_pilots(results, a.init, a.minutes, a.captions, a.val_n)
    print(table(results))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
