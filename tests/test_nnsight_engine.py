"""The nnsight engine: the same statistics, raw slices and (edited) images as the hooks engine on every
tiny family, with and without classifier-free guidance; the toolkit's capture inside a user's own nnsight
trace, composed with the user's interventions; memory that does not grow with the number of tokens."""
import numpy as np
import pytest
import torch

import massact_viz as mv
from massact_viz.capture import capture_bytes, plan_capture
from massact_viz.edits import Edit
from massact_viz.errors import MassActError
from massact_viz.testing import FAMILIES, default_call_kwargs

SIZE = (32, 32)
PROMPTS = ["a red cat", "a small blue house on a hill"]  # different lengths: text padding matters

#: per family, the kwargs that turn classifier-free guidance off and on (flux: true CFG needs a negative prompt)
CFG = {"flux": ({}, {"true_cfg_scale": 2.0, "negative_prompt": ""}),
       "flux2": ({"guidance_scale": 1.0}, {"guidance_scale": 4.0}),
       "qwenimage": ({"true_cfg_scale": 1.0}, {"true_cfg_scale": 4.0, "negative_prompt": " "}),
       "sana": ({"guidance_scale": 1.0}, {"guidance_scale": 4.5}),
       "sd3": ({"guidance_scale": 1.0}, {"guidance_scale": 7.0}),
       "pixart": ({"guidance_scale": 1.0}, {"guidance_scale": 4.5})}


def _kw(family, cfg):
    kw = {k: v for k, v in default_call_kwargs(family).items() if k not in ("height", "width")}
    kw.update(CFG[family][cfg])
    return kw


def same_images(a, b):
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def assert_same_run(a, b):
    assert set(a.stats.values) == set(b.stats.values)
    for k in a.stats.values:
        torch.testing.assert_close(a.stats.values[k], b.stats.values[k], rtol=0, atol=0, equal_nan=True)
    assert set(a.raw) == set(b.raw)
    for k in a.raw:
        assert torch.equal(a.raw[k], b.raw[k]), k
    assert same_images(a.images, b.images)


def test_the_cfg_table_covers_every_tiny_family():
    assert set(CFG) == set(FAMILIES)


@pytest.mark.parametrize("cfg", [0, 1], ids=["no-cfg", "cfg"])
@pytest.mark.parametrize("family", FAMILIES)
def test_engines_give_identical_statistics_raw_slices_and_images(family, cfg, tiny_model):
    m = tiny_model(family)
    raws = [mv.Raw(0, 1), mv.Raw(-1, 0, channels=[0, 3])]
    if cfg:
        raws.append(mv.Raw(1, 1, branch="uncond"))
    cap = mv.Capture(raw=raws)
    kw = dict(num_steps=2, size=SIZE, progress=False, capture=cap, **_kw(family, cfg))
    hooks = m.run(PROMPTS, **kw)
    nn = m.run(PROMPTS, engine="nnsight", **kw)
    assert nn.meta["engine"] == "nnsight" and hooks.meta["engine"] == "hooks"
    if cfg:
        assert "double.1/step1/image/uncond" in nn.raw or any(k.endswith("/uncond") for k in nn.raw)
    assert_same_run(hooks, nn)


@pytest.mark.parametrize("cfg", [0, 1], ids=["no-cfg", "cfg"])
@pytest.mark.parametrize("family", FAMILIES)
def test_engines_give_identical_edited_images(family, cfg, tiny_model):
    m = tiny_model(family)
    kw = dict(num_steps=2, size=SIZE, progress=False, **_kw(family, cfg))
    plain = m.run(PROMPTS[:1], capture=mv.Capture.nothing(), **kw)
    edit = Edit("scale", [0, 1, 2, 3], value=4.0)
    a = m.run(PROMPTS[:1], edit=edit, **kw)
    b = m.run(PROMPTS[:1], edit=edit, engine="nnsight", **kw)
    assert not same_images(plain.images, a.images)  # the edit does something
    assert_same_run(a, b)


def test_every_probe_runs_on_the_models_engine(tiny_model):
    from massact_viz.probes import transport
    m = tiny_model("flux")
    args = dict(num_steps=2, size=SIZE, k=2, controls=["random-k"], progress=False, previews=True,
                conditioning="source")
    a = transport(m, "a photo of a dog", "a city at night", **args)
    m.engine = "nnsight"
    try:
        b = transport(m, "a photo of a dog", "a city at night", **args)
    finally:
        m.engine = "hooks"
    assert same_images(a.images, b.images) and same_images(a.controls["random-k"], b.controls["random-k"])
    assert set(a.previews) == set(b.previews)
    for name in a.previews:
        assert torch.equal(a.previews[name], b.previews[name]), name


def _generators(n):
    return [torch.Generator("cpu").manual_seed(i) for i in range(n)]


def test_capture_inside_a_users_trace_equals_model_run(tiny_model):
    m = tiny_model("sd3")
    kw = _kw("sd3", 1)
    ref = m.run(PROMPTS, num_steps=2, size=SIZE, progress=False, capture=mv.Capture(raw=[mv.Raw(1, 1)]), **kw)
    with m.nnsight.generate(num_inference_steps=2, height=32, width=32, generator=_generators(2), **kw) as tracer:
        with tracer.invoke(PROMPTS):
            pass
        cap = mv.nnsight_capture(tracer, m, mv.Capture(raw=[mv.Raw(1, 1)]))
    assert cap.run.meta["engine"] == "nnsight" and cap.run.meta["prompts"] == PROMPTS
    assert_same_run(ref, cap.run)
    assert cap.stats is cap.run.stats


def test_a_users_intervention_and_the_toolkits_capture_and_edit_both_take_effect(tiny_model):
    m = tiny_model("flux")
    nn = m.nnsight
    toolkit_edit = Edit("zero", [3], layers=["single.1"])
    with nn.generate(num_inference_steps=2, height=32, width=32, generator=_generators(2)) as tracer:
        with tracer.invoke(PROMPTS):
            for _ in tracer.iter[:2]:
                nn.transformer.transformer_blocks[0].output[1][..., 5] = 50.0  # the user's own intervention
        cap = mv.nnsight_capture(tracer, m, mv.Capture(layers=["double.0", "single.1"]), edit=toolkit_edit)
    st = cap.stats.values["max_abs"]  # (prompts, steps, layers, streams, channels)
    assert torch.equal(st[:, :, 0, 0, 5], torch.full((2, 2), 50.0))  # the toolkit saw the user's write
    assert torch.equal(st[:, :, 1, 0, 3], torch.zeros(2, 2))  # and applied its own edit

    def both(site):  # the same two interventions on the hooks engine
        if site.block.name == "double.0":
            site.image[..., 5] = 50.0
        toolkit_edit(site)
    toolkit_edit.check(m, 2, SIZE)
    ref = m.run(PROMPTS, num_steps=2, size=SIZE, progress=False, edit=both,
                capture=mv.Capture(layers=["double.0", "single.1"]))
    assert_same_run(ref, cap.run)


def test_nnsight_capture_keeps_only_reduced_statistics(tiny_model):
    """What the capture keeps is O(steps x layers x channels): the same bytes at 4x the tokens, equal to
    the estimate the memory guard uses."""
    m = tiny_model("flux")
    kept = {}
    for side in (32, 64):
        with m.nnsight.generate(num_inference_steps=2, height=side, width=side, generator=_generators(2)) as tracer:
            with tracer.invoke(PROMPTS):
                pass
            cap = mv.nnsight_capture(tracer, m)
        run = cap.run
        assert run.meta["token_grid"] == [side // 2, side // 2]
        rec = cap._held["rec"]
        held = [t for t in vars(rec.collector).values() if torch.is_tensor(t)] + list(rec.raws.parts.values())
        kept[side] = sum(t.numel() * t.element_size() for t in held)  # everything the recording holds
        plan = plan_capture(m, PROMPTS, num_steps=2, seed=0, size=(side, side), guidance=None,
                            capture=mv.Capture(sun=False), batch_size=2, pipe_kwargs={})
        assert kept[side] <= 2 * capture_bytes(plan, mv.Capture(), m.width)
    assert kept[32] == kept[64]


def test_clear_errors_before_any_work(tiny_model):
    m = tiny_model("flux")
    with pytest.raises(MassActError, match="engine must be one of"):
        m.run("a cat", num_steps=1, size=SIZE, progress=False, engine="jax")
    with pytest.raises(MassActError, match="engine must be one of"):
        mv.load("tiny:flux", engine="remote")
    with pytest.raises(MassActError, match="give the trace no prompt"):
        with m.nnsight.generate("a cat", num_inference_steps=1, height=32, width=32) as tracer:
            mv.nnsight_capture(tracer, m)
    with pytest.raises(MassActError, match="previews are not available"):
        with m.nnsight.generate(num_inference_steps=1, height=32, width=32) as tracer:
            with tracer.invoke(["a cat"]):
                pass
            mv.nnsight_capture(tracer, m, mv.Capture(previews=True))
    with pytest.raises(MassActError, match="unknown layer"):
        with m.nnsight.generate(num_inference_steps=1, height=32, width=32) as tracer:
            with tracer.invoke(["a cat"]):
                pass
            mv.nnsight_capture(tracer, m, mv.Capture(layers=["double.9"]))
    handle = mv.TracedCapture(m, mv.Capture(), None)
    with pytest.raises(MassActError, match="after the nnsight trace"):
        handle.run


@pytest.mark.parametrize("family", ["flux2", "qwenimage"])
def test_one_step_with_the_pipelines_own_cfg_default_matches(family, tiny_model):
    """One step: nothing observed yet, and these pipelines default to CFG (scale 4) when not told."""
    m = tiny_model(family)
    kw = {k: v for k, v in default_call_kwargs(family).items() if k not in ("height", "width", "guidance_scale",
                                                                          "true_cfg_scale")}
    if family == "qwenimage":
        kw["negative_prompt"] = " "
    assert m.calls_per_step(**kw) == 2
    args = dict(num_steps=1, size=SIZE, progress=False, edit=Edit("scale", [0, 1], value=3.0),
                capture=mv.Capture(raw=[mv.Raw(0, 0, branch="uncond")]), **kw)
    a, b = m.run(PROMPTS[:1], **args), m.run(PROMPTS[:1], engine="nnsight", **args)
    assert list(a.raw) == ["double.0/step0/image/uncond"]
    assert_same_run(a, b)


def test_fewer_steps_than_asked_match_and_warn_alike(tiny_model):
    m = tiny_model("flux")
    kw = dict(num_steps=4, size=SIZE, progress=False, sigmas=[1.0, 0.75, 0.5])   # the scheduler runs 3 steps
    with pytest.warns(mv.MassActWarning, match="ran 3 denoising steps"):
        a = m.run("a red cat", **kw)
    with pytest.warns(mv.MassActWarning, match="ran 3 denoising steps"):
        b = m.run("a red cat", engine="nnsight", **kw)
    assert_same_run(a, b)


def test_a_run_from_a_users_trace_saves_reloads_and_knows_its_seeds(tiny_model, tmp_path):
    m = tiny_model("flux")
    with m.nnsight.generate(num_inference_steps=2, height=32, width=32, generator=_generators(2)) as tracer:
        with tracer.invoke(PROMPTS):
            pass
        cap = mv.nnsight_capture(tracer, m)
    cap.run.save(tmp_path / "r")
    back = mv.Run.load(tmp_path / "r")
    assert back.meta["seeds"] == [0, 1] and back.meta["engine"] == "nnsight"
    assert torch.equal(back.stats.values["abs_mean"], cap.stats.values["abs_mean"])


def test_misuse_of_nnsight_capture_gets_one_clear_line(tiny_model):
    m = tiny_model("flux")
    nn = m.nnsight
    with pytest.raises(MassActError, match="inside an invoke"):
        with nn.generate(num_inference_steps=1, height=32, width=32) as tracer:
            with tracer.invoke(["a cat"]):
                mv.nnsight_capture(tracer, m)
    with pytest.raises(MassActError, match="gives no images"):
        with nn.generate(num_inference_steps=1, height=32, width=32, output_type="latent") as tracer:
            with tracer.invoke(["a cat"]):
                pass
            mv.nnsight_capture(tracer, m)
    with nn.generate(num_inference_steps=1, height=32, width=32) as tracer:
        with tracer.invoke(["a cat"]):
            pass
    with pytest.raises(MassActError, match="inside the nnsight trace"):
        mv.nnsight_capture(tracer, m)


def test_transport_edit_inside_a_users_trace_gives_transports_image(tiny_model):
    """The transport replacement as an edit of one's own: Model.run on either engine and a user's nnsight trace
    of the target give transport()'s transported image (cached mode, same seed and settings)."""
    from massact_viz.probes import transport, transport_edit
    m = tiny_model("flux")
    src, tgt = "a photo of a dog on grass", "an oil painting of a city at night"
    args = dict(k=2, num_steps=2, size=SIZE, seed=3)
    ref = transport(m, src, tgt, previews=False, progress=False, **args)
    edit = transport_edit(m, src, tgt, **args)
    for engine in ("hooks", "nnsight"):
        run = m.run(tgt, seed=3, num_steps=2, size=SIZE, progress=False, edit=edit, engine=engine)
        assert same_images(run.images, ref.images), engine
    with m.nnsight.generate(num_inference_steps=2, height=32, width=32,
                            generator=torch.Generator("cpu").manual_seed(3)) as tracer:
        with tracer.invoke([tgt]):
            pass
        cap = mv.nnsight_capture(tracer, m, edit=edit)
    assert same_images(cap.run.images, ref.images)
    assert not same_images(ref.images, ref.target_images)   # the transport changed the target
    with pytest.raises(MassActError, match="row must be one of"):
        transport_edit(m, src, tgt, row="pixel-blend", **args)


@pytest.mark.parametrize("family", ["flux", "sd3", "pixart"])
def test_model_envoy_is_the_block_s_place_in_nnsight_s_tree(tiny_model, family):
    m = tiny_model(family)
    for block in (m.blocks[0], m.blocks[-1]):
        want = m.nnsight.transformer
        for part in block.path.split("."):
            want = want[int(part)] if part.isdigit() else getattr(want, part)
        assert m.envoy(block.name) is want and m.envoy(block.index) is want
    with pytest.raises(MassActError, match="unknown layer"):
        m.envoy("double.99")
