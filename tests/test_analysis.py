"""Analyses over ChannelStats and raw slices: selections, agreement, Sun criterion, stability, bias/content."""
import math

import pytest
import torch

import massact_viz as mv
from massact_viz import analysis as A
from massact_viz.stats import ChannelStats, reduce_channels
from massact_viz.testing import default_call_kwargs, tiny_pipeline

from test_capture import SIZE, plant

#: Sun et al.'s element top-1/median on the tiny random-weight models: the maximum of ~8k Gaussian-ish
#: elements alone is several times their median (measured 4.4-8.4 across families and layers).
UNPLANTED_MAX_ELEMENT_RATIO = 10.0


def stats_from(x, layers=None, steps=None, streams=("image",), prompts=None):
    """ChannelStats of activations x: (images, steps, layers, tokens, channels), one stream."""
    P, S, L, N, D = x.shape
    parts = [reduce_channels(x[:, s, l]) for s in range(S) for l in range(L)]
    values = {k: torch.stack([p[k] for p in parts], 1).reshape(P, S, L, D)[:, :, :, None]
              for k in ("abs_mean", "mean_abs", "max_abs", "sun_count")}
    median = torch.stack([p["median_abs"] for p in parts], 1).reshape(P, S, L)[:, :, :, None]
    return ChannelStats(values, median, layers or [f"block.{i}" for i in range(L)], steps or list(range(S)),
                        list(streams), prompts or [f"p{i}" for i in range(P)])


def stats_of_scores(scores, steps=None):
    """ChannelStats whose every statistic equals ``scores`` (images, steps, layers, channels)."""
    P, S, L, D = scores.shape
    v = scores[:, :, :, None].float()
    return ChannelStats({k: v.clone() for k in ("abs_mean", "mean_abs", "max_abs", "sun_count")},
                        torch.ones(P, S, L, 1), [f"block.{i}" for i in range(L)], steps or list(range(S)),
                        ["image"], [f"p{i}" for i in range(P)])


# ------------------------------------------------------------------ selections
def test_top_and_bottom_k_on_hand_built_stats():
    scores = torch.tensor([[5.0, 0.1, 9.0, 3.0, 0.2, 7.0, 0.05, 1.0],   # step 0
                           [5.0, 0.1, 9.0, 3.0, 0.2, 7.0, 0.05, 1.0]])  # step 1 (block.0 constant)
    s = stats_of_scores(torch.stack([scores, scores.flip(-1)], dim=1)[None])  # (1, 2 steps, 2 layers, 8)
    assert A.select(s, "top", 3, layer="block.0") == [2, 5, 0]  # highest first
    assert A.select(s, "bottom", 3, layer="block.0") == [6, 1, 4]  # lowest first
    assert A.select(s, "top", 3, layer=0) == A.select(s, "top", 3, layer="block.0")
    assert A.select(s, "top", 2, layer="block.1") == [5, 2]  # flipped channels
    # aggregation: mean over steps unless a step is given
    t = torch.zeros(1, 2, 1, 4)
    t[0, 0, 0] = torch.tensor([10.0, 0, 0, 1])
    t[0, 1, 0] = torch.tensor([0.0, 0, 6, 3])
    s2 = stats_of_scores(t, steps=[2, 3])
    assert A.select(s2, "top", 1, layer=0) == [0]  # means 5, 0, 3, 2
    assert A.select(s2, "top", 1, layer=0, step=3) == [2]
    assert A.select(s2, "top", 2, layer=0, step=-1) == [2, 3]
    assert A.selections(s, "top", 2) == {"block.0": [2, 5], "block.1": [5, 2]}


def test_random_k_excludes_top_k_and_is_seeded():
    torch.manual_seed(0)
    s = stats_from(torch.randn(2, 2, 3, 16, 32) + torch.linspace(-1, 1, 32))
    top = set(A.select(s, "top", 4, layer="block.1"))
    draws = [A.select(s, "random", 4, layer="block.1", seed=seed) for seed in range(20)]
    for d in draws:
        assert len(set(d)) == 4 and not set(d) & top and d == sorted(d)
    assert A.select(s, "random", 4, layer=1, seed=3) == draws[3]  # name or index: the same draw
    assert len({tuple(d) for d in draws}) > 10  # other seeds, other channels
    by_layer = {tuple(A.select(s, "random", 4, layer=li, seed=0)) for li in range(3)}
    assert len(by_layer) > 1  # the layer enters the seed
    assert A.selections(s, "random", 4, seed=3)["block.1"] == draws[3]
    with pytest.raises(mv.MassActError, match="at most 16"):
        A.select(s, "random", 17, layer=0)
    assert len(A.select(s, "random", 16, layer=0)) == 16


def test_selections_skip_layers_without_the_stream():
    torch.manual_seed(0)
    s = stats_from(torch.randn(1, 1, 2, 8, 8), streams=("image", "text"))
    for k in s.values:  # text stream: only block.0 has it, like SD3's last block
        s.values[k] = torch.cat([s.values[k], s.values[k]], dim=3)
        s.values[k][:, :, 1, 1] = float("nan")
    s.median_abs = torch.cat([s.median_abs, s.median_abs], dim=3)
    s.median_abs[:, :, 1, 1] = float("nan")
    assert list(A.selections(s, "top", 2, stream="text")) == ["block.0"]
    assert list(A.selections(s, "top", 2)) == ["block.0", "block.1"]
    with pytest.raises(mv.MassActError, match="no text stream"):
        A.select(s, "top", 2, layer="block.1", stream="text")
    agree = A.statistic_agreement(s, 2, stream="text")
    assert math.isfinite(agree["top"][0]) and math.isnan(agree["top"][1]) and math.isnan(agree["bottom"][1])
    assert math.isnan(A.stability(s, 2, over="layers", stream="text")[1, 1])


def test_bad_input_is_refused_with_what_to_do():
    torch.manual_seed(0)
    s = stats_from(torch.randn(2, 2, 2, 8, 8))
    bad = [
        (lambda: A.select(s, "middle", 2, layer=0), "kind must be one of"),
        (lambda: A.select(s, "top", 0, layer=0), "k must be an integer between 1 and 8"),
        (lambda: A.select(s, "top", 9, layer=0), "k must be an integer between 1 and 8"),
        (lambda: A.select(s, "top", 2, layer="double.9"), "unknown layer 'double.9'"),
        (lambda: A.select(s, "top", 2, layer=5), "layer 5 is out of range"),
        (lambda: A.select(s, "top", 2, layer=0, stream="txt"), "unknown stream 'txt'"),
        (lambda: A.select(s, "top", 2, layer=0, stat="median"), "unknown statistic 'median'"),
        (lambda: A.select(s, "top", 2, layer=0, step=7), "step 7 was not captured"),
        (lambda: A.select(s, "top", 2, layer=0, image=2), "image 2 is out of range"),
        (lambda: A.select(s, "random", 2, layer=0, seed="a"), "seed must be an integer"),
        (lambda: A.select(object(), "top", 2, layer=0), "expected a ChannelStats"),
        (lambda: A.statistic_agreement(s, 9), "k must be an integer between 1 and 8"),
        (lambda: A.stability(s, 2, over="prompts", layer=0), "over must be one of"),
        (lambda: A.stability(s, 2, over="steps"), "pass layer="),
        (lambda: A.stability(s, 2, over="layers", layer=0), "leave layer=None"),
        (lambda: A.magnitude_trace(s, [8], layer=0), "channel 8 is out of range"),
        (lambda: A.magnitude_trace(s, [], layer=0), "channels is empty"),
        (lambda: A.variance_split(s, 3, layer=0), "channels must be a list"),
        (lambda: A.jaccard([1], 2), "collection of channel indices"),
        (lambda: A.jaccard([1.5], [2]), "integer channel indices"),
        (lambda: A.bias_content(torch.zeros(4, 3)), r"\(images, tokens, channels\).*got shape \(4, 3\)"),
        (lambda: A.bias_content([[1.0]]), "expects a torch tensor"),
    ]
    for call, msg in bad:
        with pytest.raises(mv.MassActError, match=msg):
            call()
    del s.values["sun_count"]
    with pytest.raises(mv.MassActError, match="sun=True"):
        A.element_ratio(s)


# ------------------------------------------------------------------ agreement
def test_jaccard_edge_cases():
    assert A.jaccard([], []) == 1.0  # two empty sets: identical by convention
    assert A.jaccard([1, 2], []) == 0.0
    assert A.jaccard([1, 2, 3], [3, 2, 1]) == 1.0
    assert A.jaccard([1, 2], [3, 4]) == 0.0
    assert A.jaccard([1, 2], [2, 3]) == pytest.approx(1 / 3)
    assert A.jaccard([1, 1, 2], torch.tensor([2, 1])) == 1.0  # duplicates and tensors


def test_statistic_agreement_one_when_statistics_agree_and_below_on_a_mixed_sign_channel():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 2, 64, 16) * torch.linspace(0.1, 3.0, 16)  # positive: |mean| == mean|x|
    agree = A.statistic_agreement(stats_from(x), 4)
    assert agree["top"].tolist() == [1.0, 1.0] and agree["bottom"].tolist() == [1.0, 1.0]
    sign = torch.ones(64)
    sign[::2] = -1
    x[:, :, 1, :, 5] = 50.0 * sign  # zero mean, huge magnitude: top by mean|x|, bottom by |mean|
    s = stats_from(x)
    agree = A.statistic_agreement(s, 4)
    assert agree["top"][0] == 1 and agree["bottom"][0] == 1
    assert agree["top"][1] < 1 and agree["bottom"][1] < 1
    assert 5 in A.select(s, "top", 4, layer=1, stat="mean_abs")
    assert 5 in A.select(s, "bottom", 4, layer=1, stat="abs_mean")


# ------------------------------------------------------------- Sun criterion
def test_element_ratio_and_sun_counts_on_synthetic_states():
    x = torch.full((1, 2, 1, 10, 4), 0.01)
    x[0, 0, 0, 3, 2] = 500.0  # step 0: a Sun massive element (> 100, > 1000 x median)
    x[0, 1, 0, 4, 1] = 50.0  # step 1: large, but under 100
    s = stats_from(x)
    assert A.sun_counts(s, step=0).tolist() == [1.0] and A.sun_counts(s, step=1).tolist() == [0.0]
    assert A.sun_counts(s).tolist() == [0.5]  # mean over steps of the per-state count
    assert A.element_ratio(s, step=0)[0] == pytest.approx(50_000, rel=1e-4)
    assert A.element_ratio(s)[0] == pytest.approx((50_000 + 5_000) / 2, rel=1e-4)


def _element_ratio(m, family=None):
    kw = {k: v for k, v in default_call_kwargs(family).items() if k not in ("height", "width")} if family else {}
    run = m.run(["a red cat", "a blue car"], num_steps=2, size=SIZE, progress=False, **kw)
    return A.element_ratio(run.stats), A.sun_counts(run.stats)


@pytest.mark.parametrize("family", ["flux", "sd3", "pixart", "sana", "qwenimage", "flux2"])
def test_unplanted_element_ratio_is_that_of_noise(family, tiny_model):
    ratio, counts = _element_ratio(tiny_model(family), family)
    assert torch.isfinite(ratio).all(), ratio
    assert 2 < float(ratio.min()) and float(ratio.max()) < UNPLANTED_MAX_ELEMENT_RATIO, ratio
    assert counts.sum() == 0


def test_planted_channel_reads_far_above_in_element_ratio():
    m = mv.load(plant(tiny_pipeline("flux", seed=3), "single_transformer_blocks.1", channel=7))
    ratio, _ = _element_ratio(m)
    at = m.layer("single.1").index
    assert float(ratio[:at].max()) < UNPLANTED_MAX_ELEMENT_RATIO, ratio
    assert float(ratio[at:].min()) > 100, ratio  # measured about 200


# ------------------------------------------------------------------ stability
def test_stability_matrices_are_symmetric_with_unit_diagonal():
    torch.manual_seed(0)
    s = stats_from(torch.randn(3, 4, 2, 16, 12) + torch.linspace(0, 1, 12), steps=[0, 2, 4, 6])
    for over, n, kw in (("steps", 4, {"layer": 1}), ("images", 3, {"layer": "block.0"}), ("layers", 2, {}),
                        ("steps", 4, {"layer": 0, "image": 2, "stat": "mean_abs"}),
                        ("images", 3, {"layer": 0, "step": 4})):
        m = A.stability(s, 3, over=over, **kw)
        assert m.shape == (n, n)
        assert torch.equal(m, m.T) and torch.equal(m.diagonal(), torch.ones(n))
        assert ((m >= 0) & (m <= 1)).all()
    # constructed: steps with disjoint top-2 read 0 between them
    t = torch.zeros(1, 2, 1, 4)
    t[0, 0, 0, :2] = 1
    t[0, 1, 0, 2:] = 1
    assert A.stability(stats_of_scores(t), 2, over="steps", layer=0).tolist() == [[1, 0], [0, 1]]


def test_magnitude_trace_and_variance_split():
    torch.manual_seed(0)
    s = stats_from(torch.randn(3, 4, 2, 16, 12))
    tr = A.magnitude_trace(s, [1, 4], layer="block.1", stat="mean_abs")
    assert tr.shape == (3, 4)
    assert torch.allclose(tr, s.values["mean_abs"][:, :, 1, 0][..., [1, 4]].mean(-1))
    split = A.variance_split(s, [1, 4], layer=1)
    assert set(split) == {"step", "image", "residual"}
    assert sum(split.values()) == pytest.approx(1.0) and all(v >= 0 for v in split.values())

    step_only = torch.arange(4.0)[None, :, None, None].expand(3, 4, 1, 6)  # magnitude = step
    assert A.variance_split(stats_of_scores(step_only), [0, 1], layer=0) == pytest.approx(
        {"step": 1.0, "image": 0.0, "residual": 0.0})
    image_only = torch.arange(3.0)[:, None, None, None].expand(3, 4, 1, 6)
    assert A.variance_split(stats_of_scores(image_only), [0], layer=0) == pytest.approx(
        {"step": 0.0, "image": 1.0, "residual": 0.0})
    additive = step_only + 2 * image_only  # no interaction
    split = A.variance_split(stats_of_scores(additive), [0], layer=0)
    assert split["residual"] == pytest.approx(0.0, abs=1e-12)
    # shares: P * sum_s (s - 1.5)^2 = 3 * 5 = 15 ; S * sum_i (2i - 2)^2 = 4 * 8 = 32
    assert split["step"] == pytest.approx(15 / 47) and split["image"] == pytest.approx(32 / 47)
    flat = A.variance_split(stats_of_scores(torch.ones(2, 3, 1, 4)), [0], layer=0)
    assert all(math.isnan(v) for v in flat.values())


# ------------------------------------------------------------ bias vs content
def test_bias_content_split():
    const = torch.tensor([1.0, -3.0, 0.5])[None, None, :].expand(2, 10, 3)
    out = A.bias_content(const)
    assert torch.allclose(out["bias_share"], torch.ones(3)) and torch.allclose(out["content_share"], torch.zeros(3))
    torch.manual_seed(0)
    noise = torch.randn(2, 4096, 3)
    noise -= noise.mean(dim=1, keepdim=True)  # exactly zero mean per channel
    assert float(A.bias_content(noise)["bias_share"].max()) < 1e-6
    assert float(A.bias_content(torch.randn(2, 4096, 3))["bias_share"].max()) < 0.01  # about 1/N
    half = torch.ones(1, 8, 2)
    half[0, ::2, 0] = -1  # channel 0: +-1 around 0
    half[0, :, 0] += 1  # now 0 / 2: mean 1, energy 8 * 2 -> bias share 1/2
    half[0, :, 1] = 0  # channel 1: all zero -> NaN
    out = A.bias_content(half)
    assert out["bias_share"][0] == pytest.approx(0.5) and math.isnan(out["bias_share"][1])


def test_bias_content_on_a_captured_raw_slice(tiny_model):
    m = tiny_model("flux")
    run = m.run("a cat", num_steps=2, size=SIZE, progress=False, capture=mv.Capture(raw=[mv.Raw("double.1", 1)]))
    out = A.bias_content(run.raw["double.1/step1/image"])
    total = out["bias_share"] + out["content_share"]
    assert out["bias_share"].shape == (m.width,) and torch.allclose(total, torch.ones(m.width))


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_bottom_k_never_intersects_top_k_on_real_captures(family, tiny_model):
    run = tiny_model(family).run(["a cat", "a dog"], num_steps=2, size=SIZE, progress=False)
    for layer in run.stats.layers:
        for k in (1, 4, 16):
            top = set(A.select(run.stats, "top", k, layer=layer))
            assert top.isdisjoint(A.select(run.stats, "bottom", k, layer=layer))
            assert top.isdisjoint(A.select(run.stats, "random", k, layer=layer, seed=3))
