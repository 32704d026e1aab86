"""Files the toolkit writes and reads outside run directories: atomic writes, strict JSON, saved probe
results and the manifest of a resumable job. No pickle anywhere; nothing here touches a file it did not
write except to read it."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import MassActError, RunFileError


def data_dir() -> Path:
    """Where the project's ``data/`` lives (override with the MASSACT_VIZ_DATA environment variable)."""
    return Path(os.environ.get("MASSACT_VIZ_DATA", Path(__file__).resolve().parent.parent / "data"))


def read_result(file: str | os.PathLike, fmt: str, what: str) -> dict:
    """The JSON document of a saved probe result (``transport.json``, ``disruption.json``, a localization
    file), or a :class:`RunFileError` saying it is missing, damaged, or not a massact_viz ``what``."""
    file = Path(file)
    try:
        doc = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFileError(f"{file} is missing, damaged or truncated ({e}); it should be a massact_viz {what} "
                           f"written by its save().") from e
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise RunFileError(f"{file} is not a massact_viz {what}.")
    return doc


def strict_json(obj: Any, **kwargs: Any) -> str:
    """JSON text that every strict parser reads: NaN and infinities become ``null`` (never the bare
    ``NaN`` tokens Python writes by default), tensors and numpy values become plain numbers."""
    return json.dumps(_finite(obj), allow_nan=False, default=json_default, **kwargs)


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if hasattr(o, "item") and getattr(o, "ndim", None) == 0:  # numpy / torch scalars
        return _finite(o.item())
    return o


def _fsynced_temp(directory: Path, prefix: str, data: bytes | str) -> str:
    """A temporary file in ``directory`` holding ``data``, on disk (fsynced), with the usual permissions."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, fsynced, then
    renamed over), creating the folder; an interrupted write leaves any previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fsynced_temp(path.parent, f".{path.name}.", data)
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def resume_manifest(directory: Path, settings: dict, what: str, hint: str) -> None:
    """Start or resume a resumable job in ``directory``: create ``manifest.json`` with ``settings`` the
    first time (complete on disk before it appears, and exclusively: of two processes starting at once with
    different settings, one gets an error); later, refuse (with ``hint``) when the settings differ. Never
    touches other data."""
    manifest = directory / "manifest.json"
    settings = json.loads(json.dumps(settings, default=json_default))
    if not manifest.exists():
        others = [p for p in directory.iterdir() if p.name != "manifest.json"
                  and not p.name.startswith(".manifest.")] if directory.is_dir() else []  # .manifest.*: another starter's
        if directory.exists() and (not directory.is_dir() or others):
            raise MassActError(f"{directory} exists and is not a {what}; choose a new or empty directory.")
        directory.mkdir(parents=True, exist_ok=True)
        tmp = _fsynced_temp(directory, ".manifest.", json.dumps(settings, indent=1))
        try:
            os.link(tmp, manifest)   # atomic and exclusive: fails if another process linked one first
            return
        except FileExistsError:
            pass                     # another process started here a moment ago: compare below
        finally:
            os.unlink(tmp)
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MassActError(f"{manifest} is damaged ({type(e).__name__}); delete {directory} to start the {what} "
                           f"over.") from None
    if previous != settings:
        raise MassActError(f"{directory} holds a {what} started with other settings (or another process is "
                           f"writing one there now). {hint}")


def json_default(o: Any) -> Any:
    import torch
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if torch.is_tensor(o):
        return o.tolist()
    return repr(o)
