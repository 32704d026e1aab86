"""The curated prompt sets in data/prompts/ exist, are clean, and (for the shapes
teaching model) stay inside its caption language.  Pure file parsing: fast."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from massact_viz.shapes import scenes

PROMPTS = Path(__file__).resolve().parents[1] / "data" / "prompts"

REAL_SECTIONS = [
    "subjects: animals",
    "subjects: people",
    "objects",
    "scenes: indoor",
    "scenes: outdoor / landscapes",
    "styles",
    "counts",
    "text rendering",
    "spatial relations",
    "colour attributes",
    "abstract / patterns",
]


def _raw_lines(name: str) -> list[str]:
    path = PROMPTS / name
    assert path.is_file(), f"missing {path}"
    text = path.read_text(encoding="utf-8")  # must be valid UTF-8
    assert text.endswith("\n"), f"{name} should end with a newline"
    assert "\r" not in text, f"{name} should use LF line endings"
    return text.split("\n")[:-1]


def _prompt_lines(name: str) -> list[str]:
    """The lines the CLI's --prompts reader keeps (non-blank, not starting with #)."""
    return [ln for ln in _raw_lines(name) if ln.strip() and not ln.startswith("#")]


def _sections(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for ln in _raw_lines(name):
        if ln.startswith("# ") and ln[2:] in REAL_SECTIONS:
            current = ln[2:]
            assert current not in out, f"section {current!r} appears twice"
            out[current] = []
        elif ln.strip() and not ln.startswith("#"):
            assert current is not None, f"prompt before the first section header: {ln!r}"
            out[current].append(ln)
    return out


def _tsv_rows(name: str) -> list[list[str]]:
    lines = _raw_lines(name)
    assert lines and lines[0] == "source\ttarget\tnote", f"{name}: bad header {lines[:1]!r}"
    rows = []
    for i, ln in enumerate(lines[1:], start=2):
        fields = ln.split("\t")
        assert len(fields) == 3, f"{name}:{i}: expected 3 tab-separated fields, got {len(fields)}"
        for f in fields:
            assert f and f == f.strip(), f"{name}:{i}: empty field or stray whitespace in {f!r}"
        assert fields[0] != fields[1], f"{name}:{i}: source equals target"
        rows.append(fields)
    assert len({(s, t) for s, t, _ in rows}) == len(rows), f"{name}: duplicate pairs"
    return rows


def _check_prompts(prompts: list[str], name: str) -> None:
    for p in prompts:
        assert p == p.strip(), f"{name}: leading/trailing whitespace in {p!r}"
        assert "\t" not in p, f"{name}: tab in {p!r}"
        assert "  " not in p, f"{name}: double space in {p!r}"
    dup = sorted({p for p in prompts if prompts.count(p) > 1})
    assert not dup, f"{name}: duplicate prompts {dup}"


def test_real_models_prompts():
    prompts = _prompt_lines("real_models.txt")
    _check_prompts(prompts, "real_models.txt")
    assert len(prompts) >= 250
    sections = _sections("real_models.txt")
    assert list(sections) == REAL_SECTIONS
    for sec, items in sections.items():
        assert len(items) >= 15, f"section {sec!r} has only {len(items)} prompts"
    lengths = [len(p.split()) for p in prompts]
    assert min(lengths) <= 4 and max(lengths) >= 35, "prompt lengths should span short to detailed"


def test_real_models_matches_cli_reader():
    from massact_viz.cli import prompts_from_args

    path = PROMPTS / "real_models.txt"
    got = prompts_from_args(argparse.Namespace(prompt=None, prompts=str(path)))
    assert got == _prompt_lines("real_models.txt")


def test_transport_pairs():
    rows = _tsv_rows("transport_pairs.tsv")
    assert len(rows) >= 50
    kinds = {note.split(":")[0] for _, _, note in rows}
    assert {"subject", "colour", "material", "style", "hard"} <= kinds


def test_shapes_captions_parse():
    captions = _prompt_lines("shapes_captions.txt")
    _check_prompts(captions, "shapes_captions.txt")
    assert len(captions) >= 50
    parsed = [scenes.parse_caption(c) for c in captions]
    for c in captions:
        assert scenes.normalize_caption(c) == c, f"not in canonical form: {c!r}"
    obj_colours = {o["colour"] for p in parsed for o in p["objects"]}
    shapes = {o["shape"] for p in parsed for o in p["objects"]}
    assert obj_colours == set(scenes.COLOURS)
    assert shapes == set(scenes.SHAPES)
    assert {p["background"] for p in parsed} == set(scenes.COLOURS)
    assert {p["relation"] for p in parsed} == {None, *scenes.RELATIONS}
    assert {p["style"] for p in parsed} >= {None, "flat", "gradient", "noise"}


@pytest.mark.parametrize("col", [0, 1])
def test_shapes_pairs_parse(col):
    rows = _tsv_rows("shapes_pairs.tsv")
    assert len(rows) >= 25
    for row in rows:
        scenes.parse_caption(row[col])
        assert scenes.normalize_caption(row[col]) == row[col]


def test_shipped_sets_are_found_from_any_working_directory(tmp_path, monkeypatch):
    import massact_viz as mv
    from massact_viz.probes.transport import read_pairs

    monkeypatch.chdir(tmp_path)
    assert mv.read_prompts("shapes_captions.txt") == _prompt_lines("shapes_captions.txt")
    assert mv.read_prompts("../data/prompts/real_models.txt", n=3) == _prompt_lines("real_models.txt")[:3]
    assert len(read_pairs("shapes_pairs.tsv")) == 32
    (tmp_path / "mine.txt").write_text("# mine\na cat\n\na dog\n", encoding="utf-8")
    assert mv.read_prompts("mine.txt") == ["a cat", "a dog"]        # a file of the user's wins
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    for bad, message in (("nope.txt", "shipped sets: real_models.txt, shapes_captions.txt"),
                         ("latin.txt", "is not UTF-8 text"), (".", "is a directory")):
        with pytest.raises(mv.MassActError, match=message):
            mv.read_prompts(bad)


def test_notebooks_name_no_path_relative_to_their_folder():
    """A notebook must run from any working directory (papermill from the repo root, a copy elsewhere)."""
    for nb in sorted((PROMPTS.parents[1] / "notebooks").glob("*.ipynb")):
        assert "../" not in nb.read_text(encoding="utf-8"), f"{nb.name} reads a path relative to notebooks/"
