"""Localization probe: clustering tokens into a foreground, IoU, the layer sweep, projections."""
import time

import numpy as np
import pytest

from massact_viz.errors import MassActError
from massact_viz.probes import localization as loc

SIZE = (32, 32)


def square_tokens(rows=8, cols=8, width=16, box=(2, 5, 3, 7), hot=(0, 3, 5), seed=0):
    """Tokens whose ``hot`` channels are high inside the box (r0, r1, c0, c1) and noise elsewhere."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, size=(rows * cols, width))
    mask = np.zeros((rows, cols), bool)
    r0, r1, c0, c1 = box
    mask[r0:r1, c0:c1] = True
    x[np.flatnonzero(mask.ravel())[:, None], list(hot)] += 10.0
    return x, mask


def test_kmeans_recovers_square_and_picks_high_cluster():
    x, mask = square_tokens()
    c = loc.cluster_tokens(x, (8, 8), channels=[0, 3, 5])
    assert c.foreground.shape == c.labels.shape == c.heat.shape == (8, 8)
    assert loc.iou(c.foreground, mask) == 1.0
    assert c.heat[mask].mean() > c.heat[~mask].mean()
    assert c.features.shape == (64, 3) and c.features.min() >= 0 and c.features.max() <= 1
    # the opposite rule picks the background; a custom rule may return a cluster id
    low = loc.cluster_tokens(x, (8, 8), channels=[0, 3, 5], foreground="min_sum")
    assert loc.iou(low.foreground, ~mask) == 1.0
    custom = loc.cluster_tokens(x, (8, 8), channels=[0, 3, 5],
                                foreground=lambda f, lab: lab[np.argmax(f.sum(1))])
    assert loc.iou(custom.foreground, mask) == 1.0
    # every named rule: the paper's max_sum, the border rule (the default), the minority cluster
    for rule in ("max_sum", "border", "minority"):
        assert loc.iou(loc.cluster_tokens(x, (8, 8), channels=[0, 3, 5], foreground=rule).foreground, mask) == 1.0
    # the border rule does not depend on the channels' sign, which max_sum does
    neg = loc.cluster_tokens(-x, (8, 8), channels=[0, 3, 5])
    assert loc.iou(neg.foreground, mask) == 1.0
    assert loc.iou(loc.cluster_tokens(-x, (8, 8), channels=[0, 3, 5], foreground="max_sum").foreground, ~mask) == 1.0
    # K is settable: three clusters, the max_sum one inside the square; border keeps all but the ring's cluster
    k3 = loc.cluster_tokens(x, (8, 8), k_clusters=3, channels=[0, 3, 5], foreground="max_sum")
    assert len(np.unique(k3.labels)) == 3 and k3.foreground.sum() <= mask.sum()
    k3b = loc.cluster_tokens(x, (8, 8), k_clusters=3, channels=[0, 3, 5])
    assert k3b.foreground[mask].all()
    # non-square grid and torch input
    import torch
    xr, mr = square_tokens(rows=4, cols=16, box=(1, 3, 4, 10))
    cr = loc.cluster_tokens(torch.as_tensor(xr), (4, 16), channels=[0, 3, 5])
    assert loc.iou(cr.foreground, mr) == 1.0


def test_constant_channel_normalises_to_zero():
    x, mask = square_tokens()
    x[:, 3] = 7.5  # constant
    n = loc.normalize(x)
    assert np.isfinite(n).all() and (n[:, 3] == 0).all()
    c = loc.cluster_tokens(x, (8, 8), channels=[0, 3, 5])
    assert np.isfinite(c.features).all() and (c.features[:, 1] == 0).all()
    assert loc.iou(c.foreground, mask) == 1.0
    # every channel constant: nothing to separate, an empty foreground, no NaN
    flat = loc.cluster_tokens(np.ones((64, 4)), (8, 8))
    assert not flat.foreground.any() and np.isfinite(flat.heat).all()


def test_iou_edge_cases_and_upsample():
    z = np.zeros((4, 4), bool)
    o = np.ones((4, 4), bool)
    assert loc.iou(z, z) == 1.0
    assert loc.iou(z, o) == 0.0
    assert loc.iou(o, o) == 1.0
    a = z.copy(); a[0, :2] = True
    b = z.copy(); b[0, 1:3] = True
    assert loc.iou(a, b) == pytest.approx(1 / 3)
    with pytest.raises(MassActError):
        loc.iou(z, np.zeros((8, 8), bool))
    up = loc.upsample(a, 4)
    assert up.shape == (16, 16) and up[:4, :8].all() and up.sum() == 2 * 16
    assert loc.upsample(a, (2, 3)).shape == (8, 12)
    with pytest.raises(MassActError):
        loc.upsample(a, 0)
    # IoU is the same at token size and after upsampling both
    assert loc.iou(loc.upsample(a, 4), loc.upsample(b, 4)) == pytest.approx(loc.iou(a, b))


def test_hdbscan_method():
    x, mask = square_tokens()
    c = loc.cluster_tokens(x, (8, 8), channels=[0, 3, 5], method="hdbscan")
    assert c.method == "hdbscan" and c.labels.shape == (8, 8)
    assert loc.iou(c.foreground, mask) > 0.9


def test_bad_inputs():
    x, _ = square_tokens()
    for kw in ({"k_clusters": 1}, {"k_clusters": 65}, {"k_clusters": 2.0}, {"method": "dbscan"},
               {"foreground": "biggest"}, {"channels": [99]}, {"channels": []}, {"seed": -1}):
        with pytest.raises(MassActError):
            loc.cluster_tokens(x, (8, 8), **kw)
    with pytest.raises(MassActError, match=r"k_clusters must be an integer between 2 and 64 \(the number of tokens\)"):
        loc.cluster_tokens(x, (8, 8), k_clusters=65)
    with pytest.raises(MassActError):
        loc.cluster_tokens(x, (8, 9))
    with pytest.raises(MassActError):
        loc.cluster_tokens(x[None])
    bad = x.copy(); bad[0, 0] = np.nan
    with pytest.raises(MassActError):
        loc.cluster_tokens(bad, (8, 8))
    with pytest.raises(MassActError):
        loc.project(x, method="tsne")


def test_load_mask_from_file(tmp_path):
    m = np.zeros((8, 8), bool); m[2:4, 1:5] = True
    np.save(tmp_path / "m.npy", m)
    from PIL import Image
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.png")
    assert (loc.load_mask(tmp_path / "m.npy") == m).all()
    assert (loc.load_mask(str(tmp_path / "m.png")) == m).all()
    with pytest.raises(MassActError):
        loc.load_mask(tmp_path / "missing.npy")


def _centre_mask(image, prompt):
    h, w = np.asarray(image).shape[:2]
    m = np.zeros((h, w), bool)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
    return m


def test_localize_tiny_model_curves_every_set_and_layer(tiny_model, tmp_path):
    m = tiny_model("flux")
    res = loc.localize(m, ["a cat", "a red house"], _centre_mask, k=2, steps=[-1, 0], random_draws=2,
                       num_steps=2, progress=False, size=SIZE)
    names = [b.name for b in m.blocks]
    assert res.layers == names and res.steps == [0, 1] and res.params["total_steps"] == 2
    curves = res.curves()
    assert set(curves) == {"top", "bottom", "random", "all"}
    for s, c in curves.items():
        assert len(c) == len(names) and all(0.0 <= v <= 1.0 for v in c), s
    assert res.best_layer("top") in names
    assert len(res.to_table()) == len(names) * 2 * 4
    assert "| layer |" in res.markdown()
    assert res.iou.shape == (4, len(names), 2, 2)
    p = res.save(tmp_path / "loc.json")
    back = loc.LocalizationResult.load(p)
    assert back.layers == res.layers and back.steps == res.steps and back.params["k"] == 2
    for s, c in res.curves(step=0).items():
        assert back.curves(step=0)[s] == pytest.approx(c, abs=1e-5)
    # token-size masks give the same numbers as the same masks at pixel size
    grid = tuple(m.token_grid(SIZE))
    tok = [np.pad(np.ones((grid[0] // 2, grid[1] // 2), bool), ((grid[0] // 4,) * 2, (grid[1] // 4,) * 2))] * 2
    res_tok = loc.localize(m, ["a cat", "a red house"], tok, layers=[0, -1], sets=("top",), k=2,
                           num_steps=2, progress=False, size=SIZE)
    assert res_tok.curves()["top"] == pytest.approx([res.miou("top", layer=0), res.miou("top", layer=-1)])
    # ranking by the mean over prompts gives one channel set for every prompt
    res_mean = loc.localize(m, ["a cat", "a red house"], _centre_mask, layers=[0],
                            sets=("top",), k=2, rank="mean", num_steps=2, progress=False, size=SIZE)
    assert res_mean.channels["top/double.0/step1/0"] == res_mean.channels["top/double.0/step1/1"]
    # a mask of the wrong shape, a wrong count, and a bad set are clear errors
    with pytest.raises(MassActError):
        loc.localize(m, ["a cat"], [np.zeros((5, 5), bool)], layers=[0], progress=False, size=SIZE)
    with pytest.raises(MassActError):
        loc.localize(m, ["a cat", "a dog"], [np.zeros(SIZE, bool)], layers=[0], progress=False, size=SIZE)
    with pytest.raises(MassActError):
        loc.localize(m, ["a cat"], _centre_mask, sets=("middle",), num_steps=2, progress=False, size=SIZE)
    with pytest.raises(MassActError):
        loc.localize(m, ["a cat"], _centre_mask, k=0, progress=False, size=SIZE)
    with pytest.raises(MassActError):
        loc.localize(m, ["a cat"], _centre_mask, steps=5, num_steps=2, progress=False, size=SIZE)
    with pytest.raises(MassActError):
        loc.LocalizationResult.load(tmp_path / "nothing.json")


def test_shapes_masks_reads_object_colours():
    from massact_viz.shapes import scenes
    rng = np.random.default_rng(0)
    cap = "a red circle on a plain blue background"
    sc = scenes.scene_from_caption(cap, rng)
    image, mask, _ = scenes.render(sc)
    got = loc.shapes_masks([image], [cap])[0]
    assert got.shape == mask.shape and loc.iou(got, mask) > 0.9


def test_pca_projection_shapes_and_cache():
    loc.clear_projection_cache()
    x, mask = square_tokens()
    c = loc.cluster_tokens(x, (8, 8), channels=[0, 3, 5])
    p = loc.project(x, (8, 8), method="pca", channels=[0, 3, 5], labels=c.labels)
    assert p.coords.shape == (64, 2) and p.values.shape == (64, 3) and p.labels.shape == (64,)
    assert (p.row == np.arange(64) // 8).all() and (p.col == np.arange(64) % 8).all()
    pt = p.point(19)
    assert (pt["row"], pt["col"], pt["token"]) == (2, 3, 19) and set(pt["values"]) == {0, 3, 5}
    assert pt["cluster"] == int(c.labels[2, 3])
    # the first PCA axis separates the square from the rest
    assert np.sign(p.coords[mask.ravel(), 0]).std() == 0
    t0 = time.perf_counter()
    again = loc.project(x.copy(), (8, 8), method="pca", channels=[0, 3, 5], labels=c.labels)
    assert again is p and time.perf_counter() - t0 < 0.05
    assert loc.project(x, (8, 8), method="pca", channels=[0, 3, 5], labels=c.labels, cache=False) is not p
    assert loc.project(x, (8, 8), method="pca") is not p  # other channels: another entry
    assert loc.project(x, (8, 8), method="pca", channels=[0]).coords.shape == (64, 2)


def test_localize_resumes_from_its_parts_with_the_same_result(tiny_model, tmp_path, interrupt):
    m = tiny_model("flux")
    prompts = ["a cat", "a red house", "a tree", "a blue car"]
    args = dict(k=2, random_draws=2, num_steps=2, progress=False, size=SIZE, chunk=1, layers=[0, -1])
    ref = loc.localize(m, prompts, _centre_mask, out=tmp_path / "ref.json", **args)
    assert (tmp_path / "ref.json").exists() and not (tmp_path / "ref.json.parts").exists()
    calls = interrupt(m, "run", 3)
    out = tmp_path / "loc.json"
    with pytest.raises(KeyboardInterrupt):
        loc.localize(m, prompts, _centre_mask, out=out, **args)
    assert sorted(p.name for p in (tmp_path / "loc.json.parts").glob("0*.json")) == ["000000.json", "000001.json"]
    calls["n"] = 10
    again = loc.localize(m, prompts, _centre_mask, out=out, **args)
    assert calls["n"] == 12, "only the two chunks not done were run"
    assert out.read_bytes() == (tmp_path / "ref.json").read_bytes()
    assert np.array_equal(again.iou, ref.iou) and again.channels == ref.channels
    with pytest.raises(KeyboardInterrupt):   # interrupted again, then resumed with another k: refused
        calls["n"] = 2
        loc.localize(m, prompts, _centre_mask, out=tmp_path / "other.json", **args)
    with pytest.raises(MassActError, match="started with other settings"):
        loc.localize(m, prompts, _centre_mask, out=tmp_path / "other.json", **{**args, "k": 3})


def test_localize_recovers_a_square_planted_in_one_channel(tiny_model):
    import torch
    m = tiny_model("flux")
    rows, cols = m.token_grid(SIZE)
    square = np.zeros((rows, cols), bool)
    square[4:10, 5:12] = True
    inside = torch.as_tensor(np.flatnonzero(square.ravel()))
    C = 7

    def plant_square(site):  # an edit= function: channel C carries the square from double.0 on
        if site.block.name == "double.0":
            site.image[:, inside, C] += 100.0
    ppt = (SIZE[0] // rows, SIZE[1] // cols)
    pixel = loc.upsample(square, ppt)
    assert pixel.shape == SIZE
    res = loc.localize(m, ["a red cat", "a blue car"], [pixel, pixel], k=2, sets=("top", "bottom"), steps=[0, -1],
                       num_steps=2, progress=False, size=SIZE, edit=plant_square)
    assert res.layers == [b.name for b in m.blocks]  # double.0 (the plant) and every later layer
    for step in res.steps:
        for layer in res.layers:
            assert res.miou("top", layer, step) > 0.9, (layer, step)  # measured: 1.0 everywhere
            assert res.miou("bottom", layer, step) < 0.6, (layer, step)  # measured: 0.10-0.16
            assert C in res.channels[f"top/{layer}/step{step}/0"]
    # without the plant nothing in this random model finds the square
    plain = loc.localize(m, ["a red cat"], [pixel], k=2, sets=("top",), steps=-1, layers=[-1], num_steps=2,
                         progress=False, size=SIZE)
    assert plain.miou("top", 0) < 0.6


@pytest.mark.parametrize("kwargs", [dict(k=33), dict(k=0), dict(k=17, sets=("random",)), dict(steps=2), dict(steps=(2,)),
                                    dict(steps=[]), dict(k_clusters=1)])
def test_localize_bad_specs_fail_before_anything_runs(tiny_model, monkeypatch, kwargs):
    import massact_viz as mv
    m = tiny_model("flux")
    assert m.width == 32
    monkeypatch.setattr(mv.Model, "run", lambda *a, **kw: pytest.fail("ran before validating"))
    with pytest.raises(MassActError, match="at least 2 \\(foreground" if "k_clusters" in kwargs else None):
        loc.localize(m, ["a cat"], _centre_mask, **dict(dict(layers=[0], num_steps=2, progress=False, size=SIZE),
                                                        **kwargs))


def test_localize_mask_of_the_wrong_size_is_a_clear_error(tiny_model):
    m = tiny_model("flux")
    for bad in ((31, 32), (SIZE[0] * 2, SIZE[1] * 2)):  # neither pixel size nor token size
        with pytest.raises(MassActError, match="mask"):
            loc.localize(m, ["a cat"], [np.zeros(bad, bool)], layers=[0], num_steps=1, progress=False, size=SIZE)


def test_downsample_pixel_mask_to_tokens():
    from massact_viz.probes.localization import downsample, upsample
    tok = np.zeros((4, 4), dtype=bool)
    tok[1:3, 2] = True
    assert np.array_equal(downsample(upsample(tok, 4), (4, 4)), tok)  # round trip
    px = upsample(tok, 4).astype(float)
    px[4, 8] = 0.0  # one pixel of 16 off: still on at 0.5, off at threshold 1
    assert downsample(px, (4, 4))[1, 2] and not downsample(px, (4, 4), threshold=1.0)[1, 2]
    with pytest.raises(MassActError, match="tile"):
        downsample(np.zeros((15, 16)), (4, 4))


def test_import_umap_leaves_numba_as_it_was():
    import numba
    njit, jit = numba.njit, numba.jit
    umap = loc.import_umap()
    assert hasattr(umap, "UMAP") and numba.njit is njit and numba.jit is jit
    assert loc.import_umap() is umap


def test_a_localization_plan_is_checked_immutable_and_runs_to_localize_s_result(tiny_model, monkeypatch):
    import dataclasses

    import massact_viz as mv
    m = tiny_model("flux")
    kw = dict(k=2, steps=[-1], layers=[0, -1], random_draws=2, num_steps=2, size=SIZE)
    orig = mv.Model.run
    monkeypatch.setattr(mv.Model, "run", lambda *a, **k: pytest.fail("planning ran the model"))
    plan = loc.plan_localization(m, ["a cat", "a red house", "a dog"], _centre_mask, chunk=2, **kw)
    assert plan.layers == (m.blocks[0].name, m.blocks[-1].name) and plan.steps == (1,) and plan.starts == [0, 2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.k = 3
    with pytest.raises(TypeError):
        plan.run_kwargs["size"] = 64          # read-only view
    assert plan == plan and len({plan: 1}) == 1   # identity == and hash (fields hold arrays and mappings)
    with pytest.raises(MassActError, match="2 masks for 3 prompts"):
        loc.plan_localization(m, ["a", "b", "c"], [np.zeros((4, 4), bool)] * 2, **kw)
    monkeypatch.setattr(mv.Model, "run", orig)
    got = loc.execute(m, plan, progress=False)
    want = loc.localize(m, ["a cat", "a red house", "a dog"], _centre_mask, chunk=2, progress=False, **kw)
    assert np.array_equal(got.iou, want.iou) and got.channels == want.channels and got.params == want.params


def test_a_localization_plan_keeps_its_own_masks(tiny_model):
    m = tiny_model("flux")
    mask = np.zeros(SIZE, bool)
    plan = loc.plan_localization(m, ["a cat"], [mask], k=2, layers=[0], num_steps=2, size=SIZE)
    before = plan.manifest()["masks"]
    mask[:4] = True
    assert plan.manifest()["masks"] == before and not plan.masks[0].flags.writeable
    with pytest.raises(MassActError, match="out= is how a plan is run"):
        loc.plan_localization(m, ["a cat"], [mask], out="x.json", num_steps=2, size=SIZE)
