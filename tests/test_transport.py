"""Text-conditioned activation transport (cached and batched), on tiny random-weight pipelines."""
import numpy as np
import pytest
import torch

import massact_viz as mv
from massact_viz.errors import MassActError
from massact_viz.probes import TransportResult, source_capture, transport
from massact_viz.probes.transport import _Transport

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
    return source_capture(flux, SRC, num_steps=STEPS, size=SIZE)


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
    fn = _Transport({b.name: everything for b in flux.blocks}, set(range(STEPS)), ["image"], None, 1.0, "cond",
                    src_run.raw)
    raws = [mv.Raw(last, s) for s in range(STEPS)]
    edited = flux.run(TGT, steps=STEPS, size=SIZE, progress=False, edit=fn, capture=mv.Capture(stats=False, raw=raws))
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
    run = flux.run(["a red cat", "a red cat"], seeds=[5, 5], steps=1, size=SIZE, progress=False,
                   capture=mv.Capture.nothing())
    assert np.array_equal(arr(run.images[0]), arr(run.images[1])) and run.meta["seeds"] == [5, 5]
    with pytest.raises(MassActError, match="one seed per prompt"):
        flux.run(["a", "b"], seeds=[1], steps=1, size=SIZE, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k must be"), (dict(k=10_000), "k must be"), (dict(mode="fast"), "mode must be"),
    (dict(tokens=np.ones(7, dtype=bool)), "token mask has 7"), (dict(channels=[]), "empty"),
    (dict(channels="middle"), "channels must be"), (dict(alpha=1.5), "alpha"),
    (dict(branch="both"), "batched"), (dict(channels=[999]), "channel"), (dict(seed=-1), "seed"),
    (dict(steps=(2, 9)), "step window"), (dict(generator=None), None), (dict(seeds=[0, 0]), "seeds"),
])
def test_bad_inputs_fail_before_running(flux, monkeypatch, kwargs, match):
    def boom(*a, **k):
        raise AssertionError("the pipeline ran")
    monkeypatch.setattr(type(flux.pipe), "__call__", boom)
    with pytest.raises(MassActError, match=match):
        transport(flux, SRC, TGT, **KW, **kwargs)


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
    both = transport(m, SRC, TGT, mode="batched", branch="both", **kw)  # runs; also edits the uncond rows
    assert both.settings["branch"] == "both"
