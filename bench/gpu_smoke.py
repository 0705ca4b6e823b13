"""GPU-only paths of the train step, checked on the SD 1.5 architecture, then on SD 3.5 Medium's and Flux.1-dev's
transformers (random weights, 512 px, bf16 base, gradient checkpointing): a few steps each, finite metrics.

fp16 with loss scaling, DoRA on every layer group, gradient checkpointing, gradient accumulation, min-SNR,
noise offset, caption dropout and text-encoder LoRA: what the CPU tests cannot reach (the CPU always trains in
fp32). Run under `accelerate launch` too, it checks that the trainer finds its GPU through accelerate.

    PYTHONPATH=src:bench python bench/gpu_smoke.py
"""

from __future__ import annotations

import json
import math
import time

import torch
from train_step import Models, artlora_step

from artlora.config import TrainConfig
from artlora.diffusion.device import default_device

CASES = {
    "fp16_scaler_all_targets": {
        "mixed_precision": "fp16",
        "target_modules": ("attention", "feed_forward", "convolutions"),
    },
    "bf16_dora_checkpointing_accumulation": {
        "use_dora": True,
        "gradient_checkpointing": True,
        "gradient_accumulation": 2,
        "channels_last": True,
    },
    "bf16_objective_options": {"min_snr_gamma": 5.0, "noise_offset": 0.05, "caption_dropout": 0.2},
    "bf16_text_encoder_lora_caption_dropout": {"train_text_encoder": True, "caption_dropout": 0.2},
    "fp16_text_encoder_lora_checkpointing": {
        "train_text_encoder": True,
        "mixed_precision": "fp16",
        "gradient_checkpointing": True,
    },
}
# The transformer families (bench/train_step.py's arches): their memory options and every LoRA group.
FLOW_CASES = {
    "sd35-medium": {
        "gradient_checkpointing": True,
        "target_modules": ("attention", "context", "feed_forward", "modulation"),
        "loss_weighting": "cosmap",
        "caption_dropout": 0.2,
    },
    "flux-dev": {
        "gradient_checkpointing": True,
        "target_modules": ("attention", "context", "feed_forward"),
        "timestep_density": "mode",
        "caption_dropout": 0.2,
    },
}


def main() -> None:
    dev = default_device()
    models = Models("sd15", 512, dev)
    for name, update in CASES.items():
        check(name, models, update)
    for arch, update in FLOW_CASES.items():
        check(arch, Models(arch, 512, dev), update)


def check(name: str, models: Models, update: dict) -> None:
    """A few steps of one case; a JSON row with its last metrics and whether all were finite."""
    config = TrainConfig(storage_root="s3://bench", base_model="random", rank=4, alpha=4, **update)
    began = time.perf_counter()
    step = artlora_step(models, config, batch=2)
    metrics = [{k: v.item() for k, v in step().items()} for _ in range(3)]
    torch.cuda.synchronize()
    finite = all(math.isfinite(v) for m in metrics for v in m.values())
    seconds = time.perf_counter() - began
    row = {"case": name, "finite": finite, "last": metrics[-1], "seconds": seconds}
    row.update(device=str(step.trainer.device), processes=step.trainer.processes)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
