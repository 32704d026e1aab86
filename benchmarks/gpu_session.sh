#!/usr/bin/env bash
# One prepared run for a lent GPU machine (about 9 minutes): time the trainer's step at three batch sizes and
# take the batch the measurement names (benchmarks/shapes_step_profile.py; PROFILE=0 skips it), continue the
# teaching model on CUDA from the shipped weights - and, side by side on the same GPU, a second candidate
# architecture (PILOT) - then measure FLUX.1 at full size (benchmarks/real_size.py). MINUTES=0 skips the
# training, REAL_SIZE= (empty) the real-size run. Everything that matters lands under $OUT.
#
# The GPU machine has torch but not diffusers or nnsight; carry their wheels in .whl/ (git-ignored), for its
# Python 3.12 (without nnsight's, real_size.py times the hooks engine only):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     diffusers==0.42.1 importlib_metadata nnsight==0.8.1 greenlet pydantic pydantic_core annotated-types \
#     typing-inspection websocket-client zstandard
# then, from the repository root on the device machine (carry: .whl, and the PILOT folder if there is one):
#   MINUTES=6 WORKERS=10 REAL_SIZE= bash benchmarks/gpu_session.sh     # the teaching model alone
#   MINUTES=0 bash benchmarks/gpu_session.sh                                       # then FLUX.1 at full size
# A second run on the same warm machine continues the checkpoints in /tmp/ckpt-* (after a finished run: a new
# cosine decay fitted to the new MINUTES, a warm restart); FRESH=1 starts again from the init weights.
# Back here: judge each with `python benchmarks/shapes_pilots.py --part judge --weights DIR --name ...`; copy the
# better one into data/shapes and run `make shapes-card`.
set -uo pipefail
OUT=${OUT:-runs/gpu}
MINUTES=${MINUTES:-5}          # training wall time; the cosine decay is fitted to it (no --steps)
BATCH=${BATCH:-512}            # with PROFILE=1: the smallest batch tried (then 2x and 4x)
PROFILE=${PROFILE:-1}
P_TWO=${P_TWO:-0.7}            # share of two-object scenes (the CPU arms of 2026-12-05: 70 % beat 35 %)
LR=${LR:-4e-4}
BINDING_LOSS=${BINDING_LOSS:-0.05}   # the T5 slot's binding loss (the CPU segment of 2026-12-08: relations 51 -> 96 %)
WORKERS=${WORKERS:-6}          # processes drawing scenes per training run (the GPU step is faster than one core)
PILOT=${PILOT:-}               # a second model folder (config.json + model.safetensors) to continue beside it
FRESH=${FRESH:-}
REAL_SIZE_S=${REAL_SIZE_S:-170}   # stops the real-size run there (what it finished stays in real_size.json)
REAL_SIZE=${REAL_SIZE---device cuda --configs flux-full --size 128 --reps 2}
DEVICE=${DEVICE:-cuda}         # DEVICE=cpu MINUTES=0.3 BATCH=4 WORKERS=1 PROFILE_STEPS=2 PROFILE_WARMUP=1 REAL_SIZE="--configs smoke --size 16 --reps 1"
                               # rehearses the whole script here in a minute
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__)"

TRAIN=$(python3 -c "import sys; print(int(float(sys.argv[1]) > 0))" "$MINUTES")
rm -f "$OUT/profile.json"
# a second run on the same warm machine resumes /tmp/ckpt-*: it keeps the first run's batch (a resumed run must
# draw the same batches) instead of profiling again
if [ "$TRAIN" = 1 ] && [ -f /tmp/gpu-profile.json ] && [ -z "$FRESH" ]; then
  cp /tmp/gpu-profile.json "$OUT/profile.json"
elif [ "$PROFILE" = 1 ] && [ "$TRAIN" = 1 ]; then
  python3 benchmarks/shapes_step_profile.py --device "$DEVICE" --batch "$BATCH" --workers "$WORKERS" \
    --steps "${PROFILE_STEPS:-20}" --warmup "${PROFILE_WARMUP:-5}" --json "$OUT/profile.json" 2>&1 \
    | tee "$OUT/profile.md"
  [ -f "$OUT/profile.json" ] && cp "$OUT/profile.json" /tmp/gpu-profile.json
fi
if [ "$TRAIN" = 1 ]; then
  if [ -f "$OUT/profile.json" ]; then
    BATCH=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['batch'])" "$OUT/profile.json")
  fi
  echo "training with batch $BATCH"
fi

train() {   # NAME INIT_DIR: continue INIT_DIR's weights (its own architecture) into $OUT/NAME
  local name=$1 init=$2
  local cfg
  cfg=$(python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['config']))" "$init/config.json")
  python3 -m massact_viz.shapes.train --out "$OUT/$name" --ckpt-dir "/tmp/ckpt-$name" --init-from "$init" \
    --config "$cfg" --device "$DEVICE" --batch "$BATCH" --lr "$LR" --warmup 200 --lr-schedule cosine \
    --minutes "$MINUTES" --ema 0.998 --p-two "$P_TWO" --binding-loss "$BINDING_LOSS" --data-workers "$WORKERS" --ckpt-every 2 \
    --eval-n 0 --val-n 0 --no-progress ${FRESH:+--fresh} > "$OUT/train-$name.log" 2>&1
  local rc=$?
  tail -n 4 "/tmp/ckpt-$name/log.jsonl" >> "$OUT/train-$name.log" 2>/dev/null
  echo "train $name exit $rc"
  tail -n 8 "$OUT/train-$name.log"
  return $rc
}
status=0
if [ "$TRAIN" = 1 ]; then
  train g8 data/shapes & pids=($!)
  if [ -n "$PILOT" ]; then train pilot "$PILOT" & pids+=($!); fi
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  ls -la "$OUT"/*
fi
[ -n "$REAL_SIZE" ] || exit $status
# real-size figures: FLUX.1 at full width and depth (19 + 38 blocks x 3072), 4096 image tokens (what 1024x1024
# gives), bfloat16: capture overhead against the plain pipeline, transport, localization, peak GPU memory
timeout "$REAL_SIZE_S" python3 benchmarks/real_size.py $REAL_SIZE --json "$OUT/real_size.json" 2>&1 \
  | tee "$OUT/real_size.md" || status=1
exit $status
