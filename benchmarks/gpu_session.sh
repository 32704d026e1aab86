#!/usr/bin/env bash
# One prepared run for a lent GPU machine (a few minutes): continue the teaching model on CUDA from the shipped
# weights, judge it there, measure FLUX.1 at full size (benchmarks/real_size.py), and leave the results under
# $OUT for re-measuring on the CPU.
#
# The GPU machine has torch but not diffusers; carry its wheel (and importlib_metadata) in .whl/ (git-ignored):
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1 importlib_metadata
# then, from the repository root on the device machine (carry: .whl):
#   MINUTES=8 bash benchmarks/gpu_session.sh
# Copy $OUT/shapes/{model.safetensors,config.json} back into data/shapes and run `make shapes-card` on the CPU.
set -euo pipefail
OUT=${OUT:-runs/gpu}
MINUTES=${MINUTES:-8}
BATCH=${BATCH:-256}
LR=${LR:-5e-4}
STEPS=${STEPS:-8000}   # the cosine schedule length; set it to what MINUTES allows (the log prints it/s)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
mkdir -p "$OUT/shapes"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 - <<'EOF'
import torch, diffusers
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "diffusers", diffusers.__version__)
EOF
# continue the shipped weights (fresh AdamW, warm-up, cosine over STEPS); stops after MINUTES of wall time,
# writes the EMA weights (fp16) and judges 100 held-out captions on the GPU
python3 -m massact_viz.shapes.train --out "$OUT/shapes" --ckpt-dir "$OUT/ckpt" --init-from data/shapes \
  --device cuda --batch "$BATCH" --lr "$LR" --warmup 200 --lr-schedule cosine --steps "$STEPS" \
  --minutes "$MINUTES" --ckpt-every 2 --eval-n 100 --no-progress 2>&1 | tee "$OUT/train.log"
ls -la "$OUT/shapes"
# real-size figures: FLUX.1 at full width and depth (19 + 38 blocks x 3072), 4096 image tokens (what 1024x1024
# gives), bfloat16: capture overhead against the plain pipeline, transport, localization, peak GPU memory
python3 benchmarks/real_size.py --device cuda --configs flux-full --size 128 --reps 2 2>&1 | tee "$OUT/real_size.md"
cp benchmarks/real_size.json "$OUT/real_size.json"
