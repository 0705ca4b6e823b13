"""Memory under load: ingest and augment of many small images, peak resident memory against the image count.

    python bench/load.py --images 2500 10000 --out bench/results/load-cpu.json

For each count: generate that many procedural artworks with captions (64 px PNGs, `sample_data`), then run the
ingest stage and the augment stage (tiny Stable Diffusion, 2 views per image, a cold cache), each in a fresh
process of its own, against a throwaway SeaweedFS (a server process of its own, so the objects it holds are not
counted). Each stage's process reports its own peak resident set (VmHWM: ru_maxrss would count the
parent's resident set at the fork that started it) and the peak, sampled every 0.1 s, of the resident sets of it
and its worker processes added up (ingest decodes in a process pool); and its wall time. Memory flat in the image
count is the aim (bench/load.md). Not a test: it prints a table and writes the figures with a description of the
machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STAGES = ("ingest", "augment")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)  # fmt: skip
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        # Other work on the machine slows the runs (not their memory): a load near zero means they had it alone.
        "load_average_1min_before": round(os.getloadavg()[0], 2),
    }


# -- one stage in a process of its own ---------------------------------------------------------------------


class TreePeak:
    """The largest sum of resident memory of this process and its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.root, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for process in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker that ended between listing and reading
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peak_rss_kib() -> int:
    """This program's peak resident set since it started (the high-water mark of its own address space)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def run_stage(stage: str, config_json: str) -> dict:
    """Run one stage here; its time and memory as a dict (printed as JSON by --child)."""
    import importlib

    from artlora.config import AugmentConfig, IngestConfig

    config = (IngestConfig if stage == "ingest" else AugmentConfig).model_validate_json(config_json)
    module = importlib.import_module(f"artlora.stages.{stage}.run")  # only this stage's imports count
    with TreePeak() as tree:
        started = time.monotonic()
        result = module.run(config)
        seconds = time.monotonic() - started
    return {
        "stage": stage,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_rss_kib() / 1024, 1),
        "peak_rss_with_workers_mib": round(tree.peak / 2**20, 1),
        "result": {k: v for k, v in vars(result).items() if isinstance(v, int | str)},
    }


def in_child(stage: str, config_json: str) -> dict:
    """`run_stage` in a fresh Python process (so that its peak memory is its own), with this environment."""
    command = [sys.executable, __file__, "--child", stage]
    done = subprocess.run(command, input=config_json, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the benchmark --------------------------------------------------------------------------------------


def measure(count: int, work: Path, model: Path) -> list[dict]:
    from artlora.config import AugmentConfig, IngestConfig
    from artlora.demo import sample_data

    source = work / f"images-{count}"
    started = time.monotonic()
    sample_data.generate(source, count=count, size=64, seed=0)
    print(f"generated {count} images in {time.monotonic() - started:.0f} s", file=sys.stderr)
    root = f"s3://bench-load-{count}"
    # Near duplicates are kept (in one split), so every image goes on to augment.
    ingest_config = IngestConfig(
        source=str(source), storage_root=root, bucket_resolution=64, near_duplicates="keep_together"
    )
    ingested = in_child("ingest", ingest_config.model_dump_json())
    augment_config = AugmentConfig(
        dataset_uri=ingested["result"]["dataset_uri"],
        storage_root=root,
        base_model=str(model),
        resolution=64,
        views_per_image=2,
        batch_size=64,
    )
    augmented = in_child("augment", augment_config.model_dump_json())
    return [{"images": count, **row} for row in (ingested, augmented)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2500, 10000], help="image counts to measure")
    parser.add_argument("--out", type=Path, default=Path("bench/results/load-cpu.json"))
    parser.add_argument("--label", default="", help="what code ran, recorded with the figures")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)  # internal: one stage, config on stdin
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_stage(args.child, sys.stdin.read())))
        return 0

    from artlora.demo import tiny
    from artlora.io import services

    host = machine()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, services.throwaway_seaweedfs(Path(tmp) / "s3"):
        work = Path(tmp)
        os.environ["ARTLORA_WORK_DIR"] = str(work / "work")  # a private MLflow store for the benchmark's runs
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        model = tiny.save_tiny(work / "tiny-sd", seed=0)
        for count in args.images:
            rows += measure(count, work, model)
    report = {
        "benchmark": "load",
        "label": args.label,
        "images": "procedural artworks with captions, 64 px PNG, 5 styles (artlora.demo.sample_data)",
        "augment": "tiny Stable Diffusion, 64 px, 2 views per image, batch 64, cold cache",
        "storage": "SeaweedFS on loopback (a process of its own, not counted)",
        "machine": host,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'images':>7} {'stage':<8}{'seconds':>9}{'peak RSS MiB':>14}{'with workers':>14}")
    for row in rows:
        print(f"{row['images']:>7} {row['stage']:<8}{row['seconds']:>9}{row['peak_rss_mib']:>14}"
              f"{row['peak_rss_with_workers_mib']:>14}")  # fmt: skip
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
