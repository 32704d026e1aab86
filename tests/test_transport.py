"""Text-conditioned activation transport (cached and batched), on tiny random-weight pipelines."""
import numpy as np
import pytest
import torch

import massact_viz as mv
from massact_viz.errors import MassActError
from massact_viz.probes import TransportResult, source_capture, transport
from massact_viz.probes.sources import SourceCache
from massact_viz.probes.transport import RowEdit, TransportEdit

STEPS = 3
SIZE = (32, 32)
SRC, TGT = "a photo of a dog on grass", "an oil painting of a city at night"
KW = dict(num_steps=STEPS, size=SIZE)


def arr(im):
    return np.asarray(im, dtype=np.float64)


def mad(a, b):
    return float(np.abs(arr(a) - arr(b)).mean())


@pytest.fixture(scope="module")
def flux(tiny_model):
    return tiny_model("flux")


@pytest.fixture(scope="module")
def src_run(flux):
    return source_capture(flux, SRC, num_steps=STEPS, size=SIZE, stream="both")


def test_zero_mask_leaves_the_target_exactly(flux, src_run):
    r = transport(flux, SRC, TGT, alpha=0.0, source_run=src_run, **KW)
    assert np.array_equal(arr(r.image), arr(r.target_image))
    rows, cols = flux.token_grid(SIZE)
    off = np.zeros((rows, cols), dtype=bool)
    for mode in ("cached", "batched"):
        r = transport(flux, SRC, TGT, tokens=off, channels=list(range(flux.width)), mode=mode, **KW)
        assert np.array_equal(arr(r.image), arr(r.target_image)), mode
    assert mad(r.source_image, r.target_image) > 1.0  # the prompts do make different images


def test_all_channels_everywhere_carries_the_token_streams_exactly(flux, src_run):
    everything = list(range(flux.width))
    r = transport(flux, SRC, TGT, channels=everything, source_run=src_run, **KW)
    # Measured on tiny FLUX: mean |transported - source| = 1.95 (uint8) vs 2.77 for the unedited target.
    # The rest is the pooled CLIP embedding (+ timestep/guidance) of the *target*, which modulates every
    # block's AdaLN and the final norm_out outside the token streams, so it cannot be transported here.
    assert mad(r.image, r.source_image) < 0.75 * mad(r.target_image, r.source_image)
    assert mad(r.image, r.source_image) < 2.1
    # ...while the last block's image stream is the source's exactly at every step:
    last = flux.blocks[-1].name
    row = RowEdit({b.name: everything for b in flux.blocks}, ("image",), ("cond",), None, 1.0)
    fn = TransportEdit(row, range(STEPS), "target", (), SourceCache(flux, src_run))
    raws = [mv.Raw(last, s) for s in range(STEPS)]
    edited = flux.run(TGT, num_steps=STEPS, size=SIZE, progress=False, edit=fn, capture=mv.Capture(stats=False, raw=raws))
    for s in range(STEPS):
        key = f"{last}/step{s}/image"
        assert torch.equal(edited.raw[key], src_run.raw[key])
    # stream="both" transports the text stream too; the image is the same (FLUX's text stream ends unused)
    both = transport(flux, SRC, TGT, channels=everything, stream="both", **KW)
    assert np.array_equal(arr(both.image), arr(r.image))


def test_cached_and_batched_agree(flux, src_run, tmp_path):
    cached = transport(flux, SRC, TGT, k=4, source_run=src_run, layers="double", steps=(0, 2), **KW)
    batched = transport(flux, SRC, TGT, k=4, mode="batched", layers="double", steps=(0, 2), **KW)
    assert cached.channels == batched.channels and set(cached.channels) == {"double.0", "double.1"}
    assert all(len(v) == 4 for v in cached.channels.values())
    # measured: identical (max |diff| 0 in uint8) on one CPU thread; allow 1 level for batch-size numerics
    for a, b in ((cached.image, batched.image), (cached.source_image, batched.source_image),
                 (cached.target_image, batched.target_image)):
        assert float(np.abs(arr(a) - arr(b)).max()) <= 1.0
    assert not np.array_equal(arr(cached.image), arr(cached.target_image))
    union = transport(flux, SRC, TGT, k=4, channels="union", source_run=src_run, layers="double", steps=(0, 2), **KW)
    target = transport(flux, SRC, TGT, k=4, channels="target", mode="batched", layers="double", steps=(0, 2), **KW)
    for layer in union.channels:
        assert set(union.channels[layer]) == set(cached.channels[layer]) | set(target.channels[layer])
    back = TransportResult.load(cached.save(tmp_path / "t"))
    assert back.channels == cached.channels and back.settings["mode"] == "cached"
    assert np.array_equal(arr(back.image), arr(cached.image))
    assert np.array_equal(arr(back.source_image), arr(cached.source_image))


def test_seeds_option_of_model_run(flux):
    run = flux.run(["a red cat", "a red cat"], seeds=[5, 5], num_steps=1, size=SIZE, progress=False,
                   capture=mv.Capture.nothing())
    assert np.array_equal(arr(run.images[0]), arr(run.images[1])) and run.meta["seeds"] == [5, 5]
    with pytest.raises(MassActError, match="one seed per prompt"):
        flux.run(["a", "b"], seeds=[1], num_steps=1, size=SIZE, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k must be"), (dict(k=10_000), "k must be"), (dict(mode="fast"), "mode must be"),
    (dict(tokens=np.ones(7, dtype=bool)), "token mask has 7"), (dict(channels=[]), "empty"),
    (dict(channels="middle"), "channels must be"), (dict(alpha=1.5), "alpha"),
    (dict(branch="uncond"), "branch must be"), (dict(conditioning="both"), "conditioning must be"),
    (dict(channels=[999]), "channel"), (dict(seed=-1), "seed"),
    (dict(steps=(2, 9)), "step window"), (dict(generator=None), None), (dict(seeds=[0, 0]), "seeds"),
    (dict(max_cache_gb=1e-6), "mode='batched'"), (dict(max_cache_gb=0), "max_cache_gb must be"),
])
def test_bad_inputs_fail_before_running(flux, monkeypatch, kwargs, match):
    def boom(*a, **k):
        raise AssertionError("the pipeline ran")
    monkeypatch.setattr(type(flux.pipe), "__call__", boom)
    with pytest.raises(MassActError, match=match):
        transport(flux, SRC, TGT, **KW, **kwargs)


def test_a_transport_plan_is_checked_immutable_keeps_its_copies_and_runs_to_transport_s_result(flux, monkeypatch):
    import dataclasses

    from massact_viz.probes.transport import execute, plan_transport
    rows, cols = flux.token_grid(SIZE)
    mask = np.zeros((rows, cols), dtype=bool)
    mask[: rows // 2] = True
    chans = {flux.blocks[1].name: [3, 7], flux.blocks[-1].name: [1, 2]}
    kw = dict(channels={n: list(v) for n, v in chans.items()}, tokens=mask.copy(), controls=("random-k",),
              num_steps=STEPS, run_kwargs={"size": SIZE})
    orig = type(flux.pipe).__call__
    monkeypatch.setattr(type(flux.pipe), "__call__", lambda *a, **k: pytest.fail("planning ran the pipeline"))
    plan = plan_transport(flux, SRC, TGT, **kw)
    kw["channels"][flux.blocks[1].name].append(9)   # the caller's objects change after planning...
    kw["tokens"][:] = False
    assert dict(plan.channels) == {n: tuple(v) for n, v in chans.items()}   # ...the plan's do not
    assert plan.tokens is not None and len(plan.tokens) == int(mask.sum())
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.k = 2
    with pytest.raises(TypeError):
        plan.run_kwargs["size"] = (64, 64)     # read-only view
    assert plan == plan and len({plan: 1}) == 1   # identity == and hash (fields hold tensors and mappings)
    monkeypatch.setattr(type(flux.pipe), "__call__", orig)
    got = execute(flux, plan, progress=False)
    want = transport(flux, SRC, TGT, channels=chans, tokens=mask, controls=("random-k",), progress=False, **KW)
    assert got.channels == want.channels and got.settings == want.settings
    for a, b in [(got.image, want.image), (got.target_image, want.target_image),
                 (got.controls["random-k"][0], want.controls["random-k"][0])]:
        assert np.array_equal(arr(a), arr(b))


@pytest.mark.parametrize("family, extra", [("sd3", {}), ("qwenimage", {"negative_prompt": " "})])
def test_cfg_families_transport_the_conditional_rows(tiny_model, family, extra):
    # sd3: batched CFG (rows [uncond; cond]); qwenimage with a negative prompt: separate CFG calls (call 0 cond)
    m = tiny_model(family)
    kw = dict(num_steps=2, size=SIZE, k=4, **extra)
    cached = transport(m, SRC, TGT, **kw)
    batched = transport(m, SRC, TGT, mode="batched", **kw)
    assert cached.channels == batched.channels
    assert float(np.abs(arr(cached.image) - arr(batched.image)).max()) <= 1.0  # measured: 0
    assert not np.array_equal(arr(cached.image), arr(cached.target_image))
    cond = transport(m, SRC, TGT, mode="batched", branch="cond", **kw)  # only the conditional rows
    assert cond.settings["branch"] == "cond" and not np.array_equal(arr(cond.image), arr(cached.image))


# ------------------------------------------------------------------ planted colour channel
def _cos(a, b):
    a, b = a.ravel(), b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def test_transporting_a_planted_channel_moves_the_target_in_the_planted_direction(flux):
    """The source carries a planted code (+A on channel C of double.1's image stream, every step); copying
    just that channel at that layer into the target must move the target's image the way planting the code
    in the target itself does, and copying another channel must not."""
    C, OTHER, A, layer = 7, 20, 40.0, "double.1"

    def plant(site):
        if site.block.name == layer:
            site.stream("image")[..., C] += A

    raws = [mv.Raw(layer, s) for s in range(STEPS)]
    planted_src = flux.run(SRC, num_steps=STEPS, size=SIZE, progress=False, edit=plant,
                           capture=mv.Capture(layers=[layer], raw=raws))
    target = flux.run(TGT, num_steps=STEPS, size=SIZE, progress=False, capture=mv.Capture.nothing()).images[0]
    planted_tgt = flux.run(TGT, num_steps=STEPS, size=SIZE, progress=False, edit=plant,
                           capture=mv.Capture.nothing()).images[0]
    moved = transport(flux, SRC, TGT, channels=[C], layers=layer, source_run=planted_src, metrics=False, **KW)
    other = transport(flux, SRC, TGT, channels=[OTHER], layers=layer, source_run=planted_src, metrics=False, **KW)
    want = arr(planted_tgt) - arr(target)
    got, ctrl = arr(moved.image) - arr(target), arr(other.image) - arr(target)
    assert np.abs(want).mean() > 5.0  # the plant is visible
    # measured on tiny FLUX: plant moves 27.5 levels; cosine 1.000 (pixels and mean colour); channel 20 moves 16x less
    assert _cos(got, want) > 0.9
    assert _cos(got.mean((0, 1)), want.mean((0, 1))) > 0.9  # the mean colour shifts the same way
    assert np.abs(ctrl).mean() < 0.2 * np.abs(got).mean()


# ------------------------------------------------------------------ controls, previews, metrics, interpolation
def test_controls_previews_and_metrics(flux, src_run, tmp_path):
    r = transport(flux, SRC, TGT, k=4, source_run=src_run, layers="double", controls="all", blend=0.25, **KW)
    assert list(r.controls) == ["random-k", "bottom-k", "full-swap", "pixel-blend", "latent-blend"]
    top, ctl = r.channels, r.settings["control_channels"]
    for layer, chans in top.items():
        assert len(ctl["random-k"][layer]) == len(ctl["bottom-k"][layer]) == len(chans) == 4
        assert not set(ctl["random-k"][layer]) & set(chans) and not set(ctl["bottom-k"][layer]) & set(chans)
        from massact_viz.analysis import random_outside   # one random-k rule for every probe
        assert ctl["random-k"][layer] == random_outside(chans, 4, flux.width, seed=0, layer=layer)
    swap = transport(flux, SRC, TGT, channels=list(range(flux.width)), source_run=src_run, layers="double",
                     stream="both", metrics=False, **KW)  # full swap = every channel of every stream
    assert np.array_equal(arr(r.controls["full-swap"][0]), arr(swap.image))
    blend = 0.75 * arr(r.target_image) + 0.25 * arr(r.source_image)
    assert np.abs(arr(r.controls["pixel-blend"][0]) - blend).max() <= 0.5 + 1e-9
    assert r.controls["latent-blend"][0].size == r.image.size  # tiny FLUX's VAE is random: checked on shapes below
    # previews: one (steps, H, W, 3) uint8 stack per run row, the last frame close to the final image
    assert set(r.previews) == {"source", "target", "transported", "random-k", "bottom-k", "full-swap"}
    for name, p in r.previews.items():
        assert p.shape == (STEPS, *SIZE, 3) and p.dtype == torch.uint8, name
    assert np.abs(r.previews["transported"][-1].numpy().astype(float) - arr(r.image)).mean() < 3.0
    # metrics: the target scores 0 toward the source with SSIM 1, the source 1
    m = r.metrics
    assert m["target"]["ssim_target"] == pytest.approx(1.0) and m["target"]["toward_source"] == 0.0
    assert m["source"]["toward_source"] == pytest.approx(1.0) and m["source"]["mse_source"] == 0.0
    assert set(m) == {"target", "transported", "source", *r.controls}
    for row in m.values():
        assert 0.0 <= row["composite"] <= 1.0
    back = TransportResult.load(r.save(tmp_path / "t"))
    assert list(back.controls) == list(r.controls)
    assert all(back.metrics[k] == pytest.approx(v) for k, v in r.metrics.items())
    assert all(torch.equal(back.previews[k], r.previews[k]) for k in r.previews)
    (tmp_path / "t" / "previews.safetensors").write_bytes(b"garbage")
    with pytest.raises(mv.RunFileError, match="previews"):
        TransportResult.load(tmp_path / "t")
    (tmp_path / "t" / "transport.json").write_text('{"format": "something else"}')
    with pytest.raises(mv.RunFileError, match="not a massact_viz transport result"):
        TransportResult.load(tmp_path / "t")
    (tmp_path / "t" / "transport.json").write_text('{"format": "massact')
    with pytest.raises(mv.RunFileError, match="damaged or truncated"):
        TransportResult.load(tmp_path / "t")


def test_unknown_control_and_unsupported_previews(flux, tiny_model):
    with pytest.raises(MassActError, match="unknown control"):
        transport(flux, SRC, TGT, controls=["lpips"], **KW)
    with pytest.raises(MassActError, match="previews"):
        transport(tiny_model("pixart"), SRC, TGT, previews=True, **KW)


def test_interpolation_goes_from_target_to_source(flux):
    everything = flux.width
    it = mv.probes.interpolate(flux, SRC, TGT, over="alpha", values=[0.0, 0.5, 1.0], channels="source",
                               k=everything, progress=False, **KW)
    assert np.array_equal(arr(it.frames[0]), arr(it.target_image))
    d = [mad(f, it.source_image) for f in it.frames]
    assert d[0] > d[1] > d[2]  # monotone toward the source
    assert it.metrics[0]["toward_source"] == 0.0 and it.metrics[2]["toward_source"] > 0.2
    ks = mv.probes.interpolate(flux, SRC, TGT, values=[1, 4, 16], progress=False, **KW)
    assert ks.values == [1, 4, 16] and len(ks.frames) == 3 and ks.labels == ["target", "k=1", "k=4", "k=16", "source"]
    with pytest.raises(MassActError, match="values"):
        mv.probes.interpolate(flux, SRC, TGT, values=[], **KW)
    with pytest.raises(MassActError, match="does not take k="):
        mv.probes.interpolate(flux, SRC, TGT, k=3, **KW)


def test_image_conditioned_transport(flux, tmp_path):
    ref = flux.run(SRC, num_steps=STEPS, size=SIZE, progress=False, capture=mv.Capture.nothing()).images[0]
    r = transport(flux, SRC, TGT, source_image=ref, k=4, controls=["random-k"], **KW)
    info = r.settings["source_image"]
    assert info["method"] == "fixed-point" and "mse" in info["error"]
    assert np.array_equal(arr(r.source_image), arr(ref))        # the reference is the source row
    assert "reconstruction" in r.controls and set(r.metrics) >= {"transported", "random-k", "reconstruction"}
    # the transported target moves toward the reference more than the random-k control does
    assert r.metrics["transported"]["toward_source"] > r.metrics["random-k"]["toward_source"]
    back = TransportResult.load(r.save(tmp_path / "img"))
    assert back.settings["source_image"]["image_sha256"] == info["image_sha256"]
    with pytest.raises(MassActError, match="caption the reference"):
        transport(flux, None, TGT, source_image=ref, **KW)
    with pytest.raises(MassActError, match="non-empty prompt"):
        transport(flux, "", TGT, **KW)
    blank = transport(flux, "", TGT, source_image=ref, k=4, metrics=False, **KW)  # the null caption
    assert blank.settings["source"] == "" and blank.settings["source_image"]["prompt"] == ""
    with pytest.raises(MassActError, match="mode='cached'"):
        transport(flux, SRC, TGT, source_image=ref, mode="batched", **KW)
    with pytest.raises(MassActError, match="inversion must be"):
        transport(flux, SRC, TGT, source_image=ref, inversion="ddim", **KW)
    with pytest.raises(MassActError, match="no image file"):
        transport(flux, SRC, TGT, source_image=tmp_path / "missing.png", **KW)


def test_latent_blend_of_the_teaching_model_is_the_pixel_blend():
    # the embedded model's VAE is an exact pixel (un)shuffle, so blending latents is blending pixels
    shapes = mv.load("shapes")
    r = transport(shapes, "a red circle on a blue background", "a green square on a white background", k=4,
                  num_steps=2, controls=["pixel-blend", "latent-blend"], blend=0.3, metrics=False, previews=False)
    px, lat = arr(r.controls["pixel-blend"][0]), arr(r.controls["latent-blend"][0])
    assert np.abs(px - lat).max() <= 1.0
    assert not r.previews


def test_token_mask_from_the_localized_foreground(flux, tiny_model):
    r = transport(flux, SRC, TGT, k=4, tokens="target", mask_layer="double.1", metrics=False, **KW)
    toks, info = r.settings["tokens"], r.settings["token_mask"]
    n = flux.token_grid(SIZE)[0] * flux.token_grid(SIZE)[1]
    assert 0 < len(toks) < n and info["from"] == "target" and info["layer"] == "double.1" and info["step"] == STEPS - 1
    assert len(info["channels"]) == 4
    # the same as giving that mask explicitly; batched mode finds the same mask
    same = transport(flux, SRC, TGT, k=4, tokens=toks, metrics=False, **KW)
    assert np.array_equal(arr(same.image), arr(r.image))
    batched = transport(flux, SRC, TGT, k=4, tokens="target", mask_layer="double.1", mode="batched", metrics=False,
                        **KW)
    assert batched.settings["tokens"] == toks
    # only the masked tokens change at the transported layers: the untouched image is not the full transport
    full = transport(flux, SRC, TGT, k=4, metrics=False, **KW)
    assert not np.array_equal(arr(full.image), arr(r.image))
    src_mask = transport(flux, SRC, TGT, k=4, tokens="source", metrics=False, **KW).settings["token_mask"]
    assert src_mask["layer"] == flux.blocks[len(flux.blocks) // 2].name
    with pytest.raises(MassActError, match="tokens must be"):
        transport(flux, SRC, TGT, tokens="middle", **KW)
    with pytest.raises(MassActError, match="mask_layer= is for"):
        transport(flux, SRC, TGT, mask_layer="double.1", **KW)


def test_metrics_use_registered_clip_for_the_semantic_score(flux, src_run, monkeypatch):
    """With a ``clip_t`` registered, ``semantic`` is the CLIP-T gain toward the source prompt (here a stand-in
    that scores the mean red level when the prompt names a dog, the mean blue level otherwise)."""
    from massact_viz import metrics
    from massact_viz.probes.transport import transport_metrics

    def fake_clip_t(image, reference, prompt):
        return float(arr(image)[..., 0 if "dog" in prompt else 2].mean() / 255)

    monkeypatch.setitem(metrics.METRICS, "clip_t", metrics.Metric(fake_clip_t, True, "stand-in", True))
    r = transport(flux, SRC, TGT, k=4, source_run=src_run, metrics=False, **KW)
    m = transport_metrics(r)
    s, t, x = (fake_clip_t(im, None, SRC) for im in (r.source_image, r.target_image, r.image))
    assert m["transported"]["clip_t_source"] == pytest.approx(x)
    assert m["transported"]["clip_t_target"] == pytest.approx(fake_clip_t(r.image, None, TGT))
    assert m["transported"]["semantic"] == pytest.approx((x - t) / (s - t))
    assert m["target"]["semantic"] == pytest.approx(0.0) and m["source"]["semantic"] == pytest.approx(1.0)
    monkeypatch.delitem(metrics.METRICS, "clip_t")
    assert "clip_t_source" not in transport_metrics(r)["transported"]  # without CLIP: the pixel score
    assert transport_metrics(r)["transported"]["semantic"] == transport_metrics(r)["transported"]["toward_source"]


# ------------------------------------------------------------------ memory, strict JSON, studies over pairs
def test_cached_source_keeps_only_the_needed_channels(tiny_model):
    m = tiny_model("flux")
    few = transport(m, SRC, TGT, k=2, metrics=False, **KW)
    ctl = transport(m, SRC, TGT, k=2, controls=["random-k", "bottom-k"], metrics=False, **KW)
    swap = transport(m, SRC, TGT, k=2, controls=["full-swap"], metrics=False, **KW)
    rows, cols = m.token_grid(SIZE)
    per_slice = rows * cols * 4  # float32 bytes per kept channel of one (layer, step) image slice
    slices = len(m.blocks) * STEPS
    assert few.settings["source_cache_bytes"] == per_slice * 2 * slices  # 2 channels per layer, image stream
    assert ctl.settings["source_cache_bytes"] <= per_slice * 6 * slices  # + random-2 and bottom-2 (may overlap)
    assert swap.settings["source_cache_bytes"] > 10 * ctl.settings["source_cache_bytes"]  # every channel, both streams
    assert np.array_equal(arr(few.image), arr(ctl.image))  # what is cached does not change the transport


def test_identical_source_and_target_warn_and_write_strict_json(flux, tmp_path):
    import json
    with pytest.warns(mv.MassActWarning, match="identical"):
        r = transport(flux, SRC, SRC, k=4, controls=["random-k"], **KW)
    assert r.metrics["transported"]["toward_source"] is None
    path = r.save(tmp_path / "same")
    doc = json.loads((path / "transport.json").read_text(),
                     parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"bare {c} in transport.json")))
    assert doc["metrics"]["transported"]["toward_source"] is None


def test_transport_study_gives_intervals_over_pairs(flux, tmp_path):
    from massact_viz.probes import transport_study
    from massact_viz.probes.transport import TransportStudy, read_pairs
    pairs = [(SRC, TGT, "a"), ("a red car", "a blue boat", "b"), ("a house", "a tree", "a")]
    st = transport_study(flux, pairs, seeds=2, k=4, controls=["random-k"], progress=False, **KW)
    assert st.values["transported"]["toward_source"].shape == (3, 2)
    iv = st.interval("transported", "toward_source")
    assert iv.n == 3 and iv.seeds == 2 and iv.lo <= iv.mean <= iv.hi
    assert st.interval("transported", "toward_source", where="a").n == 2
    c = st.compare("toward_source", "transported", "random-k")
    assert c.verdict == "~" and "n = 3" in c.sentence   # three pairs: never a claim
    assert "| transported |" in st.markdown() and "n = 3 pairs" in st.markdown()
    back = TransportStudy.from_dict(st.to_dict())
    assert np.allclose(back.values["transported"]["ssim_target"], st.values["transported"]["ssim_target"])
    f = tmp_path / "pairs.tsv"
    f.write_text("source\ttarget\tnote\n# a comment\na red car\ta blue boat\tcolour\n")
    assert read_pairs(f) == [("a red car", "a blue boat", "colour")]
    with pytest.raises(MassActError, match="two non-empty prompts"):
        read_pairs([("only one",)])
    with pytest.raises(MassActError, match="k must be"):
        transport_study(flux, pairs, k=0, **KW)


def test_transport_study_resumes_in_its_out_folder_with_the_same_result(flux, tmp_path, interrupt):
    from massact_viz.probes import transport_study
    from massact_viz.probes.transport import probe as probe_mod
    pairs = [(SRC, TGT, "a"), ("a red car", "a blue boat", "b")]
    args = dict(seeds=2, k=2, controls=["random-k"], progress=False, **KW)
    ref = transport_study(flux, pairs, **args)
    calls = interrupt(probe_mod, "transport", 3)
    with pytest.raises(KeyboardInterrupt):
        transport_study(flux, pairs, out=tmp_path / "study", **args)
    assert len(list((tmp_path / "study" / "units").iterdir())) == 2   # two finished units kept
    calls["n"] = 10   # no more interruptions; count the units the second call runs
    again = transport_study(flux, pairs, out=tmp_path / "study", **args)
    assert calls["n"] == 12, "only the two units not done were run"
    assert again.to_dict() == ref.to_dict()
    with pytest.raises(MassActError, match="started with other settings"):
        transport_study(flux, pairs, out=tmp_path / "study", **{**args, "k": 3})


def test_metrics_table_renders_as_a_table_with_what_each_column_measures():
    from types import SimpleNamespace

    from massact_viz.probes.transport import metrics_table
    res = SimpleNamespace(metrics={"target": {"toward_source": 0.0, "ssim_target": 1.0},
                                   "transported": {"toward_source": 0.4567, "ssim_target": None}})
    t = metrics_table(res, ["toward_source", "ssim_target"])
    md = t._repr_markdown_()
    assert md.splitlines()[:4] == ["| row | toward_source | ssim_target |", "|---|---:|---:|",
                                   "| target | 0.000 | 1.000 |", "| transported | 0.457 | - |"]
    assert "`ssim_target`: SSIM to the unedited target" in md and str(t) == md
