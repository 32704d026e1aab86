"""Prompt sets: files of one prompt per line (``#`` comments), found from any working directory.

A name is looked up as a path first, then among the sets shipped in ``data/prompts/`` (``files.data_dir``):
``shapes_captions.txt`` (the teaching model's caption language), ``real_models.txt``, and the transport pair
files ``shapes_pairs.tsv`` and ``transport_pairs.tsv`` (read with ``probes.transport.read_pairs``)::

    from massact_viz import read_prompts
    prompts = read_prompts("shapes_captions.txt", n=16)      # the first 16 captions, from any folder
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import MassActError
from .files import data_dir


def shipped_prompt_sets() -> list[str]:
    """The names of the prompt sets in ``data/prompts/``."""
    d = data_dir() / "prompts"
    return sorted(p.name for p in d.iterdir() if p.suffix in (".txt", ".tsv")) if d.is_dir() else []


def prompt_file(name: str | os.PathLike) -> Path:
    """``name`` as an existing file, else the shipped set of that name in ``data/prompts/``; one clear error
    naming the shipped sets otherwise."""
    p = Path(name)
    if p.is_file():
        return p
    shipped = data_dir() / "prompts" / p.name
    if shipped.is_file() and (p.parent == Path(".") or p.parent.as_posix().endswith("data/prompts")):
        return shipped  # a bare name, or a "data/prompts/x.txt" path written for another working directory
    if p.is_dir():
        raise MassActError(f"{p} is a directory; give a prompt file (one prompt per line).")
    raise MassActError(f"prompt file {str(p)!r} does not exist; give a path, or one of the shipped sets: "
                       f"{', '.join(shipped_prompt_sets()) or '(none found)'}.")


def read_lines(name: str | os.PathLike) -> list[str]:
    """The non-empty, non-comment lines of a prompt file (UTF-8), stripped."""
    p = prompt_file(name)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MassActError(f"{p} is not UTF-8 text; save it as UTF-8 with one prompt per line.") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def read_prompts(name: str | os.PathLike, n: int | None = None) -> list[str]:
    """Prompts from a file or a shipped set (one per line, ``#`` comments), the first ``n`` if given."""
    prompts = read_lines(name)
    if not prompts:
        raise MassActError(f"{prompt_file(name)} holds no prompts (one per line; lines starting with # are comments).")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise MassActError(f"n must be a positive number of prompts, got {n!r}.")
        prompts = prompts[:n]
    return prompts
