"""Print styling, multi-panel layout and export of figures (plots.publication / panels / export)."""
import re

import plotly.graph_objects as go
import pytest

from massact_viz import plots
from massact_viz.errors import MassActError
from test_plots import needs_browser  # one skip rule for static export (Chromium for kaleido)

SIZE = (32, 32)


@pytest.fixture(scope="module")
def stats(tiny_model):
    return tiny_model("flux").run(["a red cat", "a blue dog"], num_steps=2, size=SIZE, progress=False).stats


@pytest.fixture(scope="module")
def figs(stats):
    mid = stats.layers[1]
    top = stats.top_k(2, layer=mid)[0]
    return {"heat": plots.channel_heatmap(stats, k=2), "curves": plots.layer_curves(stats),
            "mag": plots.magnitude_vs_step(stats, top, layer=mid),
            "stab": plots.stability_matrix([[1.0, 0.5], [0.5, 1.0]], ["step 0", "step 1"])}


def test_unit_conversions():
    assert plots.mm_to_px(25.4) == pytest.approx(96)
    assert plots.mm_to_px(89) == pytest.approx(336.38, abs=0.01)
    assert plots.pt_to_px(72) == pytest.approx(96) and plots.pt_to_px(7) == pytest.approx(9.333, abs=1e-3)
    assert plots.png_scale(300) == pytest.approx(3.125)
    for bad in (0, -1, "300", True, None):
        with pytest.raises(MassActError, match="dpi"):
            plots.png_scale(bad)


def test_publication_sizes_fonts_and_drops_interactive_parts(figs):
    heat = figs["heat"]
    n_before, json_before = len(heat.data), heat.to_json()
    p = plots.publication(heat, width_mm=89, height_mm=60, font_size=7, font_family="Arial", colorscale="Cividis")
    assert heat.to_json() == json_before and len(heat.data) == n_before  # the input is untouched
    assert p.layout.width == round(89 / 25.4 * 96) and p.layout.height == round(60 / 25.4 * 96)
    assert p.layout.font.size == pytest.approx(7 * 96 / 72) and p.layout.font.family == "Arial"
    assert not p.layout.sliders and not p.layout.updatemenus
    assert len(p.data) == 2 and all(t.visible in (True, None) for t in p.data)  # the visible pair only
    assert p.layout.coloraxis.colorscale[0][1] != heat.layout.coloraxis.colorscale[0][1]  # Cividis, not Viridis
    assert p.layout.coloraxis.colorbar.tickfont.size == pytest.approx(7 * 96 / 72)
    assert not p.layout.title.text  # captions belong to the paper
    assert p.layout.xaxis.tickfont.size == pytest.approx(7 * 96 / 72) and p.layout.xaxis.ticks == "outside"


def test_publication_keeps_aspect_title_on_request_and_thin_lines(figs):
    c = figs["curves"]
    p = plots.publication(c, width_mm=183, title=True, line_width=0.8, marker_size=3)
    assert p.layout.width == round(183 / 25.4 * 96)
    assert p.layout.height == round(183 / 25.4 * 96 * c.layout.height / 700)
    assert p.layout.title.text == c.layout.title.text
    assert all(t.line.width == 0.8 and t.marker.size <= 3 for t in p.data)
    assert p.layout.yaxis.type == "log"
    base = plots.publication(c).layout.margin.t
    assert base == round(0.8 * plots.pt_to_px(7)) < p.layout.margin.t  # a small gap; a title needs more
    marked = go.Figure(c).add_shape(type="line", x0=0, x1=1, y0=1, y1=1.05, xref="x", yref="y domain")
    assert plots.publication(marked).layout.margin.t > base  # room for marks above the plot


@pytest.mark.parametrize("kw,msg", [(dict(width_mm=0), "width_mm"), (dict(font_size=-1), "font_size"),
                                    (dict(height_mm="tall"), "height_mm"), (dict(line_width=float("nan")), "line_width")])
def test_publication_rejects_bad_arguments(figs, kw, msg):
    with pytest.raises(MassActError, match=msg):
        plots.publication(figs["curves"], **kw)
    with pytest.raises(MassActError, match="plotly Figure"):
        plots.publication("not a figure")


def test_channel_colors_are_consistent_and_recolour_traces(figs, stats):
    colors = plots.channel_colors([7, 3])
    assert colors == {7: plots.PALETTE[0], 3: plots.PALETTE[1]}
    with pytest.raises(MassActError, match="distinct"):
        plots.channel_colors([1, 1])
    with pytest.raises(MassActError, match="colours"):
        plots.channel_colors(range(len(plots.PALETTE) + 1))
    mid = stats.layers[1]
    f = plots.magnitude_vs_step(stats, [3, 7], layer=mid)  # default: first channel gets PALETTE[0]
    assert f.data[0].line.color == plots.PALETTE[0]
    plots.color_channels(f, colors)
    by_group = {t.legendgroup: t.line.color for t in f.data}
    assert by_group == {"ch3": plots.PALETTE[1], "ch7": plots.PALETTE[0]}
    g = go.Figure(go.Scatter(x=[0], y=[0], meta={"channel": 3}))
    assert plots.color_channels(g, colors).data[0].marker.color == plots.PALETTE[1]


def test_panels_lays_out_traces_axes_colour_scales_legends_and_letters(figs):
    order = [figs["heat"], figs["curves"], figs["mag"], figs["stab"]]
    p = plots.panels(order, rows=2, cols=2, titles=["heat <b>", "curves", "mag", "stab"])
    visible = sum(1 for f in order for t in f.data if t.visible is not False)
    assert len(p.data) == visible
    assert p.layout.yaxis2.type == "log"  # layer_curves' log axis, on panel b
    assert p.layout.yaxis.autorange == "reversed"  # heatmap rows top to bottom
    assert p.layout.yaxis4.scaleanchor == "x4"  # square cells of the stability matrix, on its own axis
    heat_traces = [t for t in p.data if t.type == "heatmap"]
    assert heat_traces[0].coloraxis == "coloraxis" and p.layout.coloraxis.cmin == figs["heat"].layout.coloraxis.cmin
    bar = p.layout.coloraxis.colorbar
    assert bar.x > p.layout.xaxis.domain[1] and bar.len == pytest.approx(
        p.layout.yaxis.domain[1] - p.layout.yaxis.domain[0])
    letters = [a.text for a in p.layout.annotations if a.name == "panel letter"]
    assert letters == ["<b>a</b>", "<b>b</b>", "<b>c</b>", "<b>d</b>"]
    assert any(a.text == "heat &lt;b&gt;" for a in p.layout.annotations)  # titles escaped
    legends = {t.legend for t in p.data if t.showlegend}
    assert legends == {"legend", "legend2"}  # curves and mag have legends, heat and stab none
    assert p.layout.legend2.x > p.layout.xaxis3.domain[1]
    q = plots.publication(p, width_mm=183, font_size=6)
    sizes = [a.font.size for a in q.layout.annotations if a.name == "panel letter"]
    assert sizes == [pytest.approx(6 * 96 / 72 * 1.3)] * 4
    assert q.layout.margin.t > round(0.8 * plots.pt_to_px(6))  # room for the letters and titles above the top row


def test_panels_defaults_and_errors(figs):
    p = plots.panels([figs["curves"], figs["stab"], figs["mag"]], letters=False)
    assert not [a for a in p.layout.annotations if a.name == "panel letter"]
    assert p.layout.xaxis3.domain[0] > p.layout.xaxis2.domain[0]  # three in one row by default
    with pytest.raises(MassActError, match="fit"):
        plots.panels([figs["curves"]] * 3, rows=1, cols=2)
    with pytest.raises(MassActError, match="titles"):
        plots.panels([figs["curves"]] * 2, titles=["one"])
    with pytest.raises(MassActError, match="letters"):
        plots.panels([figs["curves"]] * 2, letters=["a"])
    with pytest.raises(MassActError, match="non-empty"):
        plots.panels([])
    surface = go.Figure(go.Surface(z=[[0, 1], [1, 0]]))
    with pytest.raises(MassActError, match="3-D"):
        plots.panels([figs["curves"], surface])


def test_panels_move_axis_shapes_to_their_panel(figs):
    f = go.Figure(figs["curves"])
    f.add_shape(type="line", x0=0, x1=1, y0=1, y1=1.05, xref="x", yref="y domain")
    f.add_annotation(text="whole figure", xref="paper", yref="paper", x=0, y=0)
    p = plots.panels([figs["stab"], f], letters=False)
    assert len(p.layout.shapes) == 1 and p.layout.shapes[0].xref == "x2" and p.layout.shapes[0].yref == "y2 domain"
    assert not any(a.text == "whole figure" for a in p.layout.annotations)


def test_export_rejects_bad_names_and_formats(figs, tmp_path):
    with pytest.raises(MassActError, match="stem"):
        plots.export(figs["curves"], tmp_path, "../up")
    with pytest.raises(MassActError, match="format"):
        plots.export(figs["curves"], tmp_path, "f", formats=("tiff",))
    assert [p.name for p in plots.export(figs["curves"], tmp_path, "f", formats=("html", "json"))] == ["f.html", "f.json"]


@needs_browser
def test_export_writes_physical_sizes(figs, tmp_path):
    from PIL import Image
    p = plots.publication(figs["curves"], width_mm=89, height_mm=60)
    pdf, svg, png = plots.export(p, tmp_path / "out", "curves", dpi=300)
    assert [x.name for x in (pdf, svg, png)] == ["curves.pdf", "curves.svg", "curves.png"]
    box = re.search(rb"MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf.read_bytes())
    w_pt, h_pt = float(box.group(1)), float(box.group(2))
    assert w_pt / 72 * 25.4 == pytest.approx(89, abs=0.5) and h_pt / 72 * 25.4 == pytest.approx(60, abs=0.5)
    head = svg.read_text()[:400]
    assert f'width="{p.layout.width}"' in head and f'height="{p.layout.height}"' in head
    im = Image.open(png)
    assert im.size == (round(p.layout.width * 3.125), round(p.layout.height * 3.125))
    assert im.info["dpi"] == pytest.approx((300, 300), abs=0.01)
