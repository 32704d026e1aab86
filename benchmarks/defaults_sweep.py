"""Defaults by measurement: the settings the paper leaves open, swept on the embedded teaching model.

Three parts (each with 95 % bootstrap intervals over prompts or pairs, n shown):

* ``transport``: every caption pair of ``data/prompts/shapes_pairs.tsv`` (32 pairs, ``--seeds`` noise
  seeds each), one setting changed at a time around a base (k=8, all layers, all steps, alpha 1, all
  tokens, both CFG branches, the target's conditioning), with the random-k, bottom-k and full-swap
  controls at the base. Scores per row: valid scene rate, the source caption's colours shown
  (``colour_source``, object- and background-colour pairs), the fraction of the source caption's
  attributes shown (``judge_source``), ``toward_source`` and SSIM to the target (structure kept).
* ``localization``: :func:`massact_viz.probes.localization.localize` on the one- and two-object captions
  of ``data/prompts/shapes_captions.txt`` for each foreground rule and k, at the last step and the
  middle one; the top-k best layer against bottom-k, random-k and all channels (paired), and how the
  interval narrows with the number of prompts (what a notebook can afford).
* ``disruption``: :func:`massact_viz.probes.disrupt` variants (zero / mean / scale 0.1, image stream /
  both streams, all layers and steps / early steps / late steps / double blocks), top-k against random-k
  and bottom-k at k = 4, 8, 16, scored by pixel MSE, scene validity and the judge's colour and shape
  credit (collapse = the valid-scene rate or colour credit falling).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/defaults_sweep.py --part transport [--seeds 2]
    python benchmarks/defaults_sweep.py --part all --quick     # a small smoke run (few pairs/prompts)

Writes ``benchmarks/defaults_sweep.json`` (merged per part) and prints Markdown tables (BENCHMARKS.md
"Defaults by measurement" copies them).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import massact_viz as mv  # noqa: E402
from massact_viz.intervals import MIN_N_CLAIM, compare, mean_interval  # noqa: E402
from massact_viz.probes import disrupt  # noqa: E402
from massact_viz.probes.transport import TransportStudy, transport_study  # noqa: E402
from massact_viz.probes.localization import localize  # noqa: E402
from massact_viz.files import atomic_write, strict_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "defaults_sweep.json"

BASE = dict(k=8, layers=None, steps=None, alpha=1.0, tokens=None, branch="both", conditioning="target")
TRANSPORT_VARIANTS = {  # name -> overrides of BASE (one setting changed at a time)
    "base (k=8, all layers and steps, both branches)": {},
    "branch=cond (conditional branch only)": dict(branch="cond"),
    "conditioning=source": dict(conditioning="source"),
    "k=1": dict(k=1), "k=4": dict(k=4), "k=16": dict(k=16), "k=32": dict(k=32),
    "layers=double": dict(layers="double"), "layers=single": dict(layers="single"),
    "steps 0-10 (first half)": dict(steps=(0, 10)), "steps 10-20 (second half)": dict(steps=(10, 20)),
    "alpha=0.5": dict(alpha=0.5),
    "tokens=target (target's foreground)": dict(tokens="target"),
}


def _pairs(quick: bool, n: int | None = None) -> list[tuple[str, str, str]]:
    lines = (ROOT / "data" / "prompts" / "shapes_pairs.tsv").read_text().splitlines()[1:]
    pairs = [tuple(line.split("\t")[:3]) for line in lines if line.strip() and not line.startswith("#")]
    if quick:
        return pairs[::8]
    return pairs[::max(1, len(pairs) // n)][:n] if n else pairs


def _captions(quick: bool) -> list[str]:
    lines = (ROOT / "data" / "prompts" / "shapes_captions.txt").read_text().splitlines()
    caps = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return caps[:6] if quick else caps[:32]


def COLOUR_PAIRS(note: str) -> bool:  # noqa: N802 (a filter passed by name)
    return note.startswith(("object colour", "background colour"))


# ------------------------------------------------------------------------------------------ transport
def sweep_transport(model, seeds: int, quick: bool, n_pairs: int | None = None) -> dict:
    pairs = _pairs(quick, n_pairs)
    out = {}
    variants = {k: v for k, v in TRANSPORT_VARIANTS.items() if not quick or k.startswith(("base", "branch"))}
    t0 = time.time()
    for name, over in tqdm(variants.items(), desc="transport settings"):
        ctrl = ["random-k", "bottom-k", "full-swap"] if name.startswith("base") else \
            ["random-k"] if name in ("k=4", "k=16") else []
        study = transport_study(model, pairs, seeds=seeds, controls=ctrl, progress=False, **{**BASE, **over})
        out[name] = study.to_dict()
    return {"pairs": len(pairs), "seeds": seeds, "seconds": round(time.time() - t0, 1), "base": BASE,
            "variants": {k: {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in v.items()}
                         for k, v in variants.items()}, "studies": out}


def transport_tables(doc: dict) -> str:
    studies = {k: TransportStudy.from_dict(v) for k, v in doc["studies"].items()}
    out = [f"Transport on the embedded model: {doc['pairs']} caption pairs x {doc['seeds']} seed(s), mean [95 % "
           f"bootstrap interval over pairs]; `colour_source` over the object- and background-colour pairs only.", "",
           "| setting | row | valid scene | colour_source | judge_source | toward_source | ssim_target | composite |",
           "|---|---|---|---|---|---|---|---|"]
    for name, st in studies.items():
        rows = ["transported"] + [c for c in ("random-k", "bottom-k", "full-swap") if c in st.rows] + \
            (["target"] if name.startswith("base") else [])
        for row in rows:
            cells = [st.interval(row, "valid").fmt(), st.interval(row, "colour_source", COLOUR_PAIRS).fmt(),
                     st.interval(row, "judge_source").fmt(), st.interval(row, "toward_source").fmt(),
                     st.interval(row, "ssim_target").fmt(), st.interval(row, "composite").fmt()]
            out.append(f"| {name} | {row} | " + " | ".join(cells) + " |")
    base = next(v for k, v in studies.items() if k.startswith("base"))
    out += ["", "Paired comparisons at the base setting:", ""]
    for metric, where in (("colour_source", COLOUR_PAIRS), ("judge_source", None), ("valid", None)):
        for other in ("random-k", "bottom-k"):
            if other in base.rows:
                out.append(f"* {base.compare(metric, 'transported', other, where).sentence}")
    by_k = {}
    for name, st in studies.items():
        if name.startswith(("base", "k=")) and "random-k" in st.rows:
            k = int(st.settings["k"])
            c = st.compare("toward_source", "transported", "random-k")
            by_k[k] = c
            out.append(f"* k={k}: {c.sentence}")
    beats = sorted(k for k, c in by_k.items() if c.verdict == ">")
    out.append(f"* smallest k (of {sorted(by_k)}) at which top-k moves the image toward the source more than random-k: "
               + (f"k = {beats[0]}" if beats else
                  f"none: too few pairs for a claim (n < {MIN_N_CLAIM})" if all(c.diff.n < MIN_N_CLAIM for c in by_k.values())
                  else "none (top-k is not distinguishable from random-k at any k measured)"))
    cond = next((v for k, v in studies.items() if k.startswith("branch=cond")), None)
    if cond:
        c = compare(base.matrix("transported", "valid"), cond.matrix("transported", "valid"),
                    "valid scenes, branch=both", "branch=cond")
        out.append(f"* {c.sentence}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ localization
def sweep_localization(model, quick: bool) -> dict:
    caps = _captions(quick)
    res = {}
    t0 = time.time()
    steps = model.resolve_num_steps(None)
    for rule in ("border", "max_sum", "minority"):
        for k in ((4,) if quick else (1, 2, 4, 8)):
            if rule != "border" and k != 4:
                continue
            r = localize(model, caps, "shapes", k=k, foreground=rule, steps=[steps // 2, -1], progress=False)
            res[f"{rule}/k{k}"] = {"layers": r.layers, "steps": r.steps, "sets": r.sets, "prompts": r.prompts,
                                   "iou": r.iou.tolist()}
    return {"captions": len(caps), "seconds": round(time.time() - t0, 1), "results": res}


def localization_tables(doc: dict) -> str:
    from massact_viz.probes.localization import LocalizationResult

    out = [f"Localization on the embedded model: {doc['captions']} captions, mIoU [95 % interval over captions].", "",
           "| rule / k | step | best top-k layer | top-k | bottom-k | random-k | all channels | top vs bottom | "
           "top vs all |", "|---|---|---|---|---|---|---|---|---|"]
    for key, d in doc["results"].items():
        r = LocalizationResult(d["layers"], d["steps"], d["sets"], d["prompts"], np.asarray(d["iou"]),
                               {"k": key.split("/k")[1]})
        for step in r.steps:
            layer = r.best_layer("top", step)
            iv = {s: r.interval(s, layer, step) for s in r.sets}
            vb, va = r.compare("top", "bottom", layer, step).verdict, r.compare("top", "all", layer, step).verdict
            out.append(f"| {key} | {step} | {layer} | " + " | ".join(iv[s].fmt() for s in ("top", "bottom", "random",
                                                                                               "all")) +
                       f" | {vb} | {va} |")
    base = doc["results"].get("border/k4")
    if base:
        r = LocalizationResult(base["layers"], base["steps"], base["sets"], base["prompts"], np.asarray(base["iou"]),
                               {"k": 4})
        layer = r.best_layer("top")
        out += ["", f"How many prompts a notebook needs (border rule, k=4, {layer}, last step; first n captions):", "",
                "| n | top-k | bottom-k | all channels | top vs bottom |", "|---|---|---|---|---|"]
        li, ti = r.layers.index(layer), len(r.steps) - 1
        for n in (4, 8, 16, len(r.prompts)):
            sub = r.iou[:, li, ti, :n]
            c = compare(sub[r.sets.index("top")], sub[r.sets.index("bottom")], "top-k", "bottom-k")
            out.append(f"| {n} | {mean_interval(sub[r.sets.index('top')]).fmt()} | "
                       f"{mean_interval(sub[r.sets.index('bottom')]).fmt()} | "
                       f"{mean_interval(sub[r.sets.index('all')]).fmt()} | "
                       f"{c.verdict if n >= MIN_N_CLAIM else f'n < {MIN_N_CLAIM}: no claim'} |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ disruption
DISRUPTION_VARIANTS = {
    "zero, image stream, all layers and steps": dict(op="zero"),
    "mean (Sun et al.'s control)": dict(op="mean"),
    "scale x0.1": dict(op="scale", value=0.1),
    "zero, both streams": dict(op="zero", stream="both"),
    "zero, steps 0-5 (early)": dict(op="zero", steps=(0, 5)),
    "zero, steps 15-20 (late)": dict(op="zero", steps=(15, 20)),
    "zero, double blocks only": dict(op="zero", layers="double"),
}
DISRUPTION_METRICS = ("mse", "scene_valid", "judge_colour", "judge_shape")


def sweep_disruption(model, quick: bool) -> dict:
    caps = _captions(quick)[:16]
    res = {}
    t0 = time.time()
    variants = dict(list(DISRUPTION_VARIANTS.items())[:2]) if quick else DISRUPTION_VARIANTS
    for name, over in tqdm(variants.items(), desc="disruption variants"):
        r = disrupt(model, caps, ks=(4,) if quick else (4, 8, 16), random_draws=2 if quick else 3,
                    metrics=DISRUPTION_METRICS, progress=False, **over)
        base_colour = float(np.mean([mv.metrics.get_metric("judge_colour")(im, None, prompt=p)
                                     for im, p in zip(r.baseline.images, caps)]))
        res[name] = {"table": r.table, "settings": {k: v for k, v in over.items()}, "baseline_judge_colour": base_colour}
    return {"captions": len(caps), "seconds": round(time.time() - t0, 1), "results": res}


def disruption_tables(doc: dict) -> str:
    from massact_viz.probes.disruption import DisruptionResult

    out = [f"Disruption on the embedded model: {doc['captions']} captions; mean [95 % interval over captions]; "
           f"random-k averaged over 3 draws per caption.", "",
           "| variant | set | k | MSE | valid scene | colour credit | shape credit |", "|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, d in doc["results"].items():
        r = DisruptionResult(d["table"], {}, None, {"metrics": list(DISRUPTION_METRICS)})
        for row in r.summary():
            cells = [f"{row[m]:.3f} [{row[m + '_lo']:.3f}, {row[m + '_hi']:.3f}]" for m in DISRUPTION_METRICS]
            out.append(f"| {name} | {row['set']}-k | {row['k']} | " + " | ".join(cells) + " |")
        for k in sorted({row["k"] for row in r.table}):
            verdicts.append(f"* {name}: " + r.compare("scene_valid", "top", "random", k).sentence + "; " +
                            r.compare("mse", "top", "random", k).sentence)
        out.append(f"| {name} | unedited | - | 0 | 1 | {d['baseline_judge_colour']:.3f} | - |")
    return "\n".join(out + ["", "Top-k against random-k (paired over captions):", ""] + verdicts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", nargs="+", choices=["transport", "localization", "disruption", "all"], default=["all"],
                    help="parts to run; separate processes may run different parts at once (results merge per part)")
    ap.add_argument("--pairs", type=int, default=None, help="transport: use every n-th pair so that about this many remain")
    ap.add_argument("--seeds", type=int, default=1, help="noise seeds per transport pair")
    ap.add_argument("--quick", action="store_true", help="a few pairs and prompts (a smoke run)")
    ap.add_argument("--tables-only", action="store_true", help="print the tables of the saved results")
    a = ap.parse_args()
    doc = json.loads(OUT.read_text()) if OUT.exists() else {}
    parts = ["transport", "localization", "disruption"] if "all" in a.part else a.part
    if not a.tables_only:
        model = mv.load("shapes")
        cfg = json.loads((ROOT / "data" / "shapes" / "config.json").read_text())
        doc["model"] = {"source": "shapes", "training_step": cfg["training"]["step"]}
        for p in parts:
            doc[p] = {"transport": lambda: sweep_transport(model, a.seeds, a.quick, a.pairs),
                      "localization": lambda: sweep_localization(model, a.quick),
                      "disruption": lambda: sweep_disruption(model, a.quick)}[p]()
            doc[p]["quick"] = a.quick
            on_disk = json.loads(OUT.read_text()) if OUT.exists() else {}   # another process may have written a part
            doc = {**on_disk, "model": doc["model"], p: doc[p]}
            atomic_write(OUT, strict_json(doc, indent=1))
    for p in parts:
        if p in doc:
            print(f"\n### {p}\n")
            print({"transport": transport_tables, "localization": localization_tables,
                   "disruption": disruption_tables}[p](doc[p]))


if __name__ == "__main__":
    main()
