"""Image-conditioned sources: encoding, flow inversion, forward noising and teacher-forced source runs.

Bounds sit above the values measured on CPU float32 (one thread) and well below what a broken
inversion gives (a generation from another seed). Measured (mean |diff| in uint8 units):

* shapes (trained, exact pixel-unshuffle VAE; the weights shipped at step 22490, later steps in the comments below), own output, 20 steps, no CFG:
  "fixed-point" 1.85, "euler" 10.2, "noise" with another seed (= a generation from that seed) 25.1;
* tiny FLUX / SD3 (random weights, 4 steps), reconstruction vs the VAE round trip (``inv_*``):
  "euler" 2.70 / 1.60, "fixed-point" 0.0 / 0.0, "noise" with another seed 39.1 / 35.0; the random
  VAEs alone lose 35.8 / 36.2.
"""
import numpy as np
import pytest
import torch

import massact_viz as mv
from massact_viz.errors import MassActError
from massact_viz.probes import image_source_run, invert, source_capture, transport
from massact_viz.probes.inversion import _probe, _run_guidance, _Velocity, decode_image, encode_image

SHAPES_P = "a red circle on a blue background"
SHAPES_STEPS = 20
TINY_P, TINY_STEPS, SIZE = "a photo of a cat", 4, (32, 32)


def arr(im):
    return np.asarray(im, dtype=np.float64)


def mad(a, b):
    return float(np.abs(arr(a) - arr(b)).mean())


@pytest.fixture(scope="module")
def shapes():
    return mv.load("shapes")


@pytest.fixture(scope="module")
def own(shapes):
    """The shapes model's own output for SHAPES_P, seed 0, without CFG (what invert() uses by default)."""
    return shapes.run(SHAPES_P, num_steps=SHAPES_STEPS, seed=0, guidance=1.0, progress=False).images[0]


def first_inputs(model, fn):
    """Run fn() and return the transformer's hidden_states at the first call of every step."""
    seen = []
    h = model.pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["hidden_states"].detach().float().clone()), with_kwargs=True)
    try:
        out = fn()
    finally:
        h.remove()
    return out, seen


def pipeline_decode(model, latents, size):
    """The pipeline's own decoding of ``latents`` (its unpacking, scaling and VAE), via a 1-step run."""
    return model.run("a", num_steps=1, size=size, progress=False, latents=latents.to(model.dtype),
                     callback_on_step_end=lambda p, i, t, kw: {"latents": latents.to(kw["latents"].dtype)}).images[0]


# ------------------------------------------------------------------------------------------ encoding
def test_encode_uses_the_pipeline_latent_layout(shapes, tiny_model):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 32, 3), dtype=np.uint8)  # taller than wide: a non-square grid
    x = encode_image(shapes, img, size=(48, 32))
    assert x.shape == (1, 12 * 8, 48)  # 4x4-pixel tokens, packed 2x2 over the 12-channel latent
    # the exact VAE: the pipeline's own unpack + decode gives the image back bit for bit
    assert np.array_equal(arr(pipeline_decode(shapes, x, (48, 32))), img)
    assert np.array_equal(arr(decode_image(shapes, x, (48, 32))[0]), img)
    # resizing / center-cropping: a wide image is cropped to the square then resized
    wide = np.concatenate([np.zeros((32, 16, 3), np.uint8), img[:32], np.zeros((32, 16, 3), np.uint8)], axis=1)
    assert np.array_equal(arr(decode_image(shapes, encode_image(shapes, wide))[0]), img[:32])
    for fam, shape in (("flux", (1, 256, 4)), ("sd3", (1, 4, 32, 32))):
        m = tiny_model(fam)
        im = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        z = encode_image(m, im, size=SIZE)
        assert tuple(z.shape) == shape
        ours, theirs = decode_image(m, z, SIZE)[0], pipeline_decode(m, z, SIZE)
        assert mad(ours, theirs) < 0.5  # our decode is the pipeline's (layout, shift, scale)
        # (no pixel round-trip bound here: the random-weight tiny VAEs lose 58-67 uint8 units, more than
        # a flat grey image would; the exact shapes VAE above carries the round-trip check)


def test_sigmas_are_the_pipelines_and_noise_is_the_seeds(shapes, tiny_model, own):
    for m, p, steps in ((tiny_model("flux"), TINY_P, TINY_STEPS), (tiny_model("sd3"), TINY_P, TINY_STEPS),
                        (shapes, SHAPES_P, SHAPES_STEPS)):
        size = SIZE
        seen_sigmas = []

        def rec(pipe, i, t, kw):
            seen_sigmas.append(pipe.scheduler.sigmas.float().cpu().clone())
            return {}
        g = _run_guidance(m, None)
        _, inputs = first_inputs(m, lambda: m.run(p, num_steps=steps, seed=3, size=size, guidance=g, progress=False,
                                                  callback_on_step_end=rec))
        inv = invert(m, own if m is shapes else np.zeros((32, 32, 3), np.uint8), p, num_steps=steps, size=size,
                     method="noise", seed=3, regenerate=False, progress=False)
        assert torch.allclose(torch.tensor(inv.sigmas), seen_sigmas[0]), m.source
        assert inv.sigmas[-1] == 0.0 and len(inv.latents) == steps + 1
        # the "noise" source starts from exactly the noise Model.run(seed=3) draws (sigma_0 = 1)
        assert inv.sigmas[0] == 1.0
        assert torch.equal(inv.latents[0], inputs[0][:1]), m.source


def test_flux_dynamic_shift_is_the_pipelines():
    """With FLUX.1-dev's scheduler config the sigmas carry the pipeline's resolution-dependent shift mu."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    from massact_viz.testing import tiny_pipeline

    pipe = tiny_pipeline("flux")
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                     max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    m = mv.load(pipe)
    size = (48, 48)  # 24x24 = 576 tokens: mu = calculate_shift(576) = 0.5427
    seen = []
    m.run(TINY_P, num_steps=4, size=size, progress=False,
          callback_on_step_end=lambda p, i, t, kw: seen.append(p.scheduler.sigmas.float().clone()) or {})
    inv = invert(m, np.zeros((48, 48, 3), np.uint8), TINY_P, num_steps=4, size=size, method="noise",
                 regenerate=False, progress=False)
    mu = calculate_shift(576, 256, 4096, 0.5, 1.15)
    lin = np.linspace(1, 0.25, 4)
    want = np.exp(mu) / (np.exp(mu) + (1 / lin - 1))  # FlowMatchEulerDiscreteScheduler.time_shift (exponential)
    assert torch.allclose(torch.tensor(inv.sigmas), seen[0])
    assert np.allclose(inv.sigmas[:4], want, atol=1e-6) and not np.allclose(inv.sigmas[:4], lin)


# ------------------------------------------------------------------------------------------ inversion
def test_inversion_regenerates_the_models_own_output(shapes, own):
    other = shapes.run(SHAPES_P, num_steps=SHAPES_STEPS, seed=1, guidance=1.0, progress=False).images[0]
    eu = invert(shapes, own, SHAPES_P, num_steps=SHAPES_STEPS, method="euler", progress=False)
    fp = invert(shapes, own, SHAPES_P, num_steps=SHAPES_STEPS, method="fixed-point", progress=False)
    nz = invert(shapes, own, SHAPES_P, num_steps=SHAPES_STEPS, method="noise", seed=1, progress=False)
    assert eu.error["vae_mean_abs_uint8"] == 0.0  # the shapes VAE is exact
    assert mad(fp.reconstruction, own) == pytest.approx(fp.error["mean_abs_uint8"])
    print("inversion errors (uint8 levels): fixed-point", fp.error["mean_abs_uint8"], fp.error["psnr"], "euler",
          eu.error["mean_abs_uint8"], "noise", nz.error["mean_abs_uint8"])
    assert fp.error["mean_abs_uint8"] < 3.0 and fp.error["psnr"] > 33  # measured 0.02, 62.7 dB (step 66168; 0.18, 55.5 at 29771; 0.48, 50.5 at 26322; 1.85, 36.1 at 22490)
    assert fp.error["final_latent_error"] < 0.05 and abs(fp.error["noise_std"] - 1) < 0.1
    # measured 9.2 (step 66168; 19.0 at 29771, 16.9 at 26322, 10.2 at 22490, 9.3 at 20400): plain inverse Euler drifts
    # by an amount that changes with the weights, which is why fixed-point is the default
    assert eu.error["mean_abs_uint8"] < 20
    # ...but still beats starting from another seed's noise (= generating from that seed)
    assert eu.error["mean_abs_uint8"] < nz.error["mean_abs_uint8"] - 3
    assert nz.error["mean_abs_uint8"] == pytest.approx(mad(other, own))
    assert eu.error["latent_drift"][0] == 0.0 and len(eu.error["latent_drift"]) == SHAPES_STEPS + 1
    # forward noising with the generating seed reproduces the generation exactly
    same = invert(shapes, own, SHAPES_P, num_steps=SHAPES_STEPS, method="noise", seed=0, progress=False)
    assert same.error["mean_abs_uint8"] < 0.5


@pytest.mark.parametrize("fam", ["flux", "sd3"])
def test_tiny_inversion_bounds(tiny_model, fam):
    m = tiny_model(fam)
    own = m.run(TINY_P, num_steps=TINY_STEPS, seed=0, size=SIZE, guidance=_run_guidance(m, None), progress=False).images[0]
    kw = dict(num_steps=TINY_STEPS, size=SIZE, progress=False)
    eu = invert(m, own, TINY_P, method="euler", **kw)
    fp = invert(m, own, TINY_P, method="fixed-point", iterations=3, **kw)
    nz = invert(m, own, TINY_P, method="noise", seed=1, **kw)
    # inv_*: reconstruction vs the VAE round trip, i.e. the inversion's own error
    assert eu.error["inv_mean_abs_uint8"] < 4  # measured 2.70 (flux) / 1.60 (sd3)
    assert eu.error["inv_mean_abs_uint8"] < 0.2 * nz.error["inv_mean_abs_uint8"]  # 39.1 / 35.0
    assert eu.error["final_latent_error"] < 0.1  # measured 0.063 / 0.066
    assert fp.error["inv_mean_abs_uint8"] < 0.5 and fp.iterations == 3


def test_guided_replay_is_checked(shapes, tiny_model):
    """The velocity replays the pipeline's own step-0 calls; a wrong replay is refused, not used."""
    for m, g, layout in ((shapes, 4.0, "separate"), (shapes, None, "none"), (tiny_model("sd3"), 5.0, "batched"),
                         (tiny_model("flux"), None, "none")):
        size = (32, 32)
        pr = _probe(m, "a red circle", 3, 0, size, _run_guidance(m, g))
        assert pr.layout == layout and (pr.scale == g if g else pr.scale is None)
        _Velocity(m, pr).check()
        if layout != "none":
            pr.scale += 1.0  # a wrong guidance scale no longer reproduces the pipeline's first step
            with pytest.raises(MassActError, match="guidance"):
                _Velocity(m, pr).check()
        pr = _probe(m, "a red circle", 3, 0, size, _run_guidance(m, g))
        pr.calls[0] = dict(pr.calls[0], encoder_hidden_states=pr.calls[0]["encoder_hidden_states"] * 0)
        with pytest.raises(MassActError, match="replaying"):
            _Velocity(m, pr).check()
    inv = invert(shapes, np.zeros((32, 32, 3), np.uint8), SHAPES_P, num_steps=4, guidance=4.0, method="euler",
                 progress=False)
    assert inv.guidance == 4.0 and np.isfinite(inv.error["mse"])


# ------------------------------------------------------------------------------------------ source runs
def test_teacher_forced_source_run(tiny_model, shapes, own, tmp_path):
    m = tiny_model("flux")
    img = m.run(TINY_P, num_steps=TINY_STEPS, seed=0, size=SIZE, progress=False).images[0]
    inv = invert(m, img, TINY_P, num_steps=TINY_STEPS, size=SIZE, seed=2, method="euler", progress=False)
    layers, steps = ["double.0", "single.3"], (1, 3)
    run, inputs = first_inputs(m, lambda: image_source_run(m, img, TINY_P, layers=layers, steps=steps, stream="both",
                                                           num_steps=TINY_STEPS, size=SIZE, seed=2, inversion=inv,
                                                           progress=False))
    assert len(inputs) == TINY_STEPS
    for s in range(TINY_STEPS):  # the transformer saw the inverted trajectory, step by step
        assert torch.allclose(inputs[s], inv.latents[s], atol=1e-6), s
    assert run.meta["prompts"] == [TINY_P] and run.meta["num_steps"] == TINY_STEPS and run.meta["seeds"] == [2]
    src = run.meta["source_image"]
    assert src["method"] == "euler" and len(src["image_sha256"]) == 64 and src["error"]["mse"] == inv.error["mse"]
    assert sorted(k for k in run.raw if not k.startswith("input/")) == \
        sorted(f"{n}/step{s}/{st}" for n in layers for s in (1, 2) for st in ("image", "text"))
    assert {"input/encoder_hidden_states", "input/pooled_projections"} <= set(run.raw)  # for conditioning="source"
    assert tuple(run.raw["double.0/step1/image"].shape) == (1, 256, m.width)
    assert run.raw["single.3/step2/text"].shape[0] == 1 and run.raw["single.3/step2/text"].shape[2] == m.width
    # ...and its statistics are not those of an unrelated prompt's run from the same seed
    other = source_capture(m, "a red car on a street", layers=layers, steps=steps, stream="both", seed=2,
                           num_steps=TINY_STEPS, size=SIZE)
    a = run.stats.get("abs_mean", layer="single.3", stream="image", step=2, image=0)
    b = other.stats.get("abs_mean", layer="single.3", stream="image", step=2, image=0)
    assert not torch.allclose(a, b, rtol=1e-3)
    assert not torch.equal(run.raw["double.0/step1/image"], other.raw["double.0/step1/image"])
    back = mv.Run.load(run.save(tmp_path / "src"))  # a run directory like any other
    assert back.meta["source_image"]["image_sha256"] == src["image_sha256"] and sorted(back.raw) == sorted(run.raw)
    # transport() accepts it as a cached source
    r = transport(m, TINY_P, "a red car on a street", channels=[0, 1], layers=layers, steps=steps, seed=2,
                  num_steps=TINY_STEPS, size=SIZE, source_run=run)
    assert len(r.images) == 1
    # shapes: the teacher-forced run ends on the encoded reference, which the exact VAE returns bit for bit
    srun = image_source_run(shapes, own, SHAPES_P, layers="double.0", steps=0, num_steps=4, method="noise",
                            progress=False)
    assert np.array_equal(arr(srun.images[0]), arr(own)) and sorted(k for k in srun.raw if not k.startswith("input/")) == \
        ["double.0/step0/image", "double.0/step0/image/uncond"]  # both CFG branches of the embedded model


def test_bad_inputs_fail_before_any_work(tiny_model, shapes, tmp_path):
    calls = []
    h = shapes.pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    img = np.zeros((32, 32, 3), np.uint8)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    try:
        bad = [
            (lambda: invert(shapes, "", SHAPES_P), "path is empty"),
            (lambda: invert(shapes, tmp_path / "missing.png", SHAPES_P), "no image file"),
            (lambda: invert(shapes, empty, SHAPES_P), "cannot read"),
            (lambda: invert(shapes, img.astype(np.float32), SHAPES_P), "uint8"),
            (lambda: invert(shapes, np.zeros((0, 4, 3), np.uint8), SHAPES_P), "H, W > 0"),
            (lambda: invert(shapes, img, SHAPES_P, size=30), "not divisible by 4"),
            (lambda: encode_image(shapes, img, size=(32, 33)), "not divisible"),
            (lambda: invert(shapes, img, SHAPES_P, method="ddim"), "method must be one of"),
            (lambda: invert(shapes, img, SHAPES_P, method="euler", iterations=3), "fixed-point"),
            (lambda: invert(shapes, img, SHAPES_P, method="fixed-point", iterations=0), "positive integer"),
            (lambda: invert(shapes, img, SHAPES_P, seed=-1), "seed"),
            (lambda: invert(shapes, img, SHAPES_P, num_steps=0), "num_steps"),
            (lambda: invert(shapes, img, SHAPES_P, guidance="high"), "guidance"),
            (lambda: image_source_run(shapes, img, SHAPES_P, num_steps=4, steps=7), "step"),
            (lambda: image_source_run(shapes, img, SHAPES_P, layers="double.99"), "unknown layer"),
            (lambda: image_source_run(shapes, img, SHAPES_P, stream="pixels"), "stream"),
        ]
        for fn, msg in bad:
            with pytest.raises(MassActError, match=msg):
                fn()
    finally:
        h.remove()
    assert calls == []  # nothing ran
    # the empty prompt is the null caption, allowed here (Model.run(allow_empty_prompt=True))
    assert invert(shapes, img, "", num_steps=2, method="noise", regenerate=False, progress=False).prompt == ""
    for fam in ("pixart", "qwenimage"):
        with pytest.raises(MassActError, match="FLUX.1.*Stable Diffusion 3"):
            encode_image(tiny_model(fam), img)
