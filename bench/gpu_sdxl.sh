#!/usr/bin/env bash
# The SDXL train-step benchmark as it was run on a lent device machine (one call): SDXL base architecture with
# random weights at 1024 px, bf16 autocast, artlora's step against the diffusers SDXL LoRA example's loop at
# batch 1 and 4. Wheels the machine lacks are carried in .whl/ (see bench/gpu.sh); results and log go to $OUT.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/nvidia-smi-sdxl.txt"
timeout "${BENCH_TIMEOUT:-180}" python3 bench/train_step.py --arch sdxl --resolution 1024 --batch-sizes 1 4 \
    --no-extras --warmup 2 --steps 5 --out "$OUT" 2>&1 | grep -v "should be kept in float32" | tee "$OUT/train_step_sdxl.log"
