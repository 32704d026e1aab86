"""One self-contained HTML page for a run directory: ``massact-viz report RUNDIR --out report.html``.

The page inlines plotly.js once (no CDN, no network at view time) and holds: the run's settings,
its images, the layer x channel heatmap, the per-layer top-1/2/3 and median curves, the top
channels against step, the top-k stability across steps, the agreement of the two statistics, and
a table of the top-k channels per layer and stream. Every piece of user text (prompts, model id)
is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import torch

from . import analysis, plots
from .errors import MassActError
from .files import atomic_write
from .run import Run, check_output_file


def _img_tag(im) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    w = max(128, im.width)
    return (f'<img alt="generated image" width="{w}" style="image-rendering:pixelated" '
            f'src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">')


def _guidance_text(meta: dict) -> str:
    """The guidance a run actually sampled with: the explicit ``guidance=``, else the pipeline's own kwargs."""
    kw = meta.get("call_kwargs") or {}
    used = ", ".join(f"{k} {kw[k]}" for k in ("true_cfg_scale", "guidance_scale") if k in kw)
    if meta.get("guidance") is not None:
        return f"{meta['guidance']} ({used})" if used else str(meta["guidance"])
    return f"the model's own ({used})" if used else "the pipeline's default"


def build_report(run: Run, *, k: int = 4, stat: str = "abs_mean") -> str:
    """The HTML text of the report for ``run`` (which must hold statistics)."""
    s = run.stats
    if s is None:
        raise MassActError("this run holds no statistics (captured with Capture(stats=False)); scan it again.")
    if stat in s.values and "image" in s.streams and \
            not torch.isfinite(s.values[stat][..., s.streams.index("image"), :]).any():
        raise MassActError("this run has no finite statistics of the image stream (every value is inf or NaN: NaN "
                           "latents, an edit "
                           "that wrote NaN, or float16 overflow), so there is nothing to draw; run.stats.summary() "
                           "marks the layers. Run it again in bfloat16 or float32 without the edit.")
    e = html.escape
    meta = run.meta
    mid = s.layers[len(s.layers) // 2]
    top_mid = s.top_k(min(3, s.width), layer=mid, stat=stat)[0]
    sections = [
        ("Channel magnitude per layer", plots.figure_fragment(plots.channel_heatmap(s, stat=stat))),
        ("Top-1 / top-2 / top-3 channel maxima and the median |x| per layer", plots.figure_fragment(plots.layer_curves(s))),
        (f"The top-{len(top_mid)} channels of {mid} (the middle block) against denoising step",
         plots.figure_fragment(plots.magnitude_vs_step(s, top_mid, layer=mid, stat=stat,
                                      title=f"{stat} of the top-{len(top_mid)} channels of {mid} against denoising step"
                                            + (f" ({plots.short_text(run.prompts[0], 48)})" if len(run.prompts) == 1 else "")))),
    ]
    if len(s.steps) > 1:
        m = analysis.stability(s, k, over="steps", layer=mid, stat=stat)
        sections.append((f"Top-{k} stability across steps at {mid}",
                         plots.figure_fragment(plots.stability_matrix(m, [f"step {x}" for x in s.steps]))))
    agree = {st: analysis.statistic_agreement(s, k, stream=st)["top"] for st in s.streams}
    rows = []
    for r in s.summary(k=k, stat=stat):
        li = s.layers.index(r["layer"])
        j = float(agree[r["stream"]][li])
        chans = ", ".join(f"{c} ({v:.3g})" for c, v in zip(r["top_channels"], r["top_scores"]))
        iv = s.ratio_interval(r["layer"], stat=stat, stream=r["stream"])
        per_image = f"{iv.mean:.3g} [{iv.lo:.3g}, {iv.hi:.3g}], n = {iv.n}" if iv.n > 1 else f"{iv.mean:.3g}, n = 1"
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3g}"
        ratio += f" ({r['non_finite']} channels inf/NaN)" if r["non_finite"] else ""
        median = "n/a" if r["median_score"] is None else f"{r['median_score']:.3g}"
        rows.append(f"<tr><td>{e(r['layer'])}</td><td>{e(r['stream'])}</td><td>{ratio}</td>"
                    f"<td>{per_image}</td>"
                    f"<td>{median}</td><td>{chans}</td><td>{'n/a' if j != j else f'{j:.2f}'}</td></tr>")
    settings = {"model": meta.get("model"), "family": meta.get("family"), "dtype": meta.get("dtype"),
                "size": meta.get("size"), "denoising steps": meta.get("num_steps"), "guidance": _guidance_text(meta),
                "seeds": meta.get("seeds"), "scheduler": (meta.get("scheduler") or {}).get("class"),
                "massact_viz": (meta.get("versions") or {}).get("massact_viz")}
    prompts = "".join(f"<li>{e(p)}</li>" for p in run.prompts)
    imgs = "".join(f"<figure>{_img_tag(im)}<figcaption>{e(p)}</figcaption></figure>"
                   for im, p in zip(run.images, run.prompts))
    body = "".join(f"<h2>{e(t)}</h2>{f}" for t, f in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>massact_viz report: {e(str(meta.get('model')))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}}figure{{display:inline-block;margin:4px}}
figcaption{{font-size:12px;max-width:200px}}</style>
</head><body>
<h1>massact_viz report</h1>
<table>{''.join(f'<tr><th>{e(str(a))}</th><td>{e(str(b))}</td></tr>' for a, b in settings.items())}</table>
<h2>Prompts</h2><ol>{prompts}</ol>
<h2>Images</h2>{imgs}
{body}
<h2>Top-{k} channels per layer by {e(stat)} (mean over images and steps)</h2>
<p>ratio = top-1 / median channel score of the scores averaged over images; per image = the same ratio of each
image's own scores, as a mean over the n images with its 95 % bootstrap interval; Jaccard = overlap of the
top-{k} by abs_mean and by mean_abs.</p>
<table><tr><th>layer</th><th>stream</th><th>ratio</th><th>ratio per image</th><th>median</th><th>top channels (score)</th>
<th>Jaccard</th></tr>
{''.join(rows)}</table>
{plots.plotlyjs_loader()}
</body></html>
"""


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike, *, k: int = 4, stat: str = "abs_mean") -> Path:
    """Load ``run_dir`` and write its report to ``out`` (atomically; ``out`` must be an ``.html`` file name,
    and never a file of a run directory)."""
    check_output_file(out, (".html", ".htm"), "report")
    text = build_report(Run.load(run_dir), k=k, stat=stat)
    return atomic_write(out, text)
