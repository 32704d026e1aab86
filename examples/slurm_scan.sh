#!/bin/bash
# A massact_viz scan over every GPU of several nodes with SLURM: one accelerate launcher per node, all
# joining one process group. Submit with `sbatch examples/slurm_scan.sh`; edit the #SBATCH lines, the
# model, the prompts and the output folder. The run is the one a single process would write (bit for bit),
# merged by the main process in OUT; rerun the same job after a failure and it finishes the rest.
#SBATCH --job-name=massact-scan
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node; it starts one process per GPU
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=04:00:00

set -euo pipefail
GPUS_PER_NODE=8
MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=29500
OUT=${OUT:-runs/sweep}               # on a file system every node sees

srun bash -c "accelerate launch \
    --multi_gpu --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank \$SLURM_NODEID --main_process_ip $MAIN_ADDR --main_process_port $MAIN_PORT \
    -m massact_viz scan --model black-forest-labs/FLUX.1-schnell --prompts prompts.txt \
    --num-steps 4 --batch-size 4 --out $OUT"
