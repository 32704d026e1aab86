"""Python side of the notebook views (massact_viz.widgets): state shapes, trait changes, selection
linking, static fallbacks, export, escaping and bad input. The browser side is tests/browser/."""
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

import massact_viz as mv
from massact_viz import plots
from massact_viz.errors import MassActError
from massact_viz.widgets import (ChannelExplorer, DisruptionGrid, ProjectionView, TokenClusterMap, TransportTimeline,
                                 payload_bytes)
from massact_viz.widgets.base import log_dequantize, log_quantize

EVIL = "<script>alert(1)</script>"
SIZE = (32, 32)  # tiny FLUX: 16 x 16 image tokens, 32 channels
RAW = [("double.1", 0), ("double.1", 1), ("single.3", 1)]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def flux(tiny_model):
    return tiny_model("flux")


@pytest.fixture(scope="module")
def run(flux):
    cap = mv.Capture(raw=[mv.Raw(layer, step) for layer, step in RAW] + [mv.Raw("single.0", 1, channels=[3, 5])])
    return flux.run(f"a red fox {EVIL}", num_steps=2, size=SIZE, capture=cap, progress=False)


@pytest.fixture(scope="module")
def cmap(run):
    return TokenClusterMap(run, ks=(1, 4), k_clusters_choices=(2, 3), sets=("top", "bottom", "random"))


def _png_ok(b64: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return im.size


def _static_checks(view, tmp_path, name):
    bundle = view._repr_mimebundle_()
    assert WIDGET_MIME in bundle and "image/png" in bundle and "text/html" in bundle
    w, h = _png_ok(bundle["image/png"])
    assert w > 50 and h > 50
    assert EVIL not in bundle["text/html"] and "<script" not in bundle["text/html"]
    for suffix in (".png", ".html", ".svg"):
        p = view.save(tmp_path / f"{name}{suffix}")
        assert p.stat().st_size > 200
    with Image.open(tmp_path / f"{name}.png") as im:
        assert im.size[0] > 50
    page = (tmp_path / f"{name}.html").read_text()
    assert "data:image/png;base64," in page and EVIL not in page and "<script" not in page
    assert (tmp_path / f"{name}.svg").read_text().startswith("<svg")
    with pytest.raises(MassActError, match="png"):
        view.save(tmp_path / f"{name}.docx")
    assert view.payload_bytes == payload_bytes(view) > 0


# ---------------------------------------------------------------- encodings
def test_log_quantize_round_trip_and_missing():
    v = np.array([[1e-3, 1.0, 1e3, 0.0, np.nan]])
    q, lo, hi = log_quantize(v)
    assert q.dtype == np.uint8 and q[0, 3] == 0 and q[0, 4] == 0 and q[0, 0] == 1 and q[0, 2] == 255
    back = log_dequantize(q, lo, hi)
    assert np.allclose(back[0, :3], v[0, :3], rtol=0.03) and np.isnan(back[0, 3:]).all()


# ---------------------------------------------------------------- 1. channel explorer
def test_channel_explorer_state_slider_and_spatial_map(run, tmp_path):
    st = run.stats
    v = ChannelExplorer(run, k=3)
    L, D, S = len(st.layers), st.width, len(st.steps)
    assert v.layers == st.layers and v.steps == st.steps and v.width == D
    assert len(v.cube) == (S + 1) * L * D  # uint8: mean over steps + each step
    assert len(v.order) == (S + 1) * L * v.k_sent * 4 and v.k_sent == min(D, 16)
    assert v.step is None and v.layer in st.layers and v.channel == -1 and v.spatial == b""
    # the decoded cube is the statistic, within the quantisation step
    q = np.frombuffer(v.cube, np.uint8).reshape(S + 1, L, D)
    want = st.get("abs_mean", step=st.steps[1]).numpy()
    assert np.allclose(log_dequantize(q[2], v.lo, v.hi), want, rtol=0.05)
    # top-k marks follow the step and k
    top_mean = v.top_k()
    assert top_mean["double.1"] == st.top_k(3, layer="double.1")[0]
    v.step = st.steps[0]
    assert v.top_k()["double.1"] == st.top_k(3, layer="double.1", step=st.steps[0])[0]
    v.k = 5
    assert len(v.top_k()["single.3"]) == 5
    # clicking a channel with a raw slice at (layer, step): spatial map over the 16 x 16 tokens
    v.layer, v.step, v.channel = "double.1", 1, 7
    m = v.spatial_map()
    assert m.shape == (16, 16) and v.spatial_step == 1 and v.spatial_note == ""
    assert np.allclose(m.ravel(), run.raw["double.1/step1/image"][0, :, 7].numpy())
    assert len(v.curve()) == L and np.isclose(v.curve()[L - 1], st.get("abs_mean", step=1)[L - 1, 7])
    # mean over steps: the last raw step is used
    v.step = None
    assert v.spatial_step == 1 and v.spatial_note == ""
    # a step without a raw slice of the layer: the nearest raw step's map, and the note says which
    v.layer, v.step = "single.3", 0
    assert v.spatial_step == 1 and v.spatial_map() is not None
    assert "step 0" in v.spatial_note and "nearest raw step, 1" in v.spatial_note
    v.layer = "double.1"
    assert v.spatial_step == 0 and v.spatial_note == ""
    # a layer without raw slices: no map, and the note says what to capture
    v.layer = "double.0"
    assert v.spatial_map() is None and "mv.Raw('double.0'" in v.spatial_note
    # a channel-restricted raw slice: the map when the channel is in it, advice otherwise
    v.layer, v.step, v.channel = "single.0", 1, 5
    assert np.allclose(v.spatial_map().ravel(), run.raw["single.0/step1/image"][0, :, 1].numpy())
    v.channel = 6
    assert v.spatial_map() is None and "not among" in v.spatial_note
    # another statistic: a new cube
    old = v.cube
    v.stat = "max_abs"
    assert v.cube != old and len(v.cube) == len(old)


def test_channel_explorer_static_and_escaping(run, tmp_path):
    v = ChannelExplorer(run, k=2)
    assert EVIL in v.title  # the raw prompt travels as data (JS puts it in textContent) ...
    _static_checks(v, tmp_path, "explorer")  # ... and is escaped in every static form
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (tmp_path / "explorer.html").read_text()


def test_channel_explorer_static_picture_has_its_colour_bar(run):
    from massact_viz.widgets.base import VIRIDIS
    v = ChannelExplorer(run, k=2)
    im = np.asarray(v.static_image().convert("RGB")).astype(int)
    heat_bottom = 18 + len(v.layers) * max(6, min(18, 480 // len(v.layers)))
    below = im[heat_bottom + 20:]          # under the heatmap and its axis label
    # a row running through the gradient: its first and last colours are Viridis' two ends
    rows = [r for r in below if (np.abs(r - VIRIDIS[0]).sum(1) < 6).any() and (np.abs(r - VIRIDIS[255]).sum(1) < 6).any()]
    assert rows, "no colour bar under the static heatmap"
    lo_x = np.where(np.abs(rows[0] - VIRIDIS[0]).sum(1) < 6)[0].min()
    hi_x = np.where(np.abs(rows[0] - VIRIDIS[255]).sum(1) < 6)[0].max()
    assert hi_x - lo_x > 50                # low values on the left, high on the right


def test_channel_explorer_bad_input(run, flux):
    with pytest.raises(MassActError, match="statistic"):
        ChannelExplorer(run, stat="nope")
    with pytest.raises(MassActError, match="between 1 and"):
        ChannelExplorer(run, k=0)
    with pytest.raises(MassActError, match="stream"):
        ChannelExplorer(run, stream="audio")
    bare = flux.run("a cat", num_steps=2, size=SIZE, capture=mv.Capture.nothing(), progress=False)
    with pytest.raises(MassActError, match="Capture"):
        ChannelExplorer(bare)
    v = ChannelExplorer(run)
    with pytest.raises(MassActError, match="unknown layer"):
        v.layer = "double.9"
    with pytest.raises(MassActError, match="not captured"):
        v.step = 7
    with pytest.raises(MassActError, match="channel"):
        v.channel = 32
    with pytest.raises(MassActError, match="between 1 and"):
        v.k = 33


def test_channel_explorer_flux_scale_payload():
    """57 layers x 3072 channels x 28 steps: the cube is uint8, 29 x 57 x 3072 bytes (~5.1 MB)."""
    P, S, L, D = 1, 28, 57, 3072
    g = torch.Generator().manual_seed(0)
    vals = {s: torch.rand(P, S, L, 1, D, generator=g) + 0.01 for s in mv.STATISTICS}
    st = mv.ChannelStats(vals, torch.ones(P, S, L, 1), [f"block.{i}" for i in range(L)], list(range(S)), ["image"],
                         ["synthetic"])
    v = ChannelExplorer(st, k=4)
    assert len(v.cube) == (S + 1) * L * D == 5_078_016
    assert v.payload_bytes < 5_300_000  # float16 would be 2x the cube (10.2 MB)
    assert v.spatial_map() is None


# ---------------------------------------------------------------- 2. token cluster map
def test_cluster_map_state_and_precomputed_table(cmap, run):
    import json
    n = 16 * 16
    assert cmap.precomputed and cmap.grid == [16, 16] and cmap.layers == ["double.1", "single.3"]
    assert cmap.steps == [0, 1] and cmap.ks == [1, 4] and cmap.k_clusters_choices == [2, 3]
    assert len(cmap.labels) == n and len(cmap.values) == n * cmap.k * 4 and cmap.image_png
    table = json.loads(cmap.table)
    n_cfg = 3 * 3 * 2 * 2  # (layer, step) pairs x sets x ks x k_clusters_choices
    assert len(table["configs"]) == n_cfg and len(cmap.table_labels) == n_cfg * n
    # every precomputed entry is what the library's own clustering gives
    from massact_viz.analysis import select
    from massact_viz.probes.localization import cluster_tokens
    x = run.raw["single.3/step1/image"][0]
    ch = select(run.stats, "top", 4, layer="single.3", step=1, image=0)
    want = cluster_tokens(x, (16, 16), channels=ch, k_clusters=3).labels.ravel()
    entry = table["configs"]["single.3|1|top|4|3"]
    got = np.frombuffer(cmap.table_labels, np.uint8)[entry["i"] * n:(entry["i"] + 1) * n].astype(int) - 1
    assert entry["channels"] == ch and (got == want).all()


def test_cluster_map_slider_changes_update_state(cmap):
    before = (cmap.labels, cmap.channels)
    cmap.channel_set = "bottom"
    assert cmap.channels != before[1]
    cmap.k = 1
    assert len(cmap.channels) == 1 and len(cmap.values) == 256 * 4
    cmap.k_clusters = 3
    assert set(np.frombuffer(cmap.labels, np.uint8)) <= {1, 2, 3}
    cmap.layer, cmap.step = "double.1", 0
    info = cmap.token_info(17)
    assert (info["row"], info["col"]) == (1, 1) and list(info["values"]) == cmap.channels
    cmap.opacity = 0.2
    # a sparse grid (single.3 was captured at step 1 only): a layer change snaps the step, a step change the layer
    cmap.layer = "single.3"
    assert (cmap.layer, cmap.step) == ("single.3", 1)
    cmap.step = 0
    assert (cmap.layer, cmap.step) == ("double.1", 0)
    cmap.channel_set, cmap.k, cmap.k_clusters, cmap.layer, cmap.step = "top", 4, 2, "single.3", 1


def test_cluster_map_on_change_mode_and_iou(run):
    mask = np.zeros((32, 32), bool)
    mask[:16] = True
    m = TokenClusterMap(run, ks=(2,), k_clusters_choices=(2,), sets=("top",), mask=mask, precompute=False)
    assert not m.precomputed and m.table == "" and m.table_labels == b""
    assert m.has_mask and 0.0 <= m.iou <= 1.0
    fg = m.current["labels"].reshape(16, 16) == m.fg_cluster
    from massact_viz.probes.localization import iou, upsample
    assert np.isclose(m.iou, iou(upsample(fg, 2), mask))
    old = m.labels
    m.layer = "double.1"
    assert m.labels != old or m.channels  # recomputed in Python on change


def test_cluster_map_from_activations_dict():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype(np.float32)
    x[:20, 3] += 50  # a planted channel over a block of tokens
    m = TokenClusterMap({"block.2/step0/image": x}, ks=(1,), k_clusters_choices=(2,), sets=("top",))
    assert m.grid == [8, 8] and m.channels == [3] and m.image_png == ""
    fg = m.current["labels"] == m.fg_cluster
    assert fg[:20].all() and not fg[20:].any()


def test_cluster_map_static_and_bad_input(cmap, run, flux, tmp_path):
    cmap.selected = [0, 1, 2]
    _static_checks(cmap, tmp_path, "clusters")
    cmap.selected = []
    with pytest.raises(MassActError, match="grid"):
        cmap.k = 3
    with pytest.raises(MassActError, match="grid"):
        cmap.k_clusters = 9
    with pytest.raises(MassActError, match="layer"):
        cmap.layer = "double.0"
    with pytest.raises(MassActError, match="step"):
        cmap.step = 5
    with pytest.raises(MassActError, match="channel_set"):
        cmap.channel_set = "middle"
    with pytest.raises(MassActError, match="0..255"):
        cmap.selected = [256]
    with pytest.raises(MassActError, match="opacity"):
        cmap.opacity = 2.0
    with pytest.raises(MassActError, match="k_clusters_choices"):
        TokenClusterMap(run, k_clusters_choices=(1,))
    with pytest.raises(MassActError, match="no usable k"):
        TokenClusterMap(run, ks=(100,))
    with pytest.raises(MassActError, match="mask"):
        TokenClusterMap(run, ks=(1,), k_clusters_choices=(2,), mask=np.zeros((5, 7), bool))
    bare = flux.run("a cat", num_steps=2, size=SIZE, progress=False)
    with pytest.raises(MassActError, match="mv.Raw"):
        TokenClusterMap(bare)


# ---------------------------------------------------------------- 3. projection, linked
def test_projection_linked_both_ways(cmap, tmp_path):
    p = ProjectionView(cmap, method="pca")
    n = 256
    assert len(p.coords) == n * 2 * 4 and len(p.labels) == n
    assert np.array_equal(np.frombuffer(p.labels, np.uint8).astype(int) - 1, cmap.current["labels"])
    p.selected = [3, 1, 2]  # points selected in the scatter -> tokens on the map
    assert cmap.selected == [1, 2, 3]
    cmap.selected = [10, 11]  # tokens on the map -> points in the scatter
    assert p.selected == [10, 11]
    assert p.point(10)["token"] == 10 and p.point(10)["row"] == 0 and p.point(10)["col"] == 10
    old = p.coords
    cmap.channel_set = "bottom"  # a new configuration reprojects
    assert p.coords != old and "bottom" in p.subtitle
    cmap.channel_set = "top"
    _static_checks(p, tmp_path, "projection")
    with pytest.raises(MassActError, match="0..255"):
        p.selected = [999]
    with pytest.raises(MassActError, match="method"):
        ProjectionView(cmap, method="tsne")
    with pytest.raises(MassActError, match="TokenClusterMap"):
        ProjectionView(object())
    cmap.selected = []


# ---------------------------------------------------------------- 4. transport timeline
def _transport_result(run, previews=True):
    from massact_viz.probes import TransportResult
    im = run.images[0]
    rows = ("source", "target", "transported", "random-k") if previews else ()
    g = torch.Generator().manual_seed(1)
    prev = {n: torch.randint(0, 256, (3, 16, 16, 3), generator=g, dtype=torch.uint8) for n in rows}
    controls = {"random-k": [im]} if previews else {}
    metrics = {"transported": {"mse": 0.01, "clip_t": 0.3}, "random-k": {"mse": 0.02, "clip_t": 0.25}} if previews else {}
    return TransportResult([im], [im], [im], {"double.0": [1, 2]},
                           {"source": EVIL, "target": "a grey wolf", "k": 4, "layers": "double"}, prev, controls, metrics)


def test_transport_timeline_full_and_scrubber(run, tmp_path):
    res = _transport_result(run)
    v = TransportTimeline(res)
    assert [r["name"] for r in v.rows] == ["source", "target", "transported", "random-k"]
    assert all(len(r["thumbs"]) == 3 and len(r["frames"]) == 3 for r in v.rows)
    assert v.preview_steps == [0, 1, 2] and v.step == 2
    assert [f["name"] for f in v.finals] == ["source", "target", "transported", "random-k"]
    assert v.metrics["random-k"]["mse"] == 0.02
    assert ["source", EVIL] in v.settings
    # the thumbnails are the previews
    with Image.open(io.BytesIO(base64.b64decode(v.rows[1]["thumbs"][0]))) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), res.previews["target"][0].numpy())
    v.step = 0
    assert v.step == 0
    with pytest.raises(MassActError, match="step must be"):
        v.step = 3
    _static_checks(v, tmp_path, "timeline")
    html = (tmp_path / "timeline.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "clip_t" in html


def test_transport_timeline_without_previews(run, tmp_path):
    v = TransportTimeline(_transport_result(run, previews=False))
    assert v.rows == [] and v.step == -1 and len(v.finals) == 3 and v.metrics == {}
    with pytest.raises(MassActError, match="previews"):
        v.step = 0
    _static_checks(v, tmp_path, "timeline_bare")


def test_transport_timeline_bad_input(run):
    res = _transport_result(run)
    res.previews["target"] = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(MassActError, match="step counts"):
        TransportTimeline(res)
    res.previews["target"] = torch.zeros(3, 16, 16, dtype=torch.float32)
    with pytest.raises(MassActError, match="uint8"):
        TransportTimeline(res)
    with pytest.raises(MassActError, match="TransportResult"):
        TransportTimeline(run)


# ---------------------------------------------------------------- 5. disruption grid
def test_disruption_grid(flux, tmp_path):
    from massact_viz.probes import disrupt
    res = disrupt(flux, [f"a cat {EVIL}", "a dog"], ks=(1, 2), num_steps=2, size=SIZE, random_draws=1, progress=False,
                  layers="double")
    v = DisruptionGrid(res)
    assert v.sets == ["top", "bottom", "random"] and v.ks == [1, 2] and len(v.baseline) == 2
    assert len(v.cells) == 6 and all(len(c["png"]) == 2 for c in v.cells)
    summary = {(r["set"], r["k"]): r for r in res.summary()}
    assert v.cell("top", 2)["metrics"]["mse"] == pytest.approx(summary[("top", 2)]["mse"])
    assert [m for m, _ in v.metric_names] == res.metrics
    png0 = v._repr_mimebundle_()["image/png"]
    v.image = 1
    assert v._repr_mimebundle_()["image/png"] != png0
    v.image = 0
    _static_checks(v, tmp_path, "disruption")
    with pytest.raises(MassActError, match="image"):
        v.image = 2
    with pytest.raises(MassActError, match="layer set"):
        v.layer_set = "early"
    with pytest.raises(MassActError, match="DisruptionResult"):
        DisruptionGrid(object())


def test_es_modules_ship_with_the_package_and_use_no_network_or_innerhtml():
    from pathlib import Path

    import massact_viz.widgets as w
    js = Path(w.__file__).with_name("js")
    for name in ("common", "channel_explorer", "token_cluster_map", "projection_view", "transport_timeline",
                 "disruption_grid"):
        src = (js / f"{name}.js").read_text()
        assert "innerHTML" not in src and "http://" not in src.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in src and "import " not in src.split("export default")[0]
        if name != "common":
            from massact_viz.palette import js_constants
            assert "export default" in w.base.esm(name) and w.base.esm(name).startswith(
                js_constants() + (js / "common.js").read_text())


def test_one_palette_for_figures_widgets_and_javascript(cmap):
    import json
    import re
    from pathlib import Path

    from massact_viz import palette
    from massact_viz.probes.localization import project
    from massact_viz.widgets.base import esm
    js = esm("projection_view")
    assert json.loads(re.search(r"const MV_PALETTE = (\[.*?\]\]);", js).group(1)) == [list(c) for c in palette.PALETTE_RGB]
    js_dir = Path(palette.__file__).parent / "widgets" / "js"
    assert not any("MV_PALETTE = " in f.read_text() for f in js_dir.glob("*.js"))   # defined in Python only
    assert plots.PALETTE is palette.PALETTE
    cur = cmap.current
    pr = project(cmap._acts[(cmap.layer, cmap.step)], tuple(cmap.grid), method="pca", channels=cur["channels"],
                 labels=cur["labels"])
    fig = plots.projection_scatter(pr, legend=["cluster 0: foreground", "cluster 1: background"])
    by_name = {t.name: t.marker.color for t in fig.data}
    assert by_name["cluster 0: foreground"] == palette.PALETTE[0] and fig.layout.xaxis.title.text.startswith("PC 1")


def test_projection_view_has_axes_and_a_cluster_legend(cmap):
    p = ProjectionView(cmap, method="pca")
    fg = cmap.current["foreground"]
    assert len(p.legend) == cmap.k_clusters and (fg < 0 or p.legend[fg].endswith("foreground"))
    assert "mv-axis-x" in p._esm and "mv-legend" in p._esm
    im = p.static_image()
    assert im.size[1] > im.size[0]   # the legend rows sit under the square plot
