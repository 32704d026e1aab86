"""The massact-viz command line, run in-process through cli.main (the console script calls it)."""
import json

import pytest

import massact_viz as mv
from massact_viz.cli import main, parse_size


def test_info_json(capsys):
    assert main(["info", "--model", "tiny:flux", "--size", "32x32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "flux" and info["token_grid"] == [16, 16] and info["blocks"] == 6
    assert info["layers"][:3] == ["double.0", "double.1", "single.0"]


def test_info_text(capsys):
    assert main(["info", "--model", "tiny:pixart"]) == 0
    out = capsys.readouterr().out
    assert "PixArt-Sigma" in out and "block.0 .. block.1" in out


def test_scan_json_and_saved_run(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("# a comment\na red fox\n\na blue <script>alert(1)</script> cat\n")
    out = tmp_path / "run"
    rc = main(["scan", "--model", "tiny:flux", "--prompts", str(prompts), "--num-steps", "2", "--seed", "3",
               "--size", "32x32", "--k", "3", "--out", str(out), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["prompts"] == ["a red fox", "a blue <script>alert(1)</script> cat"]
    rows = doc["layers"]
    assert {r["stream"] for r in rows} == {"image", "text"}
    assert len(rows) == 12
    for r in rows:
        assert set(r) >= {"layer", "stream", "top_channels", "top_scores", "median_score"}
        assert len(r["top_channels"]) == 3 and r["top_scores"] == sorted(r["top_scores"], reverse=True)
    run = mv.Run.load(out)
    assert run.meta["seeds"] == [3, 4] and len(run.images) == 2
    top, scores = run.stats.top_k(3, layer="double.0")
    assert top == rows[0]["top_channels"]


def test_scan_on_the_nnsight_engine_saves_the_same_statistics(tmp_path, capsys):
    args = ["scan", "--model", "tiny:sd3", "--prompt", "a cat", "--prompt", "a red house", "--num-steps", "2",
            "--size", "32", "--json"]
    assert main(args + ["--out", str(tmp_path / "hooks")]) == 0
    assert main(args + ["--engine", "nnsight", "--out", str(tmp_path / "nn")]) == 0
    a, b = mv.Run.load(tmp_path / "hooks"), mv.Run.load(tmp_path / "nn")
    assert b.meta["engine"] == "nnsight" and a.meta["engine"] == "hooks"
    for k in a.stats.values:
        assert a.stats.values[k].nan_to_num(-1).equal(b.stats.values[k].nan_to_num(-1)), k
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(args + ["--engine", "jax", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'jax'" in capsys.readouterr().err


def test_scan_table(tmp_path, capsys):
    assert main(["scan", "--model", "tiny:sd3", "--prompt", "a cat", "--num-steps", "1", "--size", "32",
                 "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "top-4 channels (channel:abs_mean)" in out and "double.0 image" in out and "top-1/median = how many" in out
    assert f"{tmp_path / 'r'}/images/000.png" in out and "Next: massact-viz report" in out


def test_generate_writes_png(tmp_path):
    out = tmp_path / "img" / "cat.png"
    assert main(["generate", "--model", "tiny:sana", "--prompt", "a cat", "--num-steps", "2", "--size", "32x32",
                 "--out", str(out)]) == 0
    from PIL import Image
    assert Image.open(out).size == (32, 32)
    for bad in ("x.txt", "noext"):   # refused before the model loads, nothing written
        assert main(["generate", "--model", "tiny:sana", "--prompt", "a", "--out", str(tmp_path / bad)]) == 2
        assert not (tmp_path / bad).exists()


@pytest.mark.parametrize("argv, message", [
    (["scan", "--model", "tiny:flux", "--num-steps", "1", "--out", "x"], "at least one prompt"),
    (["scan", "--model", "tiny:flux", "--prompt", "a", "--size", "33x32", "--num-steps", "1", "--out", "x"], "not divisible"),
    (["scan", "--model", "tiny:flux", "--prompt", "a", "--size", "big", "--out", "x"], "--size must look like"),
    (["scan", "--model", "tiny:flux", "--prompt", "a", "--prompts", "/no/file", "--out", "x"], "does not exist"),
    (["scan", "--model", "tiny:flux", "--prompt", "a", "--size", "32", "--num-steps", "1", "--layers", "double.7", "--out", "x"], "unknown layer"),
    (["info", "--model", "tiny:unet"], "unknown tiny pipeline"),
    (["info", "--model", "./missing/dir"], "neither an existing directory"),
    (["scan", "--model", "tiny:flux", "--prompt", "a", "--guidance", "nan", "--out", "x"], "guidance must be a finite"),
    (["probe", "disrupt", "--model", "tiny:flux", "--prompt", "a", "--op", "scale", "--value", "nan", "--out", "x"],
     "finite numeric value"),
    (["probe", "transport", "--model", "tiny:flux", "--source", "a", "--target", "b", "--blend", "nan", "--out", "x"],
     "blend must be a number in [0, 1]"),
    (["report", "x", "--out", "x/run.json"], "must end in .html"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("massact-viz: error:")
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    import massact_viz.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_fn(parser(), interrupted))
    assert main(["info", "--model", "tiny:flux"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("massact-viz: interrupted;") and "Traceback" not in err and len(err.splitlines()) == 1


def _with_fn(parser, fn):
    class P:
        def parse_args(self, argv):
            ns = parser.parse_args(argv)
            ns.fn = fn
            return ns
    return P()


def test_k_above_the_width_is_refused_before_the_scan(tmp_path, capsys):
    assert main(["scan", "--model", "tiny:flux", "--prompt", "a", "--k", "1000", "--out", str(tmp_path / "r")]) == 2
    assert "--k must be an integer between 1 and 32" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_k_must_be_positive(capsys):
    assert main(["scan", "--model", "tiny:flux", "--prompt", "a", "--k", "0", "--out", "x"]) == 2


def test_parse_size():
    assert parse_size("1024x768") == (1024, 768) and parse_size("512") == (512, 512) and parse_size(None) is None


def test_report_is_self_contained_and_escaped(tmp_path):
    run_dir = tmp_path / "r"
    assert main(["scan", "--model", "tiny:flux", "--prompt", "a <script>alert(1)</script> fox", "--prompt", "a cat",
                 "--num-steps", "3", "--size", "32", "--out", str(run_dir), "--json"]) == 0
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out), "--k", "3"]) == 0
    page = out.read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script src" not in page and 'src="http' not in page and "data:image/png;base64," in page
    assert page.count("Plotly.newPlot") >= 4  # heatmap, curves, against step, stability
    assert len(page) < 3_000_000, f"{len(page)} characters: plotly.js should travel packed"
    run = mv.Run.load(run_dir)
    top, scores = run.stats.top_k(3, layer="single.1")
    row = page.split("<tr><td>single.1</td><td>image</td>")[1].split("</tr>")[0]
    assert ", ".join(f"{c} ({v:.3g})" for c, v in zip(top, scores)) in row


def test_report_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")]) == 2
    assert "not a massact_viz run directory" in capsys.readouterr().err


def test_probe_disrupt_and_localize(tmp_path, capsys):
    import numpy as np
    assert main(["probe", "disrupt", "--model", "tiny:flux", "--prompt", "a cat", "--num-steps", "2", "--size", "32",
                 "--ks", "1", "2", "--random-draws", "1", "--out", str(tmp_path / "d"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {(r["set"], r["k"]) for r in doc["table"]} == {(s, k) for s in ("top", "bottom", "random") for k in (1, 2)}
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((32, 32), bool)
    m[8:24, 8:24] = True
    np.save(masks / "0.npy", m)
    assert main(["probe", "localize", "--model", "tiny:flux", "--prompt", "a cat", "--num-steps", "2", "--size", "32",
                 "--masks", str(masks), "--k", "2", "--out", str(tmp_path / "loc.json"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["curves"]) == {"top", "bottom", "random", "all"} and len(doc["curves"]["top"]) == 6
    assert main(["probe", "localize", "--model", "tiny:flux", "--prompt", "a", "--masks", str(tmp_path / "none"),
                 "--out", str(tmp_path / "x.json")]) == 2


@pytest.mark.parametrize("text, steps", [(None, None), ("3", 3), ("0:2", (0, 2)), ("-2:-1", (-2, -1)),
                                         ("0,2,-1", [0, 2, -1])])
def test_steps_flag_is_the_python_steps_rule(text, steps):
    from massact_viz.cli import _steps_arg
    assert _steps_arg(text) == steps


def test_disrupt_and_localize_pass_steps_and_random_draws_to_the_library(tmp_path, monkeypatch, capsys):
    import massact_viz.probes.disruption as dis
    import massact_viz.probes.localization as loc
    seen = {}

    def fake(name):
        def call(model, prompts, *a, **kw):
            seen[name] = kw
            raise mv.MassActError("stop here")
        return call
    monkeypatch.setattr(dis, "disrupt", fake("disrupt"))
    monkeypatch.setattr(loc, "localize", fake("localize"))
    common = ["--model", "tiny:flux", "--prompt", "a cat", "--num-steps", "4", "--size", "32"]
    assert main(["probe", "disrupt", *common, "--steps", "1:3", "--random-draws", "2", "--out", str(tmp_path / "d")]) == 2
    assert seen["disrupt"]["steps"] == (1, 3) and seen["disrupt"]["random_draws"] == 2
    assert main(["probe", "localize", *common, "--steps", "0,-1", "--random-draws", "5",
                 "--out", str(tmp_path / "l.json")]) == 2
    assert seen["localize"]["steps"] == [0, -1] and seen["localize"]["random_draws"] == 5
    assert main(["probe", "localize", *common, "--out", str(tmp_path / "l.json")]) == 2
    assert "steps" not in seen["localize"]   # the library's default (the last step), not every step
    assert seen["localize"]["k_clusters"] == 2
    assert main(["probe", "localize", *common, "--k-clusters", "3", "--out", str(tmp_path / "l.json")]) == 2
    assert seen["localize"]["k_clusters"] == 3
    seen.clear()
    capsys.readouterr()
    assert main(["probe", "localize", *common, "--k-clusters", "1", "--out", str(tmp_path / "l.json")]) == 2
    assert "localize" not in seen   # refused before the model loads
    assert "--k-clusters must be an integer at least 2" in capsys.readouterr().err


def test_probe_disrupt_layer_sets(tmp_path, capsys):
    args = ["probe", "disrupt", "--model", "tiny:flux", "--prompt", "a cat", "--num-steps", "2", "--size", "32",
            "--ks", "1", "--sets", "top", "--out", str(tmp_path / "d"), "--json"]
    assert main(args + ["--layer-sets", "early=double.0,double.1", "single=single"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["layer_set"], r["layers"]) for r in doc["table"]] == [("early", "double.0,double.1"),
                                                                       ("single", "single")]
    assert {r["layer_set"] for r in doc["summary"]} == {"early", "single"}
    assert main(args[:-3] + ["--out", str(tmp_path / "e"), "--layer-sets", "bad"]) == 2
    assert "NAME=SPEC" in capsys.readouterr().err


def test_probe_transport_text_and_image(tmp_path, capsys):
    out = tmp_path / "t"
    base = ["probe", "transport", "--model", "tiny:flux", "--target", "a cat", "--num-steps", "2", "--size", "32",
            "--k", "2", "--steps", "0:1"]
    assert main(base + ["--source", "a dog", "--controls", "random-k", "pixel-blend", "--out", str(out),
                        "--tokens", "target", "--mask-layer", "double.0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["metrics"]) == {"target", "transported", "random-k", "pixel-blend", "source"}
    assert doc["settings"]["transport_steps"] == [0] and all(len(c) == 2 for c in doc["channels"].values())
    assert doc["settings"]["token_mask"]["layer"] == "double.0" and 0 < len(doc["settings"]["tokens"]) < 256
    back = mv.probes.TransportResult.load(out)
    assert set(back.previews) == {"source", "target", "transported", "random-k"}
    assert (out / "control-pixel-blend.png").is_file()
    # image-conditioned: the source is a reference image, inverted with a caption
    back.target_image.save(tmp_path / "ref.png")
    assert main(base + ["--source-image", str(tmp_path / "ref.png"), "--source-prompt", "a photo",
                        "--out", str(tmp_path / "i")]) == 0
    table = capsys.readouterr().out
    assert "| transported |" in table and "| reconstruction |" in table
    assert "error" in mv.probes.TransportResult.load(tmp_path / "i").settings["source_image"]


@pytest.mark.parametrize("extra, message", [
    ([], "give one of --source"),
    (["--source-image", "nope.png", "--source-prompt", "x"], "not a file"),
    (["--source", "a dog", "--steps", "a:b"], "--steps takes"),
    (["--source", "a dog", "--channels", "1,x"], "--channels takes"),
])
def test_probe_transport_bad_arguments(extra, message, capsys, tmp_path):
    argv = ["probe", "transport", "--model", "tiny:flux", "--target", "a cat", "--out", str(tmp_path / "o")] + extra
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_torchvision_fallback_notice_is_silenced_and_nothing_else(caplog):
    import logging
    import massact_viz  # noqa: F401 (installs the filter on the logger, so no handler ever sees the record)
    log = logging.getLogger("transformers.utils.import_utils")
    with caplog.at_level(logging.WARNING, logger="transformers.utils.import_utils"):
        log.warning("`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`")
        log.warning("a warning a user can act on")
    seen = [r.getMessage() for r in caplog.records if r.name == "transformers.utils.import_utils"]
    assert seen == ["a warning a user can act on"]


@pytest.mark.parametrize("extra, message", [
    (["--size", "100000x100000"], "larger than 8192 px"),
    (["--num-steps", "10000000"], "more than 1000"),
    (["--num-steps", "1000000000"], "more than 1000"),
    (["--num-steps", "0"], "positive integer"),
    (["--seed", "-1"], "--seed must be a non-negative"),
    (["--out", "."], "is not a massact_viz run directory"),
    (["--out", "notes.txt"], "is not a massact_viz run directory"),
    (["--out", "notes.txt/run"], "is a file, not a directory"),
])
def test_resources_and_out_kinds_are_checked_before_any_model_loads(extra, message, tmp_path, monkeypatch, capsys):
    import massact_viz.model as model_mod
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep")
    monkeypatch.setattr(model_mod, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    argv = ["scan", "--model", "tiny:flux", "--prompt", "a", "--out", "r"]
    for flag in extra[::2]:   # the later flag wins in argparse; drop the default one it replaces
        if flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("massact-viz: error:") and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "keep"


def test_an_unexpected_error_is_one_line_and_exit_2(monkeypatch, capsys):
    import massact_viz.cli as cli

    def broken(args):
        raise ValueError("something inside a library went wrong")
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_fn(parser(), broken))
    monkeypatch.delenv("MASSACT_VIZ_TRACEBACK", raising=False)
    assert main(["info", "--model", "tiny:flux"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("massact-viz: error: ValueError: something inside") and len(err.splitlines()) == 1
    monkeypatch.setenv("MASSACT_VIZ_TRACEBACK", "1")
    with pytest.raises(ValueError):
        main(["info", "--model", "tiny:flux"])


def test_layers_take_indices_names_and_kinds_on_the_command_line(tmp_path, capsys):
    from massact_viz.specs import parse_layer_words
    assert parse_layer_words(["0", "single", "double.1,-1"]) == [0, "single", "double.1", -1]
    assert parse_layer_words(["all"]) is None and parse_layer_words(None) is None
    assert main(["scan", "--model", "tiny:flux", "--prompt", "a cat", "--num-steps", "1", "--size", "32",
                 "--layers", "0", "single", "--out", str(tmp_path / "r"), "--json"]) == 0
    layers = {r["layer"] for r in json.loads(capsys.readouterr().out)["layers"]}
    assert layers == {"double.0", "single.0", "single.1", "single.2", "single.3"}  # tiny:flux: 2 double, 4 single


def test_transport_study_from_a_pairs_file(tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("source\ttarget\na red fox\ta blue house\na cat\ta tree\n")
    out = tmp_path / "study"
    assert main(["probe", "transport", "--model", "tiny:flux", "--pairs", str(pairs), "--num-steps", "2", "--size", "32",
                 "--k", "2", "--out", str(out), "--json"]) == 0
    doc = json.loads((out / "study.json").read_text())
    assert doc["pairs"] == [["a red fox", "a blue house", ""], ["a cat", "a tree", ""]] and doc["seeds"] == [0]
    assert len(doc["values"]["transported"]["toward_source"]) == 2
    capsys.readouterr()
    # bad input: one line each, before the model loads
    assert main(["probe", "transport", "--pairs", str(pairs), "--target", "x", "--out", str(tmp_path / "a")]) == 2
    assert "--pairs reads the targets" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one column\n")
    assert main(["probe", "transport", "--pairs", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "massact-viz: error:" in capsys.readouterr().err
    assert main(["probe", "transport", "--target", "x", "--out", str(tmp_path / "c")]) == 2
    assert "give one of --source" in capsys.readouterr().err
