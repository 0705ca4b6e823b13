#!/usr/bin/env bash
# The GPU benchmark as it was run on a lent device machine (one call): wheels that the machine lacks are carried
# in .whl/ (see bench/README.md), results and logs go to $OUT.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, diffusers, peft, transformers, lpips; print(torch.__version__, diffusers.__version__, peft.__version__, transformers.__version__)"
timeout "${BENCH_TIMEOUT:-300}" python3 bench/train_step.py --arch sd15 --resolution 512 --batch-sizes 1 8 \
    --perceptual-batch 4 --compile --out "$OUT" 2>&1 | tee "$OUT/train_step.log"
timeout "${SMOKE_TIMEOUT:-60}" env PYTHONPATH="$PYTHONPATH:bench" python3 bench/gpu_smoke.py 2>&1 | tee "$OUT/gpu_smoke.log"
# The shared anchor on the same card, short, when it is carried beside the wheels.
if [ -f .whl/gpu_anchor.py ]; then
    timeout "${ANCHOR_TIMEOUT:-75}" python3 .whl/gpu_anchor.py --arch sd15 --modes ref,cached --batches 8 \
        --iters 10 --warmup 3 --budget-s 60 --out "$OUT" 2>&1 | tee "$OUT/anchor.log"
fi
