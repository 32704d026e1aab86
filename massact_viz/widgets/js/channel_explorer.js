// ChannelExplorer: layer x channel log-magnitude heatmap (canvas) with channel ticks and a colour bar,
// step slider, statistic choice, top-k marks; a clicked channel's per-layer curve against the layer's
// median channel (SVG, log axis with ticks), and its spatial map over the image (canvas + colour bar).

function render({ model, el }) {
  const root = mvRoot(el, "channel-explorer");
  const title = mvEl("div", { cls: "mv-title", style: "font-weight:600;margin-bottom:4px" }, root);
  const ctl = mvEl("div", { cls: "mv-controls", style: "margin-bottom:6px" }, root);
  const steps = model.get("steps");
  const stepSl = mvSlider(ctl, "step", 0, steps.length, 0);
  stepSl.input.classList.add("mv-step");
  if (steps.length === 1) mvDisable(stepSl, "one step captured: its mean is that step");
  const statSel = mvSelect(ctl, "statistic", model.get("stats_available"), model.get("stat"));
  statSel.classList.add("mv-stat");
  const kSl = mvSlider(ctl, "top-k", 1, Math.min(model.get("width"), 64), model.get("k"), 1, "one channel");
  kSl.input.classList.add("mv-k");

  const body = mvEl("div", { style: "display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap;max-width:100%" }, root);
  const left = mvEl("div", { style: "max-width:100%;overflow-x:auto" }, body);
  const heatCap = mvEl("div", { cls: "mv-axis-y", style: "color:#555;margin-bottom:2px" }, left);
  const canvas = mvEl("canvas", { cls: "mv-heatmap", style: "cursor:crosshair;display:block" }, left);
  const xAxis = mvEl("div", { cls: "mv-axis-x", style: "color:#555" }, left);
  const cbar = mvEl("div", { cls: "mv-colorbar", style: "margin:6px 0 2px 0" }, left);
  const hover = mvEl("div", { cls: "mv-hover", style: "min-height:1.4em;color:#444" }, left);
  const curveBox = mvEl("div", { cls: "mv-curve" }, left);

  const right = mvEl("div", { style: "width:260px" }, body);
  const spCap = mvEl("div", { cls: "mv-spatial-caption", style: "color:#555;margin-bottom:2px" }, right);
  const stack = mvEl("div", { style: "position:relative;width:256px;height:256px" }, right);
  const img = mvImage(model.get("image_png"), stack, "position:absolute;left:0;top:0;width:256px;height:256px");
  const overlay = mvEl("canvas", { cls: "mv-spatial", style: "position:absolute;left:0;top:0;width:256px;height:256px;image-rendering:pixelated" }, stack);
  if (!model.get("image_png")) img.style.display = "none";
  const alphaRow = mvEl("div", { style: "margin-top:4px" }, right);
  const alphaSl = mvSlider(alphaRow, "map opacity", 0, 100, 60);
  alphaSl.input.classList.add("mv-opacity");
  const spBar = mvEl("div", { cls: "mv-colorbar mv-colorbar-spatial", style: "margin-top:4px" }, right);
  const note = mvEl("div", { cls: "mv-note", style: "max-width:256px;color:#555;margin-top:4px" }, right);

  const LW = 70, TOP = 4, TICKS = 18;
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
    canvas.width = LW + cols * cw + 8;
    canvas.height = TOP + L * rh + TICKS;
  }

  const pos = () => { const s = model.get("step"); return s === null || s === undefined ? 0 : 1 + steps.indexOf(s); };
  const lg = (code) => model.get("lo") + (code - 1) / 254 * (model.get("hi") - model.get("lo"));  // code -> log10 value
  const val = (code) => code === 0 ? NaN : Math.pow(10, lg(code));

  // channel numbers at 1, 2 or 5 x 10^n spacing, about six of them
  function channelTicks(D) {
    const raw = Math.max(1, D / 6), p = Math.pow(10, Math.floor(Math.log10(raw)));
    const stepC = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
    const out = []; for (let c = 0; c < D; c += stepC) out.push(c);
    return out;
  }

  // a horizontal colour bar: the viridis ramp over [lo, hi] (log10 values when ``isLog``) with labelled ticks
  function colorBar(box, lo, hi, isLog, caption) {
    box.replaceChildren();
    mvEl("div", { text: caption, style: "color:#555;font-size:12px" }, box);
    const W = 220, wrap = mvEl("div", { style: `position:relative;width:${W}px;height:28px;margin:0 24px` }, box);
    const c = mvEl("canvas", { style: `display:block;width:${W}px;height:10px` }, wrap);
    c.width = 256; c.height = 1;
    const ctx = c.getContext("2d"), im = ctx.createImageData(256, 1);
    for (let i = 0; i < 256; i++) im.data.set([MV_VIRIDIS[i * 3], MV_VIRIDIS[i * 3 + 1], MV_VIRIDIS[i * 3 + 2], 255], i * 4);
    ctx.putImageData(im, 0, 0);
    let ticks = isLog ? mvDecades(lo, hi, 5).map((d) => [d, mvPow10(d)]) : [];
    if (ticks.length < 2) ticks = [[lo, mvFmt(isLog ? Math.pow(10, lo) : lo)], [hi, mvFmt(isLog ? Math.pow(10, hi) : hi)]];
    for (const [v, text] of ticks) {
      const x = hi > lo ? (v - lo) / (hi - lo) * W : 0;
      mvEl("span", { style: `position:absolute;left:${x}px;top:10px;width:1px;height:4px;background:#555` }, wrap);
      mvEl("span", { cls: "mv-tick", text, style: `position:absolute;left:${x}px;top:14px;transform:translateX(-50%);font-size:10px;color:#333;white-space:nowrap` }, wrap);
    }
  }

  function draw() {
    const t0 = performance.now();
    const { L, D, cols, cw, rh, edges } = geom;
    const p = pos(), base = p * L * D, stat = model.get("stat");
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
    // layer names and channel ticks (canvas text: drawn as pixels, never parsed as markup)
    ctx.fillStyle = "#222"; ctx.font = `${Math.min(11, rh)}px Helvetica, Arial, sans-serif`; ctx.textBaseline = "middle";
    const layers = model.get("layers"), every = L <= 60 ? 1 : Math.ceil(L / 30);
    for (let l = 0; l < L; l += every) ctx.fillText(layers[l].slice(0, 10), 2, TOP + l * rh + rh / 2);
    ctx.font = "10px Helvetica, Arial, sans-serif"; ctx.textBaseline = "top"; ctx.textAlign = "center";
    ctx.strokeStyle = "#555"; ctx.lineWidth = 1;
    for (const c of channelTicks(D)) {
      const x = LW + geom.binOf[c] * cw + cw / 2;
      ctx.beginPath(); ctx.moveTo(x, TOP + H); ctx.lineTo(x, TOP + H + 4); ctx.stroke();
      ctx.fillText(String(c), Math.max(x, LW + 6), TOP + H + 5);
    }
    ctx.textAlign = "start";
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
    const where = p === 0 ? "mean over the captured steps" : `step ${steps[p - 1]}`;
    heatCap.textContent = `rows: layers; colour: ${stat} of each channel (${where}); orange boxes: the top-${k} channels of each layer`;
    xAxis.textContent = "channel index" + (D > cols ? ` (each column is the largest of ${Math.ceil(D / cols)} neighbouring channels)` : "");
    colorBar(cbar, model.get("lo"), model.get("hi"), true, `${stat} (log scale; grey: not captured or not finite)`);
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

  // log10 tick positions in [lo, hi]: decades when two or more fit, else 1-2-5 steps
  function logTicks(lo, hi) {
    const dec = mvDecades(lo, hi, 6);
    if (dec.length >= 2) return dec;
    const out = [];
    for (let n = Math.floor(lo) - 1; n <= Math.ceil(hi); n++)
      for (const m of [1, 2, 5]) { const v = n + Math.log10(m); if (v >= lo - 1e-9 && v <= hi + 1e-9) out.push(v); }
    return out;
  }

  function drawCurve() {
    curveBox.replaceChildren();
    const ch = model.get("channel");
    if (ch < 0) { mvEl("div", { text: "click a heatmap cell to see that channel across layers and over the image", style: "color:#777" }, curveBox); return; }
    const { L, D } = geom, p = pos(), layers = model.get("layers"), stat = model.get("stat");
    const ys = [], med = [];
    for (let l = 0; l < L; l++) {
      const row = data.subarray(p * L * D + l * D, p * L * D + (l + 1) * D);
      ys.push(row[ch]);
      const v = Array.from(row).filter((q) => q > 0).sort((a, b) => a - b);
      med.push(v.length ? v[Math.floor((v.length - 1) / 2)] : 0);
    }
    const shown = ys.concat(med).filter((q) => q > 0).map(lg);
    if (!shown.length) { mvEl("div", { text: `channel ${ch}: no finite values at this step`, style: "color:#777" }, curveBox); return; }
    let y0 = Math.min(...shown), y1 = Math.max(...shown);
    if (y1 - y0 < 0.5) { const c = (y0 + y1) / 2; y0 = c - 0.25; y1 = c + 0.25; }
    const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
    const w = 480, h = 190, m = { l: 54, r: 10, t: 30, b: 50 };
    const svg = mvSvg("svg", { width: w, height: h, class: "mv-curve-svg" }, curveBox);
    const t = mvSvg("text", { x: m.l, y: 12, "font-size": 12 }, svg);
    t.textContent = `channel ${ch} across layers (${p === 0 ? "mean over steps" : "step " + steps[p - 1]})`;
    const X = (l) => m.l + (L === 1 ? (w - m.l - m.r) / 2 : l * (w - m.l - m.r) / (L - 1));
    const Y = (v) => h - m.b - (v - y0) / (y1 - y0) * (h - m.t - m.b);
    mvSvg("line", { x1: m.l, y1: h - m.b, x2: w - m.r, y2: h - m.b, stroke: "#999" }, svg);
    mvSvg("line", { x1: m.l, y1: m.t, x2: m.l, y2: h - m.b, stroke: "#999" }, svg);
    for (const v of logTicks(y0, y1)) {
      mvSvg("line", { x1: m.l - 4, y1: Y(v), x2: m.l, y2: Y(v), stroke: "#999" }, svg);
      mvSvg("line", { x1: m.l, y1: Y(v), x2: w - m.r, y2: Y(v), stroke: "#eee" }, svg);
      const tt = mvSvg("text", { x: m.l - 6, y: Y(v) + 3, "font-size": 10, "text-anchor": "end", class: "mv-tick" }, svg);
      tt.textContent = mvFmt(Math.pow(10, v));
    }
    const ya = mvSvg("text", { x: 11, y: (m.t + h - m.b) / 2, "font-size": 11, "text-anchor": "middle", transform: `rotate(-90 11 ${(m.t + h - m.b) / 2})`, class: "mv-axis-y" }, svg);
    ya.textContent = `${stat} (log)`;
    const every = Math.max(1, Math.ceil(L / 14));
    for (let l = 0; l < L; l += every) {
      const x = X(l);
      mvSvg("line", { x1: x, y1: h - m.b, x2: x, y2: h - m.b + 4, stroke: "#999" }, svg);
      const tt = mvSvg("text", { x, y: h - m.b + 8, "font-size": 9, "text-anchor": "end", transform: `rotate(-40 ${x} ${h - m.b + 8})`, class: "mv-tick" }, svg);
      tt.textContent = layers[l].slice(0, 10);
    }
    const path = (qs) => { let d = ""; qs.forEach((q, l) => { if (q > 0) d += (d ? " L" : "M") + X(l).toFixed(1) + " " + Y(lg(q)).toFixed(1); }); return d; };
    mvSvg("path", { d: path(med), fill: "none", stroke: "#888", "stroke-width": 1.2, "stroke-dasharray": "4 3" }, svg);
    mvSvg("path", { d: path(ys), fill: "none", stroke: "#0072B2", "stroke-width": 1.5 }, svg);
    ys.forEach((q, l) => {
      if (q === 0) return;
      const c = mvSvg("circle", { cx: X(l), cy: Y(lg(q)), r: 3, fill: layers[l] === model.get("layer") ? MV_MARK : "#0072B2" }, svg);
      const tip = mvSvg("title", {}, c); tip.textContent = `${layers[l]}: ${mvFmt(val(q))} (median channel ${mvFmt(val(med[l]))})`;
    });
    // legend
    const lx = m.l + 4, ly = m.t - 10;
    const items = [["line", "#0072B2", `channel ${ch}`, ""], ["line", "#888", "median channel of the layer", "4 3"], ["dot", MV_MARK, "layer of the spatial map", ""]];
    let x = lx;
    for (const [kind, col, text, dash] of items) {
      const g = mvSvg("g", { class: "mv-legend-item" }, svg);
      if (kind === "line") mvSvg("line", { x1: x, y1: ly, x2: x + 16, y2: ly, stroke: col, "stroke-width": 1.5, "stroke-dasharray": dash || "none" }, g);
      else mvSvg("circle", { cx: x + 8, cy: ly, r: 3, fill: col }, g);
      const tx = mvSvg("text", { x: x + 20, y: ly + 3, "font-size": 10 }, g); tx.textContent = text;
      x += 28 + text.length * 5.2;
    }
  }

  function drawSpatial() {
    const g = model.get("grid"), sp = mvF32(model.get("spatial")), ch = model.get("channel");
    const ctx = overlay.getContext("2d"), s = model.get("spatial_step");
    note.textContent = model.get("spatial_note");
    if (!sp.length || g[0] * g[1] !== sp.length) {
      overlay.width = 1; overlay.height = 1; ctx.clearRect(0, 0, 1, 1);
      spCap.textContent = ch < 0 ? "the image (click a heatmap cell for a channel's map over it)" : "the image (no spatial map of this channel)";
      spBar.replaceChildren();
      mvDisable(alphaSl, ch < 0 ? "no channel picked" : "no spatial map");
      alphaSl.out.textContent = alphaSl.input.value + "%";
      return;
    }
    mvEnable(alphaSl);
    overlay.width = g[1]; overlay.height = g[0];
    let lo = Infinity, hi = -Infinity, bad = 0;
    for (const v of sp) { if (!Number.isFinite(v)) { bad++; continue; } if (v < lo) lo = v; if (v > hi) hi = v; }
    if (!Number.isFinite(lo)) { lo = 0; hi = 0; }
    const im = ctx.createImageData(g[1], g[0]), a = Math.round(+alphaSl.input.value * 2.55);
    for (let i = 0; i < sp.length; i++) {
      if (!Number.isFinite(sp[i])) { im.data.set([235, 235, 235, a], i * 4); continue; }   // inf/NaN: grey
      const j = Math.round(hi > lo ? (sp[i] - lo) / (hi - lo) * 255 : 0) * 3;
      im.data.set([MV_VIRIDIS[j], MV_VIRIDIS[j + 1], MV_VIRIDIS[j + 2], a], i * 4);
    }
    if (bad) note.textContent = (note.textContent ? note.textContent + " " : "") +
      `${bad} tokens are inf/NaN (grey; float16 overflow? load with dtype='bfloat16' or 'float32').`;
    ctx.putImageData(im, 0, 0);
    alphaSl.out.textContent = alphaSl.input.value + "%";
    spCap.textContent = `channel ${ch} at ${model.get("layer")}, step ${s}, over the image (${g[0]} x ${g[1]} tokens)`;
    colorBar(spBar, lo, hi, false, `channel ${ch} activation per token` + (bad ? " (finite values)" : ""));
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
  alphaSl.input.addEventListener("input", () => { drawSpatial(); root.dataset.draws = String((+root.dataset.draws || 0) + 1); });

  model.on("change:cube", () => { load(); draw(); });
  model.on("change:order", () => { load(); draw(); });
  for (const t of ["step", "k", "layer", "channel", "stat", "title"]) model.on("change:" + t, () => draw());
  for (const t of ["spatial", "spatial_note", "spatial_step"]) model.on("change:" + t, drawSpatial);
  load(); draw();
  return () => root.remove();
}

export default { render };
