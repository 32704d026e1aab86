"""Sampling settings for the ``shapes`` teaching model, measured on the shipped weights.

Training levers cost CPU-hours; sampling levers cost nothing to try.  This script
judges the shipped weights under several (classifier-free guidance scale, number of
denoising steps) settings on the trainer's fixed yardsticks:

* 180 one-object captions (60 per shape, style variants included,
  ``train.one_object_eval_captions``): shape and colour accuracy, per shape;
* the 100 held-out captions (``scenes.heldout_captions``): colour, shape, relation.

Each accuracy carries its 95 % Wilson interval (n shown).  Every setting uses the
same generator seeds (image i: seed i), so settings are compared on the same noise;
the paired difference of one-object shape accuracy against the current default
(``train.DEFAULT_SAMPLING``) is reported with a bootstrap interval over captions
(``intervals.compare``).

Usage::

    python benchmarks/shapes_sampling.py                  # the default grid
    python benchmarks/shapes_sampling.py --cfg 4 6 --steps 20

Results go to ``benchmarks/shapes_sampling.json`` (finished settings are kept and
skipped on a rerun for the same weights) and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from massact_viz.files import atomic_write, data_dir  # noqa: E402
from massact_viz.intervals import compare, proportion_interval  # noqa: E402
from massact_viz.shapes import scenes  # noqa: E402
from massact_viz.shapes import train as T  # noqa: E402
from massact_viz.shapes.model import load_shapes_pipeline  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "shapes_sampling.json"


def _weights_id() -> str:
    return hashlib.sha256((data_dir() / "shapes" / "model.safetensors").read_bytes()).hexdigest()[:16]


def _acc(recs: list[dict], key: str) -> dict:
    return proportion_interval([r[key] for r in recs if r[key] is not None]).to_dict()


def measure(pipe, cfg: float, steps: int) -> dict:
    one = T.evaluate(pipe, T.one_object_eval_captions(180), seed=0, true_cfg_scale=cfg, num_inference_steps=steps)
    held = T.evaluate(pipe, scenes.heldout_captions(100), seed=0, true_cfg_scale=cfg, num_inference_steps=steps)
    r1 = one["records"]
    out = {"cfg": cfg, "steps": steps,
           "one_shape": _acc(r1, "shape_ok"), "one_colour": _acc(r1, "colour_ok"),
           "per_shape": {s: _acc([r for r in r1 if f" {s} " in f" {r['caption']} "], "shape_ok")
                         for s in scenes.SHAPES},
           "held_colour": _acc(held["records"], "colour_ok"), "held_shape": _acc(held["records"], "shape_ok"),
           "held_relation": _acc(held["records"], "relation_ok"),
           "one_shape_ok": [bool(r["shape_ok"]) for r in r1]}
    return out


def _fmt(a: dict) -> str:
    return f"{100 * a['mean']:.0f} % [{100 * a['lo']:.0f}, {100 * a['hi']:.0f}]"


def markdown(rows: list[dict]) -> str:
    base = next((r for r in rows if r["cfg"] == T.DEFAULT_SAMPLING["true_cfg_scale"]
                 and r["steps"] == T.DEFAULT_SAMPLING["num_inference_steps"]), None)
    lines = ["| CFG scale | steps | one-object shape (n = 180) | circle / square / triangle % "
             "| one-object colour | vs default (paired, shape) | held-out colour / shape / relation (n = 100) |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["steps"], r["cfg"])):
        ps = " / ".join(f"{100 * r['per_shape'][s]['mean']:.0f}" for s in scenes.SHAPES)
        if base is None or r is base:
            diff = "-"
        else:
            d = compare(np.array(r["one_shape_ok"], float), np.array(base["one_shape_ok"], float)).diff
            diff = f"{100 * d.mean:+.0f} pts [{100 * d.lo:+.0f}, {100 * d.hi:+.0f}]"
        held = " / ".join(f"{100 * r[k]['mean']:.0f} %" for k in ("held_colour", "held_shape", "held_relation"))
        lines.append(f"| {r['cfg']:g} | {r['steps']} | {_fmt(r['one_shape'])} | {ps} | {_fmt(r['one_colour'])} "
                     f"| {diff} | {held} |")
    if base is not None:
        better = [r for r in rows if r is not base and compare(np.array(r["one_shape_ok"], float),
                                                               np.array(base["one_shape_ok"], float)).verdict == ">"]
        worse = [r for r in rows if r is not base and compare(np.array(r["one_shape_ok"], float),
                                                              np.array(base["one_shape_ok"], float)).verdict == "<"]
        name = lambda r: f"CFG {r['cfg']:g} / {r['steps']} steps"  # noqa: E731
        lines += ["", "Computed from the rows: " + (
            f"better one-object shape accuracy than the default: {', '.join(map(name, better))}."
            if better else "no setting draws shapes better than the default beyond its interval; the default stays.")
            + (f" Worse: {', '.join(map(name, worse))}." if worse else "")]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", type=float, nargs="+", default=[2.0, 4.0, 6.0, 8.0])
    p.add_argument("--steps", type=int, nargs="+", default=[20, 40])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    wid = _weights_id()
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if data.get("weights") != wid:
        data = {"weights": wid, "rows": []}
    pipe = load_shapes_pipeline()
    for steps in a.steps:
        for cfg in a.cfg:
            if any(r["cfg"] == cfg and r["steps"] == steps for r in data["rows"]):
                continue
            row = measure(pipe, cfg, steps)
            data["rows"].append(row)
            atomic_write(RESULTS, json.dumps(data, indent=1))
            print(f"cfg {cfg:g} steps {steps}: one-object shape {_fmt(row['one_shape'])}", flush=True)
    print(markdown(data["rows"]))


if __name__ == "__main__":
    main()
