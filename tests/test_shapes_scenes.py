"""Tests for the ``shapes`` teaching model: procedural scenes, judge, VAE, tokenizers,
pipeline build/load, and a tiny smoke training run."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from massact_viz.shapes import scenes as S
from massact_viz.shapes.vae import PixelShuffleVAE

TINY = {
    "num_layers": 1,
    "num_single_layers": 1,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "axes_dims_rope": [4, 6, 6],
    "t5_d_model": 32,
    "t5_d_ff": 64,
    "t5_num_layers": 1,
    "clip_hidden": 32,
    "clip_intermediate": 64,
    "clip_num_layers": 1,
}


def _scenes(n, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return [S.sample_scene(rng, **kw) for _ in range(n)]


# --------------------------------------------------------------------------- generator


@pytest.mark.parametrize("size", [32, 48])
def test_masks_match_pixels_exactly(size):
    for sc in _scenes(150, seed=size):
        img, fg, masks = S.render(sc, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert fg.shape == (size, size) and fg.dtype == bool
        assert len(masks) == len(sc.objects)
        assert np.array_equal(fg, np.logical_or.reduce(masks))
        if len(masks) == 2:
            assert not (masks[0] & masks[1]).any(), "objects must not overlap"
        for o, m in zip(sc.objects, masks):
            assert m.sum() > 0.01 * size * size
            assert (img[m] == S.COLOURS[o.colour]).all(), "object pixels are exactly the object colour"
        bg_px = img[~fg]
        for o in sc.objects:
            assert not (bg_px == S.COLOURS[o.colour]).all(-1).any(), "no background pixel has an object colour"
        # textured/gradient backgrounds stay in the background colour's palette cell
        assert (S.nearest_colour(img)[~fg] == S.COLOUR_NAMES.index(sc.background)).all()
        if sc.style == "flat":
            assert (bg_px == S.COLOURS[sc.background]).all()
        else:
            assert len(np.unique(bg_px, axis=0)) > 1


def test_relations_and_layout():
    for sc in _scenes(300, seed=1, p_two=1.0):
        a, b = sc.objects
        axis, sign = S.RELATIONS[sc.relation]
        d = np.subtract((a.cx, a.cy), (b.cx, b.cy))
        assert np.sign(d[axis]) == sign and abs(d[axis]) > abs(d[1 - axis])
        for o in sc.objects:
            assert S.MARGIN - 1e-9 <= o.cx - o.size and o.cx + o.size <= 1 - S.MARGIN + 1e-9
            assert S.MARGIN - 1e-9 <= o.cy - o.size and o.cy + o.size <= 1 - S.MARGIN + 1e-9


def test_styles_and_mix():
    scs = _scenes(600, seed=2)
    assert {sc.style for sc in scs} == set(S.STYLES)
    n_two = sum(len(sc.objects) == 2 for sc in scs)
    assert 200 < n_two < 400
    mentioned = sum(sc.style_mentioned for sc in scs)
    assert 200 < mentioned < 400


def test_determinism():
    a = S.dataset_batch(np.random.default_rng(7), 16, 32)
    b = S.dataset_batch(np.random.default_rng(7), 16, 32)
    c = S.dataset_batch(np.random.default_rng(8), 16, 32)
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["masks"], b["masks"])
    assert a["captions"] == b["captions"]
    assert not np.array_equal(a["images"], c["images"])
    sc = a["scenes"][0]
    assert np.array_equal(S.render(sc)[0], S.render(sc)[0])
    assert np.array_equal(a["images"][0], S.render(sc)[0])
    assert not any(S.is_heldout(c) for c in a["captions"] + c["captions"])


# --------------------------------------------------------------------------- language


def test_captions_parse_back():
    for sc in _scenes(400, seed=3):
        cap = S.caption(sc)
        att = S.parse_caption(cap)
        assert att == sc.attributes()
        assert S.parse_caption(cap.upper() + ".") == att
        gt = S.scene_from_caption(cap, np.random.default_rng(0))
        assert S.caption(gt) == cap
        assert gt.attributes() == att
    base = S.parse_caption("a red circle on a blue background")
    assert base == {"objects": [{"colour": "red", "shape": "circle"}], "relation": None,
                    "background": "blue", "style": None}
    two = S.parse_caption("a white triangle left of a red square on a speckled black background")
    assert two["relation"] == "left of" and two["style"] == "noise" and len(two["objects"]) == 2
    assert len(S.all_single_captions()) == 90 and len(S.all_single_captions(style_words=True)) == 360
    for c in S.all_single_captions(style_words=True):
        S.parse_caption(c)


@pytest.mark.parametrize(
    "bad",
    [
        "a purple circle on a blue background",
        "a red hexagon on a blue background",
        "a red circle on a red background",
        "a red circle",
        "a red circle next to a blue square on a green background",
        "a red circle on a blue background please",
        "red circle on a blue background",
        "",
    ],
)
def test_parse_rejects_outside_language(bad):
    with pytest.raises(ValueError, match="outside the shapes language"):
        S.parse_caption(bad)


def test_heldout_split():
    caps = S.heldout_captions(100)
    assert len(caps) == len(set(caps)) == 100 and all(S.is_heldout(c) for c in caps)
    assert caps == S.heldout_captions(100)
    n_two = sum(S.parse_caption(c)["relation"] is not None for c in caps)
    assert 20 < n_two < 90
    frac = np.mean([S.is_heldout(c) for c in S.all_single_captions(style_words=True)])
    assert 0.05 < frac < 0.2


def test_the_training_yardsticks_are_fixed_and_what_they_say():
    from massact_viz.shapes import train as T

    one, two = T.one_object_eval_captions(180), T.two_object_eval_captions(180)
    assert one == T.one_object_eval_captions(180) and two == T.two_object_eval_captions(180)
    assert [sum(f" {s} " in c for c in one) for s in S.SHAPES] == [60, 60, 60]
    assert all(S.parse_caption(c)["relation"] is None for c in one)
    assert len(set(two)) == 180 and all(S.is_heldout(c) for c in two)
    assert all(S.parse_caption(c)["relation"] is not None for c in two)
    assert {S.parse_caption(c)["relation"] for c in two} == set(S.RELATIONS)


# --------------------------------------------------------------------------- judge


@pytest.mark.parametrize("size", [32, 64])
def test_judge_scores_ground_truth(size):
    res = [S.judge(S.render(sc, size)[0], S.caption(sc)) for sc in _scenes(200, seed=10 + size)]
    assert all(r["colour_ok"] for r in res)
    assert all(r["shape_ok"] for r in res)
    assert all(r["relation_ok"] is not False for r in res)
    assert np.mean([r["clean"] for r in res]) > 0.999
    # PIL and float inputs are accepted
    from PIL import Image

    sc = _scenes(1, seed=5)[0]
    img = S.render(sc, size)[0]
    assert S.judge(Image.fromarray(img), S.caption(sc))["ok"]
    assert S.judge(img.astype(np.float32) / 255.0, S.caption(sc))["ok"]


def test_judge_rejects_wrong_captions():
    shape_ok, colour_ok, bg_ok, rel_ok = [], [], [], []
    for i, sc in enumerate(_scenes(150, seed=4, p_two=0.0)):
        img = S.render(sc)[0]
        o = sc.objects[0]
        others = [s for s in S.SHAPES if s != o.shape]
        shape_ok.append(S.judge(img, f"a {o.colour} {others[i % 2]} on a {sc.background} background")["shape_ok"])
        cols = [c for c in S.COLOUR_NAMES if c not in (o.colour, sc.background)]
        wrong_fg = f"a {cols[i % len(cols)]} {o.shape} on a {sc.background} background"
        colour_ok.append(S.judge(img, wrong_fg)["colour_ok"])
        bg_ok.append(S.judge(img, f"a {o.colour} {o.shape} on a {cols[i % len(cols)]} background")["colour_ok"])
    flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    for sc in _scenes(100, seed=6, p_two=1.0):
        a, b = sc.objects
        cap = f"a {a.colour} {a.shape} {flip[sc.relation]} a {b.colour} {b.shape} on a {sc.background} background"
        rel_ok.append(S.judge(S.render(sc)[0], cap)["relation_ok"] if a.colour != b.colour else False)
    assert np.mean(shape_ok) < 0.02
    assert np.mean(colour_ok) == 0 and np.mean(bg_ok) == 0
    assert np.mean(rel_ok) < 0.02


def test_judge_reports_the_aspect_that_tells_a_rectangle_from_a_square():
    # every one-object render is about as wide as tall (the shapes card leans on this: a drawing with aspect < 0.9
    # is out of the data's proportions, whatever template the judge then reads it as)
    aspects = [S.judge(S.render(sc)[0], S.caption(sc))["objects"][0]["aspect"] for sc in _scenes(300, seed=8, p_two=0.0)]
    assert min(aspects) >= 0.9
    img = np.zeros((32, 32, 3), np.uint8)
    img[:] = S.COLOURS["blue"]
    img[8:20, 6:26] = S.COLOURS["red"]  # 20 x 12 px: a rectangle, no square
    j = S.judge(img, "a red square on a blue background")
    assert not j["shape_ok"] and j["objects"][0]["aspect"] == pytest.approx(12 / 20)
    assert S.judge(np.full((32, 32, 3), S.COLOURS["blue"], np.uint8), "a red square on a blue background")[
        "objects"][0]["aspect"] is None


def test_judge_on_blank_and_noise():
    blank = np.zeros((32, 32, 3), np.uint8) + np.array(S.COLOURS["blue"], np.uint8)
    r = S.judge(blank, "a red circle on a blue background")
    assert r["background_ok"] and not r["colour_ok"] and not r["shape_ok"] and r["n_objects"] == 0
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    r = S.judge(noise, "a red circle on a blue background")
    assert not r["ok"]
    # "everything is foreground" and single 4x4 token blocks are not objects
    big = blank.copy()
    big[2:30, 2:30] = S.COLOURS["red"]
    assert S.judge(big, "a red square on a blue background")["n_objects"] == 0
    block = blank.copy()
    block[8:12, 8:12] = S.COLOURS["red"]
    assert not S.judge(block, "a red square on a blue background")["shape_ok"]


def test_validity_separates_scenes_from_noise_and_confetti():
    """Every ground-truth render is a valid scene; pure noise, confetti (a fifth of the pixels replaced by
    random palette colours) and blank images are not. The judge gives no credit to an invalid image."""
    rng = np.random.default_rng(0)
    b = S.dataset_batch(rng, 1000, 32, p_two=0.5, p_style_mention=0.5, exclude_heldout=False)
    v = [S.validity(im) for im in b["images"]]
    assert all(x["valid"] for x in v), [x["reasons"] for x in v if not x["valid"]][:3]
    assert min(x["score"] for x in v) > 0.0
    noise = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    assert not any(S.validity(im)["valid"] for im in noise)
    conf = b["images"][:40].copy()
    hit = rng.random((40, 32, 32)) < 0.2
    conf[hit] = S._PALETTE.astype(np.uint8)[rng.integers(0, 6, int(hit.sum()))]
    assert not any(S.validity(im)["valid"] for im in conf)
    blank = np.zeros((32, 32, 3), np.uint8) + np.array(S.COLOURS["blue"], np.uint8)
    r = S.validity(blank)
    assert not r["valid"] and r["score"] == 0.0 and "largest object" in r["reasons"][0]
    from massact_viz.metrics import get_metric
    cap = "a red circle on a blue background"
    assert get_metric("scene_valid")(noise[0], None) == 0.0
    assert get_metric("judge_colour")(noise[0], None, prompt=cap) == 0.0
    good = b["images"][0]
    assert get_metric("judge_colour")(good, None, prompt=b["captions"][0]) == 1.0
    assert get_metric("judge_shape")(good, None, prompt=b["captions"][0]) == 1.0


# --------------------------------------------------------------------------- VAE


def test_vae_round_trip_exact():
    vae = PixelShuffleVAE(factor=2)
    assert vae.config.latent_channels == 12 and len(vae.config.block_out_channels) == 2
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    enc = vae.encode(x)
    z = enc.latent_dist.mode()
    assert z.shape == (3, 12, 16, 16)
    assert torch.equal(enc.latent_dist.sample(torch.Generator().manual_seed(0)), z)
    assert torch.equal(vae.decode(z).sample, x)
    assert torch.equal(vae.decode(z, return_dict=False)[0], x)
    imgs = torch.from_numpy(S.dataset_batch(np.random.default_rng(0), 4)["images"]).permute(0, 3, 1, 2)
    x = imgs.float() / 127.5 - 1
    back = ((vae.decode(vae.encode(x).latent_dist.mode()).sample + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(back, imgs)
    v4 = PixelShuffleVAE(factor=4)
    assert len(v4.config.block_out_channels) == 3
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(v4.decode(v4.encode(x).latent_dist.mode()).sample, x)


# --------------------------------------------------------------------------- model + training


@pytest.fixture(scope="module")
def tiny_pipe():
    from massact_viz.shapes.model import build_shapes_pipeline

    return build_shapes_pipeline(TINY)


def test_tokenizers_cover_language_and_cap_length():
    from massact_viz.shapes.model import build_clip_tokenizer, build_t5_tokenizer

    t5, clip = build_t5_tokenizer(16), build_clip_tokenizer(16)
    for w in S.VOCABULARY:
        assert len(t5.tokenize(w)) == 1 and len(clip.tokenize(w)) == 1
    c = "a white triangle left of a red square on a shaded black background"  # longest form: 13 words
    ids = t5(c, padding="max_length", max_length=512, truncation=True).input_ids
    assert len(ids) == 16 and ids[13] == t5.eos_token_id and ids[14] == t5.pad_token_id
    assert t5(c).input_ids == build_t5_tokenizer(16)(c).input_ids
    assert clip(c, padding="max_length", max_length=16).input_ids == build_clip_tokenizer(16)(
        c, padding="max_length", max_length=16).input_ids
    assert t5.tokenize("A purple hexagon!")  # out-of-language text still tokenizes


def test_pipeline_layout(tiny_pipe):
    from massact_viz.shapes.train import images_to_latents
    from diffusers import FluxPipeline

    pipe = tiny_pipe
    assert isinstance(pipe, FluxPipeline) and pipe.vae_scale_factor == 2
    assert pipe.default_sample_size * pipe.vae_scale_factor == 32
    imgs = S.dataset_batch(np.random.default_rng(0), 2)["images"]
    packed, ids = images_to_latents(pipe, imgs, "cpu")
    assert packed.shape == (2, 64, 48) and ids.shape == (64, 3)
    # the pipeline's own decode path inverts our encode path exactly
    lat = FluxPipeline._unpack_latents(packed, 32, 32, pipe.vae_scale_factor)
    lat = lat / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    img = pipe.image_processor.postprocess(pipe.vae.decode(lat, return_dict=False)[0], output_type="np")
    assert np.array_equal(np.rint(img * 255).astype(np.uint8), imgs)


def test_sampling_convention_matches_training():
    """An oracle transformer returning the exact rectified-flow velocity for a fixed x0,
    v = (x_t - x0) / t (= eps - x0 when x_t = (1 - t) x0 + t eps), makes FluxPipeline land on x0
    exactly: the pipeline passes timestep = sigma (not sigma * 1000) and integrates from 1 to 0
    with unshifted sigmas (mu is ignored: no dynamic shifting), as train.py assumes."""
    from massact_viz.shapes.model import build_shapes_pipeline
    from massact_viz.shapes.train import images_to_latents

    pipe = build_shapes_pipeline(TINY)
    imgs = S.dataset_batch(np.random.default_rng(3), 1)["images"]
    x0, _ = images_to_latents(pipe, imgs, "cpu")
    seen = []

    def oracle(hidden_states, timestep, **kw):
        seen.append(float(timestep[0]))
        return ((hidden_states - x0) / timestep[:, None, None],)

    pipe.transformer.forward = oracle
    out = pipe("a red circle on a blue background", negative_prompt="", true_cfg_scale=3.0,
               num_inference_steps=7, generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.array_equal(np.rint(out.images[0] * 255).astype(np.uint8), imgs[0])
    assert np.allclose(seen[::2], np.linspace(1.0, 1 / 7, 7), atol=1e-6)  # cond/uncond pairs


def test_diffusers_save_and_from_pretrained(tiny_pipe, tmp_path):
    import massact_viz.shapes.vae  # noqa: F401  (diffusers resolves the custom VAE from sys.modules)
    from diffusers import DiffusionPipeline

    tiny_pipe.save_pretrained(tmp_path)
    p2 = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(p2).__name__ == "FluxPipeline" and type(p2.vae) is PixelShuffleVAE
    p2.set_progress_bar_config(disable=True)
    kw = dict(prompt="a red circle on a blue background", negative_prompt="", true_cfg_scale=4.0,
              num_inference_steps=2, height=32, width=32, output_type="np")
    a = tiny_pipe(generator=torch.Generator().manual_seed(0), **kw).images
    b = p2(generator=torch.Generator().manual_seed(0), **kw).images
    assert np.abs(a - b).max() < 1e-5


def test_smoke_training_resume_and_generation(tmp_path, monkeypatch):
    from massact_viz.shapes import train as T
    from massact_viz.shapes.model import load_shapes_pipeline

    common = dict(batch=8, lr=3e-3, warmup=5, config=TINY, eval_n=0, progress=False, log_every=1, threads=1)
    a = T.train(T.TrainArgs(out=str(tmp_path / "a"), ckpt_dir=str(tmp_path / "ca"), steps=20, **common))
    losses = [h["loss_raw"] for h in a["history"] if "loss_raw" in h]
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    # resumable: 10 steps, then resume to 20, reproduces the uninterrupted run
    T.train(T.TrainArgs(out=str(tmp_path / "b"), ckpt_dir=str(tmp_path / "cb"), steps=10, **common))
    b = T.train(T.TrainArgs(out=str(tmp_path / "b"), ckpt_dir=str(tmp_path / "cb"), steps=20, **common))
    assert b["step"] == 20
    from safetensors.torch import load_file

    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(v.dtype == torch.float16 for v in wa.values())
    # the shipped weights load into a FluxPipeline that generates at 32x32
    pipe = load_shapes_pipeline(tmp_path / "a")
    assert next(pipe.transformer.parameters()).dtype == torch.float32
    out = pipe("a red circle on a blue background", negative_prompt="", true_cfg_scale=4.0,
               num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 32, 32, 3) and np.isfinite(out.images).all()
    res = T.evaluate(pipe, ["a red circle on a blue background", S.heldout_captions(1)[0]], num_inference_steps=2)
    assert res["n"] == 2 and set(res["all"]) >= {"colour", "shape"}
    # a new machine continues the shipped weights: warm start, fresh optimizer, provenance recorded, and the
    # data stream continues at the source's step 20 (a segment that replayed steps 0.. would re-see its scenes)
    drawn = []
    get = T.BatchSource.get
    monkeypatch.setattr(T.BatchSource, "get", lambda self, step: drawn.append(step) or get(self, step))
    c = T.train(T.TrainArgs(out=str(tmp_path / "c"), ckpt_dir=str(tmp_path / "cc"), steps=1,
                            init_from=str(tmp_path / "a"), **common))
    first_warm = [h["loss_raw"] for h in c["history"] if "loss_raw" in h][0]
    assert first_warm < 0.9 * np.mean(losses[:5])  # starts from the trained weights, not from scratch
    doc = json.loads((tmp_path / "c" / "config.json").read_text())
    tr = doc["training"]
    assert drawn == [20] and tr["warm_start"]["data_from"] == 20
    # totals over both segments, this segment's own figures, and one history line per segment
    assert (tr["step"], tr["images_seen"], tr["segment"]["step"], tr["segment"]["images_seen"]) == (21, 168, 1, 8)
    assert len(tr["history"]) == 2 and tr["history"][0].startswith("steps 0-20 ") and "from scratch" in tr["history"][0]
    assert tr["history"][1].startswith("steps 20-21 ") and "warm start from" in tr["history"][1]
    # resumed, the segment keeps its place in the stream and in the totals
    T.train(T.TrainArgs(out=str(tmp_path / "c"), ckpt_dir=str(tmp_path / "cc"), steps=2, init_from=str(tmp_path / "a"),
                        **common))
    tr = json.loads((tmp_path / "c" / "config.json").read_text())["training"]
    assert drawn == [20, 21] and (tr["step"], tr["images_seen"], tr["warm_start"]["data_from"]) == (22, 176, 20)
    assert len(tr["history"]) == 2 and tr["history"][1].startswith("steps 20-22 ")


def test_training_totals_read_configs_written_before_totals_were_kept():
    """Weights written by the trainer before it kept totals hold only their own segment, their source's
    training nested in warm_start: a warm start from them still carries every segment on."""
    from massact_viz.shapes import train as T

    shipped = {"step": 100, "images_seen": 800, "train_minutes": 9.0, "gpu_minutes": 2.0, "history": ["h0", "h1"],
               "segment": {"step": 50}}
    old = {"step": 30, "images_seen": 240, "train_minutes": 3.0, "device": "cpu",
           "warm_start": {"from": "data/shapes", "previous_training": shipped}}
    older_gpu = {"step": 5, "images_seen": 40, "train_minutes": 1.5, "device": "cuda:0",
                 "warm_start": {"from": "x", "previous_training": old}}
    assert T._totals(shipped) == {"step": 100, "images_seen": 800, "train_minutes": 9.0, "gpu_minutes": 2.0,
                                  "history": ["h0", "h1"]}
    got = T._totals(older_gpu)
    assert (got["step"], got["images_seen"], got["train_minutes"], got["gpu_minutes"]) == (135, 1080, 12.0, 3.5)
    assert got["history"][:2] == ["h0", "h1"] and got["history"][2].startswith("steps 100-130")
    assert got["history"][3].startswith("steps 130-135")
    assert T._totals(None)["step"] == 0 and T._totals({"step": None})["history"] == []


def test_lineage_books_gpu_minutes_per_gpu_and_cpu_minutes_as_wall_time():
    """A segment on N GPUs adds N GPU-minutes per wall minute; one on the CPU adds its wall minutes whatever
    the number of processes; both carry the source's totals and history on."""
    import types
    from massact_viz.shapes import train as T

    prev = {"step": 100, "images_seen": 800, "train_minutes": 9.0, "gpu_minutes": 2.0, "history": ["h0"]}
    args = T.TrainArgs(out="o", batch=8, steps=None, lr_schedule="cosine")
    for device, world, train_add, gpu_add in (("cuda", 2, 0.0, 6.0), ("cpu", 2, 3.0, 0.0)):
        seg = types.SimpleNamespace(warm_start={"from": "data/shapes", "previous": prev}, train_seconds=180.0,
                                    device=torch.device(device), history=[{"loss": 0.07}], step=20, images_seen=160,
                                    args=args, place=types.SimpleNamespace(world=world), softened=1.0)
        got = T._Training.lineage(seg, "final")
        assert (got["step"], got["images_seen"]) == (120, 960)
        assert (got["train_minutes"], got["gpu_minutes"]) == (9.0 + train_add, 2.0 + gpu_add)
        assert got["segment"]["train_minutes"] == 3.0 and got["history"][0] == "h0"
        assert got["history"][1].startswith("steps 100-120") and "2 processes on " + device in got["history"][1]


def _train_cli(args, processes, tmp_path):
    """The trainer's command line, in one process or launched as ``processes`` (torchrun, gloo)."""
    import subprocess
    import sys

    head = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc-per-node={processes}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(head + ["-m", "massact_viz.shapes.train", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


def test_two_processes_train_as_one_and_resume(tmp_path):
    """Data-parallel training: two launched processes, each on half of every batch, make the single process's
    updates (up to the order of floating-point sums), resume from their checkpoint with two processes or one,
    write once, and stop together on a time budget."""
    import shutil

    from massact_viz.shapes import train as T

    base = ["--batch", "8", "--lr", "3e-3", "--warmup", "2", "--config", json.dumps(TINY), "--eval-n", "0",
            "--val-n", "0", "--no-progress", "--threads", "1", "--device", "cpu"]
    # with the binding head: its gradients are averaged too (else the processes' heads, then encoders, drift)
    common = [*base, "--log-every", "1", "--binding-loss", "0.1", "--p-two", "0.7"]
    ref = dict(batch=8, lr=3e-3, warmup=2, config=TINY, eval_n=0, val_n=0, progress=False, threads=1, log_every=1,
               device="cpu", binding_loss=0.1, p_two=0.7)
    one = T.train(T.TrainArgs(out=str(tmp_path / "one"), ckpt_dir=str(tmp_path / "c1"), steps=6, **ref))
    mid = None
    for steps in ("3", "6"):   # stop after 3 steps, then the same command with a larger budget resumes
        r = _train_cli(["--out", "two", "--ckpt-dir", "c2", "--steps", steps, *common], 2, tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count('"images_seen"') == 1, "one report from two processes"
        if mid is None:
            mid = torch.load(tmp_path / "c2" / "ckpt.pt", weights_only=True)["model"]
            shutil.copytree(tmp_path / "c2", tmp_path / "c3")
    assert "resumed from" in r.stderr
    assert len((tmp_path / "c2" / "log.jsonl").read_text().splitlines()) == 6, "the main process logs, once"
    # the two processes' checkpoint resumed in one process
    T.train(T.TrainArgs(out=str(tmp_path / "three"), ckpt_dir=str(tmp_path / "c3"), steps=6, **ref))
    a, b, c = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("c1", "c2", "c3"))
    assert (b["step"], b["images_seen"]) == (6, 48) == (a["step"], a["images_seen"]) == (c["step"], c["images_seen"])
    assert a["model"].keys() == b["model"].keys()
    diff = lambda x, y: max(float((x[k] - y[k]).abs().max()) for k in x)  # noqa: E731
    assert diff(a["binding_head"], b["binding_head"]) < 1e-3 and diff(a["binding_head"], c["binding_head"]) < 1e-3
    print(f"two processes vs one: {diff(a['model'], b['model']):.2e}; steps 4-6 moved {diff(b['model'], mid):.2e}")
    assert diff(b["model"], mid) > 1e-3, "the resumed steps trained"
    # measured: 1e-4 (AdamW's normalised steps magnify sum-order differences of tiny gradients); without the
    # gradient average (each process training on its own half) 3e-2
    assert diff(a["model"], b["model"]) < 1e-3, "two processes drifted from one"
    assert diff(a["model"], c["model"]) < 1e-3, "resumed in one process, drifted"
    la = [h["loss_raw"] for h in one["history"] if "loss_raw" in h]
    lb = [h["loss_raw"] for h in b["history"] if "loss_raw" in h]
    assert len(la) == len(lb) == 6 and np.allclose(la, lb, rtol=1e-3), (la, lb)   # the whole batch's loss
    assert json.loads((tmp_path / "two" / "config.json").read_text())["training"]["processes"] == 2
    # a time budget: the processes vote at their log steps and stop together
    r = _train_cli(["--out", "timed", "--ckpt-dir", "c4", "--minutes", "0.05", "--steps", "100000", *base,
                    "--log-every", "4"], 2, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    timed = torch.load(tmp_path / "c4" / "ckpt.pt", weights_only=True)
    assert 0 < timed["step"] < 100000   # (a process that stopped alone would leave the other waiting: a timeout)
    # a batch that does not split over the processes is refused before anything is built or written
    r = _train_cli(["--out", "bad", "--ckpt-dir", "c5", "--steps", "1", "--batch", "7", "--config", json.dumps(TINY),
                    "--eval-n", "0", "--no-progress", "--device", "cpu"], 2, tmp_path)
    assert r.returncode != 0 and "does not split evenly over the 2 launched processes" in r.stderr
    assert not (tmp_path / "c5").exists() and not (tmp_path / "bad").exists()


def test_partial_warm_start_copies_what_fits_and_keeps_the_rest_fresh(tmp_path):
    """--init-partial: another architecture (a finer token grid, one more block) starts from the tensors of
    the given weights whose name and shape match; a different architecture without it is refused."""
    from safetensors.torch import load_file
    from massact_viz.shapes import train as T

    common = dict(batch=4, lr=1e-9, warmup=1, eval_n=0, val_n=0, progress=False, threads=1, ema=0.0)
    T.train(T.TrainArgs(out=str(tmp_path / "a"), ckpt_dir=str(tmp_path / "ca"), steps=1, config=TINY, **common))
    src = load_file(str(tmp_path / "a" / "model.safetensors"))
    other = dict(TINY, vae_factor=1, num_single_layers=TINY.get("num_single_layers", 1) + 1)
    with pytest.raises(ValueError, match="--init-partial"):
        T.train(T.TrainArgs(out=str(tmp_path / "b"), ckpt_dir=str(tmp_path / "cb"), steps=1, config=other,
                            init_from=str(tmp_path / "a"), **common))
    T.train(T.TrainArgs(out=str(tmp_path / "b"), ckpt_dir=str(tmp_path / "cb"), steps=1, config=other,
                        init_from=str(tmp_path / "a"), init_partial=True, **common))
    got = load_file(str(tmp_path / "b" / "model.safetensors"))
    ws = json.loads((tmp_path / "b" / "config.json").read_text())["training"]["warm_start"]
    fresh = set(ws["fresh_tensors"])
    assert ws["partial"] and "transformer.x_embedder.weight" in fresh and "transformer.proj_out.weight" in fresh
    new_block = f"transformer.single_transformer_blocks.{other['num_single_layers'] - 1}.proj_out.weight"
    assert new_block in fresh and new_block in got
    same = [k for k in src if k in got and got[k].shape == src[k].shape]
    assert len(same) > 0.8 * len(src)
    assert all(torch.allclose(got[k].float(), src[k].float(), atol=1e-3) for k in same)   # lr ~0: copied as is


def test_a_bad_save_dtype_is_refused_before_any_training(tmp_path):
    from massact_viz.shapes import train as T
    with pytest.raises(ValueError, match="save_dtype"):
        T.train(T.TrainArgs(out=str(tmp_path / "o"), ckpt_dir=str(tmp_path / "c"), steps=1, save_dtype="fp16",
                            config=TINY, eval_n=0, progress=False, threads=1))
    assert not (tmp_path / "c").exists()


def test_a_steps_batch_is_the_same_in_the_loop_and_in_worker_processes():
    from massact_viz.shapes.batches import BatchSource, step_batch

    kw = dict(p_two=0.5, p_style_mention=0.5, cond_drop=0.3)
    in_loop = [step_batch(0, s, 6, 32, **kw) for s in range(5)]
    with BatchSource(0, 6, 32, workers=2, **kw) as src:
        ahead = [src.get(s) for s in range(5)]
        jumped = src.get(3)   # a resumed run asks for a later step first
    for (ia, ic), (wa, wc) in zip(in_loop, ahead):
        assert np.array_equal(ia, wa) and ic == wc
    assert np.array_equal(jumped[0], in_loop[3][0]) and jumped[1] == in_loop[3][1]
    assert not np.array_equal(in_loop[0][0], in_loop[1][0])        # each step draws new scenes
    assert "" in sum((c for _, c in in_loop), [])                  # some captions dropped for guidance
    assert not np.array_equal(step_batch(1, 0, 6, 32, **kw)[0], in_loop[0][0])   # the seed matters
    with pytest.raises(ValueError, match="workers"):
        BatchSource(0, 6, 32, workers=-1, **kw)


def test_cosine_with_only_a_time_budget_fits_its_end_to_the_measured_speed(tmp_path, capsys):
    from massact_viz.shapes import train as T

    T.train(T.TrainArgs(out=str(tmp_path / "o"), ckpt_dir=str(tmp_path / "c"), minutes=0.2, batch=4, lr=1e-3,
                        warmup=5, lr_schedule="cosine", config=TINY, eval_n=0, val_n=0, progress=False, threads=1))
    assert "cosine decay fitted to the time budget" in capsys.readouterr().err
    ck = torch.load(tmp_path / "c" / "ckpt.pt", weights_only=True)
    assert isinstance(ck["args"]["steps"], int) and ck["args"]["steps"] > 50 and ck["step"] <= ck["args"]["steps"]
    assert ck["decay"] == {"from": 0, "to": ck["args"]["steps"]}
    # a rerun after an interruption (here: a checkpoint whose decay had 200 steps to go) continues that decay
    # instead of starting again at the peak rate
    ck["decay"]["to"] = ck["step"] + 200
    torch.save(ck, tmp_path / "c" / "ckpt.pt")
    T.train(T.TrainArgs(out=str(tmp_path / "o"), ckpt_dir=str(tmp_path / "c"), minutes=0.03, batch=4, lr=1e-3,
                        warmup=5, lr_schedule="cosine", config=TINY, eval_n=0, val_n=0, progress=False, threads=1,
                        log_every=1))
    assert "continuing the cosine decay fitted before" in capsys.readouterr().err
    first = [json.loads(l) for l in (tmp_path / "c" / "log.jsonl").read_text().splitlines()
             if json.loads(l).get("step") == ck["step"] + 1][-1]
    assert first["lr"] < 1e-3 * 0.9 and first["lr"] == pytest.approx(
        T._lr_at(T.TrainArgs(lr=1e-3, warmup=5, lr_schedule="cosine", steps=ck["step"] + 200), ck["step"]))


def test_training_encodes_captions_exactly_as_encode_prompt(tiny_pipe):
    from massact_viz.shapes.train import PromptTokens, encode_tokens

    caps = ["a red circle on a blue background", "", "a red circle on a blue background",
            "a white triangle left of a red square on a shaded black background",
            " ".join(["purple hexagon"] * 20)]   # outside the language and past the trained length: truncated
    want = tiny_pipe.encode_prompt(prompt=caps, prompt_2=None, device="cpu")
    tokens = PromptTokens(tiny_pipe)
    for _ in range(2):                           # the second call answers from memory
        got = encode_tokens(tiny_pipe, *tokens(caps), "cpu")
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype and torch.equal(g, w)
    # past its limit the memory starts again, and still answers for captions it had before
    small = PromptTokens(tiny_pipe, limit=3)
    small(caps[:2])
    ids = small([caps[0], caps[3], caps[4]])
    assert all(torch.equal(a, b[[0, 3, 4]]) for a, b in zip(ids, tokens(caps)))
    assert len(small._ids) == 3


def test_a_loss_that_is_not_finite_stops_training_without_writing(tmp_path, monkeypatch):
    from massact_viz.shapes import train as T

    real_mse = T.F.mse_loss
    monkeypatch.setattr(T.F, "mse_loss", lambda a, b: real_mse(a, b) * float("nan"))
    # found when the flag is next read: at a log line, before a checkpoint, or at the end
    for i, (log_every, ckpt_every) in enumerate([(1, 5.0), (25, 0.0), (25, 5.0)]):
        with pytest.raises(FloatingPointError, match="lower --lr"):
            T.train(T.TrainArgs(out=str(tmp_path / f"o{i}"), ckpt_dir=str(tmp_path / f"c{i}"), steps=3, batch=2,
                                config=TINY, eval_n=0, val_n=0, progress=False, threads=1, log_every=log_every,
                                ckpt_every=ckpt_every))
        assert not (tmp_path / f"c{i}" / "ckpt.pt").exists() and not (tmp_path / f"o{i}").exists()


def test_bfloat16_autocast_trains_resumes_bit_for_bit_and_ships_float16(tmp_path):
    from safetensors.torch import load_file

    from massact_viz.shapes import train as T

    common = dict(batch=8, lr=3e-3, warmup=5, config=TINY, eval_n=0, val_n=0, progress=False, log_every=1,
                  threads=1, bf16=True)
    a = T.train(T.TrainArgs(out=str(tmp_path / "a"), ckpt_dir=str(tmp_path / "ca"), steps=12, **common))
    losses = [h["loss_raw"] for h in a["history"] if "loss_raw" in h]
    assert np.isfinite(losses).all() and np.mean(losses[-4:]) < np.mean(losses[:4])
    T.train(T.TrainArgs(out=str(tmp_path / "b"), ckpt_dir=str(tmp_path / "cb"), steps=6, **common))
    T.train(T.TrainArgs(out=str(tmp_path / "b"), ckpt_dir=str(tmp_path / "cb"), steps=12, **common))
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and all(v.dtype == torch.float16 for v in wa.values())
    ck = torch.load(tmp_path / "ca" / "ckpt.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())   # fp32 master weights
    # autocast changes the arithmetic: the same seed without it trains to other weights
    T.train(T.TrainArgs(out=str(tmp_path / "f"), ckpt_dir=str(tmp_path / "cf"), steps=12, **{**common, "bf16": False}))
    wf = load_file(str(tmp_path / "f" / "model.safetensors"))
    assert any(not torch.equal(wa[k], wf[k]) for k in wa)
    line = json.loads((tmp_path / "a" / "config.json").read_text())["training"]["history"][-1]
    assert "bfloat16 autocast" in line
