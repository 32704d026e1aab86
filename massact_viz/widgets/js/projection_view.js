// ProjectionView: SVG scatter of token projections; box or lasso drag or click selects tokens
// (synced `selected`, linked in Python to the TokenClusterMap's selection).

function render({ model, el }) {
  const root = mvRoot(el, "projection-view");
  const title = mvEl("div", { cls: "mv-title", style: "font-weight:600" }, root);
  const sub = mvEl("div", { cls: "mv-subtitle", style: "color:#555;margin-bottom:4px" }, root);
  const ctl = mvEl("div", { cls: "mv-controls", style: "margin-bottom:4px" }, root);
  const modeSel = mvSelect(ctl, "select by", ["box", "lasso"], "box");
  modeSel.classList.add("mv-mode");
  const clear = mvEl("button", { text: "clear selection", cls: "mv-clear" }, ctl);
  const count = mvEl("span", { cls: "mv-count", style: "margin-left:8px;color:#444" }, ctl);
  const S = 340, pad = 12;
  const plot = mvEl("div", { style: "display:flex;align-items:center" }, root);
  const yLab = mvEl("div", { cls: "mv-axis-y", style: "writing-mode:vertical-rl;transform:rotate(180deg);color:#333;margin-right:4px" }, plot);
  const svg = mvSvg("svg", { width: S, height: S, class: "mv-scatter", style: "border-left:1px solid #555;border-bottom:1px solid #555;cursor:crosshair;user-select:none" }, plot);
  const xLab = mvEl("div", { cls: "mv-axis-x", style: `width:${S}px;margin-left:22px;text-align:center;color:#333` }, root);
  const legend = mvEl("div", { cls: "mv-legend", style: "margin-top:4px;display:flex;flex-wrap:wrap;gap:10px" }, root);
  const gPts = mvSvg("g", {}, svg);
  const shape = mvSvg("path", { fill: "rgba(213,94,0,0.1)", stroke: "#D55E00", "stroke-width": 1 }, svg);
  const hover = mvEl("div", { cls: "mv-hover", style: "min-height:1.4em;color:#444" }, root);

  let P = [], circles = [];
  function layout() {
    const xy = mvF32(model.get("coords")), lab = mvU8(model.get("labels")), n = xy.length / 2;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) { x0 = Math.min(x0, xy[2 * i]); x1 = Math.max(x1, xy[2 * i]); y0 = Math.min(y0, xy[2 * i + 1]); y1 = Math.max(y1, xy[2 * i + 1]); }
    const sx = x1 > x0 ? (S - 2 * pad) / (x1 - x0) : 0, sy = y1 > y0 ? (S - 2 * pad) / (y1 - y0) : 0;
    P = [];
    for (let i = 0; i < n; i++) P.push([pad + (xy[2 * i] - x0) * sx, S - pad - (xy[2 * i + 1] - y0) * sy, lab[i]]);
    gPts.replaceChildren(); circles = [];
    const C = model.get("grid")[1];
    P.forEach(([x, y, l], i) => {
      const rgb = l === 0 ? [150, 150, 150] : MV_PALETTE[(l - 1) % MV_PALETTE.length];
      const c = mvSvg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 3, fill: `rgb(${rgb})`, "data-token": i }, gPts);
      c.addEventListener("mouseenter", () => { hover.textContent = `token ${i} (row ${Math.floor(i / C)}, col ${i % C}), cluster ${l - 1}`; });
      circles.push(c);
    });
    paint();
  }
  function paint() {
    const sel = new Set(model.get("selected"));
    circles.forEach((c, i) => {
      const on = sel.has(i);
      c.setAttribute("r", on ? 4.5 : 3);
      c.setAttribute("stroke", on ? "#000" : "none");
      c.setAttribute("opacity", sel.size && !on ? 0.35 : 1);
    });
    title.textContent = model.get("title"); sub.textContent = model.get("subtitle");
    const m = (model.get("method") || "").toUpperCase(), axis = m === "PCA" ? "PC" : m;
    xLab.textContent = `${axis} 1 (arbitrary units)`; yLab.textContent = `${axis} 2 (arbitrary units)`;
    legend.replaceChildren();
    (model.get("legend") || []).forEach((text, c) => {
      const item = mvEl("span", { cls: "mv-legend-item" }, legend);
      mvEl("span", { style: `display:inline-block;width:10px;height:10px;margin-right:4px;background:rgb(${MV_PALETTE[c % MV_PALETTE.length]})` }, item);
      mvEl("span", { text }, item);
    });
    count.textContent = `${sel.size} selected`;
    root.dataset.draws = String((+root.dataset.draws || 0) + 1);
  }

  const inPoly = (x, y, poly) => {
    let inside = false;
    for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
      const [xi, yi] = poly[i], [xj, yj] = poly[j];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  };
  const at = (ev) => { const r = svg.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; };
  let drag = null;
  svg.addEventListener("mousedown", (ev) => { drag = [at(ev)]; ev.preventDefault(); });
  svg.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const p = at(ev);
    if (modeSel.value === "box") drag = [drag[0], p]; else drag.push(p);
    const pts = modeSel.value === "box"
      ? [drag[0], [drag[1][0], drag[0][1]], drag[1], [drag[0][0], drag[1][1]]] : drag;
    shape.setAttribute("d", "M" + pts.map((q) => q.join(" ")).join(" L") + " Z");
  });
  function finish(ev) {
    if (!drag) return;
    const d = drag; drag = null; shape.setAttribute("d", "");
    if (d.length < 2 || Math.hypot(d[d.length - 1][0] - d[0][0], d[d.length - 1][1] - d[0][1]) < 3) {
      // a click: toggle the nearest point within 6 px
      const [x, y] = d[0]; let best = -1, bd = 36;
      P.forEach(([px, py], i) => { const dd = (px - x) ** 2 + (py - y) ** 2; if (dd < bd) { bd = dd; best = i; } });
      if (best < 0) return;
      const s = new Set(model.get("selected")); if (s.has(best)) s.delete(best); else s.add(best);
      model.set("selected", Array.from(s).sort((a, b) => a - b));
    } else {
      const poly = modeSel.value === "box" ? [d[0], [d[1][0], d[0][1]], d[1], [d[0][0], d[1][1]]] : d;
      const sel = []; P.forEach(([x, y], i) => { if (inPoly(x, y, poly)) sel.push(i); });
      model.set("selected", sel);
    }
    model.save_changes(); paint();
  }
  svg.addEventListener("mouseup", finish);
  svg.addEventListener("mouseleave", finish);
  clear.addEventListener("click", () => { model.set("selected", []); model.save_changes(); paint(); });
  model.on("change:coords", layout); model.on("change:labels", layout);
  model.on("change:selected", paint); model.on("change:subtitle", paint); model.on("change:legend", paint);
  layout();
  return () => root.remove();
}

export default { render };
