"""What the gallery painted while training (`train.sample_every`) costs the demo's training, on this machine.

    PYTHONPATH=src python bench/gallery_cost.py --out bench/results      # about 2 minutes on 2 cores

Builds the demo's training (configs/demo.yaml: the pretrained tiny base, 64 px, batch 16, LoRA on every layer and
the text encoder, the LPIPS term every 4th step) on random cached latents, and the demo's gallery (the evaluation's
5 prompts and 2 content prompts, 64 px, 20 denoising steps, guidance 5) on the same pipeline, then times them in
turns: `--steps` training steps, one painting (PNG encoding included), and so on `--rounds` times, so that other
work on a shared machine weighs on both alike. The figure: the gallery's added share of the demo's training time,
(max_steps / sample_every + 2 paintings) x painting time / (max_steps x step time), at the config's sample_every
and at other intervals. Object-store writes and MLflow's image logging (7 small PNGs per painting) are not timed.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from artlora.config import load_config
from artlora.data.latents import LatentGroup, LatentSet
from artlora.demo import pretrained
from artlora.diffusion import loading, painting
from artlora.stages.train.trainer import Trainer

DEMO = Path(__file__).parents[1] / "configs" / "demo.yaml"


def build(base: Path) -> tuple[Trainer, object]:
    config = load_config(DEMO, [f"base_model={base}", "storage_root=s3://bench"]).train
    pipe = loading.load_pipeline(str(base))
    side = 64 // 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    views, width = 4 * config.batch_size, pipe.text_encoder.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    captions = tuple(f"a woodcut print, study {i}" for i in range(views))
    group = LatentGroup(
        latents=torch.randn(views, 4, side, side, generator=generator),
        text=torch.randn(views, 77, width, generator=generator),
        captions=captions,
    )
    return Trainer(config, LatentSet((group,), torch.zeros(77, width), dataset_fingerprint="bench"), pipe), pipe


def paint_once(trainer: Trainer, pipe) -> float:
    """One gallery painting as `Gallery.paint` does it, less the writes."""
    config, began = trainer.config, time.perf_counter()
    with trainer.evaluating(), trainer.autocast():
        images = painting.paint(
            pipe,
            list(config.sample_prompts),
            [config.sample_seed] * len(config.sample_prompts),
            resolution=config.sample_resolution,
            steps=config.sample_steps,
            guidance=config.sample_guidance,
        )
    for image in images:
        Image.fromarray(image).save(io.BytesIO(), format="PNG")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="folder for gallery-cost-cpu.json")
    args = parser.parse_args()
    trainer, pipe = build(pretrained.ensure())
    pipe.set_progress_bar_config(disable=True)
    for step in range(3):  # warm-up: first calls allocate
        trainer.step(step)
    paint_once(trainer, pipe)
    step_times, paint_times = [], []
    for round_ in range(args.rounds):
        began = time.perf_counter()
        for step in range(args.steps):
            trainer.step(3 + round_ * args.steps + step)
        step_times.append((time.perf_counter() - began) / args.steps)
        paint_times.append(paint_once(trainer, pipe))
    step_s, paint_s = statistics.median(step_times), statistics.median(paint_times)
    config = trainer.config
    share = {
        every: (config.max_steps // every + 2) * paint_s / (config.max_steps * step_s)
        for every in sorted({50, 100, 250, 500, config.sample_every})
    }
    result = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "step_s": step_times,
        "paint_s": paint_times,
        "median_step_s": step_s,
        "median_paint_s": paint_s,
        "paint_in_steps": paint_s / step_s,
        "max_steps": config.max_steps,
        "sample_every": config.sample_every,
        "prompts": len(config.sample_prompts),
        "added_share_by_sample_every": share,
    }
    print(
        f"step {step_s:.3f} s, painting {paint_s:.2f} s ({paint_s / step_s:.1f} steps); demo, {config.max_steps} steps:"
    )
    for every, fraction in share.items():
        mark = "  <- configs/demo.yaml" if every == config.sample_every else ""
        print(f"  sample_every {every:4d}: +{fraction:.1%}{mark}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gallery-cost-cpu.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
