"""A scan and a disruption sweep shared over processes, from Python (no notebook):

    torchrun --standalone --nproc-per-node 2 examples/distributed_sweep.py               # 2 CPU processes
    accelerate launch --multi_gpu --num_processes 8 examples/distributed_sweep.py        # 8 GPUs

Every process loads the model on its own device and runs its share of the units; the main process merges
and gets the result (bit-identical to one process's), the others get None. Run the same command again after a failure: finished units
are kept in runs/sweep-*.
"""
import torch

import massact_viz as mv
from massact_viz.distributed import ranks
from massact_viz.probes import disrupt

me = ranks()   # rank, world and this process's device (cuda:LOCAL_RANK or cpu)
torch.set_num_threads(1)
model = mv.load("shapes", device=me.device)
prompts = mv.read_prompts("shapes_captions.txt")[:16]

run = model.scan(prompts, "runs/sweep-scan", num_steps=8, batch_size=2, distributed=True)
sweep = disrupt(model, prompts[:4], ks=(1, 4), num_steps=8, out="runs/sweep-disrupt", progress=me.main,
                distributed=True)
if me.main:   # the others get None
    print(run)
    print(sweep.to_markdown(summary=True))
