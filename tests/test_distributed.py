"""Scans shared over processes (torchrun / accelerate launch, gloo on this CPU): the merged run is the
single-process run bit for bit, and a process that dies loses only its unfinished unit."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import massact_viz as mv
from massact_viz.distributed import Ranks, launched

PROMPTS = ["a red fox", "a cat", "a dog on grass", "a blue house", "a tree"]   # 5 units: 3 for rank 0, 2 for rank 1
ARGS = ["--model", "tiny:flux", "--num-steps", "2", "--size", "32", "--batch-size", "1"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _launch(args, n, timeout=300):
    """``python -m torch.distributed.run --nproc-per-node n ...`` (n > 1) or plain python (n == 1)."""
    head = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            f"--nproc-per-node={n}"]
    return subprocess.run(head + args, env=_env(), capture_output=True, text=True, timeout=timeout)


def _same_run(a, b):
    ra, rb = mv.Run.load(a), mv.Run.load(b)
    assert ra.prompts == rb.prompts == PROMPTS and ra.meta["seeds"] == rb.meta["seeds"] == [0, 1, 2, 3, 4]
    ta, tb = load_file(str(a / "tensors.safetensors")), load_file(str(b / "tensors.safetensors"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), "statistics differ"
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(ra.images, rb.images)), "images differ"


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("prompts") / "p.txt"
    p.write_text("\n".join(PROMPTS) + "\n")
    return p


@pytest.fixture(scope="module")
def single(prompts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    r = _launch(["-m", "massact_viz", "scan", *ARGS, "--prompts", str(prompts_file), "--out", str(out), "--json"], 1)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_ranks_share_units_in_strides():
    assert Ranks().share(range(5)) == [0, 1, 2, 3, 4] and Ranks().main
    assert Ranks(0, 2).share(range(5)) == [0, 2, 4] and Ranks(1, 2).share(range(5)) == [1, 3]
    assert sorted(u for r in range(3) for u in Ranks(r, 3).share(range(7))) == list(range(7))


def test_launched_reads_the_launcher_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched()


def test_two_processes_give_the_one_process_run_bit_for_bit(prompts_file, single, tmp_path):
    out = tmp_path / "run"
    r = _launch(["-m", "massact_viz", "scan", *ARGS, "--prompts", str(prompts_file), "--out", str(out), "--json"], 2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"run"') == 1, "only the main process reports"
    assert not (tmp_path / "run.parts").exists()
    _same_run(single, out)


SCRIPT = """
import os, sys
from pathlib import Path
import torch
import massact_viz as mv

out, marker = Path(sys.argv[1]), Path(sys.argv[2])
prompts = {prompts!r}

def die_once(site):
    # process 1 dies in its second unit (its first part is saved), the first time only
    if os.environ.get("RANK") == "1" and (out.parent / "run.parts" / "000001").exists() and not marker.exists():
        marker.touch()
        os._exit(17)

model = mv.load("tiny:flux")
model.scan(prompts, out, num_steps=2, size=(32, 32), batch_size=1, edit=die_once, progress=False,
           distributed=True)
"""


def test_a_lost_process_loses_only_its_unit_and_the_relaunch_matches(single, tmp_path):
    script, out, marker = tmp_path / "job.py", tmp_path / "run", tmp_path / "died"
    script.write_text(textwrap.dedent(SCRIPT.format(prompts=PROMPTS)))
    first = _launch([str(script), str(out), str(marker)], 2)
    assert first.returncode != 0 and marker.exists(), first.stderr[-3000:]
    parts = tmp_path / "run.parts"
    # finished parts: a part appears under its own name only once complete; a unit being written when the launcher
    # stopped the other process is a hidden temporary folder (".000004.tmp-..."), redone by the relaunch
    kept = sorted(p.name for p in parts.iterdir() if p.name.isdigit())
    assert "000001" in kept and "000003" not in kept, kept   # process 1's finished unit kept, its next one lost
    assert not out.exists()
    again = _launch([str(script), str(out), str(marker)], 2)   # the same command: finishes the rest
    assert again.returncode == 0, again.stderr[-3000:]
    assert not parts.exists()
    _same_run(single, out)
    assert mv.Run.load(out).meta["resumed_prompts"] == len(kept)


def test_a_relaunch_with_other_arguments_is_refused(prompts_file, tmp_path):
    out = tmp_path / "run"
    parts = tmp_path / "run.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text('{"model": "tiny:flux", "n": 99}')
    r = _launch(["-m", "massact_viz", "scan", *ARGS, "--prompts", str(prompts_file), "--out", str(out)], 2)
    assert r.returncode != 0 and "started with other settings" in r.stderr, r.stderr[-2000:]


def test_disrupt_on_two_processes_gives_the_one_process_result(prompts_file, tmp_path):
    args = ["-m", "massact_viz", "probe", "disrupt", "--model", "tiny:flux", "--prompts", str(prompts_file),
            "--num-steps", "2", "--size", "32", "--ks", "1", "2", "--random-draws", "2", "--json"]   # 1 + 1 + 2x2 = 8 configs
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _launch(args + ["--out", str(one)], 1)
    r2 = _launch(args + ["--out", str(two)], 2)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r2.returncode == 0, r2.stderr[-3000:]
    import json
    j1, j2 = json.loads(r1.stdout), json.loads(r2.stdout)
    assert j1["table"] == j2["table"] and j1["summary"] == j2["summary"] and len(j1["table"]) == 8
    pngs = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(two) for p in two.rglob("*.png"))
    assert all((one / p).read_bytes() == (two / p).read_bytes() for p in pngs), "images differ"


def test_localize_on_two_processes_gives_the_one_process_result(tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle on a blue background\na green square on a yellow background\n"
                        "a blue triangle on a white background\n")
    args = ["-m", "massact_viz", "probe", "localize", "--model", "shapes", "--prompts", str(captions),
            "--num-steps", "4", "--layers", "double", "--k", "4", "--chunk", "1", "--json"]   # 3 units
    r1 = _launch(args + ["--out", str(tmp_path / "one.json")], 1)
    r2 = _launch(args + ["--out", str(tmp_path / "two.json")], 2)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_transport_study_on_two_processes_gives_the_one_process_study(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("source\ttarget\na red fox\ta blue house\na cat\ta tree\na dog on grass\ta red fox\n")
    args = ["-m", "massact_viz", "probe", "transport", "--model", "tiny:flux", "--pairs", str(pairs), "--seeds", "2",
            "--num-steps", "2", "--size", "32", "--k", "2", "--controls", "random-k", "--json"]   # 6 units
    r1 = _launch(args + ["--out", str(tmp_path / "one")], 1)
    r2 = _launch(args + ["--out", str(tmp_path / "two")], 2)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stdout.count('"pairs"') == 1, "only the main process reports"
    assert (tmp_path / "one" / "study.json").read_bytes() == (tmp_path / "two" / "study.json").read_bytes()


OWN_WORK = """
import os, sys
from pathlib import Path
import massact_viz as mv

rank, out = int(os.environ["RANK"]), Path(sys.argv[1])
mine = [["a red fox", "a cat"], ["a dog on grass", "a blue house"]][rank]   # each process its own prompts
model = mv.load("tiny:flux")
run = model.scan(mine, out / f"own{rank}", num_steps=2, size=(32, 32), progress=False)   # not shared: its own run
said = {"own": run.prompts == mine, "refused": False}
try:
    model.scan(mine, out / "shared", num_steps=2, size=(32, 32), progress=False, distributed=True)
except mv.MassActError as e:
    said["refused"] = "different scans" in str(e)
(out / f"said{rank}.txt").write_text(repr(said))   # a file each: the two processes' prints would interleave
from massact_viz.distributed import leave
leave()
"""


def test_processes_doing_their_own_work_are_left_alone_and_a_mismatched_share_is_refused(tmp_path):
    script = tmp_path / "own.py"
    script.write_text(OWN_WORK)
    r = _launch([str(script), str(tmp_path)], 2)
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"said{rank}.txt").read_text() == "{'own': True, 'refused': True}", rank
    assert mv.Run.load(tmp_path / "own1").prompts == ["a dog on grass", "a blue house"]
    assert not (tmp_path / "shared").exists()
