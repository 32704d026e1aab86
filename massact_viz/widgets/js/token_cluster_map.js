// TokenClusterMap: the generated image with the foreground cluster outlined (the rest dimmed) beside the
// token clusters in solid colours; sliders for layer, step, k (channels), clusters, channel set and dimming (a slider with one
// position is greyed with the reason); hover shows (row, col) and values; click / shift-drag selects.

function render({ model, el }) {
  const root = mvRoot(el, "token-cluster-map");
  const title = mvEl("div", { cls: "mv-title", style: "font-weight:600;margin-bottom:4px" }, root);
  const ctl = mvEl("div", { cls: "mv-controls", style: "margin-bottom:6px;max-width:640px" }, root);
  const layers = model.get("layers"), steps = model.get("steps"), ks = model.get("ks");
  const Ks = model.get("k_clusters_choices");
  const layerSl = mvSlider(ctl, "layer", 0, layers.length - 1, Math.max(0, layers.indexOf(model.get("layer"))), 1,
    "the only layer with raw slices");
  layerSl.input.classList.add("mv-layer");
  const stepSl = mvSlider(ctl, "step", 0, steps.length - 1, Math.max(0, steps.indexOf(model.get("step"))), 1,
    "the only step with raw slices");
  stepSl.input.classList.add("mv-step");
  const kSl = mvSlider(ctl, "k", 0, ks.length - 1, Math.max(0, ks.indexOf(model.get("k"))), 1, "one k given (ks)");
  kSl.input.classList.add("mv-k");
  const KSl = mvSlider(ctl, "clusters", 0, Ks.length - 1, Math.max(0, Ks.indexOf(model.get("k_clusters"))), 1,
    "one cluster count given (k_clusters_choices)");
  KSl.input.classList.add("mv-k-clusters");
  const setSel = mvSelect(ctl, "channels", model.get("sets"), model.get("channel_set"));
  setSel.classList.add("mv-set");
  const opSl = mvSlider(ctl, "dim background", 0, 100, Math.round(model.get("opacity") * 100));
  opSl.input.classList.add("mv-opacity");
  const clear = mvEl("button", { text: "clear selection", cls: "mv-clear" }, ctl);

  // two panels of the same tokens: the image (foreground outlined, the rest dimmed, so the picture stays
  // visible and its colours true) and the clusters in solid colours (the same colours as every view)
  const S = 256;
  const panels = mvEl("div", { style: "display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start" }, root);
  const left = mvEl("figure", { style: "margin:0" }, panels);
  const leftCap = mvEl("figcaption", { cls: "mv-caption", style: "color:#555;margin-bottom:2px;max-width:" + S + "px" }, left);
  const stack = mvEl("div", { style: `position:relative;width:${S}px;height:${S}px;background:#eee` }, left);
  const img = mvImage(model.get("image_png"), stack, `position:absolute;left:0;top:0;width:${S}px;height:${S}px;image-rendering:auto`);
  if (!model.get("image_png")) img.style.display = "none";
  const outline = mvEl("canvas", { cls: "mv-outline", style: `position:absolute;left:0;top:0;width:${S}px;height:${S}px;cursor:crosshair` }, stack);
  outline.width = S; outline.height = S;
  const right = mvEl("figure", { style: "margin:0" }, panels);
  const rightCap = mvEl("figcaption", { cls: "mv-caption", style: "color:#555;margin-bottom:2px;max-width:" + S + "px" }, right);
  const canvas = mvEl("canvas", { cls: "mv-clusters", style: `display:block;width:${S}px;height:${S}px;cursor:crosshair` }, right);
  canvas.width = S; canvas.height = S;
  const legend = mvEl("div", { cls: "mv-legend", style: "margin-top:4px;display:flex;flex-wrap:wrap;gap:10px" }, root);
  const info = mvEl("div", { cls: "mv-info", style: "margin-top:4px" }, root);
  const hover = mvEl("div", { cls: "mv-hover", style: "min-height:1.4em;color:#444;font-variant-numeric:tabular-nums" }, root);

  let table = null, tLabels = null, tValues = null;
  function loadTable() {
    const t = model.get("table");
    table = t ? JSON.parse(t) : null;
    tLabels = mvU8(model.get("table_labels"));
    tValues = mvF32(model.get("table_values"));
  }
  const cfgKey = () => [model.get("layer"), model.get("step"), model.get("channel_set"), model.get("k"), model.get("k_clusters")].join("|");

  function current() {  // {labels, fg, channels, values(fn), iou}
    const [R, C] = model.get("grid"), n = R * C;
    if (table && table.configs[cfgKey()]) {
      const c = table.configs[cfgKey()], v = table.values[model.get("layer") + "|" + model.get("step")];
      return {
        labels: tLabels.subarray(c.i * n, (c.i + 1) * n), fg: c.fg, channels: c.channels, iou: c.iou,
        value: (tok, j) => tValues[v.offset + tok * v.channels.length + v.channels.indexOf(c.channels[j])],
      };
    }
    const vals = mvF32(model.get("values")), ch = model.get("channels");
    return { labels: mvU8(model.get("labels")), fg: model.get("fg_cluster"), channels: ch, iou: model.get("iou"),
      value: (tok, j) => vals[tok * ch.length + j] };
  }

  function draw() {
    const t0 = performance.now();
    const [R, C] = model.get("grid"), cur = current();
    const cw = S / C, rh = S / R, a = +opSl.input.value / 100, fg = cur.fg + 1;
    const ctx = canvas.getContext("2d"), octx = outline.getContext("2d");
    ctx.clearRect(0, 0, S, S); octx.clearRect(0, 0, S, S);
    for (let t = 0; t < R * C; t++) {
      const lab = cur.labels[t], x = (t % C) * cw, y = Math.floor(t / C) * rh;
      const rgb = lab === 0 ? [235, 235, 235] : MV_PALETTE[(lab - 1) % MV_PALETTE.length];
      ctx.fillStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
      ctx.fillRect(x, y, cw + 0.5, rh + 0.5);
      if (cur.fg >= 0 && lab !== fg && a > 0) { octx.fillStyle = `rgba(20,20,20,${a})`; octx.fillRect(x, y, cw + 0.5, rh + 0.5); }
    }
    // the foreground's boundary, black under white so it shows on light and dark pictures alike
    const edges = [];
    for (let t = 0; t < R * C; t++) {
      if (cur.fg < 0 || cur.labels[t] !== fg) continue;
      const r = Math.floor(t / C), c = t % C;
      const out = (rr, cc) => rr < 0 || cc < 0 || rr >= R || cc >= C || cur.labels[rr * C + cc] !== fg;
      if (out(r - 1, c)) edges.push([c * cw, r * rh, (c + 1) * cw, r * rh]);
      if (out(r + 1, c)) edges.push([c * cw, (r + 1) * rh, (c + 1) * cw, (r + 1) * rh]);
      if (out(r, c - 1)) edges.push([c * cw, r * rh, c * cw, (r + 1) * rh]);
      if (out(r, c + 1)) edges.push([(c + 1) * cw, r * rh, (c + 1) * cw, (r + 1) * rh]);
    }
    for (const g of [octx, ctx]) for (const [col, wd] of [["#000", 3.5], ["#fff", 1.5]]) {
      g.strokeStyle = col; g.lineWidth = wd; g.beginPath();
      for (const [x0, y0, x1, y1] of edges) { g.moveTo(x0, y0); g.lineTo(x1, y1); }
      g.stroke();
    }
    // selection (both panels)
    for (const g of [octx, ctx]) {
      g.strokeStyle = MV_MARK; g.lineWidth = 2;
      for (const t of model.get("selected")) g.strokeRect((t % C) * cw + 1.5, Math.floor(t / C) * rh + 1.5, cw - 3, rh - 3);
      if (box) { g.strokeStyle = "#000"; g.lineWidth = 1; g.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0); }
    }
    if (!model.get("image_png")) mvDisable(opSl, "no image");
    else if (cur.fg < 0) mvDisable(opSl, `no foreground cluster among ${model.get("k_clusters")} clusters`);
    else mvEnable(opSl);
    leftCap.textContent = cur.fg >= 0
      ? `image: foreground cluster outlined, the rest dimmed (${opSl.input.value}%)`
      : "image (no foreground cluster chosen)";
    rightCap.textContent = `token clusters: ${model.get("k_clusters")} clusters of ${R} x ${C} tokens on ${model.get("channel_set")}-${model.get("k")} channels`;
    // controls and text (textContent only)
    layerSl.input.value = String(layers.indexOf(model.get("layer"))); layerSl.out.textContent = model.get("layer");
    stepSl.input.value = String(steps.indexOf(model.get("step"))); stepSl.out.textContent = String(model.get("step"));
    kSl.input.value = String(ks.indexOf(model.get("k"))); kSl.out.textContent = String(model.get("k"));
    KSl.input.value = String(Ks.indexOf(model.get("k_clusters"))); KSl.out.textContent = String(model.get("k_clusters"));
    setSel.value = model.get("channel_set"); opSl.out.textContent = opSl.input.value + "%";
    title.textContent = model.get("title");
    legend.replaceChildren();
    for (let c = 0; c < model.get("k_clusters"); c++) {   // the colours of the overlay, named as every view names them
      const item = mvEl("span", { cls: "mv-legend-item" }, legend);
      mvEl("span", { style: `display:inline-block;width:10px;height:10px;margin-right:4px;background:rgb(${MV_PALETTE[c % MV_PALETTE.length]})` }, item);
      mvEl("span", { text: `cluster ${c}: ` + (c === cur.fg ? "foreground (outlined)" : cur.fg >= 0 ? "background" : "cluster") }, item);
    }
    info.textContent = `${model.get("channel_set")}-${model.get("k")} channels [${cur.channels.join(", ")}], ` +
      `${model.get("k_clusters")} clusters, ` + (cur.fg >= 0 ? `foreground cluster ${cur.fg}` : "no foreground cluster") + (cur.iou === null || cur.iou === undefined ? "" : `, IoU vs mask ${cur.iou.toFixed(3)}`) +
      `, ${model.get("selected").length} tokens selected`;
    root.dataset.lastDrawMs = (performance.now() - t0).toFixed(2);
    root.dataset.draws = String((+root.dataset.draws || 0) + 1);
  }

  function tokenAt(ev) {
    const r = ev.currentTarget.getBoundingClientRect(), [R, C] = model.get("grid");
    const x = (ev.clientX - r.left) * S / r.width, y = (ev.clientY - r.top) * S / r.height;
    const c = Math.floor(x / (S / C)), rr = Math.floor(y / (S / R));
    return { x, y, ok: c >= 0 && c < C && rr >= 0 && rr < R, t: rr * C + c, row: rr, col: c };
  }
  let box = null, dragged = false;
  const onUp = () => {
    if (!box) return;
    const [R, C] = model.get("grid"), cw = S / C, rh = S / R;
    const x0 = Math.min(box.x0, box.x1), x1 = Math.max(box.x0, box.x1), y0 = Math.min(box.y0, box.y1), y1 = Math.max(box.y0, box.y1);
    const sel = [];
    for (let t = 0; t < R * C; t++) {
      const cx = (t % C + 0.5) * cw, cy = (Math.floor(t / C) + 0.5) * rh;
      if (cx >= x0 && cx <= x1 && cy >= y0 && cy <= y1) sel.push(t);
    }
    box = null;
    if (dragged) { model.set("selected", sel); model.save_changes(); }
    draw();
  };
  for (const cv of [canvas, outline]) {
  cv.addEventListener("mousemove", (ev) => {
    const p = tokenAt(ev);
    if (box) { box.x1 = p.x; box.y1 = p.y; dragged = true; draw(); return; }
    if (!p.ok) { hover.textContent = ""; return; }
    const cur = current();
    const vals = cur.channels.map((ch, j) => `ch ${ch}: ${mvFmt(cur.value(p.t, j))}`).join(", ");
    hover.textContent = `token ${p.t} (row ${p.row}, col ${p.col}) · cluster ${cur.labels[p.t] - 1} · ${vals}`;
  });
  cv.addEventListener("mousedown", (ev) => {
    if (!ev.shiftKey) return;
    const p = tokenAt(ev); box = { x0: p.x, y0: p.y, x1: p.x, y1: p.y }; dragged = false;
  });
  cv.addEventListener("click", (ev) => {
    if (ev.shiftKey && dragged) return;
    const p = tokenAt(ev); if (!p.ok) return;
    const s = new Set(model.get("selected"));
    if (s.has(p.t)) s.delete(p.t); else s.add(p.t);
    model.set("selected", Array.from(s).sort((a, b) => a - b)); model.save_changes(); draw();
  });
  }
  window.addEventListener("mouseup", onUp);
  clear.addEventListener("click", () => { model.set("selected", []); model.save_changes(); draw(); });

  const onSlide = (name, arr, sl) => sl.input.addEventListener("input", () => {
    model.set(name, arr[+sl.input.value]); draw(); model.save_changes();
  });
  onSlide("layer", layers, layerSl); onSlide("step", steps, stepSl); onSlide("k", ks, kSl); onSlide("k_clusters", Ks, KSl);
  setSel.addEventListener("change", () => { model.set("channel_set", setSel.value); draw(); model.save_changes(); });
  opSl.input.addEventListener("input", () => { model.set("opacity", +opSl.input.value / 100); draw(); model.save_changes(); });

  model.on("change:table", () => { loadTable(); draw(); });
  for (const t of ["labels", "values", "channels", "iou", "fg_cluster", "selected", "layer", "step", "k", "k_clusters", "channel_set", "title"])
    model.on("change:" + t, draw);
  model.on("change:opacity", () => { opSl.input.value = String(Math.round(model.get("opacity") * 100)); draw(); });
  loadTable(); draw();
  return () => { window.removeEventListener("mouseup", onUp); root.remove(); };
}

export default { render };
