"""Resumable statistics scans over many prompts.

``scan(model, prompts, out, ...)`` runs the prompts in batches and saves each finished batch as a
part under ``out.parts/``; an interrupted scan (Ctrl-C, crash, lost machine) run again with the same
arguments skips the finished batches and ends with exactly the result of an uninterrupted one,
because image ``i`` always uses seed ``seed + i`` whatever the batching. When every batch is done
the parts are merged into one run directory ``out`` and removed.

Launched on several processes (``accelerate launch`` / ``torchrun``, see :mod:`massact_viz.distributed`),
with ``distributed=True`` each process runs every ``world``-th batch not done yet into the same parts folder
and the main process merges: the run is bit-identical to a single process's, and a relaunch after a lost
process finishes the rest.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from .capture import Capture, plan_capture, run_capture
from .distributed import Ranks, ranks
from .errors import MassActError, RunFileError
from .run import Run, check_run_dir
from .stats import ChannelStats
from .progress import progress_bar

if TYPE_CHECKING:
    from .dit import DiT
    from .hooks import Site


def scan(model: "DiT", prompts: Sequence[str], out: str | Path, *, num_steps: int | None = None, seed: int = 0,
         size: tuple[int, int] | None = None, guidance: float | None = None, capture: Capture | None = None,
         negative_prompt: str | None = None, batch_size: int = 8, progress: bool = True,
         edit: Callable[[Site], None] | None = None, distributed: bool = False, engine: str | None = None,
         **pipe_kwargs: Any) -> Run | None:
    """Capture ``prompts`` in batches into the run directory ``out``, resuming a previous attempt.

    Keyword arguments are :meth:`massact_viz.Model.run`'s; an ``edit`` applies to every batch (an
    :class:`~massact_viz.edits.Edit` is validated first; resuming needs the same edit).
    ``distributed=True``: share the batches with the other processes launched by ``accelerate launch`` or
    ``torchrun`` (each given the same arguments); the main process returns the merged run, the others None."""

    capture = capture or Capture()
    num_steps = model.resolve_num_steps(num_steps)
    plan = plan_capture(model, prompts, num_steps=num_steps, seed=seed, size=size, guidance=guidance, capture=capture,
                        batch_size=batch_size, pipe_kwargs=pipe_kwargs, edit=edit)  # every error before any work
    prompts, edit = plan.prompts, plan.edit
    out = check_run_dir(out)  # before any work: a path that can take the run, never a user's directory
    parts_dir = out.parent / f"{out.name}.parts"
    fresh = not parts_dir.exists()
    settings = {"model": model.source, "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest(),
                "n": len(prompts), "steps": num_steps, "seed": seed, "size": list(size) if size else None,
                "guidance": guidance, "negative_prompt": negative_prompt, "batch_size": batch_size,
                "capture": repr(capture), "edit": _describe_edit(edit),
                "pipe_kwargs": {k: repr(v) for k, v in sorted(pipe_kwargs.items())}}
    share = ranks() if distributed else Ranks()
    share.agree({"settings": settings, "out": str(out.resolve())}, "scan")
    hint = (f"Resume it with the same arguments (model, prompts, steps, seed, size, batching, capture), "
            f"or delete {parts_dir} (or choose another --out) to start over.")
    share.start_job(parts_dir, settings, "partial scan", hint)

    starts = list(range(0, len(prompts), batch_size))
    have: list[int] = []
    if share.world > 1:   # a relaunch shares out only the batches not done yet; the main process says which
        have = share.from_main([s for s in starts if (parts_dir / f"{s:06d}" / "run.json").exists()]
                               if share.main else None)
    mine = share.share([s for s in starts if s not in have])
    def capture_batch(start: int) -> Run:
        """The part of the batch that starts at prompt ``start`` (image i uses seed + i, whatever the batching)."""
        return run_capture(model, prompts[start:start + batch_size], num_steps=num_steps, seed=seed + start, size=size,
                           guidance=guidance, negative_prompt=negative_prompt, capture=capture, batch_size=batch_size,
                           progress=False, pipe_kwargs=pipe_kwargs, edit=edit, engine=engine or model.engine)

    parts: list[Run] = []
    done = sum(len(prompts[s:s + batch_size]) for s in have)
    bar = progress_bar(total=sum(len(prompts[s:s + batch_size]) for s in mine),
                       desc="scan" if share.world == 1 else f"scan (process {share.rank} of {share.world})",
                       unit="prompt", disable=not progress)
    try:
        for start in mine:
            part_dir = parts_dir / f"{start:06d}"
            chunk = prompts[start:start + batch_size]
            part = None
            if part_dir.exists():
                try:
                    part = Run.load(part_dir)
                except RunFileError:
                    part = None  # a damaged part (e.g. killed mid-write by the OS) is recomputed
                    shutil.rmtree(part_dir)  # inside the scan's own parts folder: the toolkit wrote it
            if part is None:
                part = capture_batch(start)
                part.save(part_dir)
            else:
                done += len(chunk)
            parts.append(part)
            bar.update(len(chunk))
    except BaseException:
        if share.world == 1 and fresh and parts_dir.is_dir() and not any(p.is_dir() for p in parts_dir.iterdir()):
            shutil.rmtree(parts_dir, ignore_errors=True)  # nothing done to resume: leave nothing behind
        raise
    finally:
        bar.close()
    if share.world == 1:
        merged = concat_runs(parts)
        merged.meta["resumed_prompts"] = done
        merged.save(out)
        shutil.rmtree(parts_dir, ignore_errors=True)
        return merged
    share.barrier()   # every part is on disk (done: the batches the main process found finished, as on every process)
    if share.main:
        merged = concat_runs([_load_or_redo(parts_dir / f"{start:06d}", lambda s=start: capture_batch(s))
                              for start in starts])
        merged.meta["resumed_prompts"] = done
        merged.save(out)
        shutil.rmtree(parts_dir, ignore_errors=True)
    share.barrier()   # the merged run is on disk
    return merged if share.main else None


def _load_or_redo(part_dir: Path, redo: Callable[[], Run]) -> Run:
    """A finished part, or (damaged since: e.g. killed mid-write by the OS) the same part computed again."""
    try:
        return Run.load(part_dir)
    except RunFileError:
        return redo()


def _describe_edit(edit: Any) -> str | None:
    """What identifies an edit between processes: an Edit's repr, a function's qualified name."""
    if edit is None:
        return None
    if hasattr(edit, "check"):
        return repr(edit)
    return f"{getattr(edit, '__module__', '?')}.{getattr(edit, '__qualname__', type(edit).__name__)}"


def concat_runs(runs: Sequence[Run]) -> Run:
    """One run from runs of the same model and settings over different prompts (images in order)."""
    if not runs:
        raise MassActError("nothing to concatenate: no runs given.")
    first = runs[0]
    images = [im for r in runs for im in r.images]
    stats = None
    if first.stats is not None:
        s0 = first.stats
        for r in runs[1:]:
            s = r.stats
            if s is None or (s.layers, s.steps, s.streams) != (s0.layers, s0.steps, s0.streams):
                raise MassActError("runs captured different layers, steps or streams; they cannot be concatenated.")
        stats = ChannelStats({k: torch.cat([r.stats.values[k] for r in runs]) for k in s0.values},
                             torch.cat([r.stats.median_abs for r in runs]), s0.layers, s0.steps, s0.streams,
                             [p for r in runs for p in r.stats.prompts])
    raw = {k: torch.cat([r.raw[k] for r in runs]) for k in first.raw}
    previews = torch.cat([r.previews for r in runs], dim=1) if first.previews is not None else None
    meta = dict(first.meta)
    meta["prompts"] = [p for r in runs for p in r.meta["prompts"]]
    meta["seeds"] = [s for r in runs for s in r.meta["seeds"]]
    meta["seconds"] = round(sum(r.meta.get("seconds", 0.0) for r in runs), 3)
    meta["warnings"] = sorted({w for r in runs for w in r.meta.get("warnings", [])})
    return Run(images, stats, meta, raw, previews)
