// DisruptionGrid: rows = channel sets, columns = baseline then each k; each cell shows the edited
// image and its metric values. Image (prompt) and layer-set choice redraw in the browser.

function render({ model, el }) {
  const root = mvRoot(el, "disruption-grid");
  mvEl("div", { cls: "mv-title", style: "font-weight:600;margin-bottom:4px", text: model.get("title") }, root);
  const ctl = mvEl("div", { cls: "mv-controls", style: "margin-bottom:6px" }, root);
  const prompts = model.get("prompts");
  const imSl = mvSlider(ctl, "image", 0, Math.max(0, prompts.length - 1), model.get("image"));
  imSl.input.classList.add("mv-image");
  if (prompts.length < 2) imSl.wrap.style.display = "none";
  let lsSel = null;
  if (model.get("layer_sets").length) {
    lsSel = mvSelect(ctl, "layer set", model.get("layer_sets"), model.get("layer_set"));
    lsSel.classList.add("mv-layer-set");
  }
  const prompt = mvEl("div", { cls: "mv-prompt", style: "color:#444;margin-bottom:4px" }, root);
  const grid = mvEl("table", { cls: "mv-grid", style: "border-collapse:collapse" }, root);
  mvEl("div", { style: "color:#777;margin-top:4px", text: "metrics: means over prompts and random draws (draw 0 shown); arrows give the better direction" }, root);

  function draw() {
    const t0 = performance.now();
    const i = model.get("image"), ls = model.get("layer_set"), ks = model.get("ks"), mets = model.get("metric_names");
    const cells = model.get("cells"), base = model.get("baseline");
    grid.replaceChildren();
    const head = mvEl("tr", {}, grid);
    mvEl("th", { text: "channel set \u2193  k \u2192", style: "font-weight:400;color:#555;text-align:left" }, head);
    mvEl("th", { text: "baseline" }, head);
    for (const k of ks) mvEl("th", { text: `k=${k}` }, head);
    for (const s of model.get("sets")) {
      const tr = mvEl("tr", {}, grid);
      mvEl("td", { text: s, style: "padding-right:6px" }, tr);
      mvImage(base[i], mvEl("td", { style: "padding:2px" }, tr), "width:96px;height:96px");
      for (const k of ks) {
        const td = mvEl("td", { style: "padding:2px;vertical-align:top", cls: "mv-cell" }, tr);
        const c = cells.find((c) => c.set === s && c.k === k && c.layer_set === ls);
        if (!c) { mvEl("div", { text: "–" }, td); continue; }
        mvImage(c.png[i], td, "width:96px;height:96px");
        for (const [m, arrow] of mets) mvEl("div", { text: `${m}${arrow} ${mvFmt(c.metrics[m])}`, style: "font-size:11px;color:#333" }, td);
      }
    }
    imSl.input.value = String(i); imSl.out.textContent = String(i);
    prompt.textContent = `image ${i}: ${prompts[i] ?? ""}`;
    root.dataset.lastDrawMs = (performance.now() - t0).toFixed(2);
    root.dataset.draws = String((+root.dataset.draws || 0) + 1);
  }
  imSl.input.addEventListener("input", () => { model.set("image", +imSl.input.value); draw(); model.save_changes(); });
  if (lsSel) lsSel.addEventListener("change", () => { model.set("layer_set", lsSel.value); draw(); model.save_changes(); });
  model.on("change:image", draw); model.on("change:layer_set", draw);
  draw();
  return () => root.remove();
}

export default { render };
