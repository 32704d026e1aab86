"""The ``massact-viz`` command line: ``info``, ``scan``, ``report``, ``probe disrupt|localize|transport`` and
``generate``.

Every command takes ``--model`` (a Hub id, a local pipeline directory, ``shapes`` or
``tiny:<family>``; default: the embedded model) and uses the same library calls as a notebook.
Errors in the input are printed as one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .analysis import KINDS
from .errors import MassActError, check_k
from .files import strict_json
from .run import check_output_file, check_run_dir
from .model import default_model
from .specs import ENGINES, check_num_steps, check_size, parse_layer_words
from .prompts import read_lines


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("*", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals) <= 0:
        raise MassActError(f"--size must look like 1024x1024 (height x width) or 1024, got {text!r}.")
    return check_size((vals[0], vals[-1]))


def reports_here() -> bool:
    """Whether this process saves and prints a command's result: always in a single process; of several
    launched ones (accelerate launch, torchrun), only the main one. Every command asks this one question."""
    from .distributed import ranks
    return ranks().main


def check_args(args) -> None:
    """Every number the command line takes, checked before any model loads (one line each)."""
    import math
    parse_size(getattr(args, "size", None))
    if getattr(args, "num_steps", None) is not None:
        check_num_steps(args.num_steps)
    if getattr(args, "k", None) is not None and args.k < 1:
        raise MassActError("--k must be at least 1.")
    for name in ("chunk", "batch_size"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            raise MassActError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if (getattr(args, "seed", 0) or 0) < 0:
        raise MassActError(f"--seed must be a non-negative integer, got {args.seed}.")
    for name, must in (("guidance", "a finite number"), ("blend", "a number in [0, 1]"),
                       ("value", "a finite numeric value")):
        v = getattr(args, name, None)
        if isinstance(v, float) and not (math.isfinite(v) and (name != "blend" or 0 <= v <= 1)):
            raise MassActError(f"--{name} must be {must}, got {v}.")


def prompts_from_args(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += read_lines(args.prompts)   # a path, or a shipped set such as shapes_captions.txt
    if not prompts:
        raise MassActError("give at least one prompt with --prompt TEXT or --prompts FILE (one per line).")
    return prompts


def _load(args):
    from .distributed import launched, ranks
    from .model import load
    device = args.device
    if launched() and device in (None, "cuda"):   # one of several processes: its own GPU (cuda:LOCAL_RANK) or the CPU
        device = ranks(cpu=False if device == "cuda" else None).device
    elif launched() and device == "cpu":
        ranks(cpu=True)   # CPU processes (gloo) even on a machine with GPUs
    return load(args.model or default_model(), device=device, dtype=args.dtype, offload=args.offload,
                engine=args.engine)


def cmd_info(args) -> int:
    model = _load(args)
    info = model.info(parse_size(args.size))
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(model.describe(parse_size(args.size)))
    return 0


def cmd_scan(args) -> int:
    from .capture import Capture
    prompts = prompts_from_args(args)
    check_run_dir(args.out)   # a path that can take the run, before the model loads
    model = _load(args)
    check_k(args.k, model.info()["width"], "--k")   # before the scan, not after it
    cap = Capture(layers=parse_layer_words(args.layers), sun=not args.no_sun, previews=args.previews,
                  max_gb=float("inf") if args.force else None)
    from .distributed import launched
    run = model.scan(prompts, args.out, num_steps=args.num_steps, seed=args.seed, size=parse_size(args.size),
                     guidance=args.guidance, capture=cap, batch_size=args.batch_size, progress=not args.json,
                     distributed=launched())
    if not reports_here():
        return 0
    out = Path(args.out)
    rows = run.stats.summary(k=args.k, stat=args.stat)
    if args.json:
        print(strict_json({"run": str(out), "model": run.meta["model"], "family": run.meta["family"],
                           "statistic": args.stat, "k": args.k, "prompts": prompts, "num_steps": run.meta["num_steps"],
                           "layers": rows}, indent=1))
        return 0
    images = [str(out / "images" / f"{i:03d}.png") for i in range(len(run.images))]   # the run's own, as saved
    what = ", the embedded teaching model" if run.meta["model"] == "shapes" else ""
    print(f"model {run.meta['model']} ({model.family.title}{what}); {len(prompts)} prompt(s), {run.meta['num_steps']} denoising "
          f"steps, {len(run.stats.layers)} blocks, seed {args.seed}")
    print(f"saved the run in {out}/; the generated image(s): {', '.join(images[:3])}{' ...' if len(images) > 3 else ''}")
    print(f"\nPer block and stream: top-1/median = how many times the largest channel's {args.stat} (mean |activation| "
          f"over tokens, then over steps and images) exceeds the median channel's; then the top-{args.k} channels as "
          f"channel:{args.stat}.\n")
    print(f"  {'block':>10} {'stream':<6} {'top-1/median':<13} top-{args.k} channels (channel:{args.stat})")
    for r in rows:
        chans = ", ".join(f"{c}:{s:.3g}" for c, s in zip(r["top_channels"], r["top_scores"]))
        ratio = "-" if r["ratio"] is None else f"x{r['ratio']:.3g}"
        flag = f"  ({r['non_finite']} channels inf/NaN)" if r["non_finite"] else ""
        print(f"  {r['layer']:>10} {r['stream']:<6} {ratio:<13} {chans}{flag}")
    print(f"\nNext: massact-viz report {out} --out {out}/report.html   (a self-contained HTML page of this run)\n"
          f"      make lab   (the guided notebooks in JupyterLab; start with 00_quickstart)")
    return 0


def cmd_generate(args) -> int:
    check_output_file(args.out, (".png", ".jpg", ".jpeg", ".webp"), "image")
    model = _load(args)
    images = model.generate(prompts_from_args(args)[:1], num_steps=args.num_steps, seed=args.seed, size=parse_size(args.size),
                            guidance=args.guidance)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out)
    print(f"saved {out}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report
    check_output_file(args.out, (".html", ".htm"), "report")
    out = write_report(args.run, args.out, k=args.k, stat=args.stat)
    print(f"saved {out}")
    return 0


def _layer_sets(items: list[str]) -> dict:
    """``["early=double.0,double.1", "single=single", "all=all"]`` -> ``{name: layer spec}``: a comma list
    of layer names (or indices), or one kind / name; ``all`` means every layer."""
    out: dict = {}
    for item in items:
        name, eq, spec = item.partition("=")
        name, spec = name.strip(), spec.strip()
        if not eq or not name or not spec:
            raise MassActError(f"--layer-sets takes NAME=SPEC (SPEC a comma list of layers or a kind, e.g. "
                               f"early=double.0,double.1 single=single); got {item!r}.")
        if name in out:
            raise MassActError(f"--layer-sets names {name!r} twice.")
        out[name] = parse_layer_words([spec])
    return out


def cmd_disrupt(args) -> int:
    from .distributed import launched
    from .probes.disruption import disrupt
    model = _load(args)
    layer_sets = _layer_sets(args.layer_sets) if args.layer_sets else None
    if layer_sets is not None and args.layers:
        raise MassActError("give --layers or --layer-sets, not both (add the layers as one more layer set).")
    res = disrupt(model, prompts_from_args(args), ks=args.ks, sets=tuple(args.sets), random_draws=args.random_draws,
                  op=args.op, value=args.value, layers=parse_layer_words(args.layers), steps=_steps_arg(args.steps),
                  stream=args.stream, seed=args.seed,
                  num_steps=args.num_steps, size=parse_size(args.size), out=args.out, progress=not args.json,
                  layer_sets=layer_sets, distributed=launched())
    if not reports_here():
        return 0
    if args.json:
        print(strict_json({"out": args.out, "table": res.table, "summary": res.summary()}, indent=1))
    else:
        print(res.to_markdown(summary=True))
        print(f"saved {args.out}")
    return 0


def cmd_localize(args) -> int:
    from .distributed import launched
    from .probes.localization import localize
    from .probes.localization.clustering import check_cluster_args
    check_output_file(args.out, (".json",), "localization result")
    check_cluster_args(None, args.k_clusters, args.method, args.foreground or "border", name="--k-clusters")
    masks = args.masks
    if masks != "shapes":
        d = Path(masks)
        if not d.is_dir():
            raise MassActError(f"--masks must be 'shapes' or a directory of .npy/.png masks (one per prompt, in "
                               f"name order); {d} is not a directory.")
        masks = sorted(p for p in d.iterdir() if p.suffix.lower() in (".npy", ".png"))
    model = _load(args)
    res = localize(model, prompts_from_args(args), masks, layers=parse_layer_words(args.layers), k=args.k,
                   sets=tuple(args.sets), random_draws=args.random_draws, seed=args.seed, num_steps=args.num_steps,
                   size=parse_size(args.size), k_clusters=args.k_clusters,
                   method=args.method, chunk=args.chunk, progress=not args.json, distributed=launched(),
                   out=args.out, **({} if args.foreground is None else {"foreground": args.foreground}),
                   **({} if args.steps is None else {"steps": _steps_arg(args.steps)}))
    if not reports_here():
        return 0
    path = Path(args.out)   # saved by localize (resumable: an interrupted sweep keeps its chunks beside it)
    if args.json:
        print(strict_json({"out": str(path), "curves": res.curves(), "best_top_layer": res.best_layer("top"),
                           "conclusion": res.conclusion(), "table": res.to_table()}, indent=1))
    else:
        print(res.markdown())
        print(f"\n{res.conclusion()}\nsaved {path}")
    return 0


def _channels_arg(text: str):
    if text in ("source", "target", "union"):
        return text
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise MassActError(f"--channels takes source, target, union or a comma list of channel indices; "
                           f"got {text!r}.") from None


def _steps_arg(text: str | None):
    """``--steps``, the Python ``steps=`` rule in words: ``START:STOP`` a window (STOP exclusive), ``N`` one step,
    ``A,B,C`` those steps (negative numbers count from the end); none: every step."""
    if text is None:
        return None
    a, colon, b = text.partition(":")
    try:
        if colon:
            return int(a), int(b)
        return [int(v) for v in text.split(",")] if "," in text else int(text)
    except ValueError:
        raise MassActError(f"--steps takes START:STOP (a window of denoising steps, STOP exclusive), one step, or a "
                           f"comma list of steps; got {text!r}.") from None


def _add_steps(sp, what: str, default: str) -> None:
    sp.add_argument("--steps", help=f"denoising steps {what}: START:STOP (STOP exclusive), one step, or a comma list "
                                    f"(default: {default})")


def cmd_transport(args) -> int:
    from .probes.transport import transport
    if args.source is None and args.source_image is None and args.pairs is None:
        raise MassActError("give one of --source TEXT (text-conditioned), --source-image FILE (image-conditioned) "
                           "or --pairs FILE (a study over source/target pairs).")
    if (args.target is None) != (args.pairs is not None):
        raise MassActError("--target goes with --source or --source-image; --pairs reads the targets from its file.")
    if args.seeds < 1:
        raise MassActError(f"--seeds must be at least 1, got {args.seeds}.")
    if args.pairs is not None and args.seed is not None:
        raise MassActError("--pairs runs the noise seeds 0 .. --seeds - 1; give --seeds N instead of --seed.")
    if args.source_image is not None and not Path(args.source_image).is_file():
        raise MassActError(f"--source-image {args.source_image} is not a file.")
    out = Path(args.out)
    own = "manifest.json" if args.pairs is not None else "transport.json"   # a study resumes from its manifest
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / own).exists())):
        raise MassActError(f"{out} exists and is not a {'resumable transport study' if args.pairs else 'transport'} "
                           f"directory; choose a new or empty one.")
    if args.pairs is not None:
        from .probes.transport import read_pairs
        read_pairs(args.pairs)   # a malformed file: one line, before the model loads
    model = _load(args)
    kw = dict(channels=_channels_arg(args.channels), alpha=args.alpha, layers=parse_layer_words(args.layers),
              steps=_steps_arg(args.steps), stream=args.stream, mode=args.mode, seed=args.seed or 0,
              num_steps=args.num_steps,
              size=parse_size(args.size), controls=args.controls or (), blend=args.blend,
              tokens=None if args.tokens == "all" else args.tokens, mask_layer=args.mask_layer)
    if args.guidance is not None:
        kw["guidance"] = args.guidance
    for name in ("branch", "conditioning", "k"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.pairs is not None:
        return _transport_study(model, args, kw, out)
    if args.source_image is not None:
        res = transport(model, args.source_prompt, args.target, source_image=args.source_image,
                        inversion=args.inversion, **kw)
    else:
        res = transport(model, args.source, args.target, **kw)
    path = res.save(out)
    if args.json:
        print(strict_json({"out": str(path), "channels": res.channels, "metrics": res.metrics,
                           "settings": res.settings}, indent=1))
    else:
        cols = ["toward_source", "ssim_target", "composite"] + [c for c in ("valid", "colour_source")
                                                                 if c in res.metrics.get("target", {})]
        print("| row | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
        for row, m in res.metrics.items():
            print(f"| {row} | " + " | ".join("-" if m.get(c) is None else f"{m[c]:.3f}" for c in cols) + " |")
        print(f"saved {path} (source.png, target.png, transported.png, controls, previews, transport.json)")
    return 0


def _transport_study(model, args, kw, out: Path) -> int:
    """``probe transport --pairs FILE``: the same transport on every pair and seed, shared over launched processes
    and resumable in ``--out`` (each finished unit is kept there; the same command again runs only the rest)."""
    from .distributed import launched
    from .files import atomic_write
    from .probes.transport import transport_study
    kw.pop("seed")
    study = transport_study(model, args.pairs, seeds=args.seeds, progress=not args.json, distributed=launched(),
                            out=out, **kw)
    if not reports_here():
        return 0
    out.mkdir(parents=True, exist_ok=True)
    path = atomic_write(out / "study.json", strict_json(study.to_dict(), indent=1) + "\n")
    if args.json:
        print(strict_json({"out": str(path), **study.to_dict()}, indent=1))
    else:
        print(study.markdown())
        print(f"saved {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="massact-viz", description="See and steer massive activations in DiTs.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, prompts=True):
        sp.add_argument("--model", help="Hub id, local pipeline dir, 'shapes' or 'tiny:<family>' (default: embedded)")
        sp.add_argument("--device", help="cuda / cpu (default: cuda if available)")
        sp.add_argument("--dtype", help="bfloat16 / float32 / float16 (default: bf16 on GPU, fp32 on CPU)")
        sp.add_argument("--offload", choices=["model", "sequential"], help="diffusers CPU offload")
        sp.add_argument("--engine", choices=list(ENGINES), default="hooks",
                        help="what runs captures and edits: PyTorch hooks or a worker in an nnsight trace (the same "
                             "numbers either way)")
        sp.add_argument("--size", help="HxW in pixels (default: the pipeline's)")
        if prompts:
            sp.add_argument("--prompt", action="append", help="a prompt (repeatable)")
            sp.add_argument("--prompts", help="file with one prompt per line (# comments), or a shipped set: shapes_captions.txt, real_models.txt")
            sp.add_argument("--num-steps", type=int, help="number of denoising steps (default: the model's own, 4 for most)")
            sp.add_argument("--seed", type=int, default=0, help="seed of image 0; image i uses seed+i")
            sp.add_argument("--guidance", type=float, help="guidance scale (family's own kwarg)")

    sp = sub.add_parser("info", help="architecture summary")
    common(sp, prompts=False)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_info)

    sp = sub.add_parser("scan", help="capture channel statistics, save a run, print top-k channels per layer "
                                     "(resumable: rerun the same command after an interruption)")
    common(sp)
    sp.add_argument("--out", required=True, help="run directory to write")
    sp.add_argument("--k", type=int, default=4, help="channels to print per layer (default 4)")
    sp.add_argument("--stat", default="abs_mean", choices=["abs_mean", "mean_abs", "max_abs"])
    sp.add_argument("--layers", nargs="*", help="layer names (default: all)")
    sp.add_argument("--batch-size", type=int, default=8)
    sp.add_argument("--no-sun", action="store_true", help="skip Sun et al.'s element criterion")
    sp.add_argument("--previews", action="store_true", help="keep the predicted clean image of every step")
    sp.add_argument("--force", action="store_true",
                    help="capture even when the kept tensors are estimated above half of this machine's memory")
    sp.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    sp.set_defaults(fn=cmd_scan)

    sp = sub.add_parser("report", help="one self-contained HTML page (figures + top-k table) for a run directory")
    sp.add_argument("run", help="run directory written by scan")
    sp.add_argument("--out", required=True, help="HTML file to write")
    sp.add_argument("--k", type=int, default=4)
    sp.add_argument("--stat", default="abs_mean", choices=["abs_mean", "mean_abs", "max_abs"])
    sp.set_defaults(fn=cmd_report)

    probe = sub.add_parser("probe", help="experiments: disrupt (zero channel sets), localize (cluster tokens) or "
                                         "transport (copy massive channels from a source)")
    psub = probe.add_subparsers(dest="probe", required=True)
    sp = psub.add_parser("disrupt", help="edit top/bottom/random-k channels and score images against the unedited ones "
                                         "(resumable: rerun the same command)")
    common(sp)
    sp.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8])
    sp.add_argument("--sets", nargs="+", default=list(KINDS), choices=list(KINDS))
    sp.add_argument("--random-draws", type=int, default=3, help="random-k draws per k (default 3)")
    sp.add_argument("--op", default="zero", choices=["zero", "mean", "scale"])
    sp.add_argument("--value", type=float, help="factor for --op scale")
    sp.add_argument("--layers", nargs="*", help="layers to edit (default: all)")
    _add_steps(sp, "to edit", "all")
    sp.add_argument("--layer-sets", nargs="+", metavar="NAME=SPEC",
                    help="sweep layer sets too (not with --layers): SPEC a comma list of layers or a kind, "
                         "e.g. early=double.0,double.1 single=single all=all")
    sp.add_argument("--stream", default="image", choices=["image", "text", "both"])
    sp.add_argument("--out", required=True, help="directory for the sweep (JSON + PNG)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_disrupt)
    sp = psub.add_parser("localize", help="per-layer mIoU of token clusters on top/bottom/random-k channels")
    common(sp)
    sp.add_argument("--masks", default="shapes",
                    help="'shapes' (teaching model: masks from the image colours) or a directory of .npy/.png masks")
    sp.add_argument("--k", type=int, default=4)
    sp.add_argument("--sets", nargs="+", default=list(KINDS) + ["all"], choices=list(KINDS) + ["all"])
    sp.add_argument("--k-clusters", type=int, default=2, help="K-means clusters per image (default 2, the paper's)")
    sp.add_argument("--method", default="kmeans", choices=["kmeans", "hdbscan"])
    sp.add_argument("--foreground", default=None, choices=["border", "max_sum", "min_sum", "minority"],
                    help="which cluster is the object: border (default: not the cluster holding the image's outer "
                         "ring), max_sum (the paper's: larger summed normalised activation), min_sum, minority")
    sp.add_argument("--layers", nargs="*", help="layers (default: all)")
    _add_steps(sp, "scored", "the last step")
    sp.add_argument("--random-draws", type=int, default=3, help="random-k draws (default 3)")
    sp.add_argument("--chunk", type=int, default=8,
                    help="prompts generated at a time (bounds the raw slices held; the unit shared between processes)")
    sp.add_argument("--out", required=True, help="JSON file for the result")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_localize)
    sp = psub.add_parser("transport", help="copy a source prompt's (or reference image's) massive channels into a "
                                           "target prompt's run; images, previews, controls and metrics")
    common(sp, prompts=False)
    src = sp.add_mutually_exclusive_group()
    src.add_argument("--source", help="source prompt (text-conditioned transport)")
    src.add_argument("--source-image", help="reference image (image-conditioned transport via inversion)")
    src.add_argument("--pairs", help="a study: every source/target pair of a TSV file (data/prompts/shapes_pairs.tsv "
                                     "layout, or a shipped name) x --seeds; writes OUT/study.json")
    sp.add_argument("--source-prompt", default="",
                    help="with --source-image: a caption of the reference, the prompt it is inverted with "
                         "(default: none, the null caption)")
    sp.add_argument("--inversion", default="fixed-point", choices=["fixed-point", "euler", "noise"],
                    help="with --source-image: inverse Euler corrected by fixed-point iterations (default), plain "
                         "inverse Euler, or forward noising")
    sp.add_argument("--target", help="target prompt (with --source or --source-image)")
    sp.add_argument("--seeds", type=int, default=1, help="with --pairs: noise seeds per pair (0, 1, ...)")
    sp.add_argument("--channels", default="source", help="source | target | union | comma list (default source)")
    sp.add_argument("--k", type=int, default=None,
                    help="channels per layer for source/target/union (default 4: the fewest that beat random-k on the teaching model; BENCHMARKS.md)")
    sp.add_argument("--alpha", type=float, default=1.0, help="soft blend in [0, 1] (1: the paper's replacement)")
    sp.add_argument("--layers", nargs="*", help="layers to transport (default: all)")
    _add_steps(sp, "to transport", "all")
    sp.add_argument("--stream", default="image", choices=["image", "text", "both"])
    sp.add_argument("--tokens", default="all", choices=["all", "source", "target"],
                    help="image tokens to transport: all, or the source's / target's foreground found by clustering")
    sp.add_argument("--mask-layer", help="with --tokens source|target: the layer clustered (default: middle block)")
    sp.add_argument("--mode", default="cached", choices=["cached", "batched"])
    sp.add_argument("--branch", default=None, choices=["both", "cond"],
                    help="CFG branches edited: both (each from the source's matching branch; the default) or cond "
                         "(conditional only: guidance then amplifies the mismatch)")
    sp.add_argument("--conditioning", default=None, choices=["target", "source"],
                    help="prompt inputs outside the blocks (text embeddings, pooled/AdaLN vector) from the target "
                         "(default) or the source")
    sp.add_argument("--controls", nargs="*", choices=["random-k", "bottom-k", "full-swap", "pixel-blend",
                                                      "latent-blend"],
                    help="control rows to add (full-swap: every channel, stream, token and branch at the "
                         "transported layers and steps)")
    sp.add_argument("--blend", type=float, default=0.5, help="source weight of the blend controls (default 0.5)")
    sp.add_argument("--num-steps", type=int, help="number of denoising steps (default: the model's own)")
    sp.add_argument("--seed", type=int, default=None, help="the shared initial noise (default 0; --pairs: use --seeds)")
    sp.add_argument("--guidance", type=float, help="guidance scale (family's own kwarg)")
    sp.add_argument("--out", required=True, help="directory to write")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_transport)

    sp = sub.add_parser("generate", help="generate one image")
    common(sp)
    sp.add_argument("--out", required=True, help="PNG file to write")
    sp.set_defaults(fn=cmd_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    import os
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # e.g. the torchvision notice of CLIP processors
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        return args.fn(args)
    except MassActError as e:
        print(f"massact-viz: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("massact-viz: interrupted; nothing half-written was kept (scan and probe disrupt resume when rerun "
              "with the same arguments).", file=sys.stderr)
        return 130
    except OSError as e:  # the file system said no (permissions, a full disk, a path of the wrong kind)
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"massact-viz: error: {e.strerror or e}{where}. Check the path and its permissions.", file=sys.stderr)
        return 2
    except Exception as e:  # anything else: one line; MASSACT_VIZ_TRACEBACK=1 shows where it came from
        if os.environ.get("MASSACT_VIZ_TRACEBACK"):
            raise
        print(f"massact-viz: error: {type(e).__name__}: {e} (set MASSACT_VIZ_TRACEBACK=1 to see the traceback "
              f"when reporting it).", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
