"""Training levers for the ``shapes`` teaching model, measured at equal CPU time.

Four parts, each with nothing else running on the machine:

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

* ``judge``: a pilot trained with the trainer itself (its own command line, e.g. a finer token grid
  warm-started from the shipped weights with ``--init-partial``, or two arms of one lever run side by side
  for the same time), judged on the same yardstick plus colour, shape and relation on 180 held-out
  two-object captions (``train.two_object_eval_captions``; ``--two-captions 0`` skips them), recorded
  beside the shipped weights' own score with the CPU minutes and images its training took, and compared
  paired (same captions, same seeds) with the shipped weights and any rows named in ``--against``.
* ``replicate``: a judged row and the weights it is compared with (``--init``) once more on other captions
  and fresh noise (``--caption-seed``), usually more of them than the fixed yardstick's 180, compared paired
  overall and per shape: for differences of a few points the yardstick cannot resolve.  The one-object
  language has only 360 captions, so ``--captions 360`` judges all of them (the yardstick's 180 included: only
  the noise is new for those); how many captions each set shares with the yardstick is recorded and shown.
  Stored under ``replications``, one entry per row and caption seed.

Usage::

    python benchmarks/shapes_pilots.py --minutes 8            # both parts
    python benchmarks/shapes_pilots.py --part throughput
    python -m massact_viz.shapes.train --out runs/shapes-g16/out --ckpt-dir runs/shapes-g16/ckpt \
        --init-from data/shapes --init-partial --config '{"vae_factor": 1}' --batch 32 --lr 3e-4 \
        --warmup 100 --lr-schedule cosine --steps 1300 --minutes 40 --p-two 0.2 --threads 2 --eval-n 0
    python benchmarks/shapes_pilots.py --part judge --weights runs/shapes-g16/out \
        --name "token grid 16x16 (vae_factor 1), partial warm start"
    python benchmarks/shapes_pilots.py --part judge --weights runs/armB/out --name "two-object scenes 70 %" \
        --against "two-object scenes 35 % (control)"
    python benchmarks/shapes_pilots.py --part replicate --weights runs/armB/out --name "two-object scenes 70 %" \
        --captions 360 --two-captions 360      # other captions, fresh noise, paired against --init


Results go to ``benchmarks/shapes_pilots.json`` (finished rows are kept and skipped on
a rerun with the same settings) and a Markdown table is printed; the model card
(``python benchmarks/shapes_card.py``) copies the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from massact_viz.files import atomic_write  # noqa: E402
from massact_viz.shapes import scenes, train as T  # noqa: E402
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
    # data-parallel: two launched processes (torchrun, gloo), one thread each, 32 images each per step
    "batch 64, 2 processes x 1 thread": dict(batch=64, threads=1, processes=2),
    # the same with bfloat16 autocast (the trainer's --bf16; on a CPU with bfloat16 matrix units)
    "batch 64, 2 processes x 1 thread, bf16": dict(batch=64, threads=1, processes=2, bf16=True),
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


def _acc(flags: list[bool]) -> dict:
    k, n = sum(flags), len(flags)
    return {"k": k, "n": n, "p": k / n, "ci95": list(wilson_interval(k, n))}


def judge(weights: Path, n_captions: int, n_val: int, n_two: int = 0, caption_seed: int | None = None) -> dict:
    """The fixed yardstick: one-object shape and colour (``n_captions``), with ``n_two`` > 0 also colour, shape
    and relation on that many held-out two-object captions, and (``n_val`` > 0) the fixed-noise validation loss;
    per-caption outcomes are kept for paired comparisons (same captions, same seeds).  ``caption_seed`` draws
    other captions (for the two-object ones; the one-object language has 360 in all) and other noise than the
    fixed yardstick's (a replication)."""
    pipe = load_shapes_pipeline(weights)
    one_seed, two_seed, noise = (7, 11, 0) if caption_seed is None else (
        1000 + 2 * caption_seed, 1001 + 2 * caption_seed, 100_000 * caption_seed)
    recs = T.evaluate(pipe, T.one_object_eval_captions(n_captions, seed=one_seed), seed=noise)["records"]
    out = {"n": len(recs)}
    for key in ("shape", "colour"):
        out[key] = _acc([bool(r[f"{key}_ok"]) for r in recs])
    out["shape_by_kind"] = {s: _acc([bool(r["shape_ok"]) for r in recs if f" {s} " in r["caption"]])
                            for s in ("circle", "square", "triangle")}
    out["shape_ok"] = [bool(r["shape_ok"]) for r in recs]   # per caption, for paired comparisons
    out["captions"] = [r["caption"] for r in recs]
    if n_two:
        two = T.evaluate(pipe, T.two_object_eval_captions(n_two, seed=two_seed), seed=noise)["records"]
        flags = {key: [bool(r[f"{key}_ok"]) for r in two] for key in ("colour", "shape", "relation")}
        flags["all"] = [bool(r["ok"]) for r in two]
        out["two"] = {"n": len(two), **{key: _acc(f) for key, f in flags.items()}, "per_caption": flags,
                      "captions": [r["caption"] for r in two]}
    if n_val:
        out["val_loss"] = T.validation_loss(pipe, n_val)
    return out


def _launched(out: Path, init: str, minutes: float, processes: int, **over) -> dict:
    """The trainer's command line launched as ``processes`` processes (torchrun); its summary and log."""
    if not set(over) <= {"batch", "threads", "bf16"}:
        raise SystemExit(f"a launched throughput row passes only batch, threads and bf16, not {sorted(set(over))}")
    a = _args(out, init, minutes, lr=1e-5, log_every=5, **over)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "massact_viz.shapes.train", "--out", a.out, "--ckpt-dir", a.ckpt_dir, "--init-from", init,
           "--minutes", str(minutes), "--batch", str(a.batch), "--lr", str(a.lr), "--warmup", str(a.warmup),
           "--threads", str(a.threads), "--eval-n", "0", "--val-n", "0", "--ckpt-every", "1e9", "--log-every", "5",
           "--fresh", "--no-progress", "--device", "cpu", *(["--bf16"] if a.bf16 else [])]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)),
                       timeout=60 * minutes + 600)
    if r.returncode or "{" not in r.stdout:
        raise SystemExit(f"the launched trainer failed:\n{r.stderr[-2000:]}")
    s = json.loads(r.stdout[r.stdout.index("{"):])
    s["history"] = [json.loads(line) for line in (Path(a.ckpt_dir) / "log.jsonl").read_text().splitlines()]
    return s


def run_throughput(results: dict, init: str, minutes: float, only: list[str] | None = None) -> None:
    """Measure each setting (with ``only``: just those, again, as a baseline measured beside a new setting)."""
    done = results.setdefault("throughput", {})
    unknown = sorted(set(only or []) - set(THROUGHPUT))
    if unknown:
        raise SystemExit(f"--only: no throughput setting named {unknown[0]!r}; settings: {list(THROUGHPUT)}")
    for name, over in THROUGHPUT.items():
        if (only and name not in only) or (not only and name in done and done[name]["minutes"] == minutes):
            continue
        over = dict(over)
        processes = over.pop("processes", 1)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.time()
            if processes > 1:
                s = _launched(Path(d), init, minutes, processes, **over)
            else:
                s = T.train(_args(Path(d), init, minutes, lr=1e-5, log_every=5, **over))
            wall = time.time() - t0
        rates = [h["it_s"] for h in s["history"] if "it_s" in h][1:]
        b = over["batch"]
        first_window = next((h for h in s["history"] if "it_s" in h), None)
        done[name] = {"minutes": minutes, "steps": s["step"], "images_per_s": round(b * statistics.median(rates), 1),
                      "startup_s": round(5 / first_window["it_s"] - 5 / statistics.median(rates), 1)
                      if first_window else None, "wall_s": round(wall, 1), "settings": THROUGHPUT[name],
                      "measured": time.strftime("%Y-%m-%d")}
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


def run_judge(results: dict, init: str, weights: str, name: str, n_captions: int, n_val: int, n_two: int,
              against: list[str]) -> None:
    """Judge a pilot the trainer wrote to ``weights`` (and the starting weights once), under ``architecture``,
    and compare it, paired, with the starting weights and the rows named in ``against`` (e.g. a control arm
    trained for the same time)."""
    rows = results.setdefault("architecture", {})
    start_cfg = json.loads((Path(init) / "config.json").read_text())
    start = f"shipped weights (step {start_cfg['training']['step']}, 8x8 tokens)"
    if start not in rows or (n_two and "two" not in rows[start]["judge"]):
        rows[start] = {"minutes": 0, "images": 0, "config": start_cfg["config"],
                       "judge": judge(Path(init), n_captions, n_val, n_two)}
        _save(results)
    missing = [a for a in against if a not in rows]
    if missing:
        raise SystemExit(f"--against: no judged row named {missing[0]!r}; judged rows: {sorted(rows)}")
    cfg = json.loads((Path(weights) / "config.json").read_text())
    tr = cfg.get("training", {})
    seg = tr.get("segment") or tr   # the row's own segment (the trainer also writes totals over every segment)
    minutes = seg.get("train_minutes", 0)
    rows[name] = {"minutes": round(minutes, 1), "images": seg.get("images_seen"),
                  "images_per_s": round(seg.get("images_seen", 0) / (60 * minutes), 1) if minutes else "-",
                  "steps": seg.get("step"), "config": cfg["config"], "warm_start": tr.get("warm_start"),
                  "args": tr.get("args"), "judge": judge(Path(weights), n_captions, n_val, n_two)}
    print(f"{name}: {_row(name, rows[name])}", flush=True)
    # the same captions and seeds: a paired difference says more than two overlapping intervals
    rows[name]["paired"] = {}
    for other in [start, *against]:
        mine, theirs = rows[name]["judge"], rows[other]["judge"]
        pairs = [("one-object shape", mine.get("shape_ok"), theirs.get("shape_ok"))]
        if "two" in mine and "two" in theirs:
            pairs += [(f"two-object {key}", mine["two"]["per_caption"][key], theirs["two"]["per_caption"][key])
                      for key in ("colour", "shape", "relation")]
        for label, a, b in pairs:
            if a is None or b is None or len(a) != len(b):
                continue
            c = compare(a, b, name, other)
            rows[name]["paired"][f"{label} vs {other}"] = c.to_dict()
            print(f"{label}, paired: {c.sentence}", flush=True)
    _save(results)


def check_counts(n_captions: int, n_two: int) -> None:
    """Caption counts are checked before any model loads: one-object captions come in threes (one per shape)."""
    if n_captions < 3 or n_captions % 3:
        raise SystemExit(f"--captions {n_captions}: ask for a positive multiple of 3 (one caption per shape each)")
    if n_two < 0:
        raise SystemExit(f"--two-captions {n_two}: ask for 0 (skip two-object scenes) or more")


def _shared(captions: list[str], yardstick: list[str]) -> int:
    return len(set(captions) & set(yardstick))


def run_replicate(results: dict, init: str, weights: str, name: str, n_captions: int, n_two: int,
                  caption_seed: int) -> None:
    """A second, larger look at a judged row: ``weights`` and the weights it is compared with (``init``) on other
    captions and fresh noise (``caption_seed``), compared paired; for a difference the fixed 180-caption yardstick
    cannot resolve."""
    check_counts(n_captions, n_two)
    if caption_seed < 1:
        raise SystemExit("--caption-seed must be 1 or more (0 would reuse the fixed yardstick's noise)")
    population = len(scenes.all_single_captions(style_words=True))
    if n_captions > population:
        raise SystemExit(f"--captions {n_captions}: the language has {population} distinct one-object captions; "
                         f"ask for at most that many")
    judged = {**results.get("pilots", {}), **results.get("architecture", {})}
    if name not in judged:
        raise SystemExit(f"--name {name!r} is not a judged row: run --part judge with it first "
                         f"(benchmarks/shapes_pilots.json lists the judged rows)")
    start_step = json.loads((Path(init) / "config.json").read_text())["training"]["step"]
    mine, theirs = (judge(Path(w), n_captions, 0, n_two, caption_seed) for w in (weights, init))
    if mine["captions"] != theirs["captions"]:
        raise RuntimeError("the two weights were judged on different captions; nothing to pair")
    start = f"shipped weights (step {start_step}, 8x8 tokens)"
    rec = {"row": name, "weights": os.path.relpath(weights, HERE.parent), "against": start,
           "caption_seed": caption_seed, "n_one": len(mine["shape_ok"]), "n_two": mine["two"]["n"] if n_two else 0,
           "shared_with_yardstick": {"one": _shared(mine["captions"], T.one_object_eval_captions(180, seed=7))},
           "paired": {}}
    if n_two:
        rec["shared_with_yardstick"]["two"] = _shared(mine["two"]["captions"], T.two_object_eval_captions(180, seed=11))
    pairs = [("one-object shape", mine["shape_ok"], theirs["shape_ok"])]
    pairs += [(f"one-object {s}", *[[f for f, c in zip(j["shape_ok"], j["captions"]) if f" {s} " in c]
                                     for j in (mine, theirs)]) for s in ("circle", "square", "triangle")]
    if n_two:
        pairs += [(f"two-object {key}", mine["two"]["per_caption"][key], theirs["two"]["per_caption"][key])
                  for key in ("colour", "shape", "relation")]
    for label, a, b in pairs:
        c = compare(a, b, name, start)
        rec["paired"][label] = c.to_dict()
        print(f"{label}, paired on caption seed {caption_seed}: {c.sentence}", flush=True)
    results.setdefault("replications", {})[f"{name} (caption seed {caption_seed})"] = rec
    _save(results)


def _fmt(x: dict) -> str:
    return f"{100 * x['p']:.0f} % [{100 * x['ci95'][0]:.0f}, {100 * x['ci95'][1]:.0f}]"


def _row(name: str, r: dict) -> str:
    j = r["judge"]
    per = " / ".join(f"{100 * j['shape_by_kind'][s]['p']:.0f}" for s in ("circle", "square", "triangle"))
    ips = r.get("images_per_s", "-")
    two = " / ".join(_fmt(j["two"][k]) for k in ("colour", "shape", "relation")) if "two" in j else "-"
    return (f"| {name} | {r['minutes']} | {ips} | {r['images']} | {_fmt(j['shape'])} | {per} | {_fmt(j['colour'])} | "
            f"{two} | {j['val_loss']['one']:.4f} / {j['val_loss']['two']:.4f} |")


def _two_header(rows: dict) -> str:
    ns = sorted({r["judge"]["two"]["n"] for r in rows.values() if "two" in r["judge"]})
    return f"held-out two-object colour / shape / relation (n = {', '.join(map(str, ns)) or '-'})"


def table(results: dict) -> str:
    lines = []
    if results.get("throughput"):
        lines += ["| setting | images/s (steady) | start-up s | measured |", "|---|---|---|---|"]
        for name, r in results["throughput"].items():
            lines.append(f"| {name} | {r['images_per_s']} | {r['startup_s']} | {r.get('measured', '-')} |")
        lines.append("")
    if results.get("pilots"):
        p = results["pilots"]
        n = next(iter(p.values()))["judge"]["n"]
        lines += [f"| lever | minutes | images/s | images | one-object shape (n = {n}) | circle / square / triangle % "
                  f"| one-object colour | {_two_header(p)} | val loss one / two objects |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in p.items():
            lines.append(_row(name, r))
    if results.get("architecture"):
        p = results["architecture"]
        n = next(iter(p.values()))["judge"]["n"]
        lines += ["", "Architecture pilots and GPU segments (trained by the trainer's own command line, then "
                  "judged here; minutes are the training time of the row's own segment: CPU minutes on this 2-core "
                  "machine, or GPU minutes where the row names a GPU):", "",
                  f"| pilot | minutes | images/s | images | one-object shape (n = {n}) | circle / square / triangle % "
                  f"| one-object colour | {_two_header(p)} | val loss one / two objects |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in p.items():
            lines.append(_row(name, r))
    if results.get("replications"):
        lines += ["", "Replications (`--part replicate`: a judged row and the weights it was compared with, judged again "
                  "on other captions and fresh noise, paired; difference in points with its 95 % interval; the "
                  "one-object language has 360 captions, so a set of 360 includes the yardstick's 180):", "",
                  "| row | against | n one / two objects (shared with the yardstick) | one-object shape "
                  "| circle / square / triangle | two-object colour / shape / relation |", "|---|---|---|---|---|---|"]
        for key, r in results["replications"].items():
            d, shared = r["paired"], r.get("shared_with_yardstick", {})
            pts = lambda k: "-" if k not in d else "{} [{}, {}]".format(  # noqa: E731
                *(_points(d[k]["diff"][q]) for q in ("mean", "lo", "hi")))
            n = f"{r['n_one']} / {r['n_two']}"
            if shared:
                n += f" ({shared.get('one', '-')} / {shared.get('two', '-')})"
            lines.append(f"| {key} | {r['against']} | {n} | {pts('one-object shape')} | "
                         + " / ".join(pts(f"one-object {s}") for s in ("circle", "square", "triangle")) + " | "
                         + " / ".join(pts(f"two-object {k}") for k in ("colour", "shape", "relation")) + " |")
    return "\n".join(lines)


def _points(x: float) -> str:
    """A difference of proportions in signed percentage points; no sign on zero."""
    v = round(100 * x)
    return f"{v:+d}" if v else "0"


def _save(results: dict) -> None:
    atomic_write(RESULTS, json.dumps(results, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["throughput", "pilots", "both", "judge", "replicate"], default="both")
    ap.add_argument("--weights", help="--part judge: the pilot's weights (the trainer's --out)")
    ap.add_argument("--name", help="--part judge: the pilot's name in the table")
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock minutes per pilot")
    ap.add_argument("--throughput-minutes", type=float, default=1.5, help="minutes per throughput setting")
    ap.add_argument("--only", nargs="+", help="--part throughput: measure just these settings again (e.g. a new one "
                                              "and its baseline, in the same run)")
    ap.add_argument("--init", default=str(HERE.parent / "data" / "shapes"), help="starting weights")
    ap.add_argument("--captions", type=int, default=180, help="one-object captions judged per pilot")
    ap.add_argument("--two-captions", type=int, default=180,
                    help="--part judge: held-out two-object captions judged per row (0 = skip)")
    ap.add_argument("--against", nargs="*", default=[],
                    help="--part judge: judged rows to compare the pilot with, paired (the starting weights always)")
    ap.add_argument("--val-n", type=int, default=512, help="scenes in the validation loss")
    ap.add_argument("--caption-seed", type=int, default=1,
                    help="--part replicate: which other captions and fresh noise (1, 2, ...; the yardstick's are fixed)")
    a = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__}
    if a.part != "judge":   # the lever pilots' starting weights (an architecture pilot records its own)
        results["init"] = {"path": os.path.relpath(a.init, HERE.parent),
                           "step": json.loads((Path(a.init) / "config.json").read_text())["training"]["step"]}
    if a.part in ("judge", "replicate", "pilots", "both"):
        check_counts(a.captions, a.two_captions)
    if a.part == "judge":
        if not (a.weights and a.name):
            raise SystemExit("--part judge needs --weights DIR and --name TEXT")
        run_judge(results, a.init, a.weights, a.name, a.captions, a.val_n, a.two_captions, a.against)
    if a.part == "replicate":
        if not (a.weights and a.name):
            raise SystemExit("--part replicate needs --weights DIR and --name TEXT (the judged row's name)")
        run_replicate(results, a.init, a.weights, a.name, a.captions, a.two_captions, a.caption_seed)
        return
    if a.part in ("throughput", "both"):
        run_throughput(results, a.init, a.throughput_minutes, a.only)
    if a.part in ("pilots", "both"):
        run_pilots(results, a.init, a.minutes, a.captions, a.val_n)
    print(table(results))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
