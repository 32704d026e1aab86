"""The shipped teaching model: it loads offline by name and its samples are judged, for fixed seeds.

This checks the weights file in data/shapes (no retraining). The thresholds sit below the
numbers measured in data/shapes/CARD.md so that a damaged or swapped file fails.
"""
import json

import numpy as np
import pytest

import massact_viz as mv
from massact_viz.files import data_dir
from massact_viz.shapes import scenes

# base-form captions, every colour as object and as background
CAPTIONS = ["a red circle on a blue background", "a green square on a yellow background",
            "a blue triangle on a white background", "a yellow circle on a black background",
            "a white square on a red background", "a black triangle on a green background",
            "a red square on a white background", "a green circle on a black background"]
MIN_COLOUR_ACCURACY = 0.75  # measured 1.0 (8 of 8) on these captions and seeds with the shipped weights (steps 20400 to 66168)


@pytest.fixture(scope="module")
def shapes():
    return mv.load("shapes")


def test_shipped_files_are_small_and_described():
    d = data_dir() / "shapes"
    assert (d / "model.safetensors").stat().st_size < 20 * 2**20
    doc = json.loads((d / "config.json").read_text())
    assert doc["config"]["num_layers"] == 4 and doc["config"]["num_single_layers"] == 8
    assert (d / "CARD.md").is_file() and json.loads((d / "card.json").read_text())["accuracy_heldout"]["n"] == 100


def test_loads_by_name_with_its_sampling_defaults(shapes):
    assert shapes.family.name == "flux" and len(shapes.blocks) == 12
    assert shapes.token_grid() == (8, 8)
    assert shapes.defaults["true_cfg_scale"] > 1 and shapes.defaults["num_inference_steps"] >= 10


def test_shipped_weights_draw_the_captioned_colours(shapes):
    run = shapes.run(CAPTIONS, seed=0, progress=False, capture=mv.Capture(stats=False))
    ok = [scenes.judge(im, c)["colour_ok"] for im, c in zip(run.images, CAPTIONS)]
    print(f"colour accuracy on {len(CAPTIONS)} base captions: {np.mean(ok):.3f}")
    assert np.mean(ok) >= MIN_COLOUR_ACCURACY


# one-object captions per shape, each colour once as the object; seeds fixed (image i uses seed i)
SHAPE_CAPTIONS = {s: [f"a {c} {s} on a {bg} background" for c, bg in
                      (("red", "blue"), ("green", "yellow"), ("blue", "white"), ("yellow", "black"),
                       ("white", "red"), ("black", "green"), ("red", "white"), ("green", "black"))]
                  for s in scenes.SHAPES}
# how many of the 8 images per shape the judge must find drawn as that shape (template IoU >= 0.75); set below
# what the shipped weights measured on these captions and seeds (see the print), so a damaged or swapped file fails
# measured with the step-66168 weights: circle 8, square 7, triangle 7 of 8 (step 60767: 8, 8, 8; steps 46264 and
# 29771: 8, 7, 8; step 26322: 8, 6, 6; steps 22490 and 20400: 8, 5, 6; step 18200: 7, 8, 6; step 14200: 8, 6, 3); on
# 180 captions the step-66168 weights draw 100 / 95 / 100 % (CARD.md)
MIN_SHAPES_DRAWN = {"circle": 7, "square": 5, "triangle": 5}


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_shipped_weights_draw_each_shape(shapes, shape):
    caps = SHAPE_CAPTIONS[shape]
    run = shapes.run(caps, seed=0, progress=False, capture=mv.Capture(stats=False))
    judged = [scenes.judge(im, c) for im, c in zip(run.images, caps)]
    drawn = sum(j["shape_ok"] for j in judged)
    print(f"{shape}: drawn {drawn} of {len(caps)}; read as {[j['objects'][0]['shape'] for j in judged]}")
    assert drawn >= MIN_SHAPES_DRAWN[shape]
    assert all(scenes.validity(im)["valid"] for im in run.images)  # clean scenes, whatever the shape


# two-object captions, each relation twice, objects of different colours (each relation's sides told apart by colour)
PAIR_CAPTIONS = ["a red circle left of a blue square on a white background",
                 "a yellow triangle right of a green circle on a black background",
                 "a white square above a red triangle on a blue background",
                 "a black circle below a yellow square on a white background",
                 "a blue triangle left of a white circle on a green background",
                 "a green square right of a red square on a yellow background",
                 "a yellow circle above a black triangle on a red background",
                 "a red triangle below a green triangle on a white background"]
# how many of the 8 images the judge must find with the two objects on the captioned sides; measured with the
# step-66168 weights: 8 of 8 (on 180 held-out pairs 96 %, CARD.md); the step-60767 weights, whose T5
# slot read the caption as a bag of words, put them on the right sides in 5 of 8 (51 % on 180)
MIN_RELATIONS_DRAWN = 6


def test_shipped_weights_put_two_objects_on_the_captioned_sides(shapes):
    run = shapes.run(PAIR_CAPTIONS, seed=0, progress=False, capture=mv.Capture(stats=False))
    judged = [scenes.judge(im, c) for im, c in zip(run.images, PAIR_CAPTIONS)]
    drawn = sum(bool(j["relation_ok"]) for j in judged)
    print(f"relations drawn {drawn} of {len(PAIR_CAPTIONS)}; colours {sum(j['colour_ok'] for j in judged)}")
    assert drawn >= MIN_RELATIONS_DRAWN
