"""A :class:`Run`: images, statistics, raw slices, previews and metadata of one generation, and its
run directory on disk.

Layout of a run directory (no pickle anywhere)::

    run.json               metadata and the index of everything below (written last)
    tensors.safetensors    statistics, raw slices and previews
    images/000.png ...     the generated images

Writes are atomic: a run is written into a sibling temporary directory and swapped in by rename,
so an interrupted save never leaves a half-written run, and an existing run is replaced only once
the new one is complete. Replacing a run replaces only what the toolkit wrote there (``run.json``,
``tensors.safetensors``, the images ``run.json`` lists), file by file: anything else in the directory (a
report, notes, a user's folder) never moves, and a file of the user's in the way is refused before anything
changes. An interrupted replacement leaves a marker (``.massact_viz-saving.json``) and is finished by the
next save. ``run.json`` records the SHA-256 of the tensor file, so truncation or
corruption is caught on load with a clear error.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import MassActError, RunFileError
from .files import atomic_write, json_default
from .stats import ChannelStats

SCHEMA_VERSION = 1
FORMAT = "massact_viz.run"



def pil_images(images: Any) -> list:
    """A pipeline's ``images`` (PIL list, numpy ``(n, H, W, 3)`` or a tensor ``(n, 3, H, W)`` in [0, 1]) as
    PIL images (rounded to the nearest uint8 level, clipped to [0, 255]): the one conversion of the toolkit."""
    from PIL import Image
    import numpy as np

    if isinstance(images, list) and (not images or isinstance(images[0], Image.Image)):
        return list(images)
    if torch.is_tensor(images):
        images = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    arr = np.asarray(images)
    return [Image.fromarray(np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)) for a in arr]


@dataclass
class Run:
    """The result of :meth:`massact_viz.Model.run`."""

    images: list  # PIL images, one per (prompt, image) row
    stats: ChannelStats | None
    meta: dict[str, Any]
    raw: dict[str, torch.Tensor] = field(default_factory=dict)
    previews: torch.Tensor | None = None  # (steps, images, H, W, 3) uint8 predicted clean images

    @property
    def prompts(self) -> list[str]:
        return list(self.meta.get("prompts", []))

    def __repr__(self) -> str:
        s = self.stats
        shape = "none" if s is None else f"{len(s.prompts)} images x {len(s.steps)} steps x {len(s.layers)} layers x {s.streams} x {s.width} channels"
        return (f"Run(model={self.meta.get('model')!r}, family={self.meta.get('family')!r}, "
                f"images={len(self.images)}, stats={shape}, raw={len(self.raw)}, "
                f"previews={None if self.previews is None else tuple(self.previews.shape)})")

    # ---------------------------------------------------------------- save
    def save(self, path: str | os.PathLike) -> Path:
        """Write the run directory ``path`` atomically.

        An existing run at ``path`` is replaced only once the new one is complete, and only the files the
        toolkit wrote there are replaced (anything else in the directory is kept); any other existing file or
        non-empty directory there is refused (never deleted).
        """
        from safetensors.torch import save_file

        path = check_run_dir(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            tensors: dict[str, torch.Tensor] = {}
            index: dict[str, Any] = {"stats": None, "raw": sorted(self.raw), "previews": self.previews is not None}
            if self.stats is not None:
                for name, t in self.stats.values.items():
                    tensors[f"stats/{name}"] = t.contiguous()
                tensors["stats/median_abs"] = self.stats.median_abs.contiguous()
                index["stats"] = {"layers": self.stats.layers, "steps": self.stats.steps,
                                  "streams": self.stats.streams, "prompts": self.stats.prompts,
                                  "values": sorted(self.stats.values)}
            for name, t in self.raw.items():
                tensors[f"raw/{name}"] = t.detach().cpu().contiguous()
            if self.previews is not None:
                tensors["previews"] = self.previews.contiguous()
            save_file(tensors, str(tmp / "tensors.safetensors"))
            (tmp / "images").mkdir()
            names = []
            for i, im in enumerate(self.images):
                names.append(f"images/{i:03d}.png")
                im.save(tmp / names[-1])
            doc = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "meta": self.meta, "index": index,
                   "images": names}
            doc = json.loads(json.dumps(doc, default=json_default))  # exactly what a later load will read
            doc["sha256"] = {"tensors.safetensors": _sha256(tmp / "tensors.safetensors"), "run.json": _doc_digest(doc)}
            (tmp / "run.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
            for f in tmp.rglob("*"):          # on disk before the run appears (a power cut cannot leave a hollow run)
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            _swap_in(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    # ---------------------------------------------------------------- load
    @classmethod
    def load(cls, path: str | os.PathLike) -> "Run":
        """Read a run directory written by :meth:`save`; a clear error if it is not one or is damaged."""
        from PIL import Image
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        meta_file = path / "run.json"
        if not meta_file.is_file():
            raise RunFileError(f"{path} is not a massact_viz run directory (no run.json). Create one with "
                               f"Run.save(...) or `massact-viz scan ... --out {path}`.")
        try:
            doc = json.loads(meta_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunFileError(f"{meta_file} is corrupt or truncated ({e}); re-create the run.") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise RunFileError(f"{meta_file} was not written by massact_viz (format {doc.get('format') if isinstance(doc, dict) else None!r}).")
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise RunFileError(f"{path} has run schema {doc.get('schema_version')}, this massact_viz reads "
                               f"{SCHEMA_VERSION}; re-create the run or use a matching massact_viz version.")
        sums = doc.get("sha256")
        if not isinstance(sums, dict):
            raise RunFileError(f"{meta_file} has no checksums; it was damaged or edited by hand. Re-create the run.")
        if "run.json" in sums and sums["run.json"] != _doc_digest(doc):  # runs saved before 2026-11-27 have none
            raise RunFileError(f"{meta_file} does not match its own checksum: it was damaged or edited by hand, so "
                               f"its index cannot be trusted to describe the tensors. Re-create the run.")
        tfile = path / "tensors.safetensors"
        if not tfile.is_file():
            raise RunFileError(f"{tfile} is missing; the run directory is incomplete. Re-create the run.")
        want = sums.get("tensors.safetensors")
        if want != _sha256(tfile):
            raise RunFileError(f"{tfile} does not match the checksum recorded in run.json: the file is "
                               f"truncated or corrupt. Re-create the run.")
        try:
            tensors = load_file(str(tfile))
        except (SafetensorError, OSError, ValueError) as e:
            raise RunFileError(f"{tfile} cannot be read ({e}); re-create the run.") from None
        names = doc.get("images", [])
        if not isinstance(names, list):
            raise RunFileError(f"{meta_file}: 'images' must be a list of images/NNN.png names; re-create the run.")
        stats, raw, previews = _check_index(doc, tensors, len(names), meta_file)
        images = []
        for name in names:
            # only the toolkit's own names, never a path leaving the run (absolute, "..", a symlink elsewhere)
            if not isinstance(name, str) or not _IMAGE_NAME.fullmatch(name) or (path / name).is_symlink():
                raise RunFileError(f"{meta_file} lists an image {name!r} that is not one of the run's own "
                                   f"images/NNN.png files; refusing to read it. Re-create the run.")
            try:
                with Image.open(path / name) as im:
                    if im.width * im.height > MAX_IMAGE_PIXELS:
                        raise RunFileError(f"image {path / name} is {im.width}x{im.height} pixels, more than any run "
                                           f"writes ({MAX_IMAGE_PIXELS} at most); refusing to decode it. Re-create "
                                           f"the run.")
                    images.append(im.convert("RGB"))
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise RunFileError(f"image {path / name} is missing or damaged ({e}); re-create the run.") from None
        meta = doc["meta"]
        if "num_steps" not in meta and "steps" in meta:   # runs saved before 0.1 named it "steps"
            meta["num_steps"] = meta.pop("steps")
        return cls(images, stats, meta, raw, previews)


#: the most pixels of one image Run.load decodes (16k x 16k; the models here draw at most 2048 x 2048)
MAX_IMAGE_PIXELS = 16384 * 16384
#: the names Run.raw keys take (capture.raw_key / capture.input_key)
_RAW_KEY = re.compile(r"(?:[a-z][a-z0-9_]*\.\d+/step\d+/(?:image|text)|input/[A-Za-z_][A-Za-z0-9_]*)(?:/uncond)?")


def _doc_digest(doc: dict) -> str:
    """sha256 of run.json's content (everything but the checksums), independent of key order and spacing."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_index(doc: dict, tensors: dict[str, torch.Tensor], n_images: int, meta_file: Path):
    """The run's statistics, raw slices and previews, after checking that run.json's index describes the
    tensors exactly (names, types, shapes, dtypes) and agrees with the images and prompts."""
    def bad(what: str) -> RunFileError:
        return RunFileError(f"{meta_file}: {what}; the run is damaged or was edited by hand. Re-create the run.")

    def str_list(v: Any, what: str) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise bad(f"{what} must be a list of names, got {type(v).__name__}")
        if len(set(v)) != len(v):
            raise bad(f"{what} repeats a name")
        return v

    meta, idx = doc.get("meta"), doc.get("index")
    if not isinstance(meta, dict):
        raise bad(f"'meta' must be an object, got {type(meta).__name__}")
    if not isinstance(idx, dict):
        raise bad(f"'index' must be an object, got {type(idx).__name__}")
    prompts = meta.get("prompts", [])
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise bad("meta.prompts must be a list of strings")
    if n_images and prompts and len(prompts) != n_images:
        raise bad(f"{n_images} images but {len(prompts)} prompts")
    seeds = meta.get("seeds", [])
    if not isinstance(seeds, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds) or \
            (prompts and seeds and len(seeds) != len(prompts)):
        raise bad("meta.seeds must be one integer per prompt")
    known: set[str] = set()
    stats = None
    si = idx.get("stats")
    if si is not None:
        if not isinstance(si, dict):
            raise bad("index.stats must be an object or null")
        layers, streams = str_list(si.get("layers"), "index.stats.layers"), str_list(si.get("streams"), "index.stats.streams")
        values, sprompts, steps = str_list(si.get("values"), "index.stats.values"), si.get("prompts"), si.get("steps")
        if not set(streams) <= {"image", "text"} or not layers or not values:
            raise bad("index.stats needs layers, values and streams from 'image' and 'text'")
        if not isinstance(steps, list) or not steps or any(isinstance(x, bool) or not isinstance(x, int) or x < 0
                                                           for x in steps) or steps != sorted(set(steps)):
            raise bad("index.stats.steps must be increasing non-negative step numbers")
        total = meta.get("num_steps", meta.get("steps"))   # "steps" in runs saved before 0.1
        if isinstance(total, int) and not isinstance(total, bool) and steps[-1] >= total:
            raise bad(f"index.stats.steps reach step {steps[-1]} of a {total}-step run")
        if not isinstance(sprompts, list) or not all(isinstance(p, str) for p in sprompts) or \
                (prompts and sprompts != prompts):
            raise bad("index.stats.prompts must be the run's prompts")
        shape = (len(sprompts), len(steps), len(layers), len(streams))
        vals = {}
        for n in values + ["median_abs"]:
            t = tensors.get(f"stats/{n}")
            want = shape if n == "median_abs" else None
            if t is None or not t.is_floating_point() or t.dim() != (4 if want else 5) or \
                    tuple(t.shape[:4]) != shape or (n != "median_abs" and vals and t.shape != next(iter(vals.values())).shape):
                got = None if t is None else f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"
                raise bad(f"statistic {n!r} should be floats of shape {shape + (() if want else ('channels',))}, "
                          f"found {got}")
            if n != "median_abs":
                vals[n] = t
            known.add(f"stats/{n}")
        stats = ChannelStats(vals, tensors["stats/median_abs"], layers, steps, streams, sprompts)
    raw_names = idx.get("raw", [])
    raw_names = str_list(raw_names, "index.raw") if raw_names else []
    raw = {}
    for n in raw_names:
        t = tensors.get(f"raw/{n}")
        if not _RAW_KEY.fullmatch(n) or t is None or (n_images and t.shape[:1] != (n_images,)):
            raise bad(f"raw slice {n!r} is not a slice this toolkit names or its tensor does not match the images")
        raw[n] = t
        known.add(f"raw/{n}")
    previews = tensors.get("previews")
    if bool(idx.get("previews")) != (previews is not None):
        raise bad("index.previews does not say whether the tensor file holds previews")
    if previews is not None:
        if previews.dtype != torch.uint8 or previews.dim() != 5 or previews.shape[-1] != 3 or \
                (n_images and previews.shape[1] != n_images):
            raise bad(f"previews should be uint8 (steps, images, height, width, 3), found {tuple(previews.shape)} "
                      f"{str(previews.dtype).replace('torch.', '')}")
        known.add("previews")
    extra = sorted(set(tensors) - known)
    if extra:
        raise bad(f"the tensor file holds {extra[:3]} that the index does not describe")
    return stats, raw, previews


#: Present while an existing run directory is being replaced; lists the files the toolkit owns there, so an
#: interrupted replacement is finished by the next save (user files never move, so nothing of theirs is at risk).
SAVING_MARKER = ".massact_viz-saving.json"
_IMAGE_NAME = re.compile(r"images/\d+\.png")


def _is_run_dir(path: Path) -> bool:
    if (path / SAVING_MARKER).is_file():
        return True
    try:
        return json.loads((path / "run.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _owned_files(path: Path) -> set[str]:
    """The relative paths the toolkit wrote in the run directory ``path``: ``run.json``, ``tensors.safetensors``
    and the images ``run.json`` lists (only names of the toolkit's own form, ``images/NNN.png``), plus what an
    interrupted replacement's marker lists."""
    owned = {"run.json", "tensors.safetensors"}
    try:
        images = json.loads((path / "run.json").read_text()).get("images", [])
    except (OSError, ValueError, AttributeError):
        images = []
    try:
        owned.update(json.loads((path / SAVING_MARKER).read_text()))
    except (OSError, ValueError, TypeError):
        pass
    owned.update(p for p in images if isinstance(p, str) and _IMAGE_NAME.fullmatch(p))
    return {p for p in owned if isinstance(p, str) and (p in ("run.json", "tensors.safetensors")
                                                         or _IMAGE_NAME.fullmatch(p))}


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the complete run in ``tmp`` at ``path``. A new or empty ``path``: one atomic rename. An existing run:
    replaced file by file (the old run's own files moved aside, the new ones moved in, ``run.json`` last), so
    files the toolkit did not write never move; a clash with one of them is refused before anything changes."""
    if not path.exists() or (path.is_dir() and not path.is_symlink() and not any(path.iterdir())):
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
        return
    new = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    owned = _owned_files(path)
    for rel in new:
        target = path / rel
        parents = [path / q for q in Path(rel).parents if str(q) != "."]
        if (rel not in owned and (target.exists() or target.is_symlink())) or target.is_dir() \
                or any(p.exists() and (p.is_symlink() or not p.is_dir()) for p in parents):
            raise RunFileError(f"{target} is in the way of the run being saved and the toolkit did not write it; "
                               f"move it elsewhere (nothing was changed) or save the run to another directory.")
    atomic_write(path / SAVING_MARKER, json.dumps(sorted(owned | set(new))))
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    for rel in ["run.json"] + sorted(owned - {"run.json"}):          # the old run stops being one first
        src = path / rel
        if src.is_file() and not src.is_symlink():
            (old / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, old / rel)
    for rel in [r for r in new if r != "run.json"] + ["run.json"]:   # the new run becomes one last
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, path / rel)
    (path / SAVING_MARKER).unlink()
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def check_run_dir(path: str | os.PathLike) -> Path:
    """Check, before any work, that a run may be written at ``path``: a new path, an empty directory or an
    earlier run (only the toolkit's own files there are replaced), below a directory that can be written.
    Returns the absolute path; one clear error otherwise."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or _is_run_dir(path))):
        raise RunFileError(f"{path} exists and is not a massact_viz run directory; refusing to replace it. "
                           f"Choose another path (a new or empty directory, or an earlier run to overwrite).")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise RunFileError(f"{path} cannot be created: {parent} is a file, not a directory. Choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunFileError(f"{parent} is not writable, so the run {path.name} cannot be written there. Choose "
                           f"another path.")
    return path


def check_output_file(path: str | os.PathLike, suffixes: tuple[str, ...], what: str) -> Path:
    """Check, before any work, that ``path`` may receive a ``what`` file (one of ``suffixes``): not a
    directory, not a file of a run directory (``run.json``, its tensors or images), and, if a file is there
    already, one of the same kind (same suffix), which is then replaced. One clear error otherwise."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise MassActError(f"{path} must end in {' or '.join(suffixes)} (the {what} is written there).")
    if path.is_dir():
        raise MassActError(f"{path} is a directory; give a file name ending in {suffixes[0]} for the {what}.")
    for parent in path.resolve().parents:
        if _is_run_dir(parent):
            rel = path.resolve().relative_to(parent).as_posix()
            if rel in _owned_files(parent):
                raise MassActError(f"{path} belongs to the run directory {parent}; refusing to overwrite it. "
                                   f"Choose another file name for the {what}.")
            break
    return path


