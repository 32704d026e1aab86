"""Train the ``shapes`` teaching model with rectified flow.

Usage::

    python -m massact_viz.shapes.train --out data/shapes --minutes 30 --seed 0
    python -m massact_viz.shapes.train --out data/shapes --steps 40000 --seed 0   # exact-step budget
    python -m massact_viz.shapes.train --out data/shapes --eval-only               # judge shipped weights
    torchrun --standalone --nproc-per-node 2 -m massact_viz.shapes.train --out runs/x --minutes 30   # 2 processes

Data-parallel: launched as several processes (``torchrun`` or ``accelerate launch``; gloo on the CPU, each
GPU its own process under NCCL), every process draws the whole step's batch, noise and t and trains on its
own equal slice; gradients and loss are averaged before each update, so the run is the single-process run
up to the order of floating-point sums, and it resumes with any number of processes. ``--batch`` stays the
whole batch (a multiple of the number of processes). The command line shares the work whenever it is launched
as several processes (``TrainArgs(distributed=True)`` in Python); the main process writes the log, checkpoints
and weights, and the processes agree on stopping (time budget, Ctrl-C) after every step on CPUs, at the steps
they log at on GPUs. Ctrl-C under ``torchrun`` reaches the processes once, and the launcher kills them 30 s
later: a checkpoint still being written then is lost (the one before it stays). On this project's 2-core CPU,
two processes of one thread each draw 1.18x the images a second of one process with two threads, and keep
their speed beside other work (``benchmarks/shapes_pilots.py``, BENCHMARKS.md).

Objective (the convention FluxPipeline + FlowMatchEulerDiscreteScheduler sample with):
``x_t = (1 - t) * x0 + t * eps`` with ``t = sigma`` in [0, 1] (t = 1 is pure
noise), and the transformer is trained to predict the velocity
``v = eps - x0``.  The pipeline calls the transformer with ``timestep =
scheduler_timestep / 1000 = sigma`` and integrates ``x <- x + (sigma_next -
sigma) * v`` from sigma = 1 down to 0, so training passes ``timestep=t`` exactly.
Latents are made with the pipeline's own VAE (``PixelShuffleVAE``, identity
scaling) and packed with ``FluxPipeline._pack_latents``; prompts are encoded by the text-encoder
calls of ``pipe.encode_prompt`` (:func:`encode_tokens`, on ids tokenized once per caption;
gradients flow into both text encoders), so training and inference see identical inputs.  ``t`` is drawn from a 75/25 mixture of
logit-normal(0, 1) and U(0, 1) by default (``--t-sampling``).

Caption dropout: with probability ``--cond-drop`` a caption is replaced by
``""``, which is what ``negative_prompt=""`` encodes at inference, giving
classifier-free guidance through ``true_cfg_scale``.

Reproducible from ``--seed`` (data: step ``s`` draws its batch from its own numpy
Generator seeded by ``(seed, s)`` (:mod:`.batches`), in the loop or, with
``--data-workers N``, ahead of it in N processes, the same batches either way;
noise and t: a torch CPU Generator saved in checkpoints; a warm start from weights trained ``n`` steps
draws the scenes of steps ``n``, ``n + 1``, ... and a noise stream keyed by ``n``, so each segment sees scenes
and noise the earlier ones did not) and resumable: the checkpoint directory
(``--ckpt-dir``, default ``runs/shapes-seed{seed}``) holds ``ckpt.pt`` (model,
EMA, optimizer, RNG states, step), written atomically every ``--ckpt-every``
minutes and at the end; rerunning the same command resumes from it
(``--fresh`` starts over).  ``--steps`` is a total-step target; ``--minutes`` a
wall-clock budget for this invocation (with ``--lr-schedule cosine`` and no
``--steps``, the decay ends where the speed measured over the invocation's
steps 10-50 reaches by the end of the budget).  With a fixed thread count, a resumed
``--steps`` run reproduces the uninterrupted one.

The EMA weights are written to ``--out`` (``model.safetensors``, fp16 by default,
and ``config.json`` with the architecture, the training's totals over every segment and its history, one
line per segment (a warm start carries its source's on), and the evaluation) at
every checkpoint and at the end, then reloaded from disk and judged on
``--eval-n`` held-out captions (``scenes.heldout_captions``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FluxPipeline

from .. import distributed
from ..files import atomic_write
from . import scenes
from .batches import BatchSource, check_workers
from .binding import IGNORE, BindingHead, soften_attention, token_targets
from .model import (
    ShapesConfig,
    build_shapes_pipeline,
    load_shapes_pipeline,
    WEIGHTS_NAME,
    load_shapes_state_dict,
    read_shapes_config,
    save_shapes_weights,
    shapes_state_dict,
    trainable_modules,
)

__all__ = ["TrainArgs", "train", "evaluate", "validation_loss", "one_object_eval_captions", "two_object_eval_captions",
           "main", "DEFAULT_SAMPLING"]

#: sampling settings used for evaluation (and recommended for inference)
DEFAULT_SAMPLING = {"num_inference_steps": 20, "true_cfg_scale": 4.0, "negative_prompt": ""}


@dataclass
class TrainArgs:
    out: str = "data/shapes"
    ckpt_dir: str | None = None  # default runs/shapes-seed{seed}
    seed: int = 0
    minutes: float | None = None
    steps: int | None = None  # cosine: where the decay ends (None with minutes: fitted to the measured speed)
    batch: int = 32
    lr: float = 8e-4
    warmup: int = 500
    lr_schedule: str = "constant"  # constant | cosine (decays to 10% at --steps, or fitted to --minutes)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    ema: float = 0.999
    cond_drop: float = 0.1
    t_sampling: str = "mixed"  # mixed (75% logit-normal(0,1) + 25% uniform) | logit-normal | uniform
    p_two: float = 0.5
    p_style_mention: float = 0.5
    # the T5 slot's binding (massact_viz.shapes.binding): the weight of the training-only loss that asks each
    # object word for its object's colour, shape and side (0 = off), and the factor its attention logits are
    # divided by once, when the run starts from weights (1 = unchanged; never on a resume)
    binding_loss: float = 0.0
    binding_lr: float | None = None  # peak lr of the T5 slot and the binding head (None: lr)
    soften_text_attention: float = 1.0
    device: str = "auto"
    threads: int | None = None
    ckpt_every: float = 5.0  # minutes
    eval_n: int = 100
    eval_every: float = 0.0  # minutes, 0 = only at the end
    save_dtype: str = "float16"
    config: dict = field(default_factory=dict)  # ShapesConfig overrides
    fresh: bool = False
    init_from: str | None = None  # warm start from shipped weights (a data/shapes-style dir) when no checkpoint exists
    init_partial: bool = False  # warm start from another architecture: copy the tensors whose name and shape match
    progress: bool = True
    log_every: int = 25
    # bfloat16 autocast of the text encoders' and the transformer's training forward (weights, optimizer, EMA and
    # loss stay float32); on a CPU attention then runs as plain matrix products (the fused kernel's bfloat16
    # backward is several times slower there)
    bf16: bool = False
    compile: bool = False  # torch.compile the transformer's training forward (measured: +10 % images/s on CPU, ~3 min to compile)
    val_n: int = 256  # fixed-noise validation loss of the shipped weights at the end (0 = skip)
    data_workers: int = 0  # processes rendering batches ahead of the loop (a GPU run; 0 = in the loop)
    # data-parallel over the launched processes (torchrun / accelerate launch): asked for, never guessed (the
    # command line asks when launched as several); a script's processes training their own models stay apart
    distributed: bool = False


# --------------------------------------------------------------------------- helpers


def _device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)


def to_device(x: torch.Tensor, device) -> torch.Tensor:
    """``x.to(device)``; to a GPU through pinned memory, so the copy does not wait for the kernels already queued
    (a copy from ordinary memory does: the next step could not be prepared while this one runs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def images_to_latents(pipe: FluxPipeline, images_uint8: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, H, W, 3) -> (packed latents (B, tokens, C*4), img_ids (tokens, 3)),
    exactly as FluxPipeline lays them out."""
    x = to_device(torch.from_numpy(images_uint8), device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    z = pipe.vae.encode(x).latent_dist.mode()
    z = (z - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    b, c, h, w = z.shape
    packed = FluxPipeline._pack_latents(z, b, c, h, w)
    img_ids = to_device(FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", packed.dtype), device)
    return packed, img_ids


class PromptTokens:
    """Both text encoders' token ids for a list of captions, exactly as ``FluxPipeline.encode_prompt`` makes them
    (CLIP: ``tokenizer_max_length``; T5: ``max_sequence_length``, which the shapes tokenizer caps at its trained
    length), each caption tokenized once and remembered (at most ``limit`` of them). The captions of a training
    step repeat (a batch of 512 held 294 distinct ones); tokenizing them anew, as ``encode_prompt`` does (twice
    per encoder), took 42 ms a step on the development CPU, in the loop a GPU step waits on."""

    def __init__(self, pipe: FluxPipeline, max_sequence_length: int = 512, limit: int = 200_000):
        self.pipe, self.max_sequence_length, self.limit = pipe, max_sequence_length, limit
        self._ids: dict[str, tuple[list[int], list[int]]] = {}

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(CLIP ids, T5 ids), each a (len(captions), length) int64 tensor."""
        new = list(dict.fromkeys(c for c in captions if c not in self._ids))
        if new:
            if len(self._ids) + len(new) > self.limit:
                self._ids.clear()
                new = list(dict.fromkeys(captions))
            pipe = self.pipe
            clip = pipe.tokenizer(new, padding="max_length", max_length=pipe.tokenizer_max_length,
                                  truncation=True, return_tensors="pt").input_ids
            t5 = pipe.tokenizer_2(new, padding="max_length", max_length=self.max_sequence_length,
                                  truncation=True, return_tensors="pt").input_ids
            self._ids.update(zip(new, zip(clip.tolist(), t5.tolist())))
        rows = [self._ids[c] for c in captions]
        return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


def encode_tokens(pipe: FluxPipeline, clip_ids: torch.Tensor, t5_ids: torch.Tensor, device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pipe.encode_prompt``'s (prompt_embeds, pooled_prompt_embeds, text_ids) from :class:`PromptTokens`' ids,
    the same encoder calls (gradients flow into both encoders)."""
    pooled = pipe.text_encoder(to_device(clip_ids, device), output_hidden_states=False).pooler_output
    pooled = pooled.to(dtype=pipe.text_encoder.dtype)
    prompt_embeds = pipe.text_encoder_2(to_device(t5_ids, device), output_hidden_states=False)[0]
    prompt_embeds = prompt_embeds.to(dtype=pipe.text_encoder_2.dtype)
    text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=device, dtype=pipe.text_encoder.dtype)
    return prompt_embeds, pooled, text_ids


def sample_t(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """Training times t in (0, 1): logit-normal(0, 1), uniform, or a 75/25 mix of the two
    (the mix concentrates on mid-noise, where layout and shape form, but keeps
    coverage of t near 0 and 1, which the sampler starts and ends at)."""
    ln = torch.sigmoid(torch.randn(n, generator=gen))
    if kind == "logit-normal":
        return ln
    u = torch.rand(n, generator=gen)
    if kind == "uniform":
        return u
    pick = torch.rand(n, generator=gen) < 0.75
    return torch.where(pick, ln, u)


_FIT_FIRST, _FIT_LAST = 10, 50  # the steps (from an invocation's start) whose speed fits a cosine to --minutes


def _lr_at(args: TrainArgs, step: int, start: int = 0) -> float:
    """The learning rate at ``step``: linear warm-up, then constant or a cosine from ``start`` (0, or where a
    decay fitted to a time budget began) down to 10 % at ``args.steps``."""
    warm = min(1.0, (step + 1) / max(1, args.warmup))
    if args.lr_schedule == "cosine" and args.steps:
        p = min(1.0, max(0, step - start) / max(1, args.steps - start))
        return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))
    return args.lr * warm


_TOTALS = ("step", "images_seen", "train_minutes", "gpu_minutes")


def _totals(training: dict | None) -> dict:
    """A config's training over every segment: totals and history lines. Configs written before totals were
    kept hold only their own segment, with their source's training nested under ``warm_start``."""
    tr = training or {}
    if not tr or "segment" in tr or "history" in tr:
        return {**{k: tr.get(k) or 0 for k in _TOTALS}, "history": list(tr.get("history") or [])}
    prev = _totals((tr.get("warm_start") or {}).get("previous_training"))
    own = "gpu_minutes" if str(tr.get("device", "cpu")).startswith("cuda") else "train_minutes"
    out = {k: prev[k] + (tr.get(k) or 0) for k in ("step", "images_seen")}
    out.update({k: round(prev[k] + ((tr.get("train_minutes") or 0) if k == own else 0), 2)
                for k in ("train_minutes", "gpu_minutes")})
    steps = f"steps {prev['step']}-{out['step']}"
    return {**out, "history": prev["history"] + ([f"{steps}: {tr.get('train_minutes')} min on {tr.get('device')}"]
                                                   if tr.get("step") else [])}


def _count(n: int, noun: str, plural: str = "s") -> str:
    return f"{n} {noun}{'' if n == 1 else plural}"


def _atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


class _EMA:
    def __init__(self, params: list[torch.Tensor], decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, params: list[torch.Tensor], step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in params], 1.0 - d)


def _named_params(mods) -> list[tuple[str, torch.nn.Parameter]]:
    out, seen = [], set()
    for name, m in mods.items():
        for k, p in m.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            out.append((f"{name}.{k}", p))
    return out


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    pipe: FluxPipeline,
    captions: list[str] | None = None,
    *,
    seed: int = 0,
    batch: int = 25,
    size: int | None = None,
    return_images: bool = False,
    **sampling,
) -> dict:
    """Generate one image per caption (generator seed ``seed + i``) and judge it.

    Returns accuracies (``colour``, ``shape``, ``relation`` (two-object captions
    only), ``all``), the same split by one/two objects, and per-caption records (the judge's verdicts, and per
    judged object its shape reading, template IoU, bounding-box aspect and centroid, plus how many objects it found)."""
    captions = scenes.heldout_captions(100) if captions is None else list(captions)
    kw = {**DEFAULT_SAMPLING, **sampling}
    size = size or pipe.default_sample_size * pipe.vae_scale_factor
    neg = kw.pop("negative_prompt")
    recs, images = [], []
    for s in range(0, len(captions), batch):
        chunk = captions[s : s + batch]
        gens = [torch.Generator("cpu").manual_seed(seed + s + i) for i in range(len(chunk))]
        out = pipe(
            prompt=chunk,
            negative_prompt=None if neg is None else [neg] * len(chunk),
            height=size,
            width=size,
            generator=gens,
            output_type="np",
            **kw,
        ).images
        for c, im in zip(chunk, out):
            img = np.clip(np.rint(im * 255), 0, 255).astype(np.uint8)
            j = scenes.judge(img, c)
            recs.append({"caption": c, **{k: j[k] for k in ("colour_ok", "shape_ok", "relation_ok", "ok")},
                         "shapes": [o["shape"] for o in j["objects"]],
                         "ious": [round(o["iou"], 3) for o in j["objects"]],
                         "aspects": [None if o["aspect"] is None else round(o["aspect"], 3) for o in j["objects"]],
                         "centroids": [None if o["centroid"] is None else [round(v, 3) for v in o["centroid"]]
                                       for o in j["objects"]],
                         "n_objects": j["n_objects"]})
            if return_images:
                images.append(img)

    def acc(rs, key):
        vals = [r[key] for r in rs if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    res = {"n": len(recs), "sampling": {**kw, "negative_prompt": neg, "size": size, "seed": seed}}
    for tag, rs in (("all", recs), ("one", [r for r in recs if r["relation_ok"] is None]),
                    ("two", [r for r in recs if r["relation_ok"] is not None])):
        res[tag] = {"n": len(rs), "colour": acc(rs, "colour_ok"), "shape": acc(rs, "shape_ok"),
                    "relation": acc(rs, "relation_ok"), "all": acc(rs, "ok")}
    res["records"] = recs
    if return_images:
        res["images"] = np.stack(images)
    return res


def _eval_summary(res: dict) -> str:
    a = res["all"]
    f = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    return (f"colour {f(a['colour'])} shape {f(a['shape'])} relation {f(a['relation'])} "
            f"(one-object: colour {f(res['one']['colour'])} shape {f(res['one']['shape'])}; "
            f"two-object: colour {f(res['two']['colour'])} shape {f(res['two']['shape'])}) n={res['n']}")


VAL_SEED = 20241127  # fixed data, noise and t of the validation loss (never a training seed)


@torch.no_grad()
def validation_loss(pipe: FluxPipeline, n: int = 256, *, p_two: float = 0.5, batch: int = 64) -> dict:
    """The training objective on a fixed set: ``n`` scenes drawn from the held-out
    captions' generator state ``VAL_SEED`` (training captions excluded), fixed noise,
    and ``t`` on the stratified grid ``(i + 0.5) / n`` (no caption dropout).  The same
    number for the same weights on any machine, so runs with different data mixes,
    batch sizes or schedules are compared on one yardstick.  Returns ``{"all", "one",
    "two", "n"}`` (mean MSE of the velocity; ``one`` / ``two`` split by object count)."""
    device = pipe.transformer.device
    rng = np.random.default_rng(VAL_SEED)
    gen = torch.Generator("cpu").manual_seed(VAL_SEED)
    data = scenes.dataset_batch(rng, n, pipe.default_sample_size * pipe.vae_scale_factor, p_two=p_two,
                                exclude_heldout=False)
    t_all = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    t_all = t_all[torch.randperm(n, generator=gen)]
    losses = []
    for s in range(0, n, batch):
        x0, img_ids = images_to_latents(pipe, data["images"][s:s + batch], device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        t = t_all[s:s + batch].to(device)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        pe, pooled, tids = pipe.encode_prompt(prompt=data["captions"][s:s + batch], prompt_2=None, device=device)
        v = pipe.transformer(hidden_states=xt, timestep=t, guidance=None, pooled_projections=pooled,
                             encoder_hidden_states=pe, txt_ids=tids, img_ids=img_ids, return_dict=False)[0]
        losses.append(((v.float() - (eps - x0).float()) ** 2).mean(dim=(1, 2)).cpu())
    per = torch.cat(losses).numpy()
    two = np.array([len(sc.objects) == 2 for sc in data["scenes"]])
    return {"n": n, "all": float(per.mean()), "one": float(per[~two].mean()) if (~two).any() else None,
            "two": float(per[two].mean()) if two.any() else None}


def one_object_eval_captions(n: int = 180, seed: int = 7) -> list[str]:
    """A fixed set of ``n`` one-object captions (style variants included, each shape
    equally often) for judging shape and colour at equal cost across runs."""
    rng = np.random.default_rng(seed)
    by_shape = {s: [c for c in scenes.all_single_captions(style_words=True) if f" {s} " in c]
                for s in scenes.SHAPES}
    per = n // len(by_shape)
    out = [c for s in scenes.SHAPES for c in rng.choice(by_shape[s], per, replace=False).tolist()]
    return out


def two_object_eval_captions(n: int = 180, seed: int = 11) -> list[str]:
    """A fixed set of ``n`` distinct held-out two-object captions (``scenes.heldout_captions`` with every
    scene a pair: the population of the all-caption targets' hard part), for judging colour, shape and
    relation at equal cost across runs."""
    return scenes.heldout_captions(n, seed=seed, p_two=1.0)


# --------------------------------------------------------------------------- training


def train(args: TrainArgs) -> dict:
    """Run (or resume) training; returns a summary dict (step, images_seen,
    train_minutes, loss, out, ckpt, eval, history).  Restores torch's thread
    count on return."""
    prev_threads = torch.get_num_threads()
    try:
        return _train(args)
    finally:
        torch.set_num_threads(prev_threads)


def _check_args(args: TrainArgs) -> None:
    if args.lr_schedule not in ("constant", "cosine"):
        raise ValueError("lr_schedule must be 'constant' or 'cosine'")
    if args.t_sampling not in ("mixed", "logit-normal", "uniform"):
        raise ValueError("t_sampling must be 'mixed', 'logit-normal' or 'uniform'")
    if args.minutes is None and args.steps is None:
        raise ValueError("give a budget: --minutes and/or --steps")
    if args.log_every < 1:
        raise ValueError(f"--log-every must be 1 or more steps, got {args.log_every}")
    if not args.binding_loss >= 0:
        raise ValueError(f"--binding-loss is a loss weight: 0 (off) or more, got {args.binding_loss}")
    if args.binding_lr is not None and not args.binding_lr > 0:
        raise ValueError(f"--binding-lr must be a positive learning rate, got {args.binding_lr}")
    if not args.soften_text_attention > 0:
        raise ValueError(f"--soften-text-attention divides attention logits: give a positive factor (1 = unchanged), "
                         f"got {args.soften_text_attention}")
    check_workers(args.data_workers)   # before the pipeline is built
    if args.distributed and distributed.launched():
        world, local = int(os.environ["WORLD_SIZE"]), _local_processes()
        if args.batch % world:
            raise ValueError(f"batch {args.batch} does not split evenly over the {world} launched processes: give a "
                             f"multiple of {world}")
        gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
        if gpu and local > torch.cuda.device_count():
            raise ValueError(f"{local} processes on this machine but {torch.cuda.device_count()} GPU(s): launch one "
                             "process per GPU, or pass --device cpu")
    if not isinstance(getattr(torch, str(args.save_dtype), None), torch.dtype):
        raise ValueError(f"save_dtype must name a torch dtype such as 'float16', got {args.save_dtype!r}")


def _local_processes() -> int:
    """How many launched processes share this machine (1 when not launched)."""
    if not distributed.launched():
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def _set_threads(args: TrainArgs, device: torch.device) -> None:
    # several launched processes on one machine share its cores (default: an equal share each)
    n_threads = args.threads or max(1, (os.cpu_count() or 1) // _local_processes())
    torch.set_num_threads(n_threads)
    if device.type == "cpu" and n_threads > 1 and hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f} before training; on a busy CPU, {n_threads} torch "
              "threads can run several times slower than --threads 1 (OpenMP threads wait on each other)",
              file=sys.stderr)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


class _Training:
    """One training run's state: the pipeline, optimizer, EMA, random streams and counters, with the
    operations the loop needs (one step, a checkpoint, the shipped weights, an evaluation)."""

    def __init__(self, args: TrainArgs, device: torch.device, place: distributed.Ranks | None = None):
        self.args, self.device = args, device
        self.place = place or distributed.Ranks()   # data-parallel: each process takes its slice of every batch
        self.cfg = ShapesConfig.from_dict({**ShapesConfig(seed=args.seed).to_dict(), **args.config})
        self.ckpt_path = Path(args.ckpt_dir or f"runs/shapes-seed{args.seed}") / "ckpt.pt"
        self.out_dir = Path(args.out)
        self.pipe = build_shapes_pipeline(self.cfg)
        self.pipe.to(device)
        # the training forward may be compiled; EMA, checkpoints and saving use the plain module
        self.forward = torch.compile(self.pipe.transformer, dynamic=False) if args.compile else self.pipe.transformer
        self.mods = trainable_modules(self.pipe)
        named = _named_params(self.mods)
        self.params = [p for _, p in named]
        for m in self.mods.values():
            m.train().requires_grad_(True)
        # AdamW groups: matrices decay, the rest not; with --binding-lr the T5 slot has groups of its own, whose
        # learning rate is the schedule's times binding_lr / lr
        scale = 1.0 if args.binding_lr is None else args.binding_lr / args.lr
        groups = []
        for own in ((False, True) if args.binding_lr is not None else (None,)):
            part = [(n, p) for n, p in named if own is None or n.startswith("text_encoder_2.") == own]
            for decays in (True, False):
                ps = [p for n, p in part if (p.ndim >= 2 and "embed" not in n and "shared" not in n) == decays]
                groups.append({"params": ps, "weight_decay": args.weight_decay if decays else 0.0,
                               "lr_scale": scale if own else 1.0})
        # the binding head trains beside the pipeline and is never shipped (no EMA); seeded, so every process
        # and every rerun starts from the same head
        self.binding: BindingHead | None = None
        self.aux_params: list[torch.nn.Parameter] = []
        if args.binding_loss:
            gen = torch.Generator("cpu").manual_seed(args.seed + 3)
            self.binding = BindingHead(self.cfg.t5_d_model, generator=gen).to(device).train()
            self.aux_params = list(self.binding.parameters())
            groups.append({"params": self.aux_params, "weight_decay": 0.0, "lr_scale": scale})
        self.opt = torch.optim.AdamW(groups, lr=args.lr, betas=tuple(args.betas), eps=1e-8)
        self.lr_scales = [g["lr_scale"] for g in groups]
        self.ema = _EMA(self.params, args.ema)
        self.batches = BatchSource(args.seed, args.batch, self.cfg.image_size, p_two=args.p_two,
                                   p_style_mention=args.p_style_mention, cond_drop=args.cond_drop,
                                   workers=args.data_workers)
        self.tokens = PromptTokens(self.pipe)
        self.nonfinite: torch.Tensor | None = None  # on the device: has a loss or gradient norm not been finite?
        self.noise_gen = torch.Generator("cpu").manual_seed(args.seed + 1)
        self.step, self.images_seen, self.train_seconds, self.history = 0, 0, 0.0, []
        self.warm_start = None  # where a warm-started run came from (kept across resumes)
        self.data_from = 0  # a warm start draws the batches of steps data_from + step (fresh scenes per segment)
        self.decay: dict | None = None  # a cosine fitted to a time budget: {"from": step, "to": step}
        self.last_eval: dict | None = None
        self.softened = 1.0  # the factor this run divided the T5 slot's attention logits by at its start
        self.last_binding: torch.Tensor | None = None  # (loss, colour, shape, side accuracy) of the last step

    # ------------------------------------------------------------------ start
    def resume(self) -> None:
        """Continue from the checkpoint: weights, optimizer, EMA, random streams and counters."""
        ck = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)  # tensors and plain data only: never unpickle code
        if ck["config"] != self.cfg.to_dict():
            raise ValueError(f"{self.ckpt_path} was trained with a different architecture or seed; "
                             "use --fresh or another --ckpt-dir")
        if (ck.get("binding_head") is None) != (self.binding is None):
            had = "with" if ck.get("binding_head") is not None else "without"
            raise ValueError(f"{self.ckpt_path} was trained {had} a binding head (--binding-loss): resume it with "
                             f"{'a positive' if had == 'with' else 'no'} --binding-loss, or use --fresh or another "
                             "--ckpt-dir")
        load_shapes_state_dict(self.mods, ck["model"])
        if self.binding is not None:
            self.binding.load_state_dict(ck["binding_head"])
        self.opt.load_state_dict(ck["optimizer"])
        for g, scale in zip(self.opt.param_groups, self.lr_scales):   # this invocation's --binding-lr
            g["lr_scale"] = scale
        for s, v in zip(self.ema.shadow, ck["ema"]):
            s.copy_(v)
        self.noise_gen.set_state(ck["noise_rng"])
        self.step, self.images_seen, self.train_seconds = ck["step"], ck["images_seen"], ck["train_seconds"]
        self.history = ck.get("history", [])
        self.warm_start = ck.get("warm_start")
        if self.warm_start and "previous" not in self.warm_start:   # a checkpoint from before totals were kept
            self.warm_start["previous"] = _totals(self.warm_start.pop("previous_training", None))
        self.data_from = (self.warm_start or {}).get("data_from", 0)
        self.decay = ck.get("decay")
        self.softened = ck.get("softened", 1.0)
        if self.place.main:
            print(f"resumed from {self.ckpt_path} at step {self.step} ({self.images_seen} images, "
                  f"{self.train_seconds / 60:.1f} min)", file=sys.stderr)

    def warm_start_from(self, src: Path, partial: bool) -> None:
        """Start from shipped (EMA, fp16) weights with a fresh optimizer; the scenes continue at the source's
        total step and the noise is a fresh stream keyed by it. ``partial``: copy only the tensors whose name and
        shape fit this architecture; the others keep their fresh initialisation."""
        from safetensors.torch import load_file
        doc = read_shapes_config(src)
        state = {k: v.float() for k, v in load_file(str(src / WEIGHTS_NAME)).items()}
        fresh_keys: list[str] = []
        same = doc["config"] == self.cfg.to_dict()
        if not same:
            if not partial:
                raise ValueError(f"{src} holds another architecture or seed than this run; pass matching "
                                 f"--config/--seed, or --init-partial to copy only the tensors that fit")
            state, fresh_keys = _fitting_tensors(self.mods, state, report=self.place.main)
        load_shapes_state_dict(self.mods, state)
        for s_, p_ in zip(self.ema.shadow, self.params):
            s_.copy_(p_.detach())
        prev = _totals(doc.get("training"))   # the source's totals and history carry on
        # scenes continue where the source's training left them (not at its step 0), with a noise stream of their own
        self.data_from = prev["step"]
        self.noise_gen.manual_seed(int(np.random.SeedSequence([self.args.seed + 1, self.data_from]).generate_state(1)[0]))
        self.warm_start = {"from": str(src), "data_from": self.data_from, "previous": prev}
        if not same:
            self.warm_start.update(partial=True, fresh_tensors=fresh_keys, previous_config=doc["config"])
        if self.place.main:
            print(f"warm start from {src} (previous training: {prev['step']} steps)", file=sys.stderr)

    def soften(self, factor: float) -> None:
        """At the start (fresh or warm, never a resume): divide the T5 slot's attention logits by ``factor``
        (:func:`.binding.soften_attention`); the EMA starts from the softened weights."""
        if factor == 1:
            return
        soften_attention(self.pipe.text_encoder_2, factor)
        with torch.no_grad():
            for s_, p_ in zip(self.ema.shadow, self.params):
                s_.copy_(p_.detach())
        self.softened = factor
        if self.place.main:
            print(f"T5 slot: attention logits divided by {factor:g}", file=sys.stderr)

    # ------------------------------------------------------------------ train
    def lr_at(self, step: int) -> float:
        """This run's learning rate at ``step`` (a decay fitted to a time budget starts where it began)."""
        return _lr_at(self.args, step, self.decay["from"] if self.decay else 0)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The training forward's precision: float32, or (``bf16``) bfloat16 autocast, with attention as plain
        matrix products on a CPU."""
        stack = contextlib.ExitStack()
        if self.args.bf16:
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            # the transformer's RMSNorms see bfloat16 inputs and float32 weights (so they run unfused): expected
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
            if self.device.type == "cpu":
                from torch.nn.attention import SDPBackend, sdpa_kernel
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        return stack

    def train_step(self) -> torch.Tensor:
        """One optimizer step on a fresh batch of scenes; returns the batch's loss, a detached 0-d tensor on
        the training device (reading it waits for the step: the loop reads it only when it logs, so on a GPU
        the next step's batch is prepared while this one runs).

        Data-parallel (several launched processes): every process draws the whole step's batch, noise and t
        (the same streams a single process draws) and trains on its own equal slice; the gradients and the loss
        are averaged over the processes before the update, so every process makes the same update a single
        process makes on the whole batch (up to the order of floating-point sums)."""
        args, device, pipe, place = self.args, self.device, self.pipe, self.place
        images, caps = self.batches.get(self.data_from + self.step)
        part = args.batch // place.world
        mine = slice(place.rank * part, (place.rank + 1) * part)
        with torch.no_grad():
            x0, img_ids = images_to_latents(pipe, images[mine], device)
        t = sample_t(args.t_sampling, args.batch, self.noise_gen)[mine]
        eps = to_device(torch.randn((args.batch, *x0.shape[1:]), generator=self.noise_gen)[mine], device)
        t = to_device(t, device)
        batch_caps, caps = caps, caps[mine]
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        with self.autocast():
            prompt_embeds, pooled, text_ids = encode_tokens(pipe, *self.tokens(caps), device)
            v = self.forward(
                hidden_states=xt, timestep=t, guidance=None, pooled_projections=pooled,
                encoder_hidden_states=prompt_embeds, txt_ids=text_ids, img_ids=img_ids, return_dict=False,
            )[0]
        loss = F.mse_loss(v.float(), (eps - x0).float())
        total, report = loss, [loss.detach()]
        if self.binding is not None:
            # the whole batch's numbers of object words: the processes' average is then the whole batch's mean
            targets = token_targets(batch_caps, prompt_embeds.shape[1])
            counts = (targets != IGNORE).sum(dim=(0, 1)) / place.world
            aux, accs = self.binding(prompt_embeds, targets[mine], counts)
            total = loss + args.binding_loss * aux
            report += [aux.detach(), *accs]
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step) * g["lr_scale"]
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        report = torch.stack(report)
        params = self.params + self.aux_params
        if place.world > 1:
            place.mean_([p.grad for p in params if p.grad is not None] + [report])
        loss = report[0]
        self.last_binding = report[1:] if self.binding is not None else None
        bad = ~torch.isfinite(loss)
        if args.grad_clip:
            bad |= ~torch.isfinite(torch.nn.utils.clip_grad_norm_(params, args.grad_clip))
        self.nonfinite = bad if self.nonfinite is None else self.nonfinite | bad
        self.opt.step()
        self.ema.update(self.params, self.step)
        self.step += 1
        self.images_seen += args.batch
        return loss

    # ------------------------------------------------------------------ write
    def check_finite(self) -> None:
        """Raise if a loss or gradient norm has not been finite since the start (reading the flag waits for the
        GPU): called before anything is written and whenever the loop logs, so what is on disk stays finite."""
        if self.nonfinite is not None and bool(self.nonfinite):
            raise FloatingPointError(f"the loss or the gradients stopped being finite by step {self.step}; the "
                                     "checkpoint and weights on disk are from before that: rerun with a lower --lr")

    def write_weights(self, tag: str, eval_res: dict | None = None) -> None:
        """Save the EMA weights as the shipped fp16 file, with the training record and the latest evaluation."""
        self.check_finite()
        if eval_res is not None:
            self.last_eval = {k: v for k, v in eval_res.items() if k not in ("records", "images")}
            self.last_eval["step"] = self.step
        # swap the EMA weights into the live modules, save, swap back
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema.shadow):
                p.copy_(e)
        try:
            state = shapes_state_dict(self.mods)
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)
        meta = {
            "training": self.lineage(tag),
            "sampling": {**DEFAULT_SAMPLING, "height": self.cfg.image_size, "width": self.cfg.image_size},
        }
        if self.last_eval is not None:
            meta["eval"] = self.last_eval  # the latest evaluation (its "step" says of which weights)
        save_shapes_weights(state, self.out_dir, self.cfg, dtype=getattr(torch, self.args.save_dtype), metadata=meta)

    def lineage(self, tag: str) -> dict:
        """The shipped weights' whole training: totals over every segment (a warm start carries its source's
        totals and history on), this segment's own figures, and the history with this segment's line."""
        prev = (self.warm_start or {}).get("previous") or _totals(None)
        minutes = round(self.train_seconds / 60, 2)
        accel = self.device.type != "cpu"
        loss = self.history[-1]["loss"] if self.history else None
        first, last = prev["step"], prev["step"] + self.step
        a = self.args
        line = (f"steps {first}-{last} ({time.strftime('%Y-%m-%d')}, {tag}): "
                + (f"warm start from {self.warm_start['from']} with a fresh AdamW" if self.warm_start else "from scratch")
                + f", batch {a.batch}, lr {a.lr:g} after {a.warmup} warm-up steps"
                + (", constant" if a.lr_schedule == "constant" else f" with cosine decay to 10 % at segment step "
                   f"{a.steps}" if a.steps else " with cosine decay to 10 % fitted to the time budget")
                + f", EMA {a.ema:g}, two-object scenes {a.p_two * 100:.0f} % of batches, "
                + (f"T5 attention logits divided by {self.softened:g} at the start, " if self.softened != 1 else "")
                + (f"binding loss {a.binding_loss:g}, " if a.binding_loss else "")
                + (f"T5 slot and binding head at lr {a.binding_lr:g}, " if a.binding_lr is not None else "")
                + ("bfloat16 autocast, " if a.bf16 else "")
                + _count(self.place.world, "process", "es") + f" on {self.device}"
                + ("" if accel else " with " + _count(torch.get_num_threads(), "thread") + (" each" if self.place.world > 1 else ""))
                + f", {self.images_seen} images in {minutes:.1f} min "
                f"({self.images_seen / max(self.train_seconds, 1e-9):.0f} images/s), final loss {loss}")
        return {
            "step": last, "images_seen": prev["images_seen"] + self.images_seen,
            "train_minutes": round(prev["train_minutes"] + (0 if accel else minutes), 2),
            # GPU-minutes: with N GPUs (one process each) a wall minute is N GPU-minutes
            "gpu_minutes": round(prev["gpu_minutes"] + (minutes * self.place.world if accel else 0), 2),
            "loss": loss, "status": tag, "args": dataclasses.asdict(a),
            "torch": torch.__version__, "device": str(self.device), "processes": self.place.world,
            "warm_start": {k: v for k, v in self.warm_start.items() if k != "previous"} if self.warm_start else None,
            "segment": {"step": self.step, "images_seen": self.images_seen, "train_minutes": minutes,
                        "device": str(self.device), "processes": self.place.world},
            "history": [*prev["history"], line],
        }

    def checkpoint(self, tag: str = "running") -> None:
        """The resumable checkpoint (with optimizer state, outside git), then the shipped weights."""
        self.check_finite()
        _atomic_torch_save(
            {
                "config": self.cfg.to_dict(), "model": shapes_state_dict(self.mods), "optimizer": self.opt.state_dict(),
                "ema": [t.detach().cpu() for t in self.ema.shadow], "noise_rng": self.noise_gen.get_state(),
                "step": self.step, "images_seen": self.images_seen, "train_seconds": self.train_seconds,
                "history": self.history, "args": dataclasses.asdict(self.args), "warm_start": self.warm_start,
                "decay": self.decay, "softened": self.softened,
                "binding_head": None if self.binding is None else {k: v.detach().cpu() for k, v in
                                                                  self.binding.state_dict().items()},
            },
            self.ckpt_path,
        )
        self.write_weights(tag)

    def evaluate(self, n: int) -> dict:
        """Judge exactly what ships (the fp16 round trip): held-out captions, and the validation loss."""
        pipe_eval = load_shapes_pipeline(self.out_dir, device=self.device)
        res = evaluate(pipe_eval, scenes.heldout_captions(n))
        if self.args.val_n:
            res["val_loss"] = validation_loss(pipe_eval, self.args.val_n)
        return res


def _fitting_tensors(mods, state: dict, report: bool = True) -> tuple[dict, list[str]]:
    """A partial warm start's state dict: the file's tensors whose name and shape fit ``mods``, the fresh
    initialisation for the rest; and the names kept fresh. A key the file lacks is new (kept fresh) unless
    it is a tied alias of a key the file has (an embedding shared by two modules): aliases are never
    overwritten."""
    own = {f"{n}.{k}": v for n, m in mods.items() for k, v in m.state_dict().items()}
    storage = lambda t: (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))  # noqa: E731
    in_file = {storage(own[k]) for k in own if k in state}
    new_keys = [k for k in own if k not in state and storage(own[k]) not in in_file]
    fresh_keys = sorted([k for k in own if k in state and state[k].shape != own[k].shape] + new_keys)
    state = {k: (v if v.shape == own[k].shape else own[k].detach().float()) for k, v in state.items() if k in own}
    state.update({k: own[k].detach().float() for k in new_keys})
    copied = sum(1 for k in own if k in state and k not in fresh_keys)
    if report:
        print(f"partial warm start: {copied} tensors copied, {len(fresh_keys)} keep their "
              f"fresh initialisation ({', '.join(fresh_keys[:6])}{' ...' if len(fresh_keys) > 6 else ''})",
              file=sys.stderr)
    return state, fresh_keys


class _StopOnCtrlC:
    """First Ctrl-C: finish the current step, checkpoint, exit cleanly. Second: abort."""

    def __init__(self):
        self.flag, self._old = False, None

    def _on_sigint(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        print("\nCtrl-C: stopping after this step (press again to abort)", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _train(args: TrainArgs) -> dict:
    _check_args(args)
    # data-parallel over launched processes (torchrun / accelerate launch), each on its own device
    place = distributed.Ranks()
    if args.distributed:
        place = distributed.ranks(cpu={"cpu": True, "auto": None}.get(args.device, False))
        place.agree(dataclasses.asdict(args), "training argument")
    device = torch.device(place.device) if place.world > 1 else _device(args.device)
    _set_threads(args, device)
    run = _Training(args, device, place)
    resuming = place.from_main(run.ckpt_path.exists() and not args.fresh)   # the main process's view decides
    if resuming:
        run.resume()
    else:
        if args.init_from:
            run.warm_start_from(Path(args.init_from), args.init_partial)
        run.soften(args.soften_text_attention)
    # the same starting point everywhere (a checkpoint that some processes cannot see is refused), and every
    # process has read it before the main one may write
    place.agree({"step": run.step, "images_seen": run.images_seen, "decay": run.decay,
                 "weights": float(sum(p.detach().double().sum() for p in run.params))}, "starting state")
    if args.fresh and run.ckpt_path.exists() and place.main:
        print(f"--fresh: ignoring existing {run.ckpt_path}", file=sys.stderr)

    run.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    budget_s = args.minutes * 60 if args.minutes is not None else float("inf")
    # cosine with a time budget and no --steps: a decay from this invocation's first step (at the peak rate)
    # to the end fitted to the speed measured over its steps 10-50 (the first steps are slow: allocation,
    # kernel choice). A rerun after an interruption continues the checkpoint's unfinished decay; a rerun after
    # it ended starts a new one (a warm restart)
    fit_at = None
    if args.lr_schedule == "cosine" and args.steps is None and args.minutes:
        if run.decay and run.decay.get("to") is not None and run.step < run.decay["to"]:
            args = run.args = dataclasses.replace(args, steps=run.decay["to"])
            if place.main:
                print(f"continuing the cosine decay fitted before: steps {run.decay['from']}-{run.decay['to']}",
                      file=sys.stderr)
        else:
            run.decay = {"from": run.step, "to": None}
            fit_at = run.step + _FIT_LAST
    start = time.time()
    t_fit = None
    last_ckpt, last_eval = start, start
    loss_ema, t_window, n_window = None, time.time(), 0
    pbar = None
    if args.progress and place.main:
        from ..progress import progress_bar

        pbar = progress_bar(total=args.steps, initial=run.step, desc="shapes training steps", unit="step")
    # the main process writes the log, checkpoints and weights; with several processes they all stop at the same
    # step (any process's Ctrl-C or time budget stops all)
    log_file = open(run.ckpt_path.parent / "log.jsonl", "a") if place.main else contextlib.nullcontext()
    with log_file as log_f, _StopOnCtrlC() as stop:
        def log(rec: dict) -> None:
            if log_f is not None:
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()

        # several processes decide together: on CPUs after every step (a vote costs far less than a step, and a
        # Ctrl-C is acted on before torchrun's 30 s kill), on GPUs at the steps they log at (a vote waits for the
        # device, which elsewhere only logging does)
        vote_every = args.log_every if device.type == "cuda" else 1

        def decide() -> tuple[bool, bool, bool]:
            """(stop, checkpoint now, evaluate now): any process's Ctrl-C or time budget stops all, at the same
            step; the step budget needs no vote."""
            limit = args.steps is not None and run.step >= args.steps
            now = time.time()
            flags = [stop.flag or now - start >= budget_s, now - last_ckpt >= args.ckpt_every * 60,
                     bool(args.eval_every and args.eval_n) and now - last_eval >= args.eval_every * 60]
            if place.world > 1:
                if run.step % vote_every:
                    return limit, False, False
                flags = place.any(flags, device)
            return limit or flags[0], flags[1], flags[2]

        try:
            stop_now = decide()[0]
            while not stop_now:
                t0 = time.time()
                lv = run.train_step()
                run.train_seconds += time.time() - t0
                if fit_at is not None and run.step == fit_at - (_FIT_LAST - _FIT_FIRST):
                    t_fit = time.time()
                elif fit_at is not None and run.step == fit_at:
                    rate = (_FIT_LAST - _FIT_FIRST) / (time.time() - t_fit)
                    left = budget_s - (time.time() - start)
                    end = place.from_main(run.step + max(1, int(rate * left * 0.98)))   # one end for every process
                    args = run.args = dataclasses.replace(args, steps=end)
                    run.decay["to"] = args.steps
                    fit_at = None
                    if place.main:
                        print(f"cosine decay fitted to the time budget: {rate:.2f} steps/s, ends at step {args.steps}",
                              file=sys.stderr)
                    if pbar is not None:
                        pbar.total = args.steps
                loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv   # a tensor: no wait here
                n_window += 1
                if run.step % args.log_every == 0:
                    t_wait = time.time()
                    run.check_finite()
                    lv, loss_ema = float(lv), float(loss_ema)   # waits for the GPU: count it as training time
                    now = time.time()
                    run.train_seconds += now - t_wait
                    rec = {"step": run.step, "loss": round(loss_ema, 5), "loss_raw": round(lv, 5),
                           "lr": run.lr_at(run.step - 1), "it_s": round(n_window / (now - t_window), 3),
                           "minutes": round(run.train_seconds / 60, 2)}
                    if run.last_binding is not None:   # this step's binding loss and colour / shape / side accuracy
                        b = [round(float(x), 4) for x in run.last_binding]
                        rec["binding"] = {"loss": b[0], "colour": b[1], "shape": b[2], "side": b[3]}
                    run.history.append(rec)
                    log(rec)
                    t_window, n_window = now, 0
                    if pbar is not None:
                        pbar.set_postfix(loss=f"{loss_ema:.4f}", refresh=False)
                if pbar is not None:
                    pbar.update(1)
                stop_now, ckpt_now, eval_now = decide()
                if ckpt_now or eval_now:
                    run.check_finite()   # on every process (they hold the same flags): a non-finite run stops all
                    if place.main:
                        run.checkpoint()
                        if eval_now:
                            res = run.evaluate(args.eval_n)
                            run.write_weights("running", res)
                            log({"step": run.step, "eval": {k: res[k] for k in ("all", "one", "two")}})
                            print(f"\n[eval @ step {run.step}] {_eval_summary(res)}", file=sys.stderr)
                    last_ckpt = time.time()
                    last_eval = time.time() if eval_now else last_eval
        finally:
            if pbar is not None:
                pbar.close()
            run.batches.close()
    interrupted = place.any([stop.flag], device)[0]
    if interrupted and place.main:
        print(f"interrupted at step {run.step}: writing a checkpoint and the weights", file=sys.stderr)

    run.check_finite()
    if loss_ema is not None and (not run.history or run.history[-1]["step"] != run.step):
        run.history.append({"step": run.step, "loss": round(float(loss_ema), 5),
                            "minutes": round(run.train_seconds / 60, 2)})
    summary = {"step": run.step, "images_seen": run.images_seen, "train_minutes": run.train_seconds / 60,
               "loss": run.history[-1]["loss"] if run.history else None, "out": str(run.out_dir),
               "ckpt": str(run.ckpt_path), "processes": place.world}
    if place.main:
        run.checkpoint("interrupted" if interrupted else "final")
        if args.eval_n and not interrupted:
            res = run.evaluate(args.eval_n)
            run.write_weights("final", res)
            summary["eval"] = {k: res[k] for k in ("all", "one", "two", "val_loss") if k in res}
            print(f"[eval] {_eval_summary(res)}", file=sys.stderr)
    place.barrier()   # the others wait for the main process's writing before they leave
    summary["history"] = run.history
    return summary


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    d = TrainArgs()
    p = argparse.ArgumentParser(prog="python -m massact_viz.shapes.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=d.out, help="where the shipped EMA weights go")
    p.add_argument("--ckpt-dir", default=None, help="checkpoint directory (default runs/shapes-seed{seed})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for init, data and noise")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget for this invocation")
    p.add_argument("--steps", type=int, default=None, help="total optimisation steps (counts resumed steps)")
    p.add_argument("--batch", type=int, default=d.batch, help="images per step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=d.lr_schedule,
                   help="cosine decays to 10%% of --lr at --steps (with --minutes and no --steps: at the step the "
                        "measured speed reaches by the end of the budget)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay (matrices only)")
    p.add_argument("--betas", type=float, nargs=2, default=list(d.betas), help="AdamW betas")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max grad norm (0 = off)")
    p.add_argument("--ema", type=float, default=d.ema, help="EMA decay of the shipped weights")
    p.add_argument("--cond-drop", type=float, default=d.cond_drop, help="caption dropout (to \"\") for CFG")
    p.add_argument("--t-sampling", choices=["mixed", "logit-normal", "uniform"], default=d.t_sampling,
                   help="training-time distribution")
    p.add_argument("--p-two", type=float, default=d.p_two, help="fraction of two-object scenes")
    p.add_argument("--p-style-mention", type=float, default=d.p_style_mention,
                   help="fraction of captions naming the background style")
    p.add_argument("--binding-loss", type=float, default=d.binding_loss,
                   help="weight of a training-only loss on the T5 slot's output: at each word of an object, a linear "
                        "head predicts that object's colour, shape and side, so the text tells the two objects apart "
                        "(massact_viz.shapes.binding; 0 = off)")
    p.add_argument("--binding-lr", type=float, default=None,
                   help="peak learning rate of the T5 slot and the binding head, on the same schedule (default: --lr)")
    p.add_argument("--soften-text-attention", type=float, default=d.soften_text_attention,
                   help="when the run starts from weights (not on a resume), divide the T5 slot's attention logits "
                        "by this factor once (1 = unchanged): saturated attention passes no gradient")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the machine's cores, an equal share each for launched processes)")
    p.add_argument("--ckpt-every", type=float, default=d.ckpt_every, help="minutes between checkpoints")
    p.add_argument("--eval-n", type=int, default=d.eval_n, help="held-out captions judged at the end (0 = skip)")
    p.add_argument("--eval-every", type=float, default=d.eval_every, help="minutes between evaluations (0 = end only)")
    p.add_argument("--save-dtype", choices=["float16", "float32", "bfloat16"], default=d.save_dtype,
                   help="dtype of the shipped safetensors")
    p.add_argument("--config", default="{}", help="JSON ShapesConfig overrides, e.g. '{\"num_layers\": 2}'")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--init-from", default=None,
                   help="warm start from shipped weights (e.g. data/shapes) when no checkpoint exists: fresh "
                        "optimizer, same architecture; lets a new machine continue the shipped model")
    p.add_argument("--init-partial", action="store_true",
                   help="with --init-from of another architecture (e.g. --config '{\"vae_factor\": 1}'): copy the "
                        "tensors whose name and shape match, keep the rest freshly initialised")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast of the training forward (weights, optimizer and loss stay float32); on a "
                        "CPU with bfloat16 matrix units (AVX512-BF16, AMX) attention runs as plain matrix products")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer for training (CPU: about +10%% images/s after ~3 min of compiling)")
    p.add_argument("--val-n", type=int, default=d.val_n, help="scenes in the fixed validation loss at the end (0 = skip)")
    p.add_argument("--data-workers", type=int, default=d.data_workers,
                   help="processes rendering batches ahead of the training loop (a GPU run: the scenes are drawn on "
                        "the CPU); every step's batch is the same for any number")
    p.add_argument("--log-every", type=int, default=d.log_every, help="steps between lines of log.jsonl")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--eval-only", action="store_true", help="judge the weights in --out and exit")
    p.add_argument("--cfg", type=float, default=DEFAULT_SAMPLING["true_cfg_scale"],
                   help="true_cfg_scale for evaluation")
    p.add_argument("--sample-steps", type=int, default=DEFAULT_SAMPLING["num_inference_steps"],
                   help="num_inference_steps for evaluation")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    if ns.eval_only:
        torch.set_num_threads(ns.threads or os.cpu_count() or 1)
        res = evaluate(load_shapes_pipeline(ns.out), scenes.heldout_captions(ns.eval_n or 100),
                       seed=ns.seed, true_cfg_scale=ns.cfg, num_inference_steps=ns.sample_steps)
        print(_eval_summary(res))
        return 0
    args = TrainArgs(
        out=ns.out, ckpt_dir=ns.ckpt_dir, seed=ns.seed, minutes=ns.minutes, steps=ns.steps, batch=ns.batch,
        lr=ns.lr, warmup=ns.warmup, lr_schedule=ns.lr_schedule, weight_decay=ns.weight_decay,
        betas=tuple(ns.betas), grad_clip=ns.grad_clip, ema=ns.ema, cond_drop=ns.cond_drop,
        t_sampling=ns.t_sampling, p_two=ns.p_two, p_style_mention=ns.p_style_mention,
        binding_loss=ns.binding_loss, binding_lr=ns.binding_lr, soften_text_attention=ns.soften_text_attention,
        device=ns.device,
        threads=ns.threads, ckpt_every=ns.ckpt_every, eval_n=ns.eval_n, eval_every=ns.eval_every,
        save_dtype=ns.save_dtype, config=json.loads(ns.config), fresh=ns.fresh, init_from=ns.init_from,
        init_partial=ns.init_partial,
        progress=not ns.no_progress, bf16=ns.bf16, compile=ns.compile, val_n=ns.val_n, data_workers=ns.data_workers,
        log_every=ns.log_every, distributed=distributed.launched(),
    )
    summary = train(args)
    if distributed.ranks().main:   # one report from several launched processes
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
