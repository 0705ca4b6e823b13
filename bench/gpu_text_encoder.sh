#!/usr/bin/env bash
# Text-encoder LoRA and `accelerate launch` on a lent GPU machine (one call): the GPU smoke cases under a launched
# process, then the step with text-encoder LoRA timed against the reference on SD 1.5 (512 px) and SDXL (1024 px).
# Wheels the machine lacks are carried in .whl/ (see bench/train_step.md); results and logs go to $OUT/text-encoder.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}/text-encoder
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, diffusers, peft, transformers, accelerate as a; print(torch.__version__, diffusers.__version__, peft.__version__, transformers.__version__, a.__version__)" | tee "$OUT/versions.txt"
timeout "${SMOKE_TIMEOUT:-120}" env PYTHONPATH="$PYTHONPATH:bench" python3 -m accelerate.commands.launch \
    --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no bench/gpu_smoke.py 2>&1 \
    | grep -v "should be kept in float32" | tee "$OUT/gpu_smoke_accelerate.log"
timeout "${SD15_TIMEOUT:-150}" python3 bench/train_step.py --arch sd15 --resolution 512 --batch-sizes 8 --no-extras \
    --text-encoder --out "$OUT" 2>&1 | grep -v "should be kept in float32" | tee "$OUT/train_step_sd15.log"
timeout "${SDXL_TIMEOUT:-200}" python3 bench/train_step.py --arch sdxl --resolution 1024 --batch-sizes 4 --no-extras \
    --text-encoder --warmup 2 --steps 5 --out "$OUT" 2>&1 | grep -v "should be kept in float32" \
    | tee "$OUT/train_step_sdxl.log"
