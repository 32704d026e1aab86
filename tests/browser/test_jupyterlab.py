"""The notebook views in a real browser: JupyterLab 4 (and Notebook 7) on loopback, headless Debian
chromium driven by Playwright (system browser, nothing downloaded).

tests/browser/widgets_tour.ipynb has one cell per view (tagged ``view:<name>``). The test runs it in
Lab and asserts, per view: its DOM root exists, it drew something non-blank (canvas / image pixels,
SVG marks), moving its slider changes what is drawn (canvas pixels, image sources or SVG, not just a
label), and, for the projection, that a box selection dragged with the mouse reaches the linked
cluster map through the kernel. No JavaScript error may be logged, and markup in a prompt must stay
text. notebooks/00_quickstart.ipynb (the tour of issue 8) is run in Lab too, and the first views of
the widget tour in Notebook 7. Screenshots land in test-artifacts/browser/.

Skipped only where no chromium is installed (``make`` installs Debian's; ``$MASSACT_CHROMIUM``
overrides the path).
"""
import re
import shutil
from pathlib import Path

import pytest

from harness import (HARMLESS_NOTEBOOK7, JS_PANEL, Server, browser_page, chromium_path, fingerprint, move_slider, open_notebook,
                     real_errors, run_all, run_cells, screenshot_notebook, view_root)

pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="no chromium at /usr/bin/chromium ($MASSACT_CHROMIUM): apt-get install chromium")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ARTIFACTS = REPO / "test-artifacts" / "browser"

# view tag -> (the slider the test moves, or None; what must be drawn)
VIEWS = {
    "channel_explorer": ("input.mv-step", "canvas.mv-heatmap"),
    "token_cluster_map": ("input.mv-k-clusters", "canvas.mv-clusters"),
    "projection_view": (None, "svg circle"),
    "transport_timeline": ("input.mv-step", "img.mv-frame"),
    "disruption_grid": ("input.mv-image", "img"),
}


# what each view must label in text (DOM or SVG text): axes, ticks, colour bars, legends, captions
LABELS = {
    "channel_explorer": (".mv-axis-x", ".mv-axis-y", ".mv-colorbar .mv-tick", ".mv-curve-svg .mv-axis-y",
                         ".mv-curve-svg .mv-tick", ".mv-curve-svg .mv-legend-item", ".mv-spatial-caption",
                         ".mv-colorbar-spatial .mv-tick"),
    "token_cluster_map": (".mv-legend-item", ".mv-caption"),
    "projection_view": (".mv-axis-x", ".mv-axis-y", ".mv-legend-item"),
    "transport_timeline": (".mv-timeline th", ".mv-at-step-label", "details.mv-metrics td"),
    "disruption_grid": (".mv-grid th", ".mv-prompt"),
}

# the data-view of each kind of view's root (massact_viz/widgets/js)
TOUR_KINDS = {"channel-explorer", "token-cluster-map", "projection-view", "transport-timeline", "disruption-grid"}


def wait(page, js, arg, failure, timeout=10_000):
    """page.wait_for_function, failing the test with ``failure`` (and the JS errors so far) on timeout."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        page.wait_for_function(js, arg=arg, timeout=timeout, polling=100)
    except PlaywrightTimeout:
        pytest.fail(f"{failure} (after {timeout / 1000:.0f} s; JavaScript errors: {page.js_errors})")


def rendered(page, name, timeout=60_000):
    """The view's root once it has drawn at least once."""
    wait(page, "(name) => { const r = document.querySelector("
               "`[data-tour-view=${name}] .jp-OutputArea-output .massact-view`); return !!r && +r.dataset.draws > 0; }",
         name, f"{name}: the view did not render", timeout)
    v = view_root(page, name)
    wait(page, "(el) => [...el.querySelectorAll('img')].every(i => i.complete)", v.element_handle(),
         f"{name}: its images did not load")
    return v


def check_labels(view, name, selectors):
    """Each selector matches an element with text in ``view``."""
    for sel in selectors:
        texts = view.evaluate("(el, sel) => [...el.querySelectorAll(sel)].map(e => e.textContent.trim())", sel)
        assert any(texts), f"{name}: no labelled {sel} (found {texts})"


JS_SHOWN_TEXT = """(root) => { const c = root.cloneNode(true);
  c.querySelectorAll('.mv-controls, .mv-hover').forEach(e => e.remove()); return c.textContent; }"""


def shown(view):
    """What a view shows: its drawing and its text outside the controls (captions, legends, tables)."""
    return drawn(fingerprint(view)), view.evaluate(JS_SHOWN_TEXT)


def check_sliders(page, view, name):
    """Every visible slider of ``view`` changes what it shows (drawing or captions); a disabled one says
    why beside it. Returns the number of sliders moved."""
    moved = 0
    ranges = view.locator("input[type=range]")
    for i in range(ranges.count()):
        r = ranges.nth(i)
        if not r.is_visible():
            continue
        if r.is_disabled():
            why = r.evaluate("(e) => (e.closest('label').querySelector('.mv-disabled-why') || {}).textContent || ''")
            assert why.strip(), f"{name}: slider {i} is disabled without a reason"
            continue
        page.wait_for_timeout(300)  # images of the last move decode
        before, draws = shown(view), int(view.get_attribute("data-draws"))
        what = move_slider(view, index=i)
        wait(page, "([el, n]) => +el.dataset.draws > n", [view.element_handle(), draws],
             f"{name}: moving {what} did not redraw", timeout=20_000)
        page.wait_for_timeout(400)
        assert shown(view) != before, f"{name}: moving {what} changed nothing the view shows"
        moved += 1
    return moved


def drawn(fp):
    """What a view drew (pixels, image sources, SVG), without its labels."""
    return fp["canvases"], fp["images"], fp["svg"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    d = tmp_path_factory.mktemp("lab-root")
    shutil.copy(HERE / "widgets_tour.ipynb", d / "widgets_tour.ipynb")
    shutil.copy(REPO / "notebooks" / "00_quickstart.ipynb", d / "00_quickstart.ipynb")
    return d


@pytest.fixture(scope="module")
def lab(root):
    with Server(root, "lab", log=ARTIFACTS / "jupyterlab.log") as server:
        yield server


def test_widgets_tour_in_jupyterlab(lab):
    with browser_page(log=ARTIFACTS / "js_errors_widgets_tour.txt") as page:
        open_notebook(page, lab, "widgets_tour.ipynb")
        errors = run_all(page, timeout=300)
        assert errors == [], f"cells raised: {errors}"
        tagged = page.evaluate("[...document.querySelectorAll('[data-tour-view]')].map(e => e.dataset.tourView)")
        assert sorted(tagged) == sorted(VIEWS), f"the tour notebook's view cells are {tagged}"

        before = {}
        for name, (_, mark) in VIEWS.items():
            v = rendered(page, name)
            assert v.locator(mark).count(), f"{name}: no {mark}"
            page.wait_for_timeout(200)  # images decode
            fp = fingerprint(v)
            assert fp["text"].strip(), f"{name}: no text at all"
            if mark.startswith("svg"):
                assert v.locator(mark).count() > 10, f"{name}: no points drawn"
            else:
                assert fp["nonblank"] > 0, f"{name}: every canvas / image is blank (one colour)"
            before[name] = fp
            v.screenshot(path=str(ARTIFACTS / f"{name}.png"))

        # every view labels what it shows
        for name, sels in LABELS.items():
            check_labels(view_root(page, name), name, sels)

        # the cluster views name their colours and the projection its axes
        for name in ("token_cluster_map", "projection_view"):
            items = view_root(page, name).locator(".mv-legend-item")
            assert items.count() >= 2 and "foreground" in " ".join(items.all_inner_texts()), f"{name}: no legend"
        axes = view_root(page, "projection_view").locator(".mv-axis-x, .mv-axis-y").all_inner_texts()
        assert len(axes) == 2 and all("(arbitrary units)" in a for a in axes), f"projection axes: {axes}"

        # the timeline keeps the chosen step in view (16 steps are wider than the column) and explains its metrics
        tt = view_root(page, "transport_timeline")
        for last in (True, False):
            seen = tt.evaluate("""(el, last) => {
                const s = el.querySelector("input.mv-step"); s.value = last ? s.max : s.min;
                s.dispatchEvent(new Event("input"));
                const tl = el.querySelector(".mv-timeline"), th = tl.querySelectorAll("th")[(+s.value) + 1];
                const a = tl.getBoundingClientRect(), b = th.getBoundingClientRect();
                return [tl.scrollWidth > tl.clientWidth, b.left >= a.left - 1 && b.right <= a.right + 1];
            }""", last)
            assert seen[1], f"the selected step column is outside the visible timeline (last={last}, {seen})"
        notes = tt.evaluate("(el) => [...el.querySelectorAll('details.mv-metrics td')].map(td => td.textContent)")
        assert any("structure kept" in n for n in notes), f"the metrics table does not say what they measure: {notes}"

        # user text is text: the prompt's <b id="mv-evil"> shows literally and creates no element
        assert page.locator("#mv-evil").count() == 0
        assert '<b id="mv-evil">' in view_root(page, "channel_explorer").inner_text()

        for name, (slider, _) in VIEWS.items():
            if slider is None:
                continue
            v = view_root(page, name)
            draws = int(v.get_attribute("data-draws"))
            moved = move_slider(v, slider)
            assert moved, f"{name}: no slider {slider}"
            wait(page, "([el, n]) => +el.dataset.draws > n", [v.element_handle(), draws],
                 f"{name}: moving {moved} did not redraw")
            page.wait_for_timeout(300)  # images decode
            after = fingerprint(v)
            assert drawn(after) != drawn(before[name]), f"{name}: moving {moved} changed nothing that is drawn"
            v.screenshot(path=str(ARTIFACTS / f"{name}_moved.png"))

        # box-select in the projection (real mouse drag) -> Python link -> the cluster map marks the tokens
        proj, cmap = view_root(page, "projection_view"), view_root(page, "token_cluster_map")
        map_before = fingerprint(cmap)
        svg = proj.locator("svg").first
        svg.scroll_into_view_if_needed()
        box = svg.bounding_box()
        page.mouse.move(box["x"] + 2, box["y"] + 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=8)
        page.mouse.up()
        wait(page, "(el) => /^[1-9][0-9]* selected/.test(el.querySelector('.mv-count').textContent)",
             proj.element_handle(), "a box dragged over the projection selected no point")
        wait(page, "(el) => / [1-9][0-9]* tokens selected/.test(el.innerText)", cmap.element_handle(),
             "the projection's selection did not reach the cluster map", timeout=20_000)
        assert drawn(fingerprint(cmap)) != drawn(map_before), "the cluster map did not draw the linked selection"
        cmap.screenshot(path=str(ARTIFACTS / "token_cluster_map_linked.png"))

        # every visible slider of every view changes what it draws (or is greyed with its reason)
        for name in VIEWS:
            assert check_sliders(page, view_root(page, name), name) >= (0 if VIEWS[name][0] is None else 1), name

        screenshot_notebook(page, ARTIFACTS / "widgets_tour_lab.png")
        assert real_errors(page) == [], f"JavaScript errors: {real_errors(page)}"


def test_quickstart_tour_in_jupyterlab(lab):
    """Issue 8: the browser test opens (and runs) the tour notebook; its outputs render in Lab."""
    with browser_page(log=ARTIFACTS / "js_errors_quickstart.txt") as page:
        open_notebook(page, lab, "00_quickstart.ipynb")
        errors = run_all(page, timeout=300)
        assert errors == [], f"cells raised: {errors}"
        outputs = page.locator(".jp-OutputArea-output")
        assert outputs.count() >= 5
        strip = page.locator(".jp-OutputArea-output:has(img)")
        assert strip.count() >= 1, "the image strip did not render"
        assert fingerprint(strip.first)["nonblank"] > 0
        # issue 8: the tour shows one view of each kind; each has drawn something
        views = page.locator(".jp-OutputArea-output .massact-view")
        kinds = [views.nth(i).get_attribute("data-view") for i in range(views.count())]
        assert set(kinds) >= TOUR_KINDS, f"the tour shows views {kinds}, not one of each of {sorted(TOUR_KINDS)}"
        for i, kind in enumerate(kinds):
            v = views.nth(i)
            wait(page, "(el) => +el.dataset.draws > 0 && [...el.querySelectorAll('img')].every(i => i.complete)",
                 v.element_handle(), f"the tour's {kind} did not draw", timeout=30_000)
            fp = fingerprint(v)
            assert fp["nonblank"] > 0 or fp["svg"].count("<circle") > 10, f"the tour's {kind} is blank"
        assert "top-1/median" in page.locator(".jp-Notebook").inner_text()
        for i, kind in enumerate(kinds):
            check_sliders(page, views.nth(i), f"the tour's {kind}")
        screenshot_notebook(page, ARTIFACTS / "quickstart_lab.png")
        assert real_errors(page) == [], f"JavaScript errors: {real_errors(page)}"
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function(f"() => {{ const w = {JS_PANEL}; return !w.context.model.dirty; }}", timeout=30_000)

    # reopened (the kernel still running, as after closing the tab): every output renders, no widget is missing
    with browser_page(log=ARTIFACTS / "js_errors_quickstart_reopened.txt") as page:
        open_notebook(page, lab, "00_quickstart.ipynb")
        views = page.locator(".jp-OutputArea-output .massact-view")
        wait(page, "(n) => document.querySelectorAll('.jp-OutputArea-output .massact-view').length >= n",
             len(kinds), "the reopened notebook does not show its views", timeout=60_000)
        page.wait_for_timeout(2000)
        text = page.locator(".jp-Notebook").inner_text()
        assert "Error displaying widget" not in text, "a reopened output refers to a widget that is gone"
        assert re.search(r"[a-z)]: 100% [0-9]+/[0-9]+", text), "the finished progress bars do not say what they counted"
        screenshot_notebook(page, ARTIFACTS / "quickstart_lab_reopened.png")
        assert real_errors(page) == [], f"JavaScript errors in the reopened notebook: {real_errors(page)}"


def test_views_in_notebook7(root):
    """Notebook 7 (/tree -> /notebooks/...): the first two views render and answer their sliders."""
    with Server(root, "notebook", log=ARTIFACTS / "notebook7.log") as nb7, \
            browser_page(log=ARTIFACTS / "js_errors_notebook7.txt") as page:
        page.goto(f"{nb7.url}/tree?token={nb7.token}")
        page.get_by_text("widgets_tour.ipynb").first.wait_for(timeout=60_000)
        open_notebook(page, nb7, "widgets_tour.ipynb")
        assert "/notebooks/widgets_tour.ipynb" in page.url
        errors = run_cells(page, [1, 2, 3])
        assert errors == [], f"cells raised: {errors}"
        for name in ("channel_explorer", "token_cluster_map"):
            slider, mark = VIEWS[name]
            v = rendered(page, name)
            fp = fingerprint(v)
            assert fp["nonblank"] > 0, f"{name}: blank in Notebook 7"
            draws = int(v.get_attribute("data-draws"))
            assert move_slider(v, slider)
            wait(page, "([el, n]) => +el.dataset.draws > n", [v.element_handle(), draws],
                 f"{name}: no redraw in Notebook 7")
            assert drawn(fingerprint(v)) != drawn(fp), f"{name}: the slider changed nothing drawn in Notebook 7"
        screenshot_notebook(page, ARTIFACTS / "widgets_tour_notebook7.png")
        errors = real_errors(page, allow=HARMLESS_NOTEBOOK7)
        assert errors == [], f"JavaScript errors: {errors}"


def test_report_draws_its_figures_from_the_packed_plotlyjs(tmp_path):
    """The HTML report (plotly.js inside, packed) opened from disk: every figure draws, no error, no fetch."""
    from massact_viz.cli import main
    run_dir, out = tmp_path / "run", tmp_path / "report.html"
    assert main(["scan", "--model", "tiny:flux", "--prompt", "a red fox", "--prompt", "a cat", "--num-steps", "3",
                 "--size", "32", "--out", str(run_dir), "--json"]) == 0
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    with browser_page(log=ARTIFACTS / "js_errors_report.txt") as page:
        requests = []
        page.on("request", lambda r: not r.url.startswith(("file:", "data:", "blob:")) and requests.append(r.url))
        page.goto(out.as_uri())
        n = out.read_text().count('class="plotly-graph-div"')
        wait(page, "(n) => document.querySelectorAll('.plotly-graph-div .main-svg').length >= n", n,
             "the report's figures were not drawn", timeout=60_000)
        assert page.locator("#mv-plotly-status").count() == 0, page.locator("#mv-plotly-status").inner_text()
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        assert real_errors(page) == [] and requests == [], (real_errors(page), requests)
