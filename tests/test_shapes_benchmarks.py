"""The teaching model's benchmark scripts: the parts that summarise judged records (no model run here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rec(caption: str, ok: bool, shape: str | None, aspect: float | None) -> dict:
    return {"caption": caption, "shape_ok": ok, "colour_ok": True, "relation_ok": None, "ok": ok,
            "shapes": [shape], "ious": [0.8], "aspects": [aspect]}


def test_the_card_says_what_the_misses_drew():
    card = _module("shapes_card")
    recs = [_rec("a red square on a blue background", False, "circle", 0.7),
            _rec("a red square on a green background", False, "circle", 0.75),
            _rec("a red square on a white background", False, None, None),
            _rec("a blue square on a red background", True, "square", 0.95),
            _rec("a red circle on a blue background", True, "circle", 1.0)]
    m = card.misses(recs)
    assert m["square"]["n"] == 4 and m["square"]["missed"] == 3
    assert m["square"]["read_as"] == {"circle": 2, "nothing": 1}
    assert m["square"]["aspect_missed"] == [0.7, 0.75] and m["square"]["aspect_passed"] == [0.95]
    assert m["circle"]["missed"] == 0 and m["triangle"]["n"] == 0
    assert card._aspect_range(m["square"]["aspect_missed"]) == "0.70-0.75 (median 0.72)"
    assert card._aspect_range([]) == "-"


def test_the_pilots_table_shows_replications_as_paired_points():
    pilots = _module("shapes_pilots")

    def diff(mean, lo, hi):
        return {"diff": {"mean": mean, "lo": lo, "hi": hi}}

    results = {"replications": {"arm B": {"against": "shipped weights (step 1, 8x8 tokens)", "n_one": 360,
                                          "n_two": 0, "paired": {"one-object shape": diff(0.034, 0.008, 0.064),
                                                                 "one-object square": diff(-0.05, -0.12, 0.01)}}}}
    row = pilots.table(results).splitlines()[-1]
    assert row.startswith("| arm B | shipped weights (step 1, 8x8 tokens) | 360 / 0 | +3 [+1, +6] |")
    assert "- / -5 [-12, +1] / -" in row and row.endswith("| - / - / - |")


def test_replicate_refuses_more_captions_than_the_language_has(tmp_path):
    pilots = _module("shapes_pilots")
    with pytest.raises(SystemExit, match="has 360 distinct one-object captions"):
        pilots.run_replicate({}, str(BENCH.parent / "data" / "shapes"), str(tmp_path), "x", 361, 0, 1)
    with pytest.raises(SystemExit, match="1 or more"):
        pilots.run_replicate({}, str(BENCH.parent / "data" / "shapes"), str(tmp_path), "x", 10, 0, 0)
