// TransportTimeline: rows source / target / transported (+ controls), one column per step, a step
// scrubber enlarging that step of every row; final images large; settings and metrics tables.

function render({ model, el }) {
  const root = mvRoot(el, "transport-timeline");
  mvEl("div", { cls: "mv-title", style: "font-weight:600;margin-bottom:4px", text: model.get("title") }, root);
  const rows = model.get("rows"), psteps = model.get("preview_steps");
  let scrub = null, cells = [], bigs = [], tl = null;
  if (rows.length && psteps.length) {
    const ctl = mvEl("div", { cls: "mv-controls", style: "margin-bottom:6px" }, root);
    scrub = mvSlider(ctl, "step", 0, psteps.length - 1, Math.max(0, model.get("step")));
    scrub.input.classList.add("mv-step");
    const wrap = mvEl("div", { style: "display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start;max-width:100%" }, root);
    tl = mvEl("div", { cls: "mv-timeline", style: "overflow-x:auto;max-width:100%;position:relative" }, wrap);
    const tbl = mvEl("table", { style: "border-collapse:collapse" }, tl);
    const head = mvEl("tr", {}, tbl);
    mvEl("th", { text: "step", style: "font-weight:400;color:#555;position:sticky;left:0;background:#fff;z-index:1" }, head);
    psteps.forEach((s, j) => {
      const th = mvEl("th", { text: String(s), style: "font-weight:400;color:#555;cursor:pointer" }, head);
      th.addEventListener("click", () => setStep(j));
    });
    rows.forEach((r) => {
      const tr = mvEl("tr", {}, tbl);
      mvEl("td", { text: r.name, style: "padding-right:6px;white-space:nowrap;position:sticky;left:0;background:#fff;z-index:1" }, tr);
      const rc = [];
      r.thumbs.forEach((b, j) => {
        const td = mvEl("td", { style: "padding:1px;border:2px solid transparent;cursor:pointer" }, tr);
        const im = mvImage(b, td, "width:64px;height:64px;image-rendering:auto");
        im.classList.add("mv-thumb");
        td.addEventListener("click", () => setStep(j));
        rc.push(td);
      });
      cells.push(rc);
    });
    const sideWrap = mvEl("div", {}, wrap);
    const cap = mvEl("div", { cls: "mv-at-step-label", style: "color:#555" }, sideWrap);
    const side = mvEl("div", { cls: "mv-at-step", style: "display:flex;flex-wrap:wrap;gap:6px;max-width:300px" }, sideWrap);
    rows.forEach((r) => {
      const f = mvEl("figure", { style: "margin:0 0 6px 0" }, side);
      const im = mvImage(r.frames[0], f, "width:128px;height:128px");
      im.classList.add("mv-frame");
      mvEl("figcaption", { text: r.name }, f);
      bigs.push(im);
    });
    bigs.cap = cap;
  } else {
    mvEl("div", { cls: "mv-note", style: "color:#777", text: "no per-step previews in this result: final images only (run transport(..., previews=True))." }, root);
  }
  mvEl("div", { text: "final images (decoded after the last step)", style: "font-weight:600;margin-top:8px" }, root);
  const fin = mvEl("div", { cls: "mv-finals", style: "display:flex;gap:8px;flex-wrap:wrap" }, root);
  const metrics = model.get("metrics"), explain = model.get("metric_notes");
  const HEADLINE = [["toward_source", "toward source"], ["ssim_target", "structure kept"]];
  for (const f of model.get("finals")) {
    const fig = mvEl("figure", { style: "margin:0" }, fin);
    mvImage(f.png, fig, "width:192px;height:192px").classList.add("mv-final");
    const capt = mvEl("figcaption", { text: f.name, style: "font-weight:600" }, fig);
    const m = metrics[f.name];
    if (m) for (const [k, label] of HEADLINE) if (k in m) {
      const d = mvEl("div", { text: `${label} ${mvFmt(m[k])}`, style: "color:#444;font-weight:400" }, capt);
      d.title = explain[k] || "";
    }
  }
  const names = Object.keys(metrics);
  if (names.length) {   // every metric, as a table whose rows say what each one measures
    const md = mvEl("details", { cls: "mv-metrics", style: "margin-top:6px" }, root);
    mvEl("summary", { text: "all metrics (what each measures)" }, md);
    const mt = mvEl("table", { style: "border-collapse:collapse" }, md);
    const hr = mvEl("tr", {}, mt);
    mvEl("th", { text: "metric", style: "text-align:left;padding-right:8px" }, hr);
    names.forEach((n) => mvEl("th", { text: n, style: "text-align:right;padding:0 6px" }, hr));
    mvEl("th", { text: "meaning", style: "text-align:left;padding-left:8px" }, hr);
    const keys = [...new Set(names.flatMap((n) => Object.keys(metrics[n])))];
    for (const k of keys) {
      const tr = mvEl("tr", {}, mt);
      mvEl("td", { text: k, style: "padding-right:8px" }, tr);
      names.forEach((n) => mvEl("td", { text: k in metrics[n] ? mvFmt(metrics[n][k]) : "", style: "text-align:right;padding:0 6px;font-variant-numeric:tabular-nums" }, tr));
      mvEl("td", { text: explain[k] || "", style: "padding-left:8px;color:#555" }, tr);
    }
  }
  const det = mvEl("details", { style: "margin-top:6px" }, root);
  mvEl("summary", { text: "settings" }, det);
  const st = mvEl("table", { cls: "mv-settings" }, det);
  for (const [k, v] of model.get("settings")) {
    const tr = mvEl("tr", {}, st);
    mvEl("td", { text: k, style: "padding-right:8px;color:#555;vertical-align:top" }, tr);
    mvEl("td", { text: v }, tr);
  }

  function keepInView() {   // scroll the timeline so that the selected step's column is visible
    const j = model.get("step");
    const td = cells.length && j >= 0 ? cells[0][j] : null;
    if (!td || !tl || !tl.clientWidth) return;
    const a = tl.getBoundingClientRect(), b = td.getBoundingClientRect();
    if (b.left < a.left) tl.scrollLeft -= a.left - b.left + 80;
    else if (b.right > a.right) tl.scrollLeft += b.right - a.right + 4;
  }
  if (tl && typeof ResizeObserver !== "undefined") new ResizeObserver(keepInView).observe(tl);   // once laid out
  function setStep(j) { model.set("step", j); draw(); model.save_changes(); }
  function draw() {
    const t0 = performance.now();
    const j = model.get("step");
    if (scrub && j >= 0) {
      scrub.input.value = String(j); scrub.out.textContent = String(psteps[j]);
      cells.forEach((rc) => rc.forEach((td, jj) => { td.style.borderColor = jj === j ? MV_MARK : "transparent"; }));
      bigs.forEach((im, i) => { im.src = "data:image/png;base64," + rows[i].frames[j]; });
      bigs.cap.textContent = `predicted clean image at step ${psteps[j]} (last step: ${psteps[psteps.length - 1]})`;
      keepInView();
    }
    root.dataset.lastDrawMs = (performance.now() - t0).toFixed(2);
    root.dataset.draws = String((+root.dataset.draws || 0) + 1);
  }
  if (scrub) scrub.input.addEventListener("input", () => setStep(+scrub.input.value));
  model.on("change:step", draw);
  draw();
  return () => root.remove();
}

export default { render };
