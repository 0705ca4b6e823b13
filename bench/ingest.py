"""Ingest throughput: images/s on a generated set of JPEGs, cold and warm, with one worker and with every core.

    python bench/ingest.py --images 2000 --out bench/results/ingest-cpu.json

The images (512-1024 px on each side, random sizes, procedural content, the same on every run) are generated
in parallel once and cached under --cache. Each configuration ingests them into its own storage root on a
throw-away SeaweedFS (S3 on loopback, a process of its own): "cold" is the first ingest (every file read, hashed,
decoded, measured and its bytes stored), "warm" the same ingest again (every file read and hashed, every
measurement found in the scan index). Figures include the whole stage: listing, curation, report, MLflow (a
small ingest before the measured ones creates the MLflow store's tables, a one-time cost).
"decode only" rows time the scan's CPU work alone (read, hash, decode, measure) in a process pool, without S3.
Not a test: it prints a table and writes the figures with a description of the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

STYLES = ("ink", "oil", "pastel", "print")
CACHE_VERSION = 1  # bump when the generated images change


def render(index: int) -> Image.Image:
    """A deterministic picture: a wavy colour field, shapes and grain, at a random size of 512-1024 px."""
    rng = np.random.default_rng(index)
    width, height = (int(v) for v in rng.integers(512, 1025, 2))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    waves = [np.sin(x / rng.uniform(8, 90) + y / rng.uniform(8, 90) + rng.uniform(0, 6)) for _ in range(3)]
    pixels = np.stack(waves, -1) * rng.uniform(40, 110, 3) + rng.uniform(60, 190, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = (x0, y0, x0 + int(rng.integers(20, 300)), y0 + int(rng.integers(20, 300)))
        fill = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def write_one(args: tuple[int, str]) -> None:
    index, folder = args
    path = Path(folder) / STYLES[index % len(STYLES)] / f"{index:05d}.jpg"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        render(index).save(tmp, format="JPEG", quality=90)
        tmp.replace(path)  # a run interrupted mid-write leaves no half image behind


def generate(count: int, cache: Path) -> Path:
    folder = cache / f"jpeg-{count}-v{CACHE_VERSION}"
    done = folder / ".complete"
    if done.exists():
        return folder
    for style in STYLES:
        (folder / style).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ProcessPoolExecutor() as pool:
        list(pool.map(write_one, [(i, str(folder)) for i in range(count)], chunksize=16))
    done.write_text(str(count))
    print(f"generated {count} JPEGs in {time.monotonic() - started:.1f} s under {folder}", file=sys.stderr)
    return folder


def machine() -> dict:
    from artlora.cpus import usable

    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), model)  # fmt: skip
    return {
        "cores_available": usable(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        # Other work on the machine skews the figures: a load near zero before the runs means they had it alone.
        "load_average_1min_before": round(os.getloadavg()[0], 2),
    }


def decode_one(path: str) -> bool:
    from artlora.data import images
    from artlora.stages.ingest import inspection

    data = Path(path).read_bytes()
    hashlib.sha256(data).hexdigest()
    return "code" not in inspection.inspect(data, images.WHITE, 80_000_000)


def measure_decode(source: Path, workers: int) -> dict:
    """Read, hash, decode and measure every file in `workers` processes: the scan's CPU work, without S3."""
    paths = sorted(str(p) for p in source.glob("*/*.jpg"))
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        list(pool.map(decode_one, paths[: workers * 2]))  # start the workers before the clock
        started = time.monotonic()
        assert all(pool.map(decode_one, paths, chunksize=8))
        seconds = time.monotonic() - started
    return {"run": "decode only", "workers": workers, "seconds": round(seconds, 2),
            "images_per_s": round(len(paths) / seconds, 1)}  # fmt: skip


def warm_up(source: Path, work: Path) -> None:
    """One small ingest first, so that no measured run pays for creating the MLflow store's tables."""
    from artlora.config import IngestConfig
    from artlora.stages.ingest import run as ingest

    folder = work / "warm-up" / STYLES[0]
    folder.mkdir(parents=True)
    for path in sorted((source / STYLES[0]).glob("*.jpg"))[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    ingest.run(IngestConfig(source=str(folder.parent), storage_root="s3://bench-ingest-warm-up", workers=1))


def measure(source: Path, workers: int, count: int) -> list[dict]:
    """Cold then warm ingest into a fresh storage root; one result row each."""
    from artlora.config import IngestConfig
    from artlora.stages.ingest import run as ingest

    config = IngestConfig(source=str(source), storage_root=f"s3://bench-ingest-w{workers}", workers=workers)
    rows = []
    for run in ("cold", "warm"):
        started = time.monotonic()
        result = ingest.run(config)
        seconds = time.monotonic() - started
        rows.append(
            {
                "run": run,
                "workers": workers,
                "seconds": round(seconds, 2),
                "images_per_s": round(count / seconds, 1),
                "decoded": result.decoded,
                "from_index": result.from_index,
                "accepted": result.accepted,
                "rejected": result.rejected,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="how many JPEGs to generate and ingest")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest-cpu.json"))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "artlora-bench-ingest")
    args = parser.parse_args()

    from artlora.cpus import usable
    from artlora.io import services

    source = generate(args.images, args.cache)
    host = machine()
    cores = sorted({1, usable()})
    rows = [measure_decode(source, workers) for workers in cores]
    with tempfile.TemporaryDirectory() as work, services.throwaway_seaweedfs(Path(work) / "s3"):
        os.environ["ARTLORA_WORK_DIR"] = work  # a private MLflow store for the benchmark's runs
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        warm_up(source, Path(work))
        for workers in cores:
            rows += measure(source, workers, args.images)
    report = {
        "benchmark": "ingest",
        "images": args.images,
        "image_sizes": "512-1024 px per side, JPEG quality 90",
        "storage": "SeaweedFS on loopback (a separate process, sharing the cores)",
        "machine": host,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ningest of {args.images} JPEGs on {report['machine']['cores_available']} cores "
          f"({report['machine']['cpu_model']})")  # fmt: skip
    print(f"{'run':<12}{'workers':>8}{'seconds':>10}{'images/s':>10}{'decoded':>9}")
    for row in rows:
        decoded = row.get("decoded", "")
        print(f"{row['run']:<12}{row['workers']:>8}{row['seconds']:>10}{row['images_per_s']:>10}{decoded:>9}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
