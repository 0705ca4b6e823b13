"""Benchmark the latent cache: a cold augment run against a rerun on unchanged inputs.

    python bench/augment_cache.py --images 200 --out bench/results/augment-cpu.json

Generates sample artworks, ingests them into a throw-away SeaweedFS (S3 on loopback), saves the tiny Stable
Diffusion, then runs the augment stage twice on the same dataset and model: cold (empty cache: every view is
encoded) and warm (every shard is downloaded and checked, nothing is encoded). Ingest runs first, so neither
timing includes creating the MLflow store. Writes the timings, the VAE encode counts and the machine to JSON;
prints a table. The resolution is high enough (256 px by default) that the VAE's cost is visible even for the
tiny model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from artlora.config import AugmentConfig, IngestConfig
from artlora.demo import sample_data, tiny
from artlora.io import services
from artlora.stages.augment import run as augment
from artlora.stages.ingest import run as ingest


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


@contextlib.contextmanager
def counting_encodes() -> Iterator[list[int]]:
    """The views given to every real VAE encode call inside the block (not the blank ones filling up a batch)."""
    calls: list[int] = []
    original = AutoencoderKL.encode

    def counting(self, x, *args, **kwargs):
        calls.append(int(x.flatten(1).any(1).sum()))
        return original(self, x, *args, **kwargs)

    AutoencoderKL.encode = counting
    try:
        yield calls
    finally:
        AutoencoderKL.encode = original


def timed_run(config: AugmentConfig) -> dict:
    with counting_encodes() as calls:
        began = time.perf_counter()
        result = augment.run(config)
        seconds = time.perf_counter() - began
    return {
        "seconds": round(seconds, 3),
        "vae_encode_calls": len(calls),
        "vae_encoded_views": sum(calls),
        "encoded_views": result.encoded_views,
        "reused_views": result.reused_views,
        "encoded_captions": result.encoded_captions,
        "rebuilt_shards": result.rebuilt_shards,
        "cache_uri": result.cache_uri,
    }


def bench(args: argparse.Namespace, tmp: Path) -> dict:
    raw = tmp / "raw"
    sample_data.generate(raw, count=args.images, size=args.resolution, seed=0)
    model_dir = tiny.save_tiny(tmp / "tiny-sd")
    root = "s3://bench-augment"
    dataset = ingest.run(
        IngestConfig(source=str(raw), storage_root=root, val_fraction=0.1, bucket_resolution=args.resolution)
    )
    config = AugmentConfig(
        dataset_uri=dataset.dataset_uri,
        storage_root=root,
        base_model=str(model_dir),
        experiment="bench-augment",
        resolution=args.resolution,
        views_per_image=args.views,
        batch_size=args.batch_size,
    )
    cold = timed_run(config)
    warm = timed_run(config)
    return {
        "benchmark": "augment latent cache: cold run vs rerun on unchanged inputs",
        "model": "tiny Stable Diffusion (artlora.demo.tiny.build_tiny_sd, VAE channels 32-32-64)",
        "object_store": "SeaweedFS on loopback (a separate process sharing the cores)",
        "images": dataset.accepted,
        "resolution": args.resolution,
        "views_per_image": args.views,
        "batch_size": args.batch_size,
        "cold": cold,
        "warm": warm,
        "warm_over_cold": round(warm["seconds"] / cold["seconds"], 4),
        "machine": machine(),
    }


def table(report: dict) -> str:
    rows = [("run", "seconds", "VAE-encoded views", "reused views", "captions encoded")]
    for name in ("cold", "warm"):
        run = report[name]
        row = (name, f"{run['seconds']:.2f}", run["vae_encoded_views"], run["reused_views"], run["encoded_captions"])
        rows.append(tuple(str(cell) for cell in row))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    machine_line = f"{report['machine']['cores']} cores, {report['machine']['cpu']}"
    summary = f"warm / cold = {report['warm_over_cold']:.3f} ({report['images']} images, {machine_line})"
    return "\n".join([*lines, summary])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="sample images to generate and ingest")
    parser.add_argument("--resolution", type=int, default=256, help="image and view side, in pixels")
    parser.add_argument("--views", type=int, default=2, help="augmented views per image")
    parser.add_argument("--batch-size", type=int, default=16, help="views per VAE encode call")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # a local benchmark: its runs go to a throw-away store
    with tempfile.TemporaryDirectory(prefix="artlora-bench-") as tmp:
        os.environ["ARTLORA_WORK_DIR"] = str(Path(tmp) / "work")
        with services.throwaway_seaweedfs(Path(tmp) / "s3"):
            report = bench(args, Path(tmp))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
