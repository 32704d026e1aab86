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


def test_the_card_says_why_relations_missed():
    card = _module("shapes_card")

    def two(caption, ok, centroids):
        return {"caption": caption, "relation_ok": ok, "centroids": centroids}

    recs = [two("a red circle left of a blue square on a white background", True, [[0.2, 0.5], [0.8, 0.5]]),
            two("a red circle left of a blue square on a white background", False, [[0.8, 0.5], [0.2, 0.5]]),
            two("a red circle above a blue square on a white background", False, [[0.2, 0.4], [0.8, 0.5]]),
            two("a red circle below a blue square on a white background", False, [[0.5, 0.5], None]),
            two("a red circle right of a blue square on a white background", False, [[0.9, 0.2], [0.3, 0.9]]),
            {"caption": "a red circle on a white background", "relation_ok": None, "centroids": [[0.5, 0.5]]}]
    assert card.relation_misses(recs) == {"n": 5, "missed": 4, "fewer than two objects": 1, "wrong side": 1,
                                          "diagonal": 2}


def test_the_card_says_what_each_object_of_a_pair_was_drawn_as():
    card = _module("shapes_card")

    def two(caption, shapes, ious):
        return {"caption": caption, "relation_ok": False, "shapes": shapes, "ious": ious}

    recs = [two("a red circle left of a blue square on a white background", ["circle", "circle"], [0.9, 0.8]),
            two("a red triangle above a blue square on a white background", ["triangle", "circle"], [0.6, 0.8]),
            two("a red circle below a blue circle on a white background", ["square", None], [0.9, None]),
            {"caption": "a red circle on a white background", "relation_ok": None, "shapes": ["square"], "ious": [0.9]}]
    got = card.two_object_shapes(recs)
    assert got == {"objects": 6, "drawn": 1, "the other object's shape": 1, "a third shape": 2,
                   "right shape, below the template bar": 1, "not found": 1}
    assert list(got)[1:] == list(card.TWO_OBJECT_READINGS)


def test_the_pilots_table_shows_replications_as_paired_points():
    pilots = _module("shapes_pilots")

    def diff(mean, lo, hi):
        return {"diff": {"mean": mean, "lo": lo, "hi": hi}}

    results = {"replications": {"arm B (caption seed 1)": {
        "against": "shipped weights (step 1, 8x8 tokens)", "n_one": 360, "n_two": 0,
        "shared_with_yardstick": {"one": 180},
        "paired": {"one-object shape": diff(0.034, 0.008, 0.064), "one-object circle": diff(0.0, 0.0, 0.0),
                   "one-object square": diff(-0.05, -0.12, 0.01)}}}}
    row = pilots.table(results).splitlines()[-1]
    assert row.startswith("| arm B (caption seed 1) | shipped weights (step 1, 8x8 tokens) | 360 / 0 (180 / -) | "
                          "+3 [+1, +6] |")
    assert "| 0 [0, 0] / -5 [-12, +1] / - |" in row and row.endswith("| - / - / - |")


def test_replicate_checks_its_input_before_loading_a_model(tmp_path):
    pilots = _module("shapes_pilots")
    shipped = str(BENCH.parent / "data" / "shapes")
    judged = {"architecture": {"x": {}}}
    with pytest.raises(SystemExit, match="has 360 distinct one-object captions"):
        pilots.run_replicate(judged, shipped, str(tmp_path), "x", 363, 0, 1)
    with pytest.raises(SystemExit, match="1 or more"):
        pilots.run_replicate(judged, shipped, str(tmp_path), "x", 12, 0, 0)
    for n_one, n_two in ((0, 0), (10, 0), (12, -1)):
        with pytest.raises(SystemExit, match="--captions|--two-captions"):
            pilots.run_replicate(judged, shipped, str(tmp_path), "x", n_one, n_two, 1)
    with pytest.raises(SystemExit, match="not a judged row"):
        pilots.run_replicate(judged, shipped, str(tmp_path), "y", 12, 0, 1)


def test_replicate_pairs_each_shape_on_the_same_captions(monkeypatch):
    """The pairing itself, on judged records made up here: per-shape subsets line up caption by caption,
    n is what was judged, and each caption seed is its own entry."""
    pilots = _module("shapes_pilots")
    captions = [f"a red {s} on a blue background" for s in ("circle", "square", "triangle")] * 4
    mine = [True] * 12                                   # the row draws every shape
    theirs = [s != 1 for s in range(3)] * 4              # its baseline misses every square
    seen = []

    def fake_judge(weights, n_captions, n_val, n_two, caption_seed):
        seen.append((str(weights), n_captions, n_val, n_two, caption_seed))
        return {"shape_ok": mine if str(weights) == "row" else theirs, "captions": captions}

    monkeypatch.setattr(pilots, "judge", fake_judge)
    monkeypatch.setattr(pilots, "_save", lambda results: None)
    results = {"architecture": {"arm B": {}}}
    shipped = str(BENCH.parent / "data" / "shapes")
    for seed in (1, 2):
        pilots.run_replicate(results, shipped, "row", "arm B", 12, 0, seed)
    assert seen[0] == ("row", 12, 0, 0, 1) and seen[1] == (shipped, 12, 0, 0, 1)
    assert sorted(results["replications"]) == ["arm B (caption seed 1)", "arm B (caption seed 2)"]
    rec = results["replications"]["arm B (caption seed 1)"]
    assert rec["n_one"] == 12 and rec["row"] == "arm B"
    d = {k: v["diff"]["mean"] for k, v in rec["paired"].items()}
    assert d == pytest.approx({"one-object shape": 4 / 12, "one-object circle": 0.0, "one-object square": 1.0,
                               "one-object triangle": 0.0})
    assert rec["paired"]["one-object square"]["a"]["n"] == 4


def test_replicate_refuses_to_pair_different_captions(monkeypatch):
    pilots = _module("shapes_pilots")
    monkeypatch.setattr(pilots, "judge", lambda w, *a: {"shape_ok": [True] * 3,
                                                         "captions": ["a", "b", "c"] if w.name == "row" else ["a", "c", "b"]})
    with pytest.raises(RuntimeError, match="different captions"):
        pilots.run_replicate({"pilots": {"arm B": {}}}, str(BENCH.parent / "data" / "shapes"), "row", "arm B", 3, 0, 1)
