"""Family adapters on tiny pipelines of every family: blocks, streams, token grid, CFG rows, padding."""
import pytest
import torch

import massact_viz as mv
from massact_viz.testing import FAMILIES, default_call_kwargs

SIZE = (32, 32)
DUAL = {"flux", "flux2", "qwenimage", "sd3"}
# kwargs that make each family run classifier-free guidance (batched or as separate calls)
CFG = {"flux": dict(true_cfg_scale=3.0, negative_prompt="blurry"), "flux2": {}, "qwenimage": {},
       "sd3": {}, "pixart": {}, "sana": {}}


def kw(family, cfg=False):
    d = {k: v for k, v in default_call_kwargs(family).items() if k not in ("height", "width")}
    if cfg:
        d.update(CFG[family])
    return d


class Recorder:
    """Plain register_forward_hook capture of every block output, per transformer call."""

    def __init__(self, model):
        self.model, self.calls, self.handles = model, [], []

    def __enter__(self):
        tr = self.model.pipe.transformer
        self.handles.append(tr.register_forward_pre_hook(lambda m, a: self.calls.append({})))
        for b in self.model.blocks:
            def hook(m, a, out, b=b):
                outs = out if isinstance(out, tuple) else (out,)
                self.calls[-1][b.name] = tuple(None if o is None else o.detach().clone() for o in outs)
            self.handles.append(tr.get_submodule(b.path).register_forward_hook(hook))
        return self

    def __exit__(self, *e):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_blocks_in_execution_order(family, tiny_model):
    m = tiny_model(family)
    tr = m.pipe.transformer
    lists = [g.attr for g in m.family.groups]
    expected = sum(len(getattr(tr, a)) for a in lists)
    assert len(m.blocks) == expected
    assert [b.index for b in m.blocks] == list(range(expected))
    assert len({b.name for b in m.blocks}) == expected
    first_kind = m.family.groups[0].kind
    assert m.blocks[0].name == f"{first_kind}.0"
    # the order in which the blocks really run
    order = []
    hs = [tr.get_submodule(b.path).register_forward_hook(lambda *a, n=b.name: order.append(n)) for b in m.blocks]
    try:
        m.generate("a cat", num_steps=1, size=SIZE, progress=False, **kw(family))
    finally:
        [h.remove() for h in hs]
    names = [b.name for b in m.blocks]
    assert len(order) % len(names) == 0 and order == names * (len(order) // len(names))
    assert m.layer(m.blocks[-1].name) is m.layer(-1)
    text = repr(m)
    assert m.family.title in text and f"{len(m.blocks)} in execution order" in text


@pytest.mark.parametrize("family", FAMILIES)
def test_stream_split_shapes(family, tiny_model):
    m = tiny_model(family)
    rows, cols = m.token_grid(SIZE)
    first, last = m.blocks[0].name, m.blocks[-1].name
    raw = [mv.Raw(first, 0, "image"), mv.Raw(last, 0, "image")]
    if family in DUAL:
        raw.append(mv.Raw(first, 0, "text"))
    run = m.run(["a cat", "a dog"], num_steps=1, size=SIZE, progress=False, capture=mv.Capture(raw=raw), **kw(family))
    img = run.raw[f"{first}/step0/image"]
    assert img.shape == (2, rows * cols, m.width)
    assert run.raw[f"{last}/step0/image"].shape == (2, rows * cols, m.width)
    if family in DUAL:
        txt = run.raw[f"{first}/step0/text"]
        assert txt.shape[0] == 2 and txt.shape[2] == m.width and txt.shape[1] >= 1
        assert run.stats.streams == ["image", "text"]
    else:
        assert run.stats.streams == ["image"]
        with pytest.raises(mv.MassActError, match="not available"):
            m.run("a cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture(streams=["text"]), **kw(family))


def _tokens_of_latent_pixel(m, y, x, lat_hw):
    """Index of the image token that a latent pixel (y, x) lands in, by the pipeline's own code."""
    pipe, fam = m.pipe, m.family.name
    torch.manual_seed(0)
    if fam in ("flux", "qwenimage"):
        c = pipe.transformer.config.in_channels // 4
        z = torch.randn(1, c, *lat_hw)
        pack = lambda t: pipe._pack_latents(t, 1, c, *lat_hw)  # noqa: E731
    elif fam == "flux2":
        c = pipe.transformer.config.in_channels // 4
        z = torch.randn(1, c, *lat_hw)
        pack = lambda t: pipe._pack_latents(pipe._patchify_latents(t))  # noqa: E731
    else:
        embed = pipe.transformer.patch_embed if fam == "sana" else pipe.transformer.pos_embed
        z = torch.randn(1, pipe.transformer.config.in_channels, *lat_hw)
        pack = embed
    z2 = z.clone()
    z2[0, 0, y, x] += 1.0
    with torch.no_grad():
        diff = (pack(z2) - pack(z)).abs().sum(-1)[0]
    return torch.nonzero(diff > 0).flatten().tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_token_grid_matches_pipeline_packing(family, tiny_model):
    m = tiny_model(family)
    rows, cols = m.token_grid(SIZE)
    ppt = m.family.pixels_per_token(m.pipe)
    assert (rows * ppt, cols * ppt) == SIZE
    per_tok = ppt // m.pipe.vae_scale_factor  # latent pixels per token side
    lat_hw = (rows * per_tok, cols * per_tok)
    for y, x in [(0, 0), (lat_hw[0] - 1, 0), (1, lat_hw[1] - 1), (lat_hw[0] // 2 + 1, lat_hw[1] // 3)]:
        toks = _tokens_of_latent_pixel(m, y, x, lat_hw)
        assert len(toks) == 1
        assert m.family.token_rc(toks[0], (rows, cols)) == (y // per_tok, x // per_tok)
        top, left, bottom, right = m.family.token_box(m.pipe, toks[0], (rows, cols))
        vsf = m.pipe.vae_scale_factor
        assert top <= y * vsf < bottom and left <= x * vsf < right


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_equals_plain_forward_hooks(family, tiny_model):
    """Statistics equal a plain register_forward_hook capture of the conditional rows (bit-identical)."""
    m = tiny_model(family)
    steps, n = 2, 2
    with Recorder(m) as rec:
        run = m.run(["a red cat", "a green tree"], num_steps=steps, size=SIZE, progress=False, **kw(family, cfg=True))
    n_tok = run.meta["token_grid"][0] * run.meta["token_grid"][1]
    calls_per_step = len(rec.calls) // steps
    assert len(rec.calls) == steps * calls_per_step
    for s in range(steps):
        call = rec.calls[s * calls_per_step]  # conditional pass is the first call of a step
        for li, b in enumerate(m.blocks):
            out = call[b.name]
            if b.layout == "joint":
                img = out[0][:, -n_tok:]
            else:
                img = out[-1] if b.layout == "text_image" else out[0]
            if img.shape[0] == 2 * n:  # batched CFG: [uncond; cond]
                img = img[n:]
            img = img[:, :n_tok]
            got = run.stats.values["abs_mean"][:, s, li, 0]
            assert torch.equal(got, img.mean(dim=1, dtype=torch.float32).abs()), (b.name, s)
            assert torch.equal(run.stats.values["mean_abs"][:, s, li, 0], img.abs().mean(dim=1, dtype=torch.float32))
            assert torch.equal(run.stats.values["max_abs"][:, s, li, 0], img.abs().amax(dim=1).float())


@pytest.mark.parametrize("family", FAMILIES)
def test_cfg_conditional_rows(family, tiny_model):
    """Raw slices and stats come from the conditional branch, never the unconditional one."""
    m = tiny_model(family)
    name = m.blocks[0].name
    with Recorder(m) as rec:
        run = m.run("a red cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture(raw=[mv.Raw(name, 0)]),
                    **kw(family, cfg=True))
    got = run.raw[f"{name}/step0/image"]
    n_tok = got.shape[1]
    outs = [c[name] for c in rec.calls]
    img_of = lambda o: (o[0][:, -n_tok:] if m.blocks[0].layout == "joint" else o[-1] if m.blocks[0].layout == "text_image" else o[0])[:, :n_tok]  # noqa: E731
    if family in ("sd3", "pixart", "sana"):  # batched
        assert len(outs) == 1 and img_of(outs[0]).shape[0] == 2
        assert torch.equal(got, img_of(outs[0])[1:])
        assert not torch.equal(got, img_of(outs[0])[:1])
    else:  # separate calls: the first call of the step is the conditional one
        assert len(outs) == 2
        assert torch.equal(got, img_of(outs[0]))
        assert not torch.equal(got, img_of(outs[1]))


@pytest.mark.parametrize("family", ["flux", "sd3", "qwenimage"])
def test_text_padding_excluded(family, tiny_model):
    m = tiny_model(family)
    name = m.blocks[0].name
    run = m.run("a cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture(raw=[mv.Raw(name, 0, "text")]),
                **kw(family))
    txt = run.raw[f"{name}/step0/text"][0]  # (T, D)
    if family == "flux":
        mask = m.pipe.tokenizer_2(["a cat"], padding="max_length", max_length=txt.shape[0],
                                  truncation=True, return_tensors="pt").attention_mask[0].bool()
    elif family == "sd3":
        clip = m.pipe.tokenizer(["a cat"], padding="max_length", max_length=77, truncation=True,
                                return_tensors="pt").attention_mask[0].bool()
        t5 = m.pipe.tokenizer_3(["a cat"], padding="max_length", max_length=txt.shape[0] - 77, truncation=True,
                                return_tensors="pt").attention_mask[0].bool()
        mask = torch.cat([clip, t5])
    else:  # qwenimage trims padding for a single prompt: every text token is real
        mask = torch.ones(txt.shape[0], dtype=torch.bool)
    assert 0 < int(mask.sum()) <= txt.shape[0]
    expect = txt[mask].mean(dim=0).abs()
    got = run.stats.get("abs_mean", layer=name, stream="text")
    assert torch.allclose(got, expect, atol=1e-6, rtol=1e-5)
    if not mask.all():
        assert not torch.allclose(got, txt.mean(dim=0).abs(), atol=1e-6)


def test_qwenimage_mask_from_transformer_kwarg(tiny_model):
    """With prompts of different lengths the pipeline pads; the transformer's mask drops the padding."""
    m = tiny_model("qwenimage")
    name = m.blocks[0].name
    prompts = ["a cat", "a red cat sitting on a small table in the room"]
    run = m.run(prompts, num_steps=1, size=SIZE, progress=False, capture=mv.Capture(raw=[mv.Raw(name, 0, "text")]),
                **kw("qwenimage"))
    txt = run.raw[f"{name}/step0/text"]
    single = m.run(prompts[:1], num_steps=1, size=SIZE, progress=False,
                   capture=mv.Capture(raw=[mv.Raw(name, 0, "text")]), **kw("qwenimage"))
    n_real = single.raw[f"{name}/step0/text"].shape[1]
    assert txt.shape[1] > n_real  # the short prompt was padded in the batch
    expect = txt[0, :n_real].mean(dim=0).abs()
    got = run.stats.values["abs_mean"][0, 0, 0, 1]
    assert torch.allclose(got, expect, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["flux", "flux2", "qwenimage", "sana", "sd3", "pixart"])
def test_uses_cfg_says_whether_the_pipeline_makes_unconditional_calls(family, tiny_model):
    import massact_viz as mv
    from massact_viz.testing import default_call_kwargs
    m = tiny_model(family)
    scale = m.family.cfg_scale_kwarg
    base = {k: v for k, v in default_call_kwargs(family).items()
            if k not in ("height", "width", "guidance_scale", "true_cfg_scale", "negative_prompt")}
    cases = [{scale: 1.0}, {scale: 3.0}] + ([{scale: 3.0, "negative_prompt": "blurry"}]
                                           if m.family.cfg_needs_negative_prompt else [])
    for kwargs in cases:
        uncond_rows = set()
        m.run("a cat", num_steps=1, size=SIZE, progress=False, capture=mv.Capture.nothing(),
              edit=lambda site: uncond_rows.add(site.uncond.stop - site.uncond.start), **base, **kwargs)
        assert (max(uncond_rows) > 0) == m.family.uses_cfg(kwargs), (family, kwargs, uncond_rows)


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "bogus"}, "unknown device"), ({"device": "tpu"}, "unknown device"),
    ({"dtype": "int8"}, "unknown dtype"),
])
def test_load_refuses_devices_and_dtypes_it_cannot_use(kwargs, message):
    import massact_viz as mv
    with pytest.raises(mv.MassActError, match=message):
        mv.load("tiny:flux", **kwargs)


def test_load_refuses_integer_torch_dtypes():
    import torch

    import massact_viz as mv
    with pytest.raises(mv.MassActError, match="floating-point"):
        mv.load("tiny:flux", dtype=torch.int8)
