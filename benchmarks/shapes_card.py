"""Measure the shipped teaching model with the toolkit's own probes and write its model card.

A script, not a library module: it uses the probes, so it stands outside the package's import graph
(the teaching model in ``massact_viz/shapes`` uses only the floors below the probes).

    python benchmarks/shapes_card.py            # writes data/shapes/card.json, CARD.md and samples.png
                                                # (make shapes-card)

Everything in the card is computed here, from the shipped weights, with fixed seeds, and every number
carries its 95 % interval (Wilson for accuracies, bootstrap over captions or pairs for means):

* sample accuracy on 100 held-out captions (the procedural judge: colours, shapes, relations) and on 180
  one-object captions (60 per shape, the training pilots' yardstick), per shape;
* the massive-activation profile: top-1/median of ``abs_mean`` and ``mean_abs`` per layer, the recurring
  top channels, and the same at random initialisation of the same architecture;
* disruption (:func:`massact_viz.probes.disrupt`: zero the top-k / bottom-k / random-k channels by
  ``abs_mean``, image stream, every block and step, both CFG branches), scored by pixel MSE, the
  valid-scene rate and the judge's colour and shape credit;
* localization (:func:`massact_viz.probes.localization.localize`, the library's default foreground rule)
  per layer with top-k against bottom-k, random-k and all channels;
* transport (:func:`massact_viz.probes.transport_study` over the colour pairs of
  ``data/prompts/shapes_pairs.tsv``, the library's defaults) against random-k and bottom-k;
* what the two-object captions' objects were drawn as (their own shape, the other object's, a third, or the
  right one below the judge's bar) and why their relations missed; and whether the T5 slot's output tells the
  two objects apart at all (``massact_viz.shapes.binding.word_context``);
* a sample sheet (``samples.png``): the first 8 one-object and 8 two-object held-out captions, the model's
  image beside the caption drawn by the scene generator, with the judge's verdict;
* the training history and the training-lever pilots (``benchmarks/shapes_pilots.json``) when present.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import textwrap
import time
from pathlib import Path

import numpy as np

from massact_viz.shapes import scenes

N_PROMPTS = 16
PROMPTS_SEED = 7
K_DISRUPT = (4, 8)


def _prompts(n: int) -> list[str]:
    rng = np.random.default_rng(PROMPTS_SEED)
    caps = scenes.all_single_captions()
    return [caps[i] for i in rng.choice(len(caps), size=n, replace=False)]


def profile(model, prompts: list[str]) -> dict:
    run = model.run(prompts, seed=0, progress=False)
    s = run.stats
    ratio_abs, ratio_mag = s.ratio(stat="abs_mean"), s.ratio(stat="mean_abs")
    top = {layer: s.top_k(3, layer=layer)[0] for layer in s.layers}
    counts: dict[int, int] = {}
    for chans in top.values():
        counts[chans[0]] = counts.get(chans[0], 0) + 1
    return {"layers": s.layers, "ratio_abs_mean": [round(float(x), 2) for x in ratio_abs],
            "ratio_mean_abs": [round(float(x), 2) for x in ratio_mag], "top3": top,
            "top1_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def accuracy(pipe, captions: list[str]) -> dict:
    """The judge's accuracies with Wilson intervals, overall, by object count and (one object) by shape."""
    from massact_viz.intervals import proportion_interval
    from massact_viz.shapes.train import evaluate

    res = evaluate(pipe, captions)
    recs = res["records"]
    out = {"n": len(recs)}
    groups = {"all": recs, "one": [r for r in recs if r["relation_ok"] is None],
              "two": [r for r in recs if r["relation_ok"] is not None]}
    for s in scenes.SHAPES:
        groups[f"one/{s}"] = [r for r in groups["one"] if f" {s} " in r["caption"]]
    for tag, rs in groups.items():
        out[tag] = {"n": len(rs)}
        for key in ("colour", "shape", "relation", "all"):
            flags = [r[f"{key}_ok" if key != "all" else "ok"] for r in rs]
            flags = [f for f in flags if f is not None]
            out[tag][key] = proportion_interval(flags).to_dict() if flags else None
    out["one_misses"] = misses(groups["one"])
    out["relation_misses"] = relation_misses(groups["two"])
    out["two_object_shapes"] = two_object_shapes(groups["two"])
    return out


def misses(records: list[dict]) -> dict:
    """What the one-object misses drew, per asked shape: how many, what the judge read instead ("nothing" when no
    object of plausible size was found) and the bounding-box aspect (shorter / longer side) of missed and passed
    drawings - a square drawn as a rectangle reads as neither template and so is read as whichever fits less badly."""
    out = {}
    for s in scenes.SHAPES:
        rs = [r for r in records if f" {s} " in r["caption"]]
        miss = [r for r in rs if not r["shape_ok"]]
        aspect = lambda group: sorted(r["aspects"][0] for r in group if r["aspects"] and r["aspects"][0] is not None)  # noqa: E731
        read = {}
        for r in miss:
            k = (r["shapes"][0] if r["shapes"] else None) or "nothing"
            read[k] = read.get(k, 0) + 1
        out[s] = {"n": len(rs), "missed": len(miss), "read_as": read,
                  "aspect_missed": aspect(miss), "aspect_passed": aspect([r for r in rs if r["shape_ok"]])}
    return out


def relation_misses(records: list[dict]) -> dict:
    """Why two-object captions miss their relation: the judge found fewer than two objects (one blob, or two merged
    into one), or found two (matched to the caption's colours first) on the wrong side of each other, or on the
    right side but further apart along the other axis (diagonal)."""
    two = [r for r in records if r["relation_ok"] is not None]
    out = {"n": len(two), "missed": 0, "fewer than two objects": 0, "wrong side": 0, "diagonal": 0}
    for r in two:
        if r["relation_ok"]:
            continue
        out["missed"] += 1
        a, b = (r["centroids"] + [None, None])[:2]
        if a is None or b is None:
            out["fewer than two objects"] += 1
            continue
        axis, sign = scenes.RELATIONS[scenes.parse_caption(r["caption"])["relation"]]
        d = (a[0] - b[0], a[1] - b[1])
        out["wrong side" if d[axis] * sign <= 0 else "diagonal"] += 1
    return out


TWO_OBJECT_READINGS = ("drawn", "the other object's shape", "a third shape", "right shape, below the template bar",
                       "not found")


def two_object_shapes(records: list[dict]) -> dict:
    """What each object of the two-object captions was drawn as (the judge matches objects to the caption's colours):
    its shape; the *other* object's shape (the text told the colours apart but not which shape goes with which);
    the third shape; the right shape but below the template-IoU bar; or no object of that colour found."""
    out = dict.fromkeys(TWO_OBJECT_READINGS, 0)
    for r in records:
        if r["relation_ok"] is None:
            continue
        asked = [o["shape"] for o in scenes.parse_caption(r["caption"])["objects"]]
        for i, want in enumerate(asked):
            got = r["shapes"][i] if i < len(r["shapes"]) else None
            if got is None:
                out["not found"] += 1
            elif got == want:
                out["drawn" if r["ious"][i] >= scenes.MIN_IOU else "right shape, below the template bar"] += 1
            else:
                out["the other object's shape" if got == asked[1 - i] else "a third shape"] += 1
    return {"objects": sum(out.values()), **out}


def text_binding(pipe, captions: list[str]) -> dict:
    """How much the T5 slot's output at an object's words changes when the two objects trade places
    (``binding.word_context``: 1.0 = a bag of words), with its interval over the captions whose objects differ."""
    from massact_viz.intervals import mean_interval
    from massact_viz.shapes.binding import word_context

    sims = word_context(pipe, captions)
    iv = mean_interval(sims[~np.isnan(sims)])
    return {"cosine": iv.to_dict(), "sentence": str(iv), "captions": int((~np.isnan(sims)).sum())}


def _aspect_range(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f} (median {statistics.median(xs):.2f})" if xs else "-"


SHEET_FILE = "samples.png"
SHEET_CAPTIONS = 8  # per row kind: one-object and two-object held-out captions on the sample sheet


def sheet_captions(n: int = SHEET_CAPTIONS) -> list[str]:
    """The sample sheet's captions: the first ``n`` one-object and first ``n`` two-object held-out captions."""
    caps = scenes.heldout_captions(200)
    one = [c for c in caps if scenes.parse_caption(c)["relation"] is None][:n]
    two = [c for c in caps if scenes.parse_caption(c)["relation"] is not None][:n]
    return one + two


def sample_sheet(pipe, captions: list[str], title: str, *, per_row: int = 4):
    """A labelled sheet (``PIL.Image``) and the judge's records: for each caption the generated image (image i: seed i, the
    card's sampling) beside the same caption drawn by the scene generator, the caption, and the judge's
    verdict on colour, shape and (two objects) relation.  Readable without the code: what the model draws."""
    from PIL import Image, ImageDraw, ImageFont

    from massact_viz.shapes.train import evaluate

    res = evaluate(pipe, captions, seed=0, return_images=True)
    big, small, pad, text_h = 128, 64, 10, 58
    tile_w, tile_h = big + small + 3 * pad + 40, big + text_h + pad
    head = 56
    font, bold = ImageFont.load_default(size=12), ImageFont.load_default(size=15)
    rows = -(-len(captions) // per_row)
    sheet = Image.new("RGB", (per_row * tile_w + pad, head + rows * tile_h + pad), "white")
    d = ImageDraw.Draw(sheet)
    d.text((pad, 8), title, fill="black", font=bold)
    d.text((pad, 30), "Each tile: the model's image (left, 32x32 px shown at 4x) | the caption drawn by the scene "
           "generator (right, 2x) | the judge's verdict.", fill="black", font=font)
    for i, (img, rec) in enumerate(zip(res["images"], res["records"])):
        x, y = pad + (i % per_row) * tile_w, head + (i // per_row) * tile_h
        sheet.paste(Image.fromarray(img).resize((big, big), Image.NEAREST), (x, y))
        truth, _, _ = scenes.render(scenes.scene_from_caption(rec["caption"], np.random.default_rng(i)), img.shape[0])
        sheet.paste(Image.fromarray(truth).resize((small, small), Image.NEAREST), (x + big + pad, y))
        d.text((x + big + pad, y + small + 4), "right: caption", fill="dimgray", font=font)
        d.text((x + big + pad, y + small + 18), "drawn", fill="dimgray", font=font)
        d.text((x + big + pad, y + small + 36), "left: model,", fill="dimgray", font=font)
        d.text((x + big + pad, y + small + 50), f"seed {i}", fill="dimgray", font=font)
        for j, ln in enumerate(textwrap.wrap(rec["caption"], 38)[:3]):
            d.text((x, y + big + 4 + 13 * j), ln, fill="black", font=font)
        verdict = [f"colour {'yes' if rec['colour_ok'] else 'NO'}", f"shape {'yes' if rec['shape_ok'] else 'NO'}"]
        if rec["relation_ok"] is not None:
            verdict.append(f"relation {'yes' if rec['relation_ok'] else 'NO'}")
        d.text((x, y + big + 4 + 13 * 3), "judge: " + ", ".join(verdict),
               fill="darkgreen" if rec["ok"] else "firebrick", font=font)
    return sheet, res["records"]


def _iv(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "-"
    return f"{100 * d['mean']:.0f} % [{100 * d['lo']:.0f}, {100 * d['hi']:.0f}]"


def measure(model, n_eval: int = 100) -> dict:
    from massact_viz.probes import disrupt, transport_study
    from massact_viz.probes.localization import localize
    from massact_viz.shapes.model import build_shapes_pipeline, default_weights_dir, read_shapes_config
    from massact_viz.shapes.train import one_object_eval_captions, two_object_eval_captions, validation_loss

    import massact_viz as mv

    wdir = default_weights_dir()
    doc = read_shapes_config(wdir)
    t0 = time.time()
    card: dict = {"training": {k: v for k, v in doc.items() if k not in ("config", "format")},
                  "config": doc["config"]}
    card["accuracy_heldout"] = accuracy(model.pipe, scenes.heldout_captions(n_eval))
    card["accuracy_one_object"] = accuracy(model.pipe, one_object_eval_captions(180))
    card["val_loss"] = validation_loss(model.pipe, 512)
    card["text_binding"] = text_binding(model.pipe, two_object_eval_captions(180))
    prompts = _prompts(N_PROMPTS)
    card["prompts"] = prompts
    card["profile"] = profile(model, prompts)
    init = mv.Model(build_shapes_pipeline(doc["config"]), defaults=model.defaults)
    card["profile_at_init"] = profile(init, prompts)
    dis = disrupt(model, prompts, ks=K_DISRUPT, random_draws=3,
                  metrics=("mse", "scene_valid", "judge_colour", "judge_shape"), progress=False)
    card["disruption"] = {"summary": dis.summary(),
                          "comparisons": {f"{m}/top-vs-{o}/k{k}": dis.compare(m, "top", o, k).to_dict()
                                          for k in K_DISRUPT for o in ("random", "bottom")
                                          for m in ("mse", "scene_valid", "judge_colour")}}
    loc = localize(model, prompts, "shapes", progress=False)
    best = loc.best_layer("top")
    card["localization"] = {"layers": loc.layers, "k": loc.params["k"], "foreground": loc.params["foreground"],
                            "intervals": {s: [iv.to_dict() for iv in ivs] for s, ivs in loc.intervals().items()},
                            "best_top_layer": best, "conclusion": loc.conclusion(),
                            "comparisons": {o: loc.compare("top", o, best).to_dict() for o in ("bottom", "random",
                                                                                               "all")}}
    from massact_viz.files import data_dir
    pairs_file = data_dir() / "prompts" / "shapes_pairs.tsv"
    if pairs_file.is_file():
        from massact_viz.probes.transport import read_pairs
        pairs = [p for p in read_pairs(pairs_file) if p[2].startswith(("object colour", "background colour"))]
        st = transport_study(model, pairs, seeds=2, controls=["random-k", "bottom-k"], progress=False)
        card["transport"] = {"settings": st.settings, "n_pairs": len(pairs), "seeds": 2, "table": st.markdown(),
                             "comparisons": {f"{m}/vs-{o}": st.compare(m, "transported", o).to_dict()
                                             for m in ("colour_source", "valid", "toward_source")
                                             for o in ("random-k", "bottom-k")},
                             "ssim_target": st.interval("transported", "ssim_target").to_dict()}
    _side_tables(card)
    card["seconds"] = round(time.time() - t0, 1)
    return card


def _bench_module(name: str):
    from importlib import util
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = util.spec_from_file_location(name, path)
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _side_tables(card: dict) -> None:
    """The lever measurements kept beside the card: the training pilots (``shapes_pilots.json``) and the
    sampling settings (``shapes_sampling.json``, only when measured on the shipped weights)."""
    here = Path(__file__).resolve().parent
    if (here / "shapes_pilots.json").is_file():
        card["pilots"] = json.loads((here / "shapes_pilots.json").read_text())
    if (here / "shapes_sampling.json").is_file():
        sampling = json.loads((here / "shapes_sampling.json").read_text())
        if sampling.get("weights") == _bench_module("shapes_sampling")._weights_id():
            card["sampling"] = sampling


def _targets(card: dict) -> list[tuple[str, bool, str]]:
    acc1, acc = card["accuracy_one_object"], card["accuracy_heldout"]
    ra = card["profile"]["ratio_abs_mean"]

    def at_least(d, v):
        return d is not None and d["mean"] >= v

    rows = [("one-object colour >= 98 %", at_least(acc1["one"]["colour"], 0.98), _iv(acc1["one"]["colour"])),
            ("one-object shape >= 90 %", at_least(acc1["one"]["shape"], 0.90), _iv(acc1["one"]["shape"]))]
    rows += [(f"one-object {s} >= 90 %", at_least(acc1[f"one/{s}"]["shape"], 0.90), _iv(acc1[f"one/{s}"]["shape"]))
             for s in scenes.SHAPES]
    rows += [("held-out colour >= 90 %", at_least(acc["all"]["colour"], 0.90), _iv(acc["all"]["colour"])),
             ("held-out shape >= 75 %", at_least(acc["all"]["shape"], 0.75), _iv(acc["all"]["shape"])),
             ("held-out relation >= 60 %", at_least(acc["all"]["relation"], 0.60), _iv(acc["all"]["relation"])),
             ("top-1/median abs_mean >= 10 in every block", min(ra) >= 10, f"{min(ra)} to {max(ra)}")]
    dis = card["disruption"]["comparisons"]
    for k in K_DISRUPT:
        c = dis[f"mse/top-vs-random/k{k}"]
        rows.append((f"zeroing top-{k} hurts more than random-{k} (MSE, paired)", c["verdict"] == ">", c["sentence"]))
    loc = card["localization"]["comparisons"]
    rows.append(("top-k localizes better than bottom-k (best layer, paired)", loc["bottom"]["verdict"] == ">",
                 loc["bottom"]["sentence"]))
    rows.append(("top-k localizes better than all channels (best layer, paired)", loc["all"]["verdict"] == ">",
                 loc["all"]["sentence"]))
    if "transport" in card:
        c = card["transport"]["comparisons"]["colour_source/vs-random-k"]
        rows.append(("transport carries the source's colours more than random-k (paired)", c["verdict"] == ">",
                     c["sentence"]))
    return rows


def markdown(card: dict) -> str:
    """The model card as Markdown, every number read from ``card`` (the output of :func:`measure`)."""
    cfg, prof, init = card["config"], card["profile"], card["profile_at_init"]
    ra, ri, rm = prof["ratio_abs_mean"], init["ratio_abs_mean"], prof["ratio_mean_abs"]
    tr = card["training"].get("training", {})
    hidden = cfg.get("num_attention_heads", 0) * cfg.get("attention_head_dim", 0)
    lines = [
        "# `shapes`: the embedded teaching model (model card)",
        "",
        "Generated by `python benchmarks/shapes_card.py` from the shipped weights; every number below is measured by "
        "that script (fixed seeds) and carries its 95 % interval (Wilson for accuracies; bootstrap over captions or "
        "pairs for means, n shown). Read the numbers as they are: this is a teaching model, and what does not "
        "reproduce is reported as plainly as what does.",
        "",
        "## Model",
        "",
        f"FLUX.1-style `FluxPipeline` + `FluxTransformer2DModel`: {cfg.get('num_layers')} double + "
        f"{cfg.get('num_single_layers')} single blocks, hidden {hidden}, {cfg.get('image_size', 32)}x"
        f"{cfg.get('image_size', 32)} px in pixel space (a pixel-shuffle 'VAE' plus FLUX's 2x2 packing: 8x8 = 64 image "
        "tokens), tiny CLIP- and T5-slot text encoders trained jointly, word-level tokenizers built in memory. Weights "
        "in fp16 (`model.safetensors`). Sampling: true CFG 4 (a conditional and an unconditional call per step), "
        "20 Euler steps.",
        "",
        "Data: `massact_viz/shapes/scenes.py` (one or two flat shapes - circle, square, triangle - in six colours, "
        "with relations left of / right of / above / below, on plain, shaded or speckled backgrounds; exact masks). "
        "1/8 of caption strings are held out of training.",
        "",
        "## Training history",
        "",
        f"{tr.get('step')} steps over all segments, {tr.get('images_seen')} images, {tr.get('train_minutes')} CPU "
        f"training minutes" + (f" and {tr['gpu_minutes']} GPU minutes" if tr.get("gpu_minutes") else "")
        + f"; final training loss {tr.get('loss')}; fixed-noise validation loss (512 scenes) "
        f"{card['val_loss']['all']:.4f} (one object {card['val_loss']['one']:.4f}, two {card['val_loss']['two']:.4f}).",
        "",
    ] + [f"* {h}" for h in tr.get("history", [])] + [""]
    if "pilots" in card:
        lines += ["## Training levers, measured (`benchmarks/shapes_pilots.py`)", "",
                  "Throughput of the trainer in its steady state, then pilots continuing the same weights for "
                  "the same CPU time, judged on 180 one-object captions (Wilson intervals), where measured on 180 "
                  "held-out two-object captions, and on the fixed-noise validation loss:", "", _bench_module("shapes_pilots").table(card["pilots"]), ""]
    if "sampling" in card:
        rows = card["sampling"]["rows"]
        lines += ["## Sampling settings, measured (`benchmarks/shapes_sampling.py`)", "",
                  "The shipped weights under other classifier-free guidance scales and step counts, on the same "
                  "yardsticks and the same noise (image i: seed i); the paired difference in one-object shape "
                  "accuracy against the default (CFG 4, 20 steps) is a bootstrap interval over the 180 captions:", "",
                  _bench_module("shapes_sampling").markdown(rows), ""]
    if "sample_sheet" in card:
        recs = card["sample_sheet"]["records"]
        n_one = sum(r["relation_ok"] is None for r in recs)
        lines += ["## What it draws", "",
                  f"![{n_one} one-object and {len(recs) - n_one} two-object held-out captions: the model's image, the "
                  f"caption drawn by the scene generator, the judge's verdict]({card['sample_sheet']['file']})", "",
                  f"The first {n_one} one-object and {len(recs) - n_one} two-object held-out captions (image i: seed i); "
                  f"the judge passes {sum(r['ok'] for r in recs[:n_one])} of {n_one} and "
                  f"{sum(r['ok'] for r in recs[n_one:])} of {len(recs) - n_one} (too few to estimate a rate: the tables "
                  "below do that).", ""]
    acc = card["accuracy_heldout"]
    lines += [f"## Samples on {acc['n']} held-out captions", "",
              "| captions | n | colour | shape | relation | all |", "|---|---|---|---|---|---|"]
    for tag in ("all", "one", "two"):
        a = acc[tag]
        lines.append(f"| {tag} | {a['n']} | {_iv(a['colour'])} | {_iv(a['shape'])} | {_iv(a['relation'])} | "
                     f"{_iv(a['all'])} |")
    a1 = card["accuracy_one_object"]
    lines += ["", "One-object captions (180: 60 per shape, style variants included):", "",
              "| shape | n | colour | shape drawn |", "|---|---|---|---|"]
    for tag in ("one",) + tuple(f"one/{s}" for s in scenes.SHAPES):
        a = a1[tag]
        lines.append(f"| {tag.replace('one/', '') if '/' in tag else 'all'} | {a['n']} | {_iv(a['colour'])} | "
                     f"{_iv(a['shape'])} |")
    if "one_misses" in a1:
        lines += ["", "What the one-object misses drew (the judge's reading of the largest object; bounding-box aspect = "
                      "shorter / longer side; 0.9 or more for every one-object scene the data renders, see tests/test_shapes_scenes.py):", "",
                  "| asked | missed | read as | aspect of the misses | aspect of the passes |", "|---|---|---|---|---|"]
        for asked, m in a1["one_misses"].items():
            read = ", ".join(f"{k} {v}" for k, v in sorted(m["read_as"].items(), key=lambda kv: -kv[1])) or "-"
            lines.append(f"| {asked} | {m['missed']} of {m['n']} | {read} | {_aspect_range(m['aspect_missed'])} | "
                         f"{_aspect_range(m['aspect_passed'])} |")
    rmiss = card["accuracy_heldout"].get("relation_misses")
    if rmiss and rmiss["n"]:
        lines += ["", f"Why the held-out two-object captions missed their relation ({rmiss['missed']} of {rmiss['n']}; the "
                      "judge matches the caption's colours first, then reads the pair's centroids):", "",
                  "| fewer than two objects found | two found, wrong side | two found, right side but diagonal |",
                  "|---|---|---|",
                  f"| {rmiss['fewer than two objects']} | {rmiss['wrong side']} | {rmiss['diagonal']} |"]
    ts = card["accuracy_heldout"].get("two_object_shapes")
    if ts and ts["objects"]:
        lines += ["", f"What the {ts['objects']} objects of those two-object captions were drawn as (each object found "
                      "by its colour):", "", "| " + " | ".join(TWO_OBJECT_READINGS) + " |",
                  "|" + "---|" * len(TWO_OBJECT_READINGS), "| " + " | ".join(str(ts[k]) for k in TWO_OBJECT_READINGS)
                  + " |"]
    tb = card.get("text_binding")
    if tb:
        lines += ["", "## The text path: does the T5 slot tell the two objects apart?", "",
                  "Cosine similarity between the T5 slot's output at each object word (`a`, colour, shape) of a "
                  "two-object caption and at the same word once the two objects trade places (`massact_viz.shapes."
                  f"binding.word_context`, {tb['captions']} of the 180 two-object yardstick captions whose objects "
                  f"differ): **{tb['sentence']}**. An encoder that reads 1.0 is a bag of words: the transformer "
                  "cannot learn from it which colour wears which shape, nor which object goes on which side, and "
                  "draws both at chance (the step-60767 weights read 1.000, BENCHMARKS.md); the trainer's "
                  "`--soften-text-attention` and `--binding-loss` taught it the difference."]
    lines += ["", "## The project's targets, checked", "", "| target | met | measured |", "|---|---|---|"]
    lines += [f"| {t} | {'yes' if ok else '**no**'} | {v} |" for t, ok, v in _targets(card)]
    lines += ["", f"## Massive-activation profile ({len(card['prompts'])} one-object captions, image stream)", "",
              "| layer | top-1/median abs_mean | at init | top-1/median mean_abs | top-3 channels |", "|---|---|---|---|---|"]
    for i, layer in enumerate(prof["layers"]):
        lines.append(f"| {layer} | {ra[i]} | {ri[i]} | {rm[i]} | {prof['top3'][layer]} |")
    counts = lambda d: {int(c): n for c, n in d.items()}  # noqa: E731 (JSON keeps the channel keys as text)
    lines += ["", f"Top-1 channel counts over layers: {counts(prof['top1_counts'])} "
                  f"(at init: {counts(init['top1_counts'])}).", ""]
    lines += [f"## Disruption (zero k channels by abs_mean, image stream, every block and step, both CFG branches; "
              f"{len(card['prompts'])} captions)", "",
              "| set | k | pixel MSE | valid scene | colour credit | shape credit |", "|---|---|---|---|---|---|"]
    for r in card["disruption"]["summary"]:
        cells = [f"{r[m]:.3f} [{r[m + '_lo']:.3f}, {r[m + '_hi']:.3f}]"
                 for m in ("mse", "scene_valid", "judge_colour", "judge_shape")]
        lines.append(f"| {r['set']}-k | {r['k']} | " + " | ".join(cells) + " |")
    lines += ["", "(random-k: three seeded draws outside the top-k, averaged per caption; credit only for valid "
              "scenes.)", ""] + [f"* {c['sentence']}" for c in card["disruption"]["comparisons"].values()] + [""]
    loc = card["localization"]
    lines += [f"## Localization (K-means K=2 at the last step, k={loc['k']}, foreground rule `{loc['foreground']}`, "
              "IoU against the colour mask of each generated image)", "",
              "| layer | top-k | bottom-k | random-k | all channels |", "|---|---|---|---|---|"]
    ivs = loc["intervals"]
    f2 = lambda d: f"{d['mean']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}]"  # noqa: E731
    for i, layer in enumerate(loc["layers"]):
        lines.append(f"| {layer} | " + " | ".join(f2(ivs[s][i]) for s in ("top", "bottom", "random", "all")) + " |")
    lines += ["", loc["conclusion"], ""]
    if "transport" in card:
        t = card["transport"]
        lines += [f"## Transport ({t['n_pairs']} object- and background-colour pairs x {t['seeds']} seeds, the "
                  "library's defaults)", "", "```", json.dumps(t["settings"], default=str)[:600], "```", "", t["table"],
                  ""] + [f"* {c['sentence']}" for c in t["comparisons"].values()] + [""]
    lines.append(f"(measured in {card['seconds']:.0f} s)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import massact_viz as mv
    from massact_viz.files import atomic_write, strict_json
    from massact_viz.shapes.model import default_weights_dir

    ap = argparse.ArgumentParser(description="Measure the shipped teaching model and write data/shapes/card.json.")
    ap.add_argument("--n-eval", type=int, default=100, help="held-out captions to judge")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite CARD.md from the saved card.json")
    a = ap.parse_args(argv)
    wdir = default_weights_dir()
    if a.markdown_only:
        card = json.loads(Path(wdir, "card.json").read_text())
        _side_tables(card)
        atomic_write(Path(wdir, "card.json"), strict_json(card, indent=1))
    else:
        model = mv.load("shapes")
        card = measure(model, a.n_eval)
        step = card["training"].get("training", {}).get("step")
        sheet, recs = sample_sheet(model.pipe, sheet_captions(), f"shapes model, step {step}: {SHEET_CAPTIONS} "
                                   f"one-object and {SHEET_CAPTIONS} two-object held-out captions (CFG 4, 20 steps)")
        buf = io.BytesIO()
        sheet.save(buf, format="PNG", optimize=True)
        atomic_write(Path(wdir, SHEET_FILE), buf.getvalue())
        card["sample_sheet"] = {"file": SHEET_FILE, "records": recs}
        atomic_write(Path(wdir, "card.json"), strict_json(card, indent=1))
    atomic_write(Path(wdir, "CARD.md"), markdown(card))
    for t, ok, v in _targets(card):
        print(f"{'yes' if ok else 'NO ':>3}  {t}: {v}")


if __name__ == "__main__":
    main()
