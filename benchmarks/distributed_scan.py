"""Throughput of a scan on 1 process against the same scan on 2 processes (``torchrun``, gloo), one thread
each, on this machine's CPU, in the same run; the two runs must be bit-identical.

    python benchmarks/distributed_scan.py                 # about 4 minutes on 2 idle CPU cores
    python benchmarks/distributed_scan.py --prompts 16 --repeats 1 --model tiny:flux   # quicker

Each timing is the whole command (``python -m massact_viz scan ...``: start, model load, scan, merge), so
the ratio includes everything a user waits for. Prints a Markdown table and writes
``benchmarks/distributed_scan.json``. Run it on an otherwise idle machine: the ratio is only meaningful
when each process has a core of its own.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(cmd: list[str]) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def same(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file
    ta, tb = load_file(str(a / "tensors.safetensors")), load_file(str(b / "tensors.safetensors"))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--prompts", type=int, default=32, help="how many shapes captions to scan")
    ap.add_argument("--num-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each (alternating 1 and 2 processes)")
    args = ap.parse_args()

    captions = (HERE.parent / "data" / "prompts" / "shapes_captions.txt").read_text().splitlines()
    captions = [c for c in captions if c.strip() and not c.startswith("#")][:args.prompts]
    rows = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as d:
        prompts = Path(d) / "prompts.txt"
        prompts.write_text("\n".join(captions) + "\n")
        common = ["scan", "--model", args.model, "--prompts", str(prompts), "--batch-size", str(args.batch_size),
                  "--json"] + (["--num-steps", str(args.num_steps)] if args.num_steps else [])
        outs = {}
        for rep in range(args.repeats):
            for n in (1, 2):
                out = Path(d) / f"run{n}-{rep}"
                head = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                        f"--nproc-per-node={n}"]
                rows[n].append(timed(head + ["-m", "massact_viz", *common, "--out", str(out)]))
                outs[n] = out
        identical = same(outs[1], outs[2])
    t1, t2 = statistics.median(rows[1]), statistics.median(rows[2])
    result = {"model": args.model, "prompts": len(captions), "batch_size": args.batch_size, "repeats": args.repeats,
              "seconds_1_process": rows[1], "seconds_2_processes": rows[2], "speedup_median": t1 / t2,
              "bit_identical": identical, "cpu_count": os.cpu_count()}
    (HERE / "distributed_scan.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"| scan of {len(captions)} prompts ({args.model}, batch {args.batch_size}) | seconds (median of "
          f"{args.repeats}) | throughput vs 1 process |\n|---|---|---|\n| 1 process, 1 thread | {t1:.1f} | 1.00x |\n"
          f"| 2 processes (torchrun, gloo), 1 thread each | {t2:.1f} | {t1 / t2:.2f}x |\n\n"
          f"merged run bit-identical to the single-process run: {identical}")


if __name__ == "__main__":
    main()
