// ChannelExplorer: layer x channel log-magnitude heatmap (canvas), step slider, statistic choice,
// top-k marks; a clicked channel's per-layer curve (SVG) and its spatial map over the image (canvas).

function render({ model, el }) {
  const root = mvRoot(el, "channel-explorer");
  const title = mvEl("div", { cls: "mv-title", style: "font-weight:600;margin-bottom:4px" }, root);
  const ctl = mvEl("div", { cls: "mv-controls", style: "margin-bottom:6px" }, root);
  const steps = model.get("steps");
  const stepSl = mvSlider(ctl, "step", 0, steps.length, 0);
  stepSl.input.classList.add("mv-step");
  const statSel = mvSelect(ctl, "statistic", model.get("stats_available"), model.get("stat"));
  statSel.classList.add("mv-stat");
  const kSl = mvSlider(ctl, "top-k", 1, Math.min(model.get("width"), 64), model.get("k"));
  kSl.input.classList.add("mv-k");

  const body = mvEl("div", { style: "display:flex;gap:12px;align-items:flex-start;flex-wrap:wrap" }, root);
  const left = mvEl("div", {}, body);
  const canvas = mvEl("canvas", { cls: "mv-heatmap", style: "cursor:crosshair;display:block" }, left);
  const hover = mvEl("div", { cls: "mv-hover", style: "height:1.4em;color:#444" }, left);
  const curveBox = mvEl("div", { cls: "mv-curve" }, left);
  const right = mvEl("div", { style: "min-width:160px" }, body);
  mvEl("div", { text: "spatial map of the selected channel", style: "color:#555" }, right);
  const stack = mvEl("div", { style: "position:relative;display:inline-block" }, right);
  const img = mvImage(model.get("image_png"), stack, "width:256px;height:256px");
  const overlay = mvEl("canvas", { cls: "mv-spatial", style: "position:absolute;left:0;top:0;width:256px;height:256px;image-rendering:pixelated" }, stack);
  const alphaSl = mvSlider(right, "opacity", 0, 100, 60);
  const note = mvEl("div", { cls: "mv-note", style: "max-width:300px;color:#a33" }, right);
  if (!model.get("image_png")) img.style.display = "none";

  const LW = 70, TOP = 4;
  let data = null, order = null, geom = null;

  function load() {
    data = mvU8(model.get("cube"));
    order = mvI32(model.get("order"));
    const L = model.get("layers").length, D = model.get("width");
    const cols = Math.min(D, 900), cw = Math.max(1, Math.floor(900 / cols));
    const rh = Math.max(6, Math.min(18, Math.floor(480 / Math.max(L, 1))));
    const edges = new Int32Array(cols + 1);
    for (let i = 0; i <= cols; i++) edges[i] = Math.floor(i * D / cols);
    const binOf = new Int32Array(D);
    for (let b = 0; b < cols; b++) for (let c = edges[b]; c < edges[b + 1]; c++) binOf[c] = b;
    geom = { L, D, cols, cw, rh, edges, binOf };
    canvas.width = LW + cols * cw + 4;
    canvas.height = TOP + L * rh + 4;
  }

  const pos = () => { const s = model.get("step"); return s === null || s === undefined ? 0 : 1 + steps.indexOf(s); };
  const val = (code) => code === 0 ? NaN : Math.pow(10, model.get("lo") + (code - 1) / 254 * (model.get("hi") - model.get("lo")));

  function draw() {
    const t0 = performance.now();
    const { L, D, cols, cw, rh, edges } = geom;
    const p = pos(), base = p * L * D;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    const W = cols * cw, H = L * rh;
    const im = ctx.createImageData(W, H);
    const px = im.data;
    for (let l = 0; l < L; l++) {
      const row = base + l * D;
      for (let b = 0; b < cols; b++) {
        let m = 0;
        for (let c = edges[b]; c < edges[b + 1]; c++) { const q = data[row + c]; if (q > m) m = q; }
        let r = 235, g = 235, bl = 235;
        if (m > 0) { const i = Math.floor((m - 1) * 255 / 254) * 3; r = MV_VIRIDIS[i]; g = MV_VIRIDIS[i + 1]; bl = MV_VIRIDIS[i + 2]; }
        for (let y = l * rh; y < (l + 1) * rh; y++) {
          let o = (y * W + b * cw) * 4;
          for (let x = 0; x < cw; x++, o += 4) { px[o] = r; px[o + 1] = g; px[o + 2] = bl; px[o + 3] = 255; }
        }
      }
    }
    ctx.putImageData(im, LW, TOP);
    // layer names (canvas text: drawn as pixels, never parsed as markup)
    ctx.fillStyle = "#222"; ctx.font = `${Math.min(11, rh)}px Helvetica, Arial, sans-serif`; ctx.textBaseline = "middle";
    const layers = model.get("layers"), every = L <= 60 ? 1 : Math.ceil(L / 30);
    for (let l = 0; l < L; l += every) ctx.fillText(layers[l].slice(0, 10), 2, TOP + l * rh + rh / 2);
    // top-k marks
    const k = model.get("k"), ks = model.get("k_sent");
    ctx.strokeStyle = MV_MARK; ctx.lineWidth = 1.5;
    for (let l = 0; l < L; l++) {
      if (data[base + l * D] === 0 && data[base + l * D + order[(p * L + l) * ks]] === 0) continue;
      for (let j = 0; j < Math.min(k, ks); j++) {
        const c = order[(p * L + l) * ks + j];
        ctx.strokeRect(LW + geom.binOf[c] * cw - 1.5, TOP + l * rh + 0.75, cw + 3, rh - 1.5);
      }
    }
    // selected cell
    const ch = model.get("channel"), li = layers.indexOf(model.get("layer"));
    if (ch >= 0) {
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
      ctx.strokeRect(LW + geom.binOf[ch] * cw - 0.5, TOP - 2, cw + 1, H + 4);
      if (li >= 0) { ctx.strokeStyle = "#fff"; ctx.strokeRect(LW - 1, TOP + li * rh, W + 2, rh); }
    }
    stepSl.input.value = String(p);
    stepSl.out.textContent = p === 0 ? "mean" : String(steps[p - 1]);
    kSl.input.value = String(k); kSl.out.textContent = String(k);
    statSel.value = model.get("stat");
    title.textContent = model.get("title");
    drawCurve();
    drawSpatial();
    root.dataset.lastDrawMs = (performance.now() - t0).toFixed(2);
    root.dataset.draws = String((+root.dataset.draws || 0) + 1);
  }

  function drawCurve() {
    curveBox.replaceChildren();
    const ch = model.get("channel");
    if (ch < 0) { mvEl("div", { text: "click a cell to pick a channel", style: "color:#777" }, curveBox); return; }
    const { L, D } = geom, p = pos(), layers = model.get("layers");
    const ys = []; for (let l = 0; l < L; l++) ys.push(data[p * L * D + l * D + ch]);
    const w = 460, h = 140, m = { l: 40, r: 8, t: 16, b: 22 };
    const svg = mvSvg("svg", { width: w, height: h, class: "mv-curve-svg" }, curveBox);
    const t = mvSvg("text", { x: m.l, y: 11, "font-size": 11 }, svg);
    t.textContent = `channel ${ch}: log10 ${model.get("stat")} per layer`;
    const X = (l) => m.l + (L === 1 ? 0 : l * (w - m.l - m.r) / (L - 1));
    const Y = (q) => h - m.b - (q - 1) / 254 * (h - m.t - m.b);
    mvSvg("line", { x1: m.l, y1: h - m.b, x2: w - m.r, y2: h - m.b, stroke: "#999" }, svg);
    mvSvg("line", { x1: m.l, y1: m.t, x2: m.l, y2: h - m.b, stroke: "#999" }, svg);
    for (const [q, lab] of [[1, model.get("lo")], [255, model.get("hi")]]) {
      const tt = mvSvg("text", { x: 2, y: Y(q) + 4, "font-size": 10 }, svg); tt.textContent = lab.toFixed(1);
    }
    let d = "";
    ys.forEach((q, l) => { if (q > 0) d += (d ? " L" : "M") + X(l).toFixed(1) + " " + Y(q).toFixed(1); });
    mvSvg("path", { d, fill: "none", stroke: "#0072B2", "stroke-width": 1.5 }, svg);
    ys.forEach((q, l) => {
      if (q === 0) return;
      const c = mvSvg("circle", { cx: X(l), cy: Y(q), r: 3, fill: layers[l] === model.get("layer") ? MV_MARK : "#0072B2" }, svg);
      const tip = mvSvg("title", {}, c); tip.textContent = `${layers[l]}: ${mvFmt(val(q))}`;
    });
    const lt = mvSvg("text", { x: m.l, y: h - 6, "font-size": 10 }, svg);
    lt.textContent = `${layers[0]} … ${layers[L - 1]}`;
  }

  function drawSpatial() {
    const g = model.get("grid"), sp = mvF32(model.get("spatial"));
    note.textContent = model.get("spatial_note");
    const ctx = overlay.getContext("2d");
    if (!sp.length || g[0] * g[1] !== sp.length) { overlay.width = 1; overlay.height = 1; ctx.clearRect(0, 0, 1, 1); return; }
    overlay.width = g[1]; overlay.height = g[0];
    let lo = Infinity, hi = -Infinity;
    for (const v of sp) { if (v < lo) lo = v; if (v > hi) hi = v; }
    const im = ctx.createImageData(g[1], g[0]), a = Math.round(+alphaSl.input.value * 2.55);
    for (let i = 0; i < sp.length; i++) {
      const j = Math.round(hi > lo ? (sp[i] - lo) / (hi - lo) * 255 : 0) * 3;
      im.data.set([MV_VIRIDIS[j], MV_VIRIDIS[j + 1], MV_VIRIDIS[j + 2], a], i * 4);
    }
    ctx.putImageData(im, 0, 0);
    alphaSl.out.textContent = alphaSl.input.value + "%";
    const s = model.get("spatial_step");
    note.textContent = `channel ${model.get("channel")} at ${model.get("layer")}, step ${s} (range ${mvFmt(lo)} .. ${mvFmt(hi)})`;
    note.style.color = "#444";
  }

  function cellAt(ev) {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) * canvas.width / r.width - LW, y = (ev.clientY - r.top) * canvas.height / r.height - TOP;
    const { L, D, cw, rh, edges, cols } = geom;
    const b = Math.floor(x / cw), l = Math.floor(y / rh);
    if (b < 0 || b >= cols || l < 0 || l >= L) return null;
    let best = edges[b], m = -1; const base = pos() * L * D + l * D;
    for (let c = edges[b]; c < edges[b + 1]; c++) if (data[base + c] > m) { m = data[base + c]; best = c; }
    return { l, c: best, q: m };
  }
  canvas.addEventListener("mousemove", (ev) => {
    const h = cellAt(ev);
    hover.textContent = h ? `${model.get("layers")[h.l]} · channel ${h.c} · ${model.get("stat")} ${mvFmt(val(h.q))}` : "";
  });
  canvas.addEventListener("click", (ev) => {
    const h = cellAt(ev); if (!h) return;
    model.set("layer", model.get("layers")[h.l]); model.set("channel", h.c); model.save_changes();
  });
  stepSl.input.addEventListener("input", () => {
    const p = +stepSl.input.value; model.set("step", p === 0 ? null : steps[p - 1]); draw(); model.save_changes();
  });
  kSl.input.addEventListener("input", () => { model.set("k", +kSl.input.value); draw(); model.save_changes(); });
  statSel.addEventListener("change", () => { model.set("stat", statSel.value); model.save_changes(); });
  alphaSl.input.addEventListener("input", drawSpatial);

  model.on("change:cube", () => { load(); draw(); });
  model.on("change:order", () => { load(); draw(); });
  for (const t of ["step", "k", "layer", "channel", "stat", "title"]) model.on("change:" + t, () => draw());
  for (const t of ["spatial", "spatial_note", "spatial_step"]) model.on("change:" + t, drawSpatial);
  load(); draw();
  return () => root.remove();
}

export default { render };
