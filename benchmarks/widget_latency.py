"""Slider-to-redraw latency of the ChannelExplorer and the TokenClusterMap in a real browser, on a
FLUX-scale payload, and the bytes each view sends.

Synthetic data of FLUX.1's size (no model is run): ChannelStats of 57 layers (19 double + 38 single)
x 3072 channels x 28 steps (log-normal channel magnitudes, a few channels x100 from double.3 on, as
massive channels look), and for the cluster map 64 x 64 = 4096 image tokens x 3072 channels at two
(layer, step) slices, with a 512 x 512 picture.

Harness: tests/browser/harness.py (JupyterLab on loopback + headless Debian chromium via Playwright).
Per slider move, in the page: set the range input's value, t0, dispatch ``input`` (the view redraws
in its handler, no Python round trip), t1 = handler returned (the draw counter ``data-draws`` has
advanced), t2 = the next animation frame after it (the frame that paints the redraw). Reported: median
and p95 of t2 - t0 ("to frame") and t1 - t0 ("handler"), plus the views' own ``data-last-draw-ms``.
Payload: ``view.payload_bytes`` (synced state) and the WebSocket bytes the browser received while the
view's cell ran (the real wire size, JSON + binary buffers + static PNG fallback).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/widget_latency.py [--moves 30]

Writes benchmarks/widget_latency.json (screenshots: test-artifacts/widget_latency/) and prints a
markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "browser"))
import harness as H  # noqa: E402

SETUP = '''
import json, numpy as np, torch
torch.set_num_threads(1)
from PIL import Image
from massact_viz.stats import ChannelStats, STATISTICS
from massact_viz.widgets import ChannelExplorer, TokenClusterMap

L_DOUBLE, L_SINGLE, D, S, ROWS = 19, 38, 3072, 28, 64
layers = [f"double.{i}" for i in range(L_DOUBLE)] + [f"single.{i}" for i in range(L_SINGLE)]
g = torch.Generator().manual_seed(0)
base = torch.exp(torch.randn(1, S, len(layers), 1, D, generator=g))        # log-normal magnitudes
base[:, :, 3:, :, [154, 1446, 2285]] *= 100.0                                # massive channels from double.3 on
values = {s: base * f for s, f in zip(STATISTICS, (1.0, 1.3, 4.0))}
stats = ChannelStats(values, torch.ones(1, S, len(layers), 1), layers, list(range(S)), ["image"],
                     ["synthetic FLUX-scale"])

rng = np.random.default_rng(0)
yy, xx = np.mgrid[:ROWS, :ROWS]
blob = ((yy - 24) ** 2 + (xx - 36) ** 2 < 15 ** 2).reshape(-1)              # a foreground disc of tokens
acts = {}
for layer in ("double.18", "single.20"):
    a = rng.standard_normal((ROWS * ROWS, D), dtype=np.float32)
    a[:, [154, 1446, 2285]] *= 50.0
    a[blob, :64] += 3.0
    acts[(layer, S - 1)] = a
pic = np.zeros((512, 512, 3), np.uint8); pic[..., 2] = 180
pic[np.kron(blob.reshape(ROWS, ROWS), np.ones((8, 8), bool))] = (220, 40, 40)
picture = Image.fromarray(pic)
'''

CELLS = {
    "channel_explorer": 'ce = ChannelExplorer(stats, k=4)\nce',
    "token_cluster_map": 'tcm = TokenClusterMap(acts, grid=(64, 64), picture=picture, ks=(1, 4), '
                         'k_clusters_choices=(2, 3), prompt="synthetic FLUX-scale")\ntcm',
    "payload": 'print("PAYLOAD" + json.dumps({"channel_explorer": ce.payload_bytes, '
               '"token_cluster_map": tcm.payload_bytes, "token_cluster_map_precomputed": tcm.precomputed}))',
}

# (view, slider) pairs whose moves are timed
SLIDERS = [("channel_explorer", "input.mv-step"), ("channel_explorer", "input.mv-k"),
           ("token_cluster_map", "input.mv-k-clusters"), ("token_cluster_map", "input.mv-layer"),
           ("token_cluster_map", "input.mv-k")]

# called as locator.evaluate(JS_TIME_MOVES, [selector, n]): the view root is the first argument
JS_TIME_MOVES = """async (root, [selector, n]) => {
  const r = root.querySelector(selector);
  const frame = () => new Promise(requestAnimationFrame);
  const toFrame = [], handler = [], draw = [];
  for (let i = 0; i < n; i++) {
    await frame();
    const before = +root.dataset.draws;
    let v = +r.value + (+r.step || 1); if (v > +r.max) v = +r.min;
    r.value = String(v);
    const t0 = performance.now();
    r.dispatchEvent(new Event('input', {bubbles: true}));
    const t1 = performance.now();
    while (+root.dataset.draws <= before) await frame();   // (a view that drew asynchronously)
    const t1b = performance.now();
    await frame();                                         // the frame that paints the redraw
    const t2 = performance.now();
    toFrame.push(t2 - t0); handler.push(Math.max(t1, t1b) - t0); draw.push(+root.dataset.lastDrawMs || NaN);
    await new Promise(res => setTimeout(res, 60));         // let the state sync to the kernel settle
  }
  return {toFrame, handler, draw};
}"""


def summary(xs):
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return {}
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return {"median": round(statistics.median(xs), 2), "p95": round(p95, 2), "max": round(xs[-1], 2), "n": len(xs)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moves", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "widget_latency.json"))
    args = ap.parse_args(argv)
    if H.chromium_path() is None:
        sys.exit("no chromium at /usr/bin/chromium ($MASSACT_CHROMIUM): apt-get install chromium")
    import nbformat as nbf

    root = Path(tempfile.mkdtemp(prefix="widget-latency-"))
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells = [nbf.v4.new_code_cell(SETUP)] + [
        nbf.v4.new_code_cell(src, metadata={"tags": [f"view:{name}"]}) for name, src in CELLS.items()]
    nbf.write(nb, root / "latency.ipynb")

    shots = REPO / "test-artifacts" / "widget_latency"
    shots.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    result = {"moves": args.moves,
              "data": "57 layers x 3072 channels x 28 steps; 4096 tokens x 3072 channels x 2 slices"}
    with H.Server(root, "lab") as server, H.browser_page() as page:
        received = {"bytes": 0}

        def on_ws(ws):
            ws.on("framereceived", lambda payload: received.__setitem__(
                "bytes", received["bytes"] + len(payload if isinstance(payload, (bytes, str)) else b"")))
        page.on("websocket", on_ws)
        H.open_notebook(page, server, "latency.ipynb")
        errors = H.run_cells(page, [0], timeout=600)
        assert not errors, errors
        wire = {}
        for i, name in enumerate(CELLS, start=1):
            b0 = received["bytes"]
            errors = H.run_cells(page, [i], timeout=600)
            assert not errors, errors
            if name != "payload":
                page.wait_for_function("(n) => { const r = document.querySelector("
                                       "`[data-tour-view=${n}] .massact-view`); return !!r && +r.dataset.draws > 0; }",
                                       arg=name, timeout=120_000)
            wire[name] = received["bytes"] - b0
        text = page.locator("[data-tour-view=payload] .jp-OutputArea-output").inner_text()
        payload = json.loads(text[text.index("PAYLOAD") + 7:].strip().splitlines()[0])
        result["payload_bytes"] = {k: v for k, v in payload.items() if k in ("channel_explorer", "token_cluster_map")}
        result["token_cluster_map_precomputed"] = payload["token_cluster_map_precomputed"]
        result["websocket_bytes_while_cell_ran"] = {k: wire[k] for k in ("channel_explorer", "token_cluster_map")}
        result["sliders"] = {}
        for view, selector in SLIDERS:
            v = H.view_root(page, view)
            v.scroll_into_view_if_needed()
            t = v.evaluate(JS_TIME_MOVES, [selector, args.moves])
            result["sliders"][f"{view} {selector.split('.')[-1]}"] = {
                "to_frame_ms": summary(t["toFrame"]), "handler_ms": summary(t["handler"]),
                "draw_ms": summary(t["draw"])}
            v.screenshot(path=str(shots / f"latency_{view}.png"))
        errors = H.real_errors(page)
        assert not errors, f"JavaScript errors: {errors}"
    shutil.rmtree(root, ignore_errors=True)
    result["wall_s"] = round(time.time() - t_start, 1)
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "chromium": subprocess.run([H.chromium_path(), "--version"], capture_output=True,
                                                    text=True).stdout.strip(),
                         "note": "headless chromium --disable-gpu (software raster), shared 2-core CPU"}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"payload (synced state): ChannelExplorer {result['payload_bytes']['channel_explorer']:,} B, "
          f"TokenClusterMap {result['payload_bytes']['token_cluster_map']:,} B "
          f"(precomputed table: {result['token_cluster_map_precomputed']}); WebSocket bytes received while each "
          f"view's cell ran: {result['websocket_bytes_while_cell_ran']['channel_explorer']:,} / "
          f"{result['websocket_bytes_while_cell_ran']['token_cluster_map']:,} B\n")
    print("| view · slider | input → next frame, median / p95 (ms) | input → redrawn, median / p95 (ms) "
          "| draw only, median (ms) |")
    print("|---|---|---|---|")
    for name, r in result["sliders"].items():
        print(f"| {name} | {r['to_frame_ms']['median']} / {r['to_frame_ms']['p95']} | "
              f"{r['handler_ms']['median']} / {r['handler_ms']['p95']} | {r['draw_ms'].get('median', '–')} |")
    print(f"\n{args.moves} moves per slider; wrote {args.out} ({result['wall_s']} s)")


if __name__ == "__main__":
    main()
