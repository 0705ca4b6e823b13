#!/usr/bin/env bash
# The transformer families' train-step benchmark for a lent device machine (one call, not yet run): SD 3.5 Medium
# and Flux.1-dev transformers with random weights at 1024 px, bf16 base and autocast, cached 16-channel latents,
# T5 states and pooled embeddings, with and without gradient checkpointing (no reference loop). Wheels the machine
# lacks are carried in .whl/ (see bench/gpu.sh); results and log go to $OUT.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/nvidia-smi-transformers.txt"
for arch in sd35-medium flux-dev; do
    timeout "${BENCH_TIMEOUT:-240}" python3 bench/train_step.py --arch "$arch" --resolution 1024 --batch-sizes 1 2 \
        --warmup 2 --steps 5 --out "$OUT" 2>&1 | tee "$OUT/train_step_$arch.log"
done
