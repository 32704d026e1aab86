"""Loading a DiT pipeline and the :class:`Model` facade that captures, edits and summarizes it."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .capture import Capture, run_capture
from .dit import DiT
from .errors import MassActError
from .files import data_dir
from .families import detect
from .hooks import Site
from .nnsight_engine import block_envoy, nnsight_model
from .specs import check_engine
from .run import Run

#: Names that load a model shipped with (or built by) massact_viz instead of a Hub id or directory.
EMBEDDED = {"shapes": "the embedded teaching model (data/shapes)"}
TINY_PREFIX = "tiny:"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """bfloat16 on GPUs and float32 on CPU unless asked otherwise."""
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise MassActError(f"dtype must be a floating-point type (bfloat16, float16 or float32), got {dtype}.")
        return dtype
    if dtype not in _DTYPES:
        raise MassActError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}.")
    return _DTYPES[dtype]


def check_device(device: Any) -> str:
    """``device`` as torch names it, and present on this machine; one clear error otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise MassActError(f"unknown device {device!r}; use 'cuda', 'cuda:1', 'mps' or 'cpu'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MassActError(f"device {device!r} was asked for but this torch sees no CUDA GPU; use device='cpu'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MassActError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise MassActError(f"device {device!r} is not one massact_viz runs on; use 'cuda', 'mps' or 'cpu'.")
    return str(device)


def default_model() -> str:
    """The embedded default model: ``"shapes"`` (the teaching model) when its weights are present, else
    ``"tiny:flux"``. What the CLI and the notebooks load when no model is named."""
    return "shapes" if (data_dir() / "shapes").exists() else "tiny:flux"


def load(source: Any, *, device: str | None = None, dtype: str | torch.dtype | None = None,
         offload: str | None = None, revision: str | None = None, engine: str = "hooks") -> "Model":
    """Load a DiT for tracing.

    ``source`` is a Hub id (``"black-forest-labs/FLUX.1-schnell"``), a local pipeline directory
    (written by ``save_pretrained``), an in-memory ``DiffusionPipeline``, ``"shapes"`` (the
    embedded teaching model) or ``"tiny:<family>"`` (a tiny random pipeline from
    :mod:`massact_viz.testing`, for tests and demos).

    ``device`` defaults to CUDA when available, else CPU; ``dtype`` to bfloat16 on GPU and float32 on
    CPU. ``offload="model"`` or ``"sequential"`` uses diffusers' CPU offload instead of moving the
    whole pipeline to the device. ``HF_HUB_OFFLINE=1`` is respected (nothing is downloaded).
    ``engine`` (``"hooks"`` or ``"nnsight"``) is what runs captures and edits (:attr:`Model.engine`).
    """
    check_engine(engine)
    device = check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = parse_dtype(dtype, device)
    if torch_dtype == torch.float16 or (dtype is None and _is_fp16_pipeline(source)):
        warnings.warn("float16 overflows in DiTs with massive activations (values above 65504 become inf); "
                      "prefer dtype='bfloat16'. massact_viz will flag non-finite statistics.", stacklevel=2)
    if offload not in (None, "model", "sequential"):
        raise MassActError(f"offload must be None, 'model' or 'sequential', got {offload!r}.")
    name, defaults = (source if isinstance(source, str) else None), {}
    if isinstance(source, (str, os.PathLike)):
        pipe, name = _load_pipeline(str(source), torch_dtype, revision)
        sampling = dict((getattr(pipe, "shapes_metadata", None) or {}).get("sampling", {}))
        defaults = {k: v for k, v in sampling.items() if k not in ("height", "width")}
    elif hasattr(source, "components") and hasattr(source, "__call__"):
        pipe = source
        name = getattr(getattr(pipe, "config", None), "_name_or_path", None) or type(pipe).__name__
        if dtype is not None:
            _cast(pipe, torch_dtype)
        else:
            torch_dtype = next(pipe.transformer.parameters()).dtype
    else:
        raise MassActError(f"cannot load {type(source).__name__}: pass a Hub id, a local pipeline directory, "
                           f"a diffusers DiffusionPipeline, 'shapes' or 'tiny:<family>'.")
    family = detect(pipe)
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            comp.eval().requires_grad_(False)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    return Model(pipe, family=family, source=name, dtype=torch_dtype, device=device, offload=offload,
                 revision=revision, defaults=defaults, engine=engine)


def _is_fp16_pipeline(source: Any) -> bool:
    tr = getattr(source, "transformer", None)
    return tr is not None and next(tr.parameters()).dtype == torch.float16


def _cast(pipe: Any, dtype: torch.dtype) -> Any:
    """Cast a built pipeline to ``dtype`` unless it already is (diffusers warns on every cast)."""
    if next(pipe.transformer.parameters()).dtype != dtype:
        pipe.to(dtype=dtype)
    return pipe


def _load_pipeline(source: str, dtype: torch.dtype, revision: str | None):
    if source in EMBEDDED:
        from .shapes.model import load_shapes_pipeline  # the embedded teaching model
        path = data_dir() / source
        if not path.exists():
            raise MassActError(f"the embedded model {source!r} is not in {path}; check out the repository with "
                               f"its data/ folder or set MASSACT_VIZ_DATA.")
        return _cast(load_shapes_pipeline(path), dtype), source
    if source.startswith(TINY_PREFIX):
        from .testing import FAMILIES, tiny_pipeline
        fam = source[len(TINY_PREFIX):]
        if fam not in FAMILIES:
            raise MassActError(f"unknown tiny pipeline {source!r}; use tiny:<family> with family in {FAMILIES}.")
        return _cast(tiny_pipeline(fam), dtype), source
    from diffusers import DiffusionPipeline

    p = Path(source).expanduser()
    if p.exists():
        if not (p / "model_index.json").is_file():
            raise MassActError(f"{p} is not a diffusers pipeline directory (no model_index.json); save one with "
                               f"pipe.save_pretrained(...) or pass a Hub id.")
        return DiffusionPipeline.from_pretrained(str(p), dtype=dtype), str(p)
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise MassActError(f"{source!r} is neither an existing directory nor a Hub id of the form 'owner/name'. "
                           f"Embedded models: {sorted(EMBEDDED)}; tiny pipelines: 'tiny:<family>'.")
    try:
        return DiffusionPipeline.from_pretrained(source, dtype=dtype, revision=revision), source
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        hint = ("HF_HUB_OFFLINE is set, so only models already in the local Hugging Face cache load; "
                if offline else "")
        raise MassActError(f"could not load {source!r} from the Hugging Face Hub ({type(e).__name__}: {e}). {hint}"
                           f"Download it where you have access (`hf download {source}`; gated models need "
                           f"`hf auth login` and accepting the licence) or pass a local directory.") from e


class Model(DiT):
    """A loaded DiT pipeline plus its family adapter: the object every massact_viz feature takes.

    ``model.pipe`` is the diffusers pipeline, ``model.family`` the adapter, ``model.blocks`` the
    transformer blocks in execution order (all described by :class:`~massact_viz.dit.DiT`), and
    ``model.nnsight`` an nnsight ``DiffusionModel`` over the same pipeline for your own interventions.
    """

    def __init__(self, pipe: Any, **kwargs: Any):
        super().__init__(pipe, **kwargs)
        self._nnsight = None  # built on first use by nnsight_engine.nnsight_model

    # ---------------------------------------------------------------- running
    def run(self, prompt: str | Sequence[str], *, num_steps: int | None = None, seed: int = 0,
            size: tuple[int, int] | None = None, guidance: float | None = None,
            negative_prompt: str | None = None, capture: Capture | None = None, batch_size: int = 8,
            progress: bool = True, edit: Callable[[Site], None] | None = None,
            seeds: Sequence[int] | None = None, allow_empty_prompt: bool = False, engine: str | None = None,
            **pipe_kwargs: Any) -> Run:
        """Generate and capture statistics of every block at every step (see :class:`Capture`).

        Image ``i`` uses seed ``seed + i``, or ``seeds[i]`` when ``seeds`` (one per prompt) is given.
        ``num_steps`` (the number of denoising steps) defaults to the model's recommended count
        (4 unless the model says otherwise). ``guidance`` sets :attr:`guidance_kwarg`
        (``guidance_scale``, or ``true_cfg_scale`` for Qwen-Image and the embedded model); other
        pipeline kwargs pass through and override :attr:`defaults`.

        ``edit(site)`` runs on every block output before anything is captured and may change the
        activations in place, e.g. ``lambda site: site.image[..., [3, 7]].zero_()`` zeroes two
        channels of the image stream in every block, step and CFG branch (``site.block``,
        ``site.step`` and ``site.cond`` say where it is). Statistics then describe the edited run.
        A :class:`massact_viz.edits.Edit` (or ``compose(...)``) is validated against the model first.

        Empty prompts are refused unless ``allow_empty_prompt=True`` (``""`` is the null caption, e.g. to
        invert a reference image without a caption).

        ``engine``: ``"hooks"`` (PyTorch hooks) or ``"nnsight"`` (the capture and edit run as a worker in an
        nnsight trace, :mod:`massact_viz.nnsight_engine`); default :attr:`engine` (``"hooks"`` unless
        ``load(..., engine=...)`` or ``model.engine = ...`` said otherwise). Both give the same statistics and
        images; every probe runs on the model's engine.
        """
        return run_capture(self, prompt, num_steps=self.resolve_num_steps(num_steps), seed=seed, size=size, guidance=guidance,
                           negative_prompt=negative_prompt, capture=capture or Capture(),
                           batch_size=batch_size, progress=progress, pipe_kwargs=pipe_kwargs, edit=edit,
                           seeds=seeds, allow_empty_prompt=allow_empty_prompt, engine=engine or self.engine)

    def scan(self, prompts: Sequence[str], out: str | os.PathLike, **kwargs: Any) -> Run:
        """:meth:`run` over many prompts in batches, saved to ``out`` and resumable after an interruption
        (see :func:`massact_viz.scan.scan`; same keyword arguments as :meth:`run`)."""
        from .scan import scan
        return scan(self, prompts, out, **kwargs)

    def generate(self, prompt: str | Sequence[str], **kwargs: Any) -> list:
        """Images only (same seeds and defaults as :meth:`run`, nothing captured)."""
        return self.run(prompt, capture=Capture.nothing(), **kwargs).images

    @property
    def nnsight(self):
        """An nnsight ``DiffusionModel`` over this pipeline, for your own traces and interventions.

        Its envoy tree mirrors the pipeline: ``model.nnsight.transformer.transformer_blocks[3].output``.
        Pass ``num_inference_steps`` to every trace (nnsight defaults to 1).
        """
        return nnsight_model(self)

    def envoy(self, layer: str | int) -> Any:
        """The envoy of one block in :attr:`nnsight`'s tree (any layer spec :meth:`layer` takes): read or edit
        its ``.output`` inside your trace, e.g. ``model.envoy("double.1").output[1][..., ch] *= 0``."""
        return block_envoy(self.nnsight.transformer, self.layer(layer).path)
