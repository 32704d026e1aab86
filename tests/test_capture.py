"""Capture, statistics, runs on disk, and clear errors for bad input."""
import json
import math
import os

import numpy as np

import pytest
import torch

import massact_viz as mv
from massact_viz.stats import reduce_channels
from massact_viz.testing import tiny_pipeline

SIZE = (32, 32)
#: Documented ceiling of top-1/median `abs_mean` on the tiny random-weight models (measured
#: 1.6-6 across families and layers); a planted channel reads far above it.
UNPLANTED_MAX_RATIO = 10.0


def plant(pipe, block_path, channel, scale=1000.0):
    """Scale one output channel of a FLUX block's image-stream feed-forward (weights and bias)."""
    blk = pipe.transformer.get_submodule(block_path)
    lin = blk.ff.net[2] if hasattr(blk, "ff") else blk.proj_out
    with torch.no_grad():
        lin.weight[channel] *= scale
        if lin.bias is not None:
            lin.bias[channel] *= scale
    return pipe


def test_planted_channel_on_top_at_and_after_its_block():
    pipe = plant(tiny_pipeline("flux", seed=3), "single_transformer_blocks.1", channel=7)
    m = mv.load(pipe)
    run = m.run(["a red cat", "a blue car"], num_steps=3, size=SIZE, progress=False)
    ratio = run.stats.ratio()
    planted_at = m.layer("single.1").index
    for b in m.blocks:
        top, _ = run.stats.top_k(1, layer=b.name)
        if b.index >= planted_at:
            assert top == [7], b.name
            assert ratio[b.index] > 20, (b.name, float(ratio[b.index]))
        else:
            assert ratio[b.index] < UNPLANTED_MAX_RATIO
    # the single projection of a single block mixes attention and MLP: the plant is in proj_out


@pytest.mark.parametrize("family", ["flux", "sd3", "pixart", "sana", "qwenimage", "flux2"])
def test_unplanted_models_stay_below_documented_ratio(family, tiny_model):
    from massact_viz.testing import default_call_kwargs
    kw = {k: v for k, v in default_call_kwargs(family).items() if k not in ("height", "width")}
    run = tiny_model(family).run(["a cat", "a house"], num_steps=2, size=SIZE, progress=False, **kw)
    r = run.stats.ratio()
    assert torch.isfinite(r).all() and float(r.max()) < UNPLANTED_MAX_RATIO


def test_same_seed_same_stats_and_other_seed_differs(tiny_model):
    m = tiny_model("flux")
    a = m.run("a cat", num_steps=2, seed=5, size=SIZE, progress=False)
    b = m.run("a cat", num_steps=2, seed=5, size=SIZE, progress=False)
    c = m.run("a cat", num_steps=2, seed=6, size=SIZE, progress=False)
    for k in a.stats.values:
        assert torch.equal(a.stats.values[k], b.stats.values[k])
    assert not torch.equal(a.stats.values["abs_mean"], c.stats.values["abs_mean"])
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))


def test_batching_does_not_change_results(tiny_model):
    m = tiny_model("sd3")
    prompts = ["a cat", "a dog", "a red house"]
    one = m.run(prompts, num_steps=2, size=SIZE, progress=False, batch_size=3)
    many = m.run(prompts, num_steps=2, size=SIZE, progress=False, batch_size=1)
    assert one.meta["seeds"] == many.meta["seeds"] == [0, 1, 2]
    assert torch.allclose(one.stats.values["abs_mean"], many.stats.values["abs_mean"], atol=1e-5, rtol=1e-4,
                          equal_nan=True)


def test_reduce_channels_sun_criterion():
    x = torch.ones(1, 10, 4) * 0.01
    x[0, 3, 2] = 500.0  # > 100 and > 1000 x median (0.01)
    x[0, 4, 1] = 50.0  # large but under 100
    out = reduce_channels(x)
    assert out["sun_count"].tolist() == [[0, 0, 1, 0]]
    assert math.isclose(float(out["median_abs"][0]), 0.01, rel_tol=1e-5)
    assert torch.allclose(out["abs_mean"][0], x[0].mean(0).abs())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sun_counts_of_half_precision_states_equal_their_float32_counts(dtype):
    # the Sun comparison runs on the half-precision block output itself (no float32 copy): the counts must be
    # those of the same values in float32, including values next to the threshold
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 64, 8, generator=g) * 0.02).to(dtype)
    x[0, :5, 1] = torch.tensor([99.5, 100.0, 100.5, 101.0, 250.0])
    x[1, :3, 6] = torch.tensor([-100.0, 100.5, -300.0])
    half, full = reduce_channels(x), reduce_channels(x.float())
    assert torch.equal(half["sun_count"], full["sun_count"])
    assert half["sun_count"][0, 1] == 3 and half["sun_count"][1, 6] == 2


def test_stats_selection_steps_and_statistics(tiny_model):
    m = tiny_model("flux")
    cap = mv.Capture(layers=["double.1", "single.2"], steps=[1, 2], streams=["image"])
    run = m.run("a cat", num_steps=3, size=SIZE, progress=False, capture=cap)
    s = run.stats
    assert s.layers == ["double.1", "single.2"] and s.steps == [1, 2] and s.streams == ["image"]
    assert s.values["abs_mean"].shape == (1, 2, 2, 1, m.width)
    assert torch.equal(s.get(step=2, layer="single.2"), s.values["abs_mean"][0, 1, 1, 0])
    assert torch.allclose(s.get(layer=0), s.values["abs_mean"][0, :, 0, 0].mean(0))
    assert (s.values["max_abs"] >= s.values["mean_abs"] - 1e-6).all()
    assert (s.values["mean_abs"] >= s.values["abs_mean"] - 1e-6).all()
    with pytest.raises(mv.MassActError, match="not captured"):
        s.get(step=0)


def test_run_save_load_roundtrip(tmp_path, tiny_model):
    m = tiny_model("flux")
    run = m.run(["a cat", "a <b>bold</b> dog"], num_steps=2, size=SIZE, progress=False,
                capture=mv.Capture(raw=[mv.Raw("double.0", 1, channels=[1, 2], tokens=[0, 5])], previews=True))
    assert run.raw["double.0/step1/image"].shape == (2, 2, 2)
    assert run.previews.shape[:2] == (2, 2) and run.previews.dtype == torch.uint8
    path = run.save(tmp_path / "r")
    back = mv.Run.load(path)
    for k in run.stats.values:
        assert torch.equal(run.stats.values[k], back.stats.values[k])
    assert torch.equal(run.stats.median_abs, back.stats.median_abs)
    assert back.stats.layers == run.stats.layers and back.stats.prompts == run.stats.prompts
    assert torch.equal(back.raw["double.0/step1/image"], run.raw["double.0/step1/image"])
    assert torch.equal(back.previews, run.previews)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(back.images, run.images))
    meta = back.meta
    for key in ("model", "family", "dtype", "size", "num_steps", "seeds", "prompts", "scheduler", "versions"):
        assert key in meta
    assert meta["versions"]["torch"] == torch.__version__
    # saving again over the same directory replaces it atomically
    run.save(path)
    assert mv.Run.load(path).meta["prompts"] == run.meta["prompts"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_final_preview_matches_the_image(family, tiny_model):
    m = tiny_model(family)
    run = m.run("a cat", num_steps=3, size=SIZE, progress=False, capture=mv.Capture(previews=True))
    assert run.previews.shape == (3, 1, 32, 32, 3)
    last = run.previews[-1, 0].numpy().astype(int)
    img = np.asarray(run.images[0]).astype(int)
    assert np.abs(last - img).max() <= 1  # the last prediction is the output (up to rounding)


def test_truncated_or_foreign_run_files_give_clear_errors(tmp_path, tiny_model):
    run = tiny_model("flux").run("a cat", num_steps=1, size=SIZE, progress=False)
    path = run.save(tmp_path / "r")
    t = path / "tensors.safetensors"
    data = t.read_bytes()
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(mv.RunFileError, match="truncated or corrupt"):
        mv.Run.load(path)
    run.save(path)
    (path / "run.json").write_text('{"format": "massact_viz.run", "schema')
    with pytest.raises(mv.RunFileError, match="corrupt or truncated"):
        mv.Run.load(path)
    (path / "run.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(mv.RunFileError, match="not written by massact_viz"):
        mv.Run.load(path)
    with pytest.raises(mv.RunFileError, match="no run.json"):
        mv.Run.load(tmp_path / "nowhere")


def test_previews_refused_where_no_decoder(tiny_model):
    with pytest.raises(mv.MassActError, match="previews need a flow-matching Euler scheduler"):
        tiny_model("pixart").run("a cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture(previews=True))


def test_bad_input_errors(tiny_model):
    m = tiny_model("flux")
    with pytest.raises(mv.MassActError, match="unknown layer 'double.99'"):
        m.run("a cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture(layers=["double.99"]))
    with pytest.raises(mv.MassActError, match="layer 40 is out of range"):
        m.layer(40)
    with pytest.raises(mv.MassActError, match="step 5 is out of range"):
        m.run("a cat", num_steps=2, size=SIZE, progress=False, capture=mv.Capture(steps=[5]))
    with pytest.raises(mv.MassActError, match="not divisible by 2"):
        m.run("a cat", num_steps=1, size=(33, 32), progress=False)
    with pytest.raises(mv.MassActError, match="empty"):
        m.run(["a cat", "  "], num_steps=1, size=SIZE, progress=False)
    with pytest.raises(mv.MassActError, match="no prompts"):
        m.run([], num_steps=1, size=SIZE, progress=False)
    with pytest.raises(mv.MassActError, match="steps must be a positive"):
        m.run("a cat", num_steps=0, size=SIZE, progress=False)
    with pytest.raises(mv.MassActError, match="raw channel 99 is out of range"):
        m.run("a cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture(raw=[mv.Raw(0, 0, channels=[99])]))
    for raw in ("image", mv.Raw(0, 0)):
        with pytest.raises(mv.MassActError, match=r"takes a list of Raw\(layer, step\) specs"):
            m.run("a cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture(raw=raw))
    run = m.run("a cat", num_steps=1, size=SIZE, progress=False)
    for bad_k in (0, m.width + 1):
        with pytest.raises(mv.MassActError, match="k must be an integer between 1 and 32"):
            run.stats.top_k(bad_k, layer="double.0")
    with pytest.raises(mv.MassActError, match="unknown statistic"):
        run.stats.get("median")
    with pytest.raises(mv.MassActError, match="unknown dtype"):
        mv.load("tiny:flux", dtype="float8")
    with pytest.raises(mv.MassActError, match="neither an existing directory nor a Hub id"):
        mv.load("./no/such/dir")


def test_offline_hub_id_gives_actionable_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(mv.MassActError, match="HF_HUB_OFFLINE is set"):
        mv.load("black-forest-labs/FLUX.1-schnell")


def test_unknown_architecture_names_supported_families():
    class Fake:
        transformer = torch.nn.Linear(2, 2)
        components = {"transformer": transformer}

        def __call__(self, *a, **k):
            pass
    with pytest.raises(mv.UnsupportedArchitectureError, match="supports FLUX.1.*register"):
        mv.load(Fake())


def test_block_cache_is_refused():
    from diffusers import FirstBlockCacheConfig
    pipe = tiny_pipeline("flux")
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(mv.MassActError, match="disable_cache"):
        mv.load(pipe)
    pipe.transformer.disable_cache()
    assert mv.load(pipe).blocks


def test_local_directory_loads_offline(tmp_path, tiny_model):
    pipe = tiny_pipeline("sd3")
    pipe.save_pretrained(tmp_path / "p")
    m = mv.load(str(tmp_path / "p"))
    a = m.run("a cat", num_steps=1, size=SIZE, progress=False)
    b = tiny_model("sd3").run("a cat", num_steps=1, size=SIZE, progress=False)
    torch.testing.assert_close(a.stats.values["abs_mean"], b.stats.values["abs_mean"], rtol=0, atol=0, equal_nan=True)
    assert a.meta["model"] == str(tmp_path / "p")


def test_nnsight_model_reads_the_same_activations(tiny_model):
    m = tiny_model("flux")
    run = m.run("a cat", num_steps=2, size=SIZE, progress=False,
                capture=mv.Capture(raw=[mv.Raw("double.1", 1)]))
    nn_model = m.nnsight
    gens = torch.Generator("cpu").manual_seed(0)
    saved = []  # a list made outside the trace survives it
    with nn_model.generate("a cat", num_inference_steps=2, height=32, width=32, generator=gens) as tracer:
        for step in tracer.iter[:2]:
            saved.append(nn_model.transformer.transformer_blocks[1].output[1].clone())
    assert torch.equal(saved[1], run.raw["double.1/step1/image"])


def test_sun_median_subsample_is_close_for_large_states():
    from massact_viz.stats import SUN_MEDIAN_SAMPLE
    torch.manual_seed(0)
    x = torch.randn(2, 4096, 64)  # 262,144 elements per row: above the exact-median limit
    assert x[0].numel() > SUN_MEDIAN_SAMPLE
    out = reduce_channels(x)
    exact = x.abs().flatten(1).median(dim=1).values
    assert torch.allclose(out["median_abs"], exact, rtol=0.02)
    x[1, 7, 3] = 1e6
    assert reduce_channels(x)["sun_count"][1].sum() == 1


def test_edit_zeroes_channels_in_place_and_changes_the_image(tiny_model):
    m = tiny_model("flux")
    base = m.run("a cat", num_steps=2, size=SIZE, progress=False)
    seen = []

    def zero(site):
        seen.append((site.block.name, site.step))
        site.image[..., [3, 7]] = 0

    run = m.run("a cat", num_steps=2, size=SIZE, progress=False, edit=zero)
    assert len(seen) == 2 * len(m.blocks)
    assert torch.equal(run.stats.values["max_abs"][0, :, :, 0, [3, 7]], torch.zeros(2, len(m.blocks), 2))
    assert not np.array_equal(np.asarray(run.images[0]), np.asarray(base.images[0]))
    assert run.meta["edited"] is True


def test_scan_resumes_after_interruption_with_the_same_result(tmp_path, tiny_model, monkeypatch):
    m = tiny_model("flux")
    prompts = ["a cat", "a dog", "a red house", "a tree", "a blue car"]
    ref = m.scan(prompts, tmp_path / "ref", num_steps=2, size=SIZE, batch_size=2, progress=False)
    calls = {"n": 0}
    import massact_viz.scan as scan_mod
    real_run = scan_mod.run_capture

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the second batch
        return real_run(*a, **k)
    monkeypatch.setattr(scan_mod, "run_capture", flaky)
    with pytest.raises(KeyboardInterrupt):
        m.scan(prompts, tmp_path / "s", num_steps=2, size=SIZE, batch_size=2, progress=False)
    assert (tmp_path / "s.parts" / "000000" / "run.json").exists() and not (tmp_path / "s").exists()
    monkeypatch.setattr(scan_mod, "run_capture", real_run)
    with pytest.raises(mv.MassActError, match="other settings"):
        m.scan(prompts, tmp_path / "s", num_steps=3, size=SIZE, batch_size=2, progress=False)
    done = m.scan(prompts, tmp_path / "s", num_steps=2, size=SIZE, batch_size=2, progress=False)
    assert done.meta["resumed_prompts"] == 2
    back = mv.Run.load(tmp_path / "s")
    assert back.meta["seeds"] == [0, 1, 2, 3, 4] and back.meta["prompts"] == prompts
    for k in ref.stats.values:
        torch.testing.assert_close(back.stats.values[k], ref.stats.values[k], rtol=0, atol=0, equal_nan=True)
    assert not (tmp_path / "s.parts").exists()


def test_save_refuses_to_replace_a_directory_that_is_not_a_run(tmp_path, tiny_model):
    run = tiny_model("flux").run("a cat", num_steps=1, size=SIZE, progress=False)
    (tmp_path / "runs" / "fox").mkdir(parents=True)
    (tmp_path / "runs" / "notes.txt").write_text("keep me")
    with pytest.raises(mv.RunFileError, match="not a massact_viz run directory; refusing"):
        run.save(tmp_path / "runs")
    assert (tmp_path / "runs" / "notes.txt").read_text() == "keep me" and (tmp_path / "runs" / "fox").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(mv.RunFileError):
        run.save(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert mv.Run.load(run.save(tmp_path / "empty")).meta["prompts"] == ["a cat"]


def test_replacing_a_run_keeps_every_file_the_toolkit_did_not_write(tmp_path, tiny_model):
    """The README's own flow: scan into fox, write fox/report.html, add notes, rescan into fox."""
    m = tiny_model("flux")
    fox = tmp_path / "fox"
    m.run(["a cat", "a dog"], num_steps=1, size=SIZE, progress=False).save(fox)
    (fox / "report.html").write_text("<p>my report</p>")
    (fox / "notes.txt").write_text("keep me")
    (fox / "mine" / "deep").mkdir(parents=True)
    (fox / "mine" / "deep" / "a.npy").write_bytes(b"123")
    (fox / "mine" / "empty").mkdir()
    (fox / "images" / "my_crop.png").write_bytes(b"not the toolkit's")
    m.run("a bird", num_steps=1, size=SIZE, progress=False).save(fox)
    back = mv.Run.load(fox)
    assert back.meta["prompts"] == ["a bird"] and len(back.images) == 1
    assert not (fox / "images" / "001.png").exists()          # the old run's second image was the toolkit's
    assert (fox / "report.html").read_text() == "<p>my report</p>" and (fox / "notes.txt").read_text() == "keep me"
    assert (fox / "mine" / "deep" / "a.npy").read_bytes() == b"123" and (fox / "mine" / "empty").is_dir()
    assert (fox / "images" / "my_crop.png").read_bytes() == b"not the toolkit's"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary directories left


def test_a_user_file_in_the_way_is_refused_before_anything_changes(tmp_path, tiny_model):
    m = tiny_model("flux")
    fox = tmp_path / "fox"
    m.run("a cat", num_steps=1, size=SIZE, progress=False).save(fox)
    (fox / "images" / "001.png").write_bytes(b"my own picture")          # not listed by run.json: the user's
    before = {p.relative_to(fox).as_posix(): p.read_bytes() for p in fox.rglob("*") if p.is_file()}
    with pytest.raises(mv.RunFileError, match="in the way of the run being saved"):
        m.run(["a cat", "a dog"], num_steps=1, size=SIZE, progress=False).save(fox)
    assert {p.relative_to(fox).as_posix(): p.read_bytes() for p in fox.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_interrupted_replacement_keeps_user_files_and_the_next_save_finishes_it(tmp_path, tiny_model, monkeypatch):
    import massact_viz.run as run_mod
    m = tiny_model("flux")
    fox = tmp_path / "fox"
    m.run(["a cat", "a dog"], num_steps=1, size=SIZE, progress=False).save(fox)
    (fox / "notes.txt").write_text("keep me")
    calls, real_replace = [], os.replace

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 3:             # the old run moved aside, the new one half moved in: Ctrl-C
            raise KeyboardInterrupt
        return real_replace(src, dst)
    monkeypatch.setattr(run_mod.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        m.run("a bird", num_steps=1, size=SIZE, progress=False).save(fox)
    monkeypatch.setattr(run_mod.os, "replace", real_replace)
    assert (fox / "notes.txt").read_text() == "keep me" and (fox / run_mod.SAVING_MARKER).is_file()
    with pytest.raises(mv.RunFileError):
        mv.Run.load(fox)                     # not a run until a save finishes it: a clear error, not a mix
    m.run("a fish", num_steps=1, size=SIZE, progress=False).save(fox)
    assert mv.Run.load(fox).meta["prompts"] == ["a fish"] and (fox / "notes.txt").read_text() == "keep me"
    assert not (fox / run_mod.SAVING_MARKER).exists()


def test_two_jobs_starting_at_once_in_one_directory_cannot_both_win(tmp_path):
    import threading
    from massact_viz.files import resume_manifest
    for trial in range(10):
        d, barrier, outcome = tmp_path / f"t{trial}", threading.Barrier(2), {}

        def start(name):
            barrier.wait()
            try:
                resume_manifest(d, {"prompts": name}, "partial scan", "Resume it with the same arguments.")
                outcome[name] = "started"
            except mv.MassActError as e:
                outcome[name] = str(e)
        threads = [threading.Thread(target=start, args=(n,)) for n in ("fox", "cat")]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert sorted(v == "started" for v in outcome.values()) == [False, True], outcome
        loser = next(v for v in outcome.values() if v != "started")
        assert "other settings (or another process is writing one there now)" in loser


def test_output_files_are_checked_before_any_work(tmp_path, tiny_model):
    from massact_viz.report import write_report
    from massact_viz.run import check_output_file
    run_dir = tiny_model("flux").run("a cat", num_steps=1, size=SIZE, progress=False).save(tmp_path / "r")
    before = (run_dir / "run.json").read_bytes()
    for bad, match in ((run_dir / "run.json", "must end in .html"), (run_dir / "images" / "000.html", None),
                       (tmp_path, "must end in"), (tmp_path / "d.html", "is a directory")):
        if bad.name == "d.html":
            bad.mkdir()
        if match is None:
            write_report(run_dir, bad)       # a new file of the right kind inside a run directory is fine
            continue
        with pytest.raises(mv.MassActError, match=match):
            write_report(run_dir, bad)
    assert (run_dir / "run.json").read_bytes() == before
    with pytest.raises(mv.MassActError, match="belongs to the run directory"):
        check_output_file(run_dir / "images" / "000.png", (".png",), "image")
    (tmp_path / "old.html").write_text("an earlier report")
    write_report(run_dir, tmp_path / "old.html")             # same kind: replaced
    assert "<html" in (tmp_path / "old.html").read_text().lower()


def test_steps_stay_distinct_when_timesteps_collide(tiny_model):
    """bf16 can round two timesteps to one value; steps follow the scheduler, not the timestep."""
    m = tiny_model("flux")
    run = m.run("a cat", num_steps=4, size=SIZE, progress=False, sigmas=[1.0, 0.5, 0.5, 0.25],
                true_cfg_scale=2.0, negative_prompt="blurry")
    assert run.stats.steps == [0, 1, 2, 3] and not run.meta["warnings"]
    assert torch.isfinite(run.stats.values["abs_mean"][:, :, :, 0]).all()


def test_sun_median_keeps_every_channel_when_subsampling():
    x = torch.ones(1, 4096, 64)
    x[..., ::4] = 0.001  # a quarter of the channels are quiet: the exact median is 1
    out = reduce_channels(x)
    assert float(out["median_abs"][0]) == 1.0


def test_text_stream_stats_and_sun_match_plain_hooks(tiny_model):
    m = tiny_model("sd3")
    name = m.blocks[0].name
    run = m.run("a cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture(raw=[mv.Raw(name, 0, "text")]))
    txt = run.raw[f"{name}/step0/text"][0]
    clip = m.pipe.tokenizer(["a cat"], padding="max_length", max_length=77, truncation=True,
                            return_tensors="pt").attention_mask[0].bool()
    t5 = m.pipe.tokenizer_3(["a cat"], padding="max_length", max_length=txt.shape[0] - 77, truncation=True,
                            return_tensors="pt").attention_mask[0].bool()
    real = txt[torch.cat([clip, t5])]
    got = {k: run.stats.values[k][0, 0, 0, 1] for k in ("abs_mean", "mean_abs", "max_abs", "sun_count")}
    torch.testing.assert_close(got["mean_abs"], real.abs().mean(0))
    torch.testing.assert_close(got["max_abs"], real.abs().amax(0))
    thr = max(100.0, 1000.0 * float(real.abs().flatten().median()))
    assert torch.equal(got["sun_count"], (real.abs() > thr).sum(0).float())


def test_first_block_cache_applied_directly_is_refused():
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
    pipe = tiny_pipeline("flux")
    apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(mv.MassActError, match="fbc_"):
        mv.load(pipe)


def test_float16_overflow_is_flagged_and_the_run_kept():
    pipe = plant(tiny_pipeline("flux", seed=3), "transformer_blocks.0", channel=5, scale=1e7)
    with pytest.warns(UserWarning, match="float16"):
        m = mv.load(pipe, dtype="float16")
    with pytest.warns(mv.MassActWarning, match="non-finite statistics"):
        run = m.run("a cat", num_steps=1, size=SIZE, progress=False)
    assert run.meta["warnings"] and run.stats is not None and len(run.images) == 1
    assert "float16" in run.meta["warnings"][0]


def test_non_finite_values_in_a_float32_run_do_not_blame_float16(tiny_model):
    m = tiny_model("flux")
    with pytest.warns(mv.MassActWarning, match="non-finite statistics in a float32 run") as rec:
        run = m.run("a cat", num_steps=1, size=SIZE, progress=False,
                    edit=lambda site: site.image[..., 3].fill_(float("nan")))
    assert not any("65504" in str(w.message) for w in rec)
    assert run.stats.values["max_abs"].isnan().any() and "float16" not in run.meta["warnings"][0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(height=64), "use size="), (dict(num_inference_steps=3), "use num_steps="), (dict(steps=3), "use num_steps="), (dict(prompt_2="x"), "prompts"),
    (dict(size=(32, 32, 3)), "size must be"), (dict(seed="a"), "seed must be"), (dict(guidance="x"), "guidance must"),
    (dict(capture=mv.Capture(preview_size=0)), "preview_size"),
    (dict(capture=mv.Capture(raw=[mv.Raw(0, 0), mv.Raw("double.0", 0)])), "two raw slices"),
    (dict(capture=mv.Capture(raw=[mv.Raw(0, 0, stream="text", tokens=[999])])), "raw text token 999"),
])
def test_more_bad_input_errors(kwargs, message, tiny_model):
    kw = dict(num_steps=1, size=SIZE, progress=False)
    kw.update(kwargs)
    with pytest.raises(mv.MassActError, match=message):
        tiny_model("flux").run("a cat", **kw)


def test_single_values_are_accepted_where_lists_are_expected(tiny_model):
    m = tiny_model("flux")
    run = m.run("a cat", num_steps=2, size=32, progress=False,
                capture=mv.Capture(layers="double.0", steps=[1, -1], streams="image", raw=[mv.Raw(0, 1, channels=5)]))
    assert run.stats.steps == [1] and run.stats.streams == ["image"] and run.stats.layers == ["double.0"]
    assert run.raw["double.0/step1/image"].shape == (1, 256, 1)
    assert m.token_grid(32) == (16, 16)
    with pytest.raises(mv.MassActError, match="needs a layer"):
        run.stats.top_k(2, layer=None)
    with pytest.raises(mv.MassActError, match="k must be"):
        run.stats.summary(k=0)


@pytest.mark.parametrize("name", ["/etc/hostname", "../outside.png", "images/../../outside.png", "notes.txt",
                                  "images/000.png"])
def test_load_reads_only_the_runs_own_images(tmp_path, tiny_model, name):
    run_dir = tiny_model("flux").run("a cat", num_steps=1, size=SIZE, progress=False).save(tmp_path / "r")
    (tmp_path / "outside.png").write_bytes((run_dir / "images" / "000.png").read_bytes())
    if name == "images/000.png":   # the run's own name, but a symlink leaving the run
        (run_dir / "images" / "000.png").unlink()
        (run_dir / "images" / "000.png").symlink_to(tmp_path / "outside.png")
    doc = json.loads((run_dir / "run.json").read_text())
    doc["images"] = [name]
    _reseal(run_dir, doc)
    with pytest.raises(mv.RunFileError, match="not one of the run's own"):
        mv.Run.load(run_dir)


def _reseal(run_dir, doc, tensors=None):
    """Write a tampered run.json (and tensor file) with matching checksums, as a careful forger would."""
    from safetensors.torch import save_file

    from massact_viz.run import _doc_digest, _sha256
    if tensors is not None:
        save_file(tensors, str(run_dir / "tensors.safetensors"))
        doc["sha256"]["tensors.safetensors"] = _sha256(run_dir / "tensors.safetensors")
    doc["sha256"]["run.json"] = _doc_digest(doc)
    (run_dir / "run.json").write_text(json.dumps(doc))


def test_runs_saved_with_the_old_steps_key_load_as_num_steps(tmp_path, tiny_model):
    run_dir = tiny_model("flux").run("a cat", num_steps=2, size=SIZE, progress=False).save(tmp_path / "r")
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["meta"]["num_steps"] == 2 and "steps" not in doc["meta"]
    doc["meta"]["steps"] = doc["meta"].pop("num_steps")   # as runs were written before the name was one
    _reseal(run_dir, doc)
    back = mv.Run.load(run_dir)
    assert back.meta["num_steps"] == 2 and "steps" not in back.meta
    doc["index"]["stats"]["steps"] = [0, 2]   # the old key still bounds the captured steps
    _reseal(run_dir, doc)
    with pytest.raises(mv.RunFileError, match="of a 2-step run"):
        mv.Run.load(run_dir)


def test_a_hand_edited_run_json_is_refused(tmp_path, tiny_model):
    run_dir = tiny_model("flux").run("a cat", num_steps=2, size=SIZE, progress=False).save(tmp_path / "r")
    doc = json.loads((run_dir / "run.json").read_text())
    doc["index"]["stats"]["streams"] = doc["index"]["stats"]["streams"][::-1]  # would mislabel image as text
    (run_dir / "run.json").write_text(json.dumps(doc, indent=2))
    with pytest.raises(mv.RunFileError, match="does not match its own checksum"):
        mv.Run.load(run_dir)


@pytest.mark.parametrize("tamper, match", [
    (lambda d, t: d["index"]["stats"].update(layers=d["index"]["stats"]["layers"][:1]), "statistic"),
    (lambda d, t: d["index"]["stats"].update(steps=[0]), "statistic"),
    (lambda d, t: d["index"]["stats"].update(steps=[1, 0]), "increasing"),
    (lambda d, t: d["index"]["stats"].update(steps=[0, 5]), "of a 2-step run"),
    (lambda d, t: d["index"]["stats"].update(streams=["image", "pixels"]), "streams from"),
    (lambda d, t: d["meta"].update(prompts=["a cat", "a dog"]), "1 images but 2 prompts"),
    (lambda d, t: d["meta"].update(seeds="0"), "seeds"),
    (lambda d, t: d.update(meta=[]), "'meta' must be an object"),
    (lambda d, t: d["index"].update(stats="all"), "index.stats must be"),
    (lambda d, t: d["index"]["stats"].update(layers=None), "layers must be a list"),
    (lambda d, t: d["index"].update(raw=["../../etc/passwd"]), "raw slice"),
    (lambda d, t: d["index"].update(raw=["double.0/step0/image"]), "raw slice"),
    (lambda d, t: d["index"].update(previews=True), "previews"),
    (lambda d, t: t.update({"stats/max_abs": t["stats/max_abs"].to(torch.int8)}), "floats of shape"),
    (lambda d, t: t.update({"smuggled": torch.zeros(2)}), "does not describe"),
])
def test_run_json_must_describe_the_tensors_exactly(tmp_path, tiny_model, tamper, match):
    from safetensors.torch import load_file
    run_dir = tiny_model("flux").run("a cat", num_steps=2, size=SIZE, progress=False).save(tmp_path / "r")
    doc = json.loads((run_dir / "run.json").read_text())
    tensors = load_file(str(run_dir / "tensors.safetensors"))
    before = dict(tensors)
    tamper(doc, tensors)
    _reseal(run_dir, doc, tensors if any(tensors[k] is not before.get(k) for k in tensors) else None)
    with pytest.raises(mv.RunFileError, match=match):
        mv.Run.load(run_dir)


def test_a_huge_image_in_a_run_is_refused_before_decoding(tmp_path, tiny_model, monkeypatch):
    import massact_viz.run as run_mod
    run_dir = tiny_model("flux").run("a cat", num_steps=1, size=SIZE, progress=False).save(tmp_path / "r")
    monkeypatch.setattr(run_mod, "MAX_IMAGE_PIXELS", 16 * 16)  # a 32x32 image stands in for a 30000x30000 one
    with pytest.raises(mv.RunFileError, match="refusing to decode"):
        mv.Run.load(run_dir)


def test_a_saved_run_json_is_the_same_for_the_same_run(tmp_path, tiny_model):
    run = tiny_model("flux").run("a cat", num_steps=1, size=SIZE, progress=False)
    a, b = run.save(tmp_path / "a"), run.save(tmp_path / "b")
    assert (a / "run.json").read_bytes() == (b / "run.json").read_bytes()


def test_scan_applies_an_edit_exactly_as_run_does(tmp_path, tiny_model):
    from massact_viz.edits import Edit
    m = tiny_model("flux")
    edit = Edit("zero", [3, 7], layers="double.0")
    scanned = m.scan(["a cat", "a dog", "a tree"], tmp_path / "s", num_steps=2, size=SIZE, batch_size=2,
                     progress=False, edit=edit)
    ran = m.run(["a cat", "a dog", "a tree"], num_steps=2, size=SIZE, batch_size=2, progress=False, edit=edit)
    plain = m.run(["a cat", "a dog", "a tree"], num_steps=2, size=SIZE, batch_size=2, progress=False)
    for k in ran.stats.values:
        torch.testing.assert_close(scanned.stats.values[k], ran.stats.values[k], rtol=0, atol=0, equal_nan=True)
    assert not torch.equal(scanned.stats.values["max_abs"], plain.stats.values["max_abs"])
    with pytest.raises(mv.MassActError):  # a bad edit fails before any batch runs
        m.scan(["a cat"], tmp_path / "bad", num_steps=2, size=SIZE, progress=False, edit=Edit("zero", [10_000]))
    assert not (tmp_path / "bad.parts").exists()


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_scan_resumes_past_a_damaged_part(tmp_path, tiny_model, monkeypatch, damage):
    import massact_viz.scan as scan_mod
    m = tiny_model("flux")
    prompts = ["a cat", "a dog", "a tree"]
    real, calls = scan_mod.run_capture, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(scan_mod, "run_capture", flaky)
    with pytest.raises(KeyboardInterrupt):
        m.scan(prompts, tmp_path / "s", num_steps=1, size=SIZE, batch_size=2, progress=False)
    part = tmp_path / "s.parts" / "000000" / "run.json"
    part.write_text("") if damage == "empty" else part.unlink()
    monkeypatch.setattr(scan_mod, "run_capture", real)
    done = m.scan(prompts, tmp_path / "s", num_steps=1, size=SIZE, batch_size=2, progress=False)
    assert done.meta["resumed_prompts"] == 0 and done.prompts == prompts and not (tmp_path / "s.parts").exists()


def test_a_scan_that_fails_before_any_batch_leaves_nothing(tmp_path, tiny_model, monkeypatch):
    import massact_viz.scan as scan_mod
    m = tiny_model("flux")

    def broken(*a, **k):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(scan_mod, "run_capture", broken)
    with pytest.raises(RuntimeError):
        m.scan(["a cat"], tmp_path / "s", num_steps=1, size=SIZE, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_scan_refuses_a_users_directory_before_any_work(tmp_path, tiny_model, monkeypatch):
    import massact_viz.scan as scan_mod
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    monkeypatch.setattr(scan_mod, "run_capture", lambda *a, **k: pytest.fail("the scan ran"))
    monkeypatch.chdir(tmp_path / "mine")
    for out in (tmp_path / "mine", "."):
        with pytest.raises(mv.RunFileError, match="is not a massact_viz run directory"):
            tiny_model("flux").scan(["a cat"], out, num_steps=1, size=SIZE, progress=False)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"] and len(list(tmp_path.iterdir())) == 1


def test_two_jobs_starting_in_one_directory_at_once_exactly_one_wins(tmp_path):
    import threading

    from massact_viz.files import resume_manifest
    for trial in range(20):
        d, gate, results = tmp_path / f"t{trial}", threading.Barrier(2), []

        def start(i):
            gate.wait()
            try:
                resume_manifest(d, {"prompts": [f"prompt {i}"]}, "partial scan", "")
                results.append("ok")
            except mv.MassActError as e:
                results.append(str(e))
        threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert results.count("ok") == 1, results
        assert any("another process" in r for r in results if r != "ok")
        assert sorted(p.name for p in d.iterdir()) == ["manifest.json"]


def test_summaries_and_reports_keep_non_finite_layers_and_mark_them(tiny_model, tmp_path):
    from massact_viz.report import build_report
    m = tiny_model("flux")
    with pytest.warns(mv.MassActWarning):
        some = m.run("a cat", num_steps=1, size=SIZE, progress=False,
                     edit=lambda site: site.image[..., 3].fill_(float("inf")) if site.block == m.blocks[-1] else None)
    rows = some.stats.summary(k=2)
    image_rows = [r for r in rows if r["stream"] == "image"]
    assert len(image_rows) == len(m.blocks)   # no layer dropped
    bad = [r for r in image_rows if r["non_finite"]]
    assert bad and 3 not in bad[0]["top_channels"] and bad[0]["ratio"] is not None
    with pytest.warns(mv.MassActWarning):
        nan = m.run("a cat", num_steps=1, size=SIZE, progress=False, edit=lambda site: site.image.fill_(float("nan")))
    rows = nan.stats.summary(k=2)
    assert [r["layer"] for r in rows if r["stream"] == "image"] == [b.name for b in m.blocks]
    assert all(r["ratio"] is None and r["non_finite"] == m.width for r in rows if r["stream"] == "image")
    assert "1 channels inf/NaN" in build_report(some)   # the report marks the layer and still draws
    with pytest.raises(mv.MassActError, match="no finite statistics of the image stream"):
        build_report(nan)   # nothing finite to draw: one clear line instead of a report of blanks


def test_one_layer_rule_names_indices_kinds_and_ranges_mixed(tiny_model):
    m = tiny_model("flux")
    singles = [b.name for b in m.blocks if b.kind == "single"]
    run = m.run("a cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture(layers=["single", 0]))
    assert run.stats.layers == [m.blocks[0].name] + singles
    assert [b.name for b in m.resolve_layers(range(2))] == [b.name for b in m.blocks[:2]]
    assert [b.name for b in m.resolve_layers(-1)] == [m.blocks[-1].name]
    with pytest.raises(mv.MassActError, match="layers must be"):
        m.resolve_layers(3.5)


def test_a_capture_too_big_for_the_machine_is_refused_before_it_runs(tiny_model, monkeypatch, tmp_path):
    import massact_viz.capture as cap_mod
    from massact_viz.cli import main
    m = tiny_model("flux")
    monkeypatch.setattr(type(m.pipe), "__call__", lambda *a, **k: pytest.fail("the pipeline ran"))
    with pytest.raises(mv.MassActError, match=r"would keep about .* GB .* Capture\(max_gb=\.\.\.\)"):
        m.run(["a cat"] * 4, num_steps=3, size=SIZE, progress=False, capture=mv.Capture(max_gb=1e-6))
    monkeypatch.setattr(cap_mod, "_machine_bytes", lambda: 2_000)   # "half of this machine" = 1 kB
    with pytest.raises(mv.MassActError, match="more than the"):
        m.run("a cat", num_steps=1, size=SIZE, progress=False)
    assert main(["scan", "--model", "tiny:flux", "--prompt", "a", "--num-steps", "1", "--size", "32",
                 "--out", str(tmp_path / "r")]) == 2
    monkeypatch.undo()
    plan = cap_mod.plan_capture(m, ["a", "b"], num_steps=2, seed=0, size=SIZE, guidance=None,
                                capture=mv.Capture(), batch_size=8, pipe_kwargs={})
    run = m.run(["a", "b"], num_steps=2, size=SIZE, progress=False)
    kept = sum(t.numel() * t.element_size() for t in run.stats.values.values()) + run.stats.median_abs.numel() * 4
    assert cap_mod.capture_bytes(plan, mv.Capture(), m.width) == kept   # the estimate is the statistics' size


def test_probes_refuse_run_arguments_they_set_themselves_before_any_work(tiny_model, monkeypatch):
    from massact_viz.probes import transport
    from massact_viz.probes.disruption import disrupt
    from massact_viz.probes.localization import localize
    m = tiny_model("flux")
    monkeypatch.setattr(m, "run", lambda *a, **k: pytest.fail("a probe ran the model before refusing"))
    cases = [(lambda: disrupt(m, ["a cat"], capture=mv.Capture()), "disrupt\\(\\) sets capture= itself"),
             (lambda: disrupt(m, ["a cat"], height=64), "do not pass height= to disrupt\\(\\)"),
             (lambda: transport(m, "a", "b", batch_size=2), "transport\\(\\) sets batch_size= itself"),
             (lambda: localize(m, ["a cat"], [np.zeros((32, 32), bool)], capture=mv.Capture()), "localize\\(\\) sets capture= itself"),
             (lambda: localize(m, ["a cat"], [np.zeros((32, 32), bool)], generator=None), "do not pass generator= to localize\\(\\)")]
    for call, message in cases:
        with pytest.raises(mv.MassActError, match=message):
            call()
