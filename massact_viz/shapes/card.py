"""Measure the shipped teaching model with the toolkit and write its model card.

    python -m massact_viz.shapes.card            # writes data/shapes/card.json (CARD.md quotes it)

Everything in the card is computed here, from the shipped weights, with fixed seeds:

* sample accuracy on 100 held-out captions (the procedural judge: colours, shapes, relations);
* the massive-activation profile: top-1/median of ``abs_mean`` and ``mean_abs`` per layer, the
  recurring top channels, and the same at random initialisation of the same architecture;
* the disruption gap: zeroing the top-k / bottom-k / random-k channels (by ``abs_mean``, image
  stream, every block, every step, both CFG branches) against the unedited image (pixel MSE and
  judged colour accuracy);
* localization: K-means (K=2) over image tokens restricted to top-k / bottom-k / random-k / all
  channels at the last step, per layer, against the foreground mask of the generated image read
  off its colours (exact for flat objects), as IoU on the 8x8 token grid.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import scenes
from ..probes.localization import cluster_foreground as _cluster_fg, iou as _iou

K = 4
N_PROMPTS = 16
PROMPTS_SEED = 7


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
            "top1_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])), "run": run}


def _fg_token_mask(image, caption: str, grid: int) -> np.ndarray:
    """Foreground of a generated image by colour (``shapes_masks``), pooled to the token grid by majority."""
    from ..probes.localization import shapes_masks
    fg = shapes_masks([image], [caption])[0]
    h = fg.shape[0] // grid
    return fg.reshape(grid, h, grid, h).mean(axis=(1, 3)) > 0.5


def localization(model, run, stats_run, seeds: int = 3) -> dict:
    import massact_viz as mv
    steps = run.meta["steps"]
    rows, cols = run.meta["token_grid"]
    raws = [mv.Raw(b.name, steps - 1) for b in model.blocks]
    cap_run = model.run(run.prompts, seed=0, progress=False, capture=mv.Capture(stats=False, raw=raws))
    masks = [_fg_token_mask(im, p, rows) for im, p in zip(cap_run.images, cap_run.prompts)]
    width, rng = model.width, np.random.default_rng(0)
    out: dict[str, list[float]] = {"top": [], "bottom": [], "random": [], "all": []}
    for b in model.blocks:
        x = cap_run.raw[f"{b.name}/step{steps - 1}/image"].numpy()  # (P, N, D)
        score = stats_run.stats.get("abs_mean", layer=b.name).numpy()
        order = np.argsort(-score)
        sets = {"top": order[:K], "bottom": order[-K:], "all": np.arange(width)}
        per = {k: [] for k in out}
        for i, m in enumerate(masks):
            for name, ch in sets.items():
                per[name].append(_iou(_cluster_fg(x[i][:, ch]).reshape(rows, cols), m))
            rnd = [_iou(_cluster_fg(x[i][:, rng.choice(order[K:], K, replace=False)]).reshape(rows, cols), m)
                   for _ in range(seeds)]
            per["random"].append(float(np.mean(rnd)))
        for k in out:
            out[k].append(round(float(np.mean(per[k])), 3))
    return {"layers": [b.name for b in model.blocks], "miou": out, "k": K,
            "best_top_layer": model.blocks[int(np.argmax(out["top"]))].name}


def disruption(model, prompts: list[str], stats_run) -> dict:
    base = [np.asarray(im, np.float32) / 255 for im in stats_run.images]
    score = stats_run.stats.get("abs_mean").numpy()  # (L, D), mean over prompts and steps
    mean_score = score.mean(0)
    order = np.argsort(-mean_score)
    rng = np.random.default_rng(0)
    res = {}
    for k in (K, 2 * K):
        sets = {"top": order[:k], "bottom": order[-k:]}
        for r in range(3):
            sets[f"random{r}"] = rng.choice(order[k:], k, replace=False)
        for name, ch in sets.items():
            idx = torch.as_tensor(ch.copy())

            def zero(site, idx=idx):
                site.image[..., idx] = 0
            run = model.run(prompts, seed=0, progress=False, edit=zero, capture=None)
            mse = float(np.mean([np.mean((np.asarray(im, np.float32) / 255 - b) ** 2) for im, b in zip(run.images, base)]))
            col = float(np.mean([scenes.judge(im, p)["colour_ok"] for im, p in zip(run.images, prompts)]))
            res[f"k{k}_{name}"] = {"channels": [int(c) for c in ch], "mse": round(mse, 5), "colour_acc": round(col, 3)}
        rnd = [res[f"k{k}_random{r}"] for r in range(3)]
        res[f"k{k}_random"] = {"mse": round(float(np.mean([x["mse"] for x in rnd])), 5),
                               "colour_acc": round(float(np.mean([x["colour_acc"] for x in rnd])), 3)}
    return res


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def markdown(card: dict) -> str:
    """The model card as Markdown, every number read from ``card`` (the output of this script)."""
    acc, prof, init = card["accuracy_heldout"], card["profile"], card["profile_at_init"]
    tr, cfg, dis, loc = card["training"], card["config"], card["disruption"], card["localization"]
    ra, ri, rm = prof["ratio_abs_mean"], init["ratio_abs_mean"], prof["ratio_mean_abs"]
    lines = [
        "# `shapes`: the embedded teaching model (model card)",
        "",
        "Generated by `python -m massact_viz.shapes.card` from the shipped weights; every number below "
        "is measured by that script (fixed seeds). Read the numbers as they are: this is a teaching "
        "model, and what does not reproduce is reported as plainly as what does.",
        "",
        "## Model",
        "",
        f"FLUX.1-style `FluxPipeline` + `FluxTransformer2DModel`: {cfg.get('num_layers')} double + "
        f"{cfg.get('num_single_layers')} single blocks, hidden {cfg.get('hidden', cfg.get('num_attention_heads', 0) * cfg.get('attention_head_dim', 0))}, "
        f"{cfg.get('image_size', 32)}x{cfg.get('image_size', 32)} px in pixel space (a pixel-shuffle 'VAE' plus "
        "FLUX's 2x2 packing: 8x8 = 64 image tokens), tiny CLIP- and T5-slot text encoders trained jointly, "
        "word-level tokenizers built in memory. Weights in fp16 (`model.safetensors`).",
        "",
        "Data: `massact_viz/shapes/scenes.py` (one or two flat shapes - circle, square, triangle - in six "
        "colours, with relations left of / right of / above / below, on plain, shaded or speckled "
        "backgrounds; exact masks). 1/8 of caption strings are held out of training.",
        "",
        "## Training",
        "",
        "```",
        json.dumps(tr, indent=1, default=str)[:1500],
        "```",
        "",
        f"## Samples on {acc.get('n')} held-out captions",
        "",
        "| captions | colour | shape | relation | all |",
        "|---|---|---|---|---|",
    ]
    for tag in ("all", "one", "two"):
        a = acc.get(tag, {})
        lines.append(f"| {tag} ({a.get('n')}) | {_pct(a.get('colour'))} | {_pct(a.get('shape'))} | "
                     f"{_pct(a.get('relation'))} | {_pct(a.get('all'))} |")
    a_all = acc.get("all", {})
    n_big = sum(r >= 10 for r in ra)
    best_i = loc["layers"].index(loc["best_top_layer"])
    m = loc["miou"]
    verdict = [
        ("colour accuracy >= 95 %", a_all.get("colour") is not None and a_all["colour"] >= 0.95,
         _pct(a_all.get("colour"))),
        ("shape accuracy >= 80 %", a_all.get("shape") is not None and a_all["shape"] >= 0.80, _pct(a_all.get("shape"))),
        ("top-1/median abs_mean >= 10 in most blocks", n_big > len(ra) / 2, f"{n_big} of {len(ra)} blocks"),
        ("all-channel clustering clearly below the best top-k layer", m["all"][best_i] < m["top"][best_i] - 0.1,
         f"all {m['all'][best_i]} vs top {m['top'][best_i]} at {loc['best_top_layer']}"),
        ("top-k beats bottom-k on IoU in the best layer", m["top"][best_i] > m["bottom"][best_i],
         f"top {m['top'][best_i]} vs bottom {m['bottom'][best_i]}"),
    ]
    lines += [
        "",
        "## The project's targets, checked",
        "",
        "| target | met | measured |",
        "|---|---|---|",
    ] + [f"| {t} | {'yes' if ok else '**no**'} | {v} |" for t, ok, v in verdict] + [
        "",
        f"## Massive-activation profile ({len(card['prompts'])} one-object captions, image stream)",
        "",
        "| layer | top-1/median abs_mean | at init | top-1/median mean_abs | top-3 channels |",
        "|---|---|---|---|---|",
    ]
    for i, layer in enumerate(prof["layers"]):
        lines.append(f"| {layer} | {ra[i]} | {ri[i]} | {rm[i]} | {prof['top3'][layer]} |")
    lines += ["", f"Top-1 channel counts over layers: {prof['top1_counts']} (at init: {init['top1_counts']}).", "",
              f"## Disruption (zero k channels by abs_mean in every block and step, {len(card['prompts'])} captions)",
              "", "| k | set | pixel MSE vs unedited | colour accuracy |", "|---|---|---|---|"]
    for key in sorted(dis):
        if key.split("_")[1].startswith("random") and key.split("_")[1] != "random":
            continue
        k, name = key.split("_")
        lines.append(f"| {k[1:]} | {name} | {dis[key]['mse']} | {_pct(dis[key]['colour_acc'])} |")
    lines += ["", "(random: mean of three seeded draws outside the top-k.)", "",
              f"## Localization (K-means K=2 at the last step, k={loc['k']}, IoU on the token grid "
              "against the colour mask of each generated image)", "",
              "| layer | top-k | bottom-k | random-k | all channels |", "|---|---|---|---|---|"]
    m = loc["miou"]
    for i, layer in enumerate(loc["layers"]):
        lines.append(f"| {layer} | {m['top'][i]} | {m['bottom'][i]} | {m['random'][i]} | {m['all'][i]} |")
    best = loc["layers"].index(loc["best_top_layer"])
    lines += ["", f"Best top-k layer: {loc['best_top_layer']} (mIoU {m['top'][best]}; all channels there: "
              f"{m['all'][best]}, bottom-k: {m['bottom'][best]}).", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import massact_viz as mv
    from .model import build_shapes_pipeline, default_weights_dir, read_shapes_config
    from .train import evaluate

    ap = argparse.ArgumentParser(description="Measure the shipped teaching model and write data/shapes/card.json.")
    ap.add_argument("--n-eval", type=int, default=100, help="held-out captions to judge")
    a = ap.parse_args(argv)
    t0 = time.time()
    model = mv.load("shapes")  # MASSACT_VIZ_DATA points elsewhere if needed
    wdir = default_weights_dir()
    doc = read_shapes_config(wdir)
    acc = evaluate(model.pipe, scenes.heldout_captions(a.n_eval))
    acc.pop("records", None)
    prompts = _prompts(N_PROMPTS)
    prof = profile(model, prompts)
    init = mv.Model(build_shapes_pipeline(doc["config"]), defaults=model.defaults)
    prof_init = profile(init, prompts)
    dis = disruption(model, prompts, prof["run"])
    loc = localization(model, prof["run"], prof["run"])
    card = {"accuracy_heldout": acc, "profile": {k: v for k, v in prof.items() if k != "run"},
            "profile_at_init": {k: v for k, v in prof_init.items() if k != "run"}, "disruption": dis,
            "localization": loc, "training": {k: v for k, v in doc.items() if k not in ("config", "format")},
            "config": doc["config"],
            "prompts": prompts, "seconds": round(time.time() - t0, 1)}
    Path(wdir, "card.json").write_text(json.dumps(card, indent=1, default=str))
    Path(wdir, "CARD.md").write_text(markdown(card))
    print(json.dumps({k: card[k] for k in ("accuracy_heldout", "disruption")}, indent=1, default=str)[:3000])
    print("localization mIoU:", json.dumps(loc["miou"]))
    print("ratio abs_mean:", prof["ratio_abs_mean"], "init:", prof_init["ratio_abs_mean"])
    print("top1 counts:", prof["top1_counts"])


if __name__ == "__main__":
    main()
