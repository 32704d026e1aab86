"""Plotly figures, export (.html/.json/.png/.svg/.pdf) and the notebook bundle."""
import base64
import json
import math
import re

import numpy as np
import pytest
import torch

import massact_viz as mv
from massact_viz import plots
from massact_viz.errors import MassActError

SIZE = (32, 32)
EVIL = "a <script>alert(1)</script> & dog"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _browser():
    try:
        return plots.saving._find_browser()
    except MassActError:
        return None


#: Static export needs a local Chromium (`make` installs it as root); without one these skip, saying so.
needs_browser = pytest.mark.skipif(_browser() is None, reason="no Chromium for kaleido: apt-get install -y chromium")


@pytest.fixture(scope="module")
def run(tiny_model):
    return tiny_model("flux").run(["a red cat", EVIL], num_steps=2, size=SIZE, progress=False,
                                  capture=mv.Capture(raw=[mv.Raw("double.0", 1)]))


@pytest.fixture(scope="module")
def heat(run):
    return plots.channel_heatmap(run.stats, stat="abs_mean", stream="image")


def _strings(fig):
    """Every text a figure shows: trace names, hover text, legend group titles, title, axis titles."""
    out = [fig.layout.title.text or ""]
    for t in fig.data:
        out.append(t.name or "")
        for attr in ("hovertext", "text"):
            v = getattr(t, attr, None)
            if v is not None:
                out.extend([v] if isinstance(v, str) else list(v))
        if getattr(t, "legendgrouptitle", None) is not None and t.legendgrouptitle.text:
            out.append(t.legendgrouptitle.text)
    return [s for s in out if s]


# ---------------------------------------------------------------- channel heatmap
def test_channel_heatmap_structure_log_values_and_top_marks(run, heat):
    st = run.stats
    n_opt = len(st.steps) + 1  # mean over steps + one per step
    assert len(heat.data) == 2 * n_opt
    assert [t.type for t in heat.data] == ["heatmap", "scatter"] * n_opt
    assert len(heat.layout.sliders) == 1 and len(heat.layout.sliders[0].steps) == n_opt
    assert [s.label for s in heat.layout.sliders[0].steps] == ["mean over steps", "step 0", "step 1"]
    assert [t.visible for t in heat.data] == [True, True] + [False] * (2 * n_opt - 2)
    assert heat.layout.sliders[0].steps[2].args[0]["visible"] == [False, False, False, False, True, True]
    assert heat.layout.xaxis.title.text == "channel" and heat.layout.yaxis.title.text == "layer"
    assert list(heat.layout.yaxis.categoryarray) == st.layers
    for i, step in enumerate([None] + st.steps):
        hm, marks = heat.data[2 * i], heat.data[2 * i + 1]
        assert list(hm.y) == st.layers and list(hm.x) == list(range(st.width))
        want = st.get("abs_mean", step=step, stream="image")
        np.testing.assert_allclose(np.asarray(hm.z, dtype=np.float64), np.log10(want.double().numpy()), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(hm.customdata, dtype=np.float64), want.numpy(), rtol=1e-6)
        assert "layer %{y}" in hm.hovertemplate and "channel %{x}" in hm.hovertemplate
        got = {}
        for x, y in zip(marks.x, marks.y):
            got.setdefault(y, []).append(x)
        for layer in st.layers:
            assert got[layer] == st.top_k(3, layer=layer, step=step, stream="image")[0], (step, layer)
    # one colour range across the slider, spanning every frame
    zs = np.concatenate([np.asarray(heat.data[2 * i].z, dtype=np.float64).ravel() for i in range(n_opt)])
    assert heat.layout.coloraxis.cmin == pytest.approx(np.nanmin(zs), rel=1e-5)
    assert heat.layout.coloraxis.cmax == pytest.approx(np.nanmax(zs), rel=1e-5)


def test_channel_heatmap_zero_nan_image_and_text_stream(run):
    st = run.stats
    vals = {k: v.clone() for k, v in st.values.items()}
    vals["abs_mean"][:, :, 0, 0, 5] = 0.0  # a zero channel at layer 0 in every image/step
    zst = mv.ChannelStats(vals, st.median_abs, st.layers, st.steps, st.streams, st.prompts)
    fig = plots.channel_heatmap(zst, image=1, k=2)
    z = np.asarray(fig.data[0].z, dtype=np.float64)
    assert math.isnan(z[0, 5]) and np.isfinite(np.delete(z[0], 5)).all()  # log of 0 -> empty cell
    np.testing.assert_allclose(z[1], np.log10(zst.get(layer=1, image=1).double().numpy()), rtol=1e-5)
    assert len(fig.data[1].x) == 2 * len(st.layers)
    assert "&lt;script&gt;" in fig.layout.title.text and "<script>" not in fig.layout.title.text
    txt = plots.channel_heatmap(st, stream="text", steps=[1])
    assert len(txt.data) == 4 and np.isfinite(np.asarray(txt.data[0].z, dtype=np.float64)).all()
    with pytest.raises(MassActError, match="unknown statistic"):
        plots.channel_heatmap(st, stat="nope")
    with pytest.raises(MassActError, match="not captured"):
        plots.channel_heatmap(st, steps=[7])


# ---------------------------------------------------------------- layer curves
def test_layer_curves_sun_convention(run):
    st = run.stats
    fig = plots.layer_curves(run)  # a Run works too
    assert [t.name for t in fig.data] == ["top-1", "top-2", "top-3", "median"]
    assert [t.marker.symbol for t in fig.data] == ["circle"] * 3 + ["triangle-down"]
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.title.text == "layer"
    assert all(list(t.x) == st.layers for t in fig.data)
    mx = st.values["max_abs"][:, :, :, 0].double()  # (P, S, L, D)
    tops = mx.sort(dim=-1, descending=True).values[..., :3].mean(dim=(0, 1))  # (L, 3)
    for r in range(3):
        np.testing.assert_allclose(np.asarray(fig.data[r].y), tops[:, r].numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(fig.data[3].y), st.median_abs[:, :, :, 0].double().mean(dim=(0, 1)).numpy(),
                               rtol=1e-6)
    y = np.asarray([t.y for t in fig.data])
    assert (y[0] >= y[1]).all() and (y[1] >= y[2]).all() and (y[2] > y[3]).all()
    one = plots.layer_curves(st, image=0, step=1)
    np.testing.assert_allclose(np.asarray(one.data[0].y), st.values["max_abs"][0, 1, :, 0].amax(-1).numpy(), rtol=1e-6)
    assert "top-k here are the k largest per-channel maxima" in " ".join(plots.layer_curves.__doc__.split())


# ---------------------------------------------------------------- activation surface
def test_activation_surface_from_raw_slice(run):
    x = run.raw["double.0/step1/image"][1:2]  # (1, tokens, channels)
    fig = plots.activation_surface(x, title="double.0, step 1")
    assert [t.type for t in fig.data] == ["surface", "scatter3d"]
    z = np.asarray(fig.data[0].z)
    assert z.shape == (x.shape[2], x.shape[1])  # channels x tokens
    np.testing.assert_allclose(z, x[0].abs().T.numpy(), rtol=1e-6)
    assert fig.layout.scene.xaxis.title.text == "token" and fig.layout.scene.yaxis.title.text == "channel"
    peak = x[0].abs().amax(0)
    assert list(fig.data[1].y) == torch.topk(peak, 2).indices.tolist()
    # pooling keeps the peak; channel labels of a subset slice
    big = torch.zeros(400, 32)
    big[123, 7] = -50.0
    pooled = plots.activation_surface(big, max_cells=1000, channels=list(range(100, 132)), label_top=1)
    pz = np.asarray(pooled.data[0].z)
    assert pz.size <= 1000 and pz.max() == 50.0 and "groups" in pooled.layout.scene.xaxis.title.text
    assert list(pooled.data[1].y) == [107]
    with pytest.raises(MassActError, match="one slice"):
        plots.activation_surface(run.raw["double.0/step1/image"])  # two images


# ---------------------------------------------------------------- magnitude vs step
def test_magnitude_vs_step_lines_and_escaping(run):
    st = run.stats
    chans, _ = st.top_k(2, layer="single.1")
    fig = plots.magnitude_vs_step(st, chans, layer="single.1")
    assert len(fig.data) == len(chans) * len(st.prompts)
    assert fig.layout.xaxis.title.text == "denoising step" and fig.layout.yaxis.title.text == "abs_mean"
    li = st.layers.index("single.1")
    for i, t in enumerate(fig.data):
        c, p = chans[i // 2], i % 2
        assert list(t.x) == st.steps and t.legendgroup == f"ch{c}"
        np.testing.assert_allclose(np.asarray(t.y), st.values["abs_mean"][p, :, li, 0, c].numpy(), rtol=1e-6)
    texts = _strings(fig)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt; &amp; dog" in s for s in texts)
    assert not any("<script>" in s for s in texts)
    assert "<script>alert(1)" not in fig.to_html(include_plotlyjs=False)
    with pytest.raises(MassActError, match="channel"):
        plots.magnitude_vs_step(st, [st.width], layer=0)


# ---------------------------------------------------------------- stability matrix
def test_stability_matrix():
    m = torch.tensor([[1.0, 0.5, float("nan")], [0.5, 1.0, 0.2], [float("nan"), 0.2, 1.0]])
    labels = ["step 0", "step 1", "<b>x</b>"]
    fig = plots.stability_matrix(m, labels, title="top-4 Jaccard across steps")
    (hm,) = fig.data
    assert hm.zmin == 0 and hm.zmax == 1 and hm.texttemplate == "%{z:.2f}"
    np.testing.assert_array_equal(np.asarray(hm.z, dtype=float), m.numpy())
    assert list(hm.x) == list(hm.y) == ["step 0", "step 1", "&lt;b&gt;x&lt;/b&gt;"]
    with pytest.raises(MassActError, match="square"):
        plots.stability_matrix(torch.ones(2, 3), ["a", "b"], title="t")
    with pytest.raises(MassActError, match="labels"):
        plots.stability_matrix(torch.ones(2, 2), ["a"], title="t")


def test_figures_share_the_template(run, heat):
    figs = [heat, plots.layer_curves(run.stats), plots.stability_matrix(np.eye(2), ["a", "b"])]
    for f in figs:
        assert f.layout.template.layout.font.family == plots.FONT["family"]
        assert list(f.layout.template.layout.colorway) == list(plots.PALETTE)


# ---------------------------------------------------------------- export and display
def test_save_html_json_and_bad_suffix(tmp_path, heat):
    p = plots.save_figure(heat, tmp_path / "sub" / "heat.html")
    text = p.read_text()
    # the plotly.js bundle travels inside, packed (gzip + base64: about 2 MB instead of 4.8), and unpacks to
    # exactly the library plotly ships
    import base64
    import gzip

    from plotly.offline import get_plotlyjs
    packed = re.search(r'atob\("([A-Za-z0-9+/=]+)"\)', text).group(1)
    assert gzip.decompress(base64.b64decode(packed)).decode() == get_plotlyjs()
    assert 1_500_000 < len(text) < 2_500_000 and "Plotly.newPlot" in text
    # every script is inline: no CDN, no remote src
    assert re.findall(r"<script[^>]*>", text) and not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r"src=[\"']https?://", text)
    j = plots.save_figure(heat, tmp_path / "heat.json")
    assert len(json.loads(j.read_text())["data"]) == len(heat.data)
    with pytest.raises(MassActError, match=r"\.html.*\.png"):
        plots.save_figure(heat, tmp_path / "heat.gif")
    assert not (tmp_path / "heat.gif").exists()


@needs_browser
def test_static_export_png_svg_pdf(tmp_path, run):
    fig = plots.layer_curves(run.stats)
    png = plots.save_figure(fig, tmp_path / "c.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    svg = plots.save_figure(fig, tmp_path / "c.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "top-1" in svg
    assert plots.save_figure(fig, tmp_path / "c.pdf").read_bytes()[:5] == b"%PDF-"


def test_missing_browser_is_a_clear_error_and_display_degrades(tmp_path, monkeypatch, run):
    fig = plots.layer_curves(run.stats)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    with pytest.raises(MassActError, match=r"apt-get install -y chromium"):
        plots.save_figure(fig, tmp_path / "c.png")
    b = plots.NotebookFigure(fig)._repr_mimebundle_()
    assert set(b) == {plots.MIME_PLOTLY, "text/plain"} and "PNG unavailable" in b["text/plain"]


@needs_browser
def test_show_bundle_has_interactive_and_static(monkeypatch, run):
    fig = plots.layer_curves(run.stats)
    shown = []
    import IPython
    import IPython.display
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", shown.append)
    assert plots.show(fig) is None and len(shown) == 1
    b = shown[0]._repr_mimebundle_()
    assert {plots.MIME_PLOTLY, "image/png", "text/plain"} <= set(b)
    assert base64.b64decode(b["image/png"])[:8] == PNG_MAGIC
    assert len(b[plots.MIME_PLOTLY]["data"]) == 4 and "layout" in b[plots.MIME_PLOTLY]
    json.dumps(b[plots.MIME_PLOTLY])  # JSON-clean


def test_probe_figures(tiny_model, tmp_path):
    import numpy as np
    from massact_viz.probes.disruption import disrupt
    from massact_viz.probes.localization import localize
    m = tiny_model("flux")
    res = disrupt(m, ["a cat"], ks=(1, 2), random_draws=2, num_steps=2, size=(32, 32), progress=False)
    fig = plots.disruption_curves(res, metric="ssim")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["top-k", "bottom-k", "random-k"] and list(lines[0].x) == [1, 2]
    assert "higher is better" in fig.layout.yaxis.title.text and "95 % interval" in fig.layout.title.text
    rnd = [r["ssim"] for r in res.table if r["set"] == "random" and r["k"] == 2]
    assert lines[2].y[1] == pytest.approx(sum(rnd) / len(rnd))
    assert len([t for t in fig.data if t.fill == "toself"]) == 3  # one interval band per set
    with pytest.raises(mv.MassActError, match="not in this result"):
        plots.disruption_curves(res, metric="lpips")
    mask = np.zeros((32, 32), bool)
    mask[:16] = True
    loc = localize(m, ["a cat"], [mask], k=2, num_steps=2, size=(32, 32), progress=False)
    fig = plots.miou_curves(loc)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["top-k", "bottom-k", "random-k", "all channels"]
    assert list(lines[0].x) == loc.layers and list(lines[0].y) == pytest.approx(loc.curves()["top"])
    assert len([t for t in fig.data if t.fill == "toself"]) == 4 and "n=1" in fig.layout.title.text


def test_image_row_and_interpolation_curves():
    from PIL import Image
    from massact_viz.probes.transport import Interpolation
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (16, 8), "blue")
    row = plots.image_row([red, np.zeros((8, 8, 3), np.uint8), blue], ["a", "b", "<c>"], height=32, gap=2)
    assert row.size == (32 + 32 + 64 + 4, 32 + 14)
    px = np.asarray(row)
    assert tuple(px[30, 5]) == (255, 0, 0) and tuple(px[30, 70]) == (0, 0, 255) and tuple(px[30, 40]) == (0, 0, 0)
    with pytest.raises(MassActError, match="labels"):
        plots.image_row([red], ["a", "b"])
    it = Interpolation("k", [1, 4], [red, red], blue, red, {}, [{"toward_source": 0.1, "ssim_target": 0.9},
                                                                {"toward_source": 0.5, "ssim_target": 0.4}])
    fig = plots.interpolation_curves([it])
    assert [t.name for t in fig.data] == ["toward_source", "ssim_target"]
    assert list(fig.data[0].y) == [0.1, 0.5] and list(fig.data[0].x) == ["1", "4"]
    assert it.labels == ["target", "k=1", "k=4", "source"] and it.images == [red, red, red, blue]
    assert plots.image_row(it.images, it.labels, height=16).size[1] == 16 + 14


def test_report_reads_without_the_code(tiny_model):
    import re

    from massact_viz.report import build_report
    m = tiny_model("sd3")   # batched CFG: guidance_scale is the pipeline's own default
    run = m.run("a red cat", num_steps=2, size=(32, 32), progress=False, guidance_scale=5.0)
    html = build_report(run)
    assert "<th>guidance</th><td>the model&#x27;s own (guidance_scale 5.0)</td>" in html
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(image|text)</td>.*?<td>([^<]*)</td></tr>", html)
    assert rows and all(j != "" for _, _, j in rows)   # the Jaccard cell says n/a or a number, never blank
    assert any(st == "text" and j != "n/a" for _, st, j in rows)
    fig = plots.layer_curves(run.stats)
    ax = fig.layout.yaxis   # every label a whole number: no "2 3 .. 9" digits that make 0.3 read as 3
    ys = np.concatenate([np.asarray(t.y, float) for t in fig.data])
    assert ax.type == "log" and (ax.dtick == 1 or list(ax.ticktext) == [f"{t:g}" for t in ax.tickvals])
    if ax.dtick != 1:   # less than two decades: 1-2-5 labels, at least two of them inside the data
        assert sum(np.nanmin(ys) <= t <= np.nanmax(ys) for t in ax.tickvals) >= 2, (list(ax.tickvals), ys)
    assert plots.style._log_ticks([0.001, 10.0]) == {"dtick": 1}
    assert plots.style._log_ticks([0.3, 3.0])["ticktext"] == ["0.2", "0.5", "1", "2", "5"]
    one = plots.magnitude_vs_step(run.stats, [0, 1], layer=0)
    assert [t.name for t in one.data] == ["channel 0", "channel 1"]   # one prompt: no repeated prompt labels
