// massact_viz widgets: shared helpers (prepended to every view's module by widgets/base.py).
// Plain DOM, canvas and SVG; no network. User text only ever goes through textContent.

// MV_PALETTE and MV_MARK come from massact_viz/palette.py (prepended by widgets.base.esm)
const MV_SVGNS = "http://www.w3.org/2000/svg";

const MV_VIRIDIS = (() => {
  const a = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255 * (a.length - 1), j = Math.min(a.length - 2, Math.floor(t)), f = t - j;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(a[j][c] * (1 - f) + a[j + 1][c] * f);
  }
  return lut;
})();

function mvEl(tag, opts = {}, parent = null) {
  const e = document.createElement(tag);
  if (opts.text !== undefined) e.textContent = String(opts.text);
  if (opts.cls) e.className = opts.cls;
  if (opts.style) e.style.cssText = opts.style;
  if (opts.attrs) for (const [k, v] of Object.entries(opts.attrs)) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

function mvSvg(tag, attrs = {}, parent = null) {
  const e = document.createElementNS(MV_SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

function mvBytes(v) {  // a binary trait (DataView / ArrayBuffer / typed array) -> ArrayBuffer copy
  if (!v) return new ArrayBuffer(0);
  if (v instanceof ArrayBuffer) return v;
  if (ArrayBuffer.isView(v)) return v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength);
  return new ArrayBuffer(0);
}
const mvU8 = (v) => new Uint8Array(mvBytes(v));
const mvI32 = (v) => new Int32Array(mvBytes(v));
const mvF32 = (v) => new Float32Array(mvBytes(v));

function mvImage(b64, parent, style = "") {
  const img = mvEl("img", { style: "image-rendering: pixelated; display: block; " + style }, parent);
  if (b64) img.src = "data:image/png;base64," + b64;
  return img;
}

// a labelled range input; returns {wrap, input, out, hint}. A slider with one position (max <= min)
// is drawn disabled, greyed, with ``oneReason`` beside it saying why it cannot move.
function mvSlider(parent, labelText, min, max, value, step = 1, oneReason = "only one value") {
  const wrap = mvEl("label", { cls: "mv-ctl", style: "display:inline-flex;align-items:center;gap:4px;margin-right:12px" }, parent);
  mvEl("span", { text: labelText, style: "white-space:nowrap" }, wrap);
  const input = mvEl("input", { attrs: { type: "range", min, max: Math.max(min, max), step } }, wrap);
  input.value = String(value);
  const out = mvEl("span", { cls: "mv-val", style: "min-width:3em;font-variant-numeric:tabular-nums" }, wrap);
  const hint = mvEl("span", { cls: "mv-disabled-why", style: "color:#777;font-size:11px" }, wrap);
  if (max <= min) mvDisable({ wrap, input, hint }, oneReason);
  return { wrap, input, out, hint };
}

// grey out a control and say why it cannot change anything (the reason is text, never markup)
function mvDisable(sl, reason) {
  sl.input.disabled = true;
  sl.wrap.style.opacity = "0.6";
  sl.wrap.title = reason;
  sl.hint.textContent = "(" + reason + ")";
}

function mvEnable(sl) {
  sl.input.disabled = false;
  sl.wrap.style.opacity = "";
  sl.wrap.title = "";
  sl.hint.textContent = "";
}

// decade ticks (log10 positions) between lo and hi, at most ``most`` of them (every 2nd, 5th ... decade)
function mvDecades(lo, hi, most = 6) {
  const a = Math.ceil(lo - 1e-9), b = Math.floor(hi + 1e-9);
  if (b < a) return [];
  const every = Math.max(1, Math.ceil((b - a + 1) / most));
  const out = [];
  for (let d = a; d <= b; d++) if ((d - a) % every === 0) out.push(d);
  return out;
}

// 10^d as a short label: 0.01, 0.1, 1, 10, 100, 1e3 ...
function mvPow10(d) {
  if (d >= -2 && d <= 2) return String(Math.round(Math.pow(10, d) * 100) / 100);
  return "1e" + d;
}

function mvSelect(parent, labelText, options, value) {
  const wrap = mvEl("label", { cls: "mv-ctl", style: "display:inline-flex;align-items:center;gap:4px;margin-right:12px" }, parent);
  mvEl("span", { text: labelText }, wrap);
  const sel = mvEl("select", {}, wrap);
  for (const o of options) {
    const opt = mvEl("option", { text: o }, sel);
    opt.value = String(o);
  }
  sel.value = String(value);
  return sel;
}

function mvFmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e4 || a < 1e-3)) return v.toExponential(2);
  return (Math.round(v * 1000) / 1000).toString();
}

function mvRoot(el, name) {
  const root = mvEl("div", { cls: "massact-view " + name, style: "font: 13px Helvetica, Arial, sans-serif; color:#222" }, el);
  root.setAttribute("data-view", name);
  return root;
}
