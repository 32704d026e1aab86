"""Edits inside the trace, image metrics, and the disruption probe (resumable, saved as JSON + PNG)."""
import math

import numpy as np
import pytest
import torch

import massact_viz as mv
from massact_viz.edits import Edit, compose
from massact_viz.metrics import METRICS, register_metric
from massact_viz.probes import DisruptionResult, disrupt
from massact_viz.testing import tiny_pipeline

from test_capture import SIZE, plant

STEPS = 3


def raw_run(m, edit=None, layers=("double.0", "double.1"), stream="image"):
    raws = [mv.Raw(layer, s, stream=stream) for layer in layers for s in range(STEPS)]
    return m.run("a red cat", num_steps=STEPS, size=SIZE, progress=False, edit=edit,
                 capture=mv.Capture(stats=False, raw=raws)).raw


@pytest.fixture(scope="module")
def flux(tiny_model):
    return tiny_model("flux")


@pytest.fixture(scope="module")
def base_raw(flux):
    return raw_run(flux)


def test_zero_hits_exactly_the_chosen_channels_layers_and_steps(flux, base_raw):
    chans = [1, 5]
    raw = raw_run(flux, Edit("zero", chans, layers="double.1", steps=(1, 3)))
    for layer in ("double.0", "double.1"):
        for s in range(STEPS):
            x = raw[f"{layer}/step{s}/image"]
            zeroed = float(x[..., chans].abs().max()) == 0.0
            assert zeroed == (layer == "double.1" and s >= 1), (layer, s)
    # at the first edited site every other channel is untouched (its inputs were not edited yet)
    x, b = raw["double.1/step1/image"], base_raw["double.1/step1/image"]
    others = [c for c in range(flux.width) if c not in chans]
    assert torch.equal(x[..., others], b[..., others])
    assert torch.equal(raw["double.1/step0/image"], base_raw["double.1/step0/image"])


def test_zero_on_a_token_mask_only(flux, base_raw):
    n = flux.token_grid(SIZE)[0] * flux.token_grid(SIZE)[1]
    mask = np.zeros(n, dtype=bool)
    mask[:10] = True
    raw = raw_run(flux, Edit("zero", [3], layers=0, steps=0, tokens=mask), layers=("double.0",))
    x, b = raw["double.0/step0/image"], base_raw["double.0/step0/image"]
    assert float(x[:, :10, 3].abs().max()) == 0.0
    assert torch.equal(x[:, 10:, 3], b[:, 10:, 3]) and torch.equal(x[..., :3], b[..., :3])


def test_mean_keeps_the_mean_and_removes_the_content(flux, base_raw):
    raw = raw_run(flux, Edit("mean", [2, 3], layers="double.0", steps=[0]), layers=("double.0",))
    x, b = raw["double.0/step0/image"], base_raw["double.0/step0/image"]
    assert float(x[..., [2, 3]].var(dim=1).max()) < 1e-10
    assert torch.allclose(x[..., [2, 3]].mean(dim=1), b[..., [2, 3]].mean(dim=1), atol=1e-5)
    assert float(b[..., [2, 3]].var(dim=1).min()) > 1e-4  # there was content to remove
    assert torch.equal(x[..., 4:], b[..., 4:])


def test_scale_and_text_stream_and_compose(flux):
    base = raw_run(flux, layers=("double.0",), stream="text")
    e = compose(Edit("scale", [4], layers="double.0", steps=0, stream="text", value=2.0),
                Edit("zero", [6], layers="double.0", steps=0, stream="text"))
    raw = raw_run(flux, e, layers=("double.0",), stream="text")
    x, b = raw["double.0/step0/text"], base["double.0/step0/text"]
    assert torch.allclose(x[..., 4], 2 * b[..., 4]) and float(x[..., 6].abs().max()) == 0.0
    assert torch.equal(x[..., :4], b[..., :4])


def test_per_layer_channels(flux, base_raw):
    raw = raw_run(flux, Edit("zero", {"double.1": [0]}, steps=0))
    assert float(raw["double.1/step0/image"][..., 0].abs().max()) == 0.0
    assert torch.equal(raw["double.0/step0/image"], base_raw["double.0/step0/image"])


@pytest.mark.parametrize("make, match", [
    (lambda: Edit("erase", [1]), "op"),
    (lambda: Edit("zero", [1], stream="pixels"), "stream"),
    (lambda: Edit("scale", [1]), "value"),
    (lambda: Edit("zero", [1], value=2.0), "value"),
    (lambda: Edit("zero", []), "empty"),
    (lambda: Edit("zero", ["a"]), "integer"),
    (lambda: Edit("zero", [1], branch="uncond"), "branch"),
])
def test_bad_edit_fields(make, match):
    with pytest.raises(mv.MassActError, match=match):
        make()


@pytest.mark.parametrize("edit, match", [
    (Edit("zero", [99]), "channel"),
    (Edit("zero", [1], layers="double.9"), "unknown layer"),
    (Edit("zero", [1], layers=17), "layer"),
    (Edit("zero", [1], steps=[5]), "step"),
    (Edit("zero", [1], steps=(2, 1)), "window"),
    (Edit("zero", [1], tokens=np.ones(7, dtype=bool)), "token mask"),
    (Edit("zero", [1], tokens=[100000]), "token"),
    (Edit("zero", {"double.0": [1]}, layers=["double.0", "single.0"]), "no channels"),
    (Edit("zero", [1], steps=(0,)), "window"),
])
def test_bad_edit_specs_against_the_model(flux, edit, match):
    with pytest.raises(mv.MassActError, match=match):
        edit.check(flux, STEPS, SIZE)
    with pytest.raises(mv.MassActError, match=match):  # Model.run validates before running
        flux.run("a cat", num_steps=STEPS, size=SIZE, progress=False, edit=edit)


def test_metrics_sanity_and_registry():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert METRICS["mse"](a, a) == 0.0 and METRICS["psnr"](a, a) == math.inf
    assert METRICS["ssim"](a, a) == pytest.approx(1.0)
    assert METRICS["mse"](a, b) > 0 and METRICS["ssim"](a, b) < 0.99
    assert METRICS["ssim"](a, b) > METRICS["ssim"](a, 255 - a)
    assert not METRICS["mse"].higher_is_better and METRICS["psnr"].higher_is_better
    assert METRICS["ssim"].higher_is_better
    from PIL import Image
    assert METRICS["mse"](Image.fromarray(a), a.astype(float) / 255) == pytest.approx(0.0)
    register_metric("l1_test", lambda x, y: float(np.abs(np.asarray(x, float) - np.asarray(y, float)).mean()), False)
    try:
        with pytest.raises(mv.MassActError, match="already"):
            register_metric("l1_test", lambda x, y: 0.0, False)
    finally:
        METRICS.pop("l1_test")
    with pytest.raises(mv.MassActError, match="shape"):
        METRICS["mse"](a, a[:16])


def test_zeroing_a_planted_top_channel_hurts_far_more_than_bottom():
    m = mv.load(plant(tiny_pipeline("flux", seed=3), "transformer_blocks.0", channel=7))
    res = disrupt(m, ["a red cat"], ks=(1,), sets=("top", "bottom"), num_steps=2, size=SIZE, progress=False)
    rows = {r["set"]: r for r in res.table}
    assert set(rows) == {"top", "bottom"}
    assert rows["top"]["mse"] > 5 * rows["bottom"]["mse"], res.to_markdown()
    assert rows["top"]["ssim"] < rows["bottom"]["ssim"]


SWEEP = dict(ks=(1, 2), sets=("top", {"mine": [5]}, "random"), random_draws=2, layers="double",
             steps=(0, 1), num_steps=2, size=SIZE, progress=False)


def test_resume_after_interrupt_gives_the_same_table(flux, tmp_path, monkeypatch):
    prompts = ["a red cat", "a blue car"]
    full = disrupt(flux, prompts, **SWEEP)
    assert len(full.table) == 2 + 1 + 4  # top x 2 ks, mine, random x 2 ks x 2 draws
    orig, calls = mv.Model.run, []

    def flaky(self, *a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return orig(self, *a, **kw)

    monkeypatch.setattr(mv.Model, "run", flaky)
    with pytest.raises(KeyboardInterrupt):
        disrupt(flux, prompts, out=tmp_path / "d", **SWEEP)
    monkeypatch.setattr(mv.Model, "run", orig)
    counted = []
    monkeypatch.setattr(mv.Model, "run", lambda self, *a, **kw: counted.append(1) or orig(self, *a, **kw))
    resumed = disrupt(flux, prompts, out=tmp_path / "d", **SWEEP)
    assert len(counted) == len(full.table) - 2  # the baseline and two configurations were kept
    assert resumed.table == full.table
    with pytest.raises(mv.MassActError, match="other settings"):
        disrupt(flux, prompts, out=tmp_path / "d", **dict(SWEEP, op="mean"))


def test_save_load_round_trip_and_views(flux, tmp_path):
    res = disrupt(flux, ["a cat"], ks=(1, 3), sets=("top", "bottom"), op="scale", value=0.0, num_steps=2,
                  size=SIZE, progress=False, metrics=("mse", "psnr"))
    res.save(tmp_path / "r")
    back = DisruptionResult.load(tmp_path / "r")
    assert back.table == res.table and back.settings["metrics"] == ["mse", "psnr"]
    for key, ims in res.images.items():
        assert np.array_equal(np.asarray(ims[0]), np.asarray(back.images[key][0]))
    assert np.array_equal(np.asarray(back.baseline.images[0]), np.asarray(res.baseline.images[0]))
    md = res.to_markdown()
    assert "mse ↓" in md and "psnr ↑" in md and md.count("\n") == 1 + len(res.table)
    g = res.grid()
    assert g.size[0] > 3 * 32 and g.size[1] > 2 * 32
    assert not list(tmp_path.glob("r/**/*.pkl"))
    with pytest.raises(mv.MassActError):
        disrupt(flux, ["a cat"], ks=(1,), metrics=("fid",), num_steps=2, size=SIZE, progress=False)


def test_mean_ablating_a_constant_offset_channel_hurts_far_less_than_zeroing_it():
    # a bias on the first block's image feed-forward output: the block adds gate * bias to every image
    # token of channel C, so at the block output C is a constant offset (plus a little content)
    C, prompts = 7, ["a red cat", "a blue car"]
    pipe = tiny_pipeline("flux", seed=3)
    with torch.no_grad():
        pipe.transformer.get_submodule("transformer_blocks.0").ff.net[2].bias[C] += 50.0
    m = mv.load(pipe)
    base = m.run(prompts, num_steps=2, size=SIZE, progress=False,
                 capture=mv.Capture(stats=False, raw=[mv.Raw("double.0", 0)]))
    x = base.raw["double.0/step0/image"]
    assert float(x[..., C].mean(1).abs().min()) > 4 * float(x[..., C].std(1).max())  # offset-dominated
    mse = {}
    for op in ("mean", "zero"):
        ims = m.run(prompts, num_steps=2, size=SIZE, progress=False, capture=mv.Capture.nothing(),
                    edit=Edit(op, [C], layers="double.0")).images
        mse[op] = float(np.mean([METRICS["mse"](a, b) for a, b in zip(ims, base.images)]))
    assert mse["mean"] * 10 < mse["zero"], mse  # measured: ~80x apart


def test_an_edit_at_one_layer_and_step_leaves_every_earlier_capture_bit_identical(flux):
    names = [b.name for b in flux.blocks]
    L, S = names[len(names) // 2], 1  # a single block, mid-run
    li = names.index(L)
    raws = [mv.Raw(n, s) for n in names for s in range(STEPS)]

    def capture(edit=None):
        return flux.run("a red cat", num_steps=STEPS, size=SIZE, progress=False, edit=edit,
                        capture=mv.Capture(stats=False, raw=raws)).raw
    base, edited = capture(), capture(Edit("zero", [1, 5], layers=[L], steps=[S]))
    for s in range(STEPS):
        for i, n in enumerate(names):
            key = f"{n}/step{s}/image"
            if (s, i) < (S, li):
                assert torch.equal(edited[key], base[key]), key
    assert not torch.equal(edited[f"{L}/step{S}/image"], base[f"{L}/step{S}/image"])
    assert not torch.equal(edited[f"{names[-1]}/step{STEPS - 1}/image"], base[f"{names[-1]}/step{STEPS - 1}/image"])


def test_a_sweep_generates_the_unedited_baseline_once(flux, monkeypatch):
    orig, calls = mv.Model.run, []

    def counting(self, *a, **kw):
        calls.append(kw.get("edit"))
        return orig(self, *a, **kw)
    monkeypatch.setattr(mv.Model, "run", counting)
    res = disrupt(flux, ["a red cat", "a blue car"], ks=(1, 2), sets=("top", "bottom", "random"), random_draws=2,
                  num_steps=1, size=SIZE, progress=False)
    assert len(res.table) == 2 + 2 + 4
    assert len(calls) == len(res.table) + 1  # one edited run per configuration + one baseline
    assert sum(e is None for e in calls) == 1  # the baseline is the only unedited run


@pytest.mark.parametrize("kwargs, match", [
    (dict(ks=(33,)), "between 1 and 32"),
    (dict(ks=(0,)), "between 1 and 32"),
    (dict(sets={"mine": []}), "empty"),
    (dict(sets={"mine": [32]}), "channel"),
    (dict(steps=[5]), "step"),
    (dict(steps=(1, 9)), "window"),
    (dict(ks=()), "ks is empty"),
])
def test_bad_sweep_specs_fail_before_anything_runs(flux, monkeypatch, kwargs, match):
    assert flux.width == 32
    monkeypatch.setattr(mv.Model, "run", lambda *a, **kw: pytest.fail("ran before validating"))
    with pytest.raises(mv.MassActError, match=match):
        disrupt(flux, ["a cat"], **dict(dict(num_steps=2, size=SIZE, progress=False), **kwargs))


# the edits touch only the last denoising step, so layers before the edited one match at every step
LAYER_SWEEP = dict(ks=(1, 2), sets=("top", "random"), random_draws=2, steps=(1, 2), num_steps=2, size=SIZE,
                   progress=False)


def test_layer_sets_share_one_baseline_and_edit_only_their_layers(flux, monkeypatch):
    orig, calls = mv.Model.run, []

    def counting(self, *a, **kw):
        calls.append(kw.get("edit"))
        return orig(self, *a, **kw)
    monkeypatch.setattr(mv.Model, "run", counting)
    lsets = {"first": ["double.0"], "last": ["single.3"]}
    res = disrupt(flux, ["a red cat"], layer_sets=lsets, **LAYER_SWEEP)
    monkeypatch.setattr(mv.Model, "run", orig)
    per_set = 2 + 2 * 2  # top x 2 ks, random x 2 ks x 2 draws
    assert len(res.table) == 2 * per_set
    assert len(calls) == len(res.table) + 1 and sum(e is None for e in calls) == 1  # one baseline
    assert [r["layer_set"] for r in res.table] == ["first"] * per_set + ["last"] * per_set
    assert {r["layers"] for r in res.table if r["layer_set"] == "first"} == {"double.0"}
    assert all(len(key) == 4 for key in res.images) and res.layer_sets == ["first", "last"]
    assert {(r["layer_set"], r["set"], r["k"]) for r in res.summary()} == \
        {(ls, s, k) for ls in lsets for s in ("top", "random") for k in (1, 2)}
    assert res.to_markdown().splitlines()[0].startswith("| layer_set | set | k | draw |")
    assert res.settings["layer_sets"]["last"]["edit_layers"] == ["single.3"]
    assert res.grid(layer_set="last").size == res.grid().size
    with pytest.raises(mv.MassActError, match="not in this result"):
        res.grid(layer_set="middle")
    from massact_viz import plots
    fig = plots.disruption_curves(res, metric="mse", layer_set="last")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["top-k", "random-k"] and list(lines[0].x) == [1, 2]
    assert fig.data[0].y[0] == next(r["mse"] for r in res.table if r["layer_set"] == "last" and r["set"] == "top")

    # the edits the sweep made: "first" changes double.0, "last" leaves double.0..single.2 bit-identical
    names = [b.name for b in flux.blocks]
    upto = names[:names.index("single.3")]
    raws = [mv.Raw(n, s) for n in names for s in range(2)]

    def capture(edit=None):
        return flux.run("a red cat", num_steps=2, size=SIZE, progress=False, edit=edit,
                        capture=mv.Capture(stats=False, raw=raws)).raw
    base = capture()
    edits = [e for e in calls if e is not None]
    first, last = capture(edits[0]), capture(edits[per_set])
    assert torch.equal(first["double.0/step0/image"], base["double.0/step0/image"])
    assert not torch.equal(first["double.0/step1/image"], base["double.0/step1/image"])
    for s in range(2):
        for n in upto:
            assert torch.equal(last[f"{n}/step{s}/image"], base[f"{n}/step{s}/image"]), (n, s)
    assert not torch.equal(last["single.3/step1/image"], base["single.3/step1/image"])


def test_layer_sets_resume_with_an_added_set_runs_only_the_new_configurations(flux, tmp_path, monkeypatch):
    d = tmp_path / "d"
    two = disrupt(flux, ["a red cat"], layer_sets={"first": ["double.0"], "last": ["single.3"]}, out=d,
                  **LAYER_SWEEP)
    orig, calls = mv.Model.run, []
    monkeypatch.setattr(mv.Model, "run", lambda self, *a, **kw: calls.append(kw.get("edit")) or orig(self, *a, **kw))
    lsets3 = {"first": ["double.0"], "last": ["single.3"], "both": ["double.0", "single.3"]}
    three = disrupt(flux, ["a red cat"], layer_sets=lsets3, out=d, **LAYER_SWEEP)
    assert len(calls) == 6 and None not in calls  # only "both"'s configurations; the baseline is reused
    assert three.table[:len(two.table)] == two.table
    assert {r["layer_set"] for r in three.table[len(two.table):]} == {"both"}
    back = DisruptionResult.load(d)
    assert back.table == three.table and set(back.images) == set(three.images)
    assert (d / "configs" / "both@top-k1-d0" / "row.json").exists()
    calls.clear()
    assert disrupt(flux, ["a red cat"], layer_sets=lsets3, out=d, **LAYER_SWEEP).table == three.table
    assert calls == []
    with pytest.raises(mv.MassActError, match="other settings"):
        disrupt(flux, ["a red cat"], layer_sets=lsets3, out=d, **dict(LAYER_SWEEP, op="mean"))
    with pytest.raises(mv.MassActError, match="layer set 'first'"):
        disrupt(flux, ["a red cat"], layer_sets={"first": ["double.1"]}, out=d, **LAYER_SWEEP)


def test_layers_and_layer_sets_together_are_refused(flux, monkeypatch):
    monkeypatch.setattr(mv.Model, "run", lambda *a, **kw: pytest.fail("ran before validating"))
    with pytest.raises(mv.MassActError, match="not both"):
        disrupt(flux, ["a cat"], layers="double", layer_sets={"a": "single"}, **LAYER_SWEEP)
    with pytest.raises(mv.MassActError, match="unknown layer"):
        disrupt(flux, ["a cat"], layer_sets={"a": "double.9"}, **LAYER_SWEEP)
    with pytest.raises(mv.MassActError, match="layer set names"):
        disrupt(flux, ["a cat"], layer_sets={"a@b": "single"}, **LAYER_SWEEP)


def test_a_disruption_plan_is_checked_immutable_and_runs_to_disrupt_s_result(flux, monkeypatch):
    import dataclasses

    from massact_viz.probes import plan_disruption
    from massact_viz.probes.disruption import execute
    kw = dict(ks=(1, 2), sets={"top": "top", "random": "random", "mine": [3, 7]}, random_draws=2, num_steps=1,
              size=SIZE)
    orig = mv.Model.run
    monkeypatch.setattr(mv.Model, "run", lambda *a, **k: pytest.fail("planning ran the model"))
    plan = plan_disruption(flux, ["a red cat", "a blue car"], **kw)
    assert [c.key for c in plan.configs] == ["top-k1-d0", "top-k2-d0", "random-k1-d0", "random-k1-d1",
                                             "random-k2-d0", "random-k2-d1", "mine-k2-d0"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.ks = (4,)
    with pytest.raises(TypeError):
        plan.layer_sets[None] = ("double.0",)   # read-only view
    again = plan_disruption(flux, ["a red cat", "a blue car"], **kw)
    assert plan == plan and plan != again and len({plan: 1, again: 2}) == 2   # identity, not field by field
    monkeypatch.setattr(mv.Model, "run", orig)
    got = execute(flux, plan, progress=False)
    want = disrupt(flux, ["a red cat", "a blue car"], progress=False, **kw)
    assert got.table == want.table and got.settings == want.settings
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for k in want.images
               for a, b in zip(got.images[k], want.images[k]))


def test_a_disruption_plan_keeps_its_own_copies_and_refuses_execute_s_keywords(flux):
    from massact_viz.probes import plan_disruption
    steps, mine = [0], [3, 7]
    plan = plan_disruption(flux, ["a red cat"], ks=(1,), sets={"top": "top", "mine": mine}, steps=steps,
                           num_steps=2, size=SIZE)
    steps.append(1)
    mine.append(5)
    assert plan.edit_kw()["steps"] == [0] and plan.manifest()["user_sets"] == {"mine": "[3, 7]"}
    for k in ("out", "distributed"):
        with pytest.raises(mv.MassActError, match=f"{k}= is how a plan is run"):
            plan_disruption(flux, ["a red cat"], num_steps=2, size=SIZE, **{k: "x"})
