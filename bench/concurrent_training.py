"""Two trainings at once on one machine, each as a container with a 1-CPU limit runs it, against one alone.

Each training is a process of its own running `Trainer.step` on the tiny model (random weights) and random cached
latents, as `train_step.py` times it, at the tests' size (`--size test`: 32 px, batch 4, LoRA rank 8 on attention)
or the demo's (`--size demo`: 64 px, batch 16, rank 16 on every layer and the text encoder, the LPIPS term every
4th step). A process builds its trainer, takes a few warm-up steps, says it is ready, and on the word from this
script counts the steps it finishes in the same fixed window as the others, so the processes of a pair overlap
for the whole window.

- `alone`: one training with the whole machine, its threads set by artlora (`cpus.apply()`).
- `pair`: two at once, each in a cgroup of its own with a quota of 1 CPU (cgroup v1 `cpu.cfs_quota_us`, or v2
  `cpu.max`, as Kubernetes sets a limit), threads set by artlora: the quota is what it uses.
- `pair_before`: the same, with torch's own thread count (a thread per core of the machine), as before cpus.py.
- `pair_no_limit`: two at once with no limit at all (the machine's every core for each): nothing tells a process
  that another shares the machine, so each takes every core.

Where no cgroup can be made (not root, no writable cgroup mount), each process of a pair is pinned to a core of
its own instead (affinity), which the JSON says; torch itself honours affinity, so then `pair_before` is no
different. The figure: a pair's steps/s added up, as a ratio of `alone`'s. Each run also records `others_cpu`,
the CPUs the machine spent meanwhile on work not its own (from /proc/stat, less the trainings' own CPU time): on
a machine shared with other tenants a run beside a busy one is not comparable, and the alone run, whose threads
wait on each other at every step, suffers most.

    PYTHONPATH=src python bench/concurrent_training.py                     # about 3 minutes on 2 cores
    PYTHONPATH=src python bench/concurrent_training.py --size demo --seconds 30 --repeats 2

Writes `concurrent-training-<size>-cpu.json` to --out (the machine, every process's figures) and prints a table.
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
import time
from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
QUIET = 0.1  # CPUs of other work during a run, at most, for the run to count as quiet
# The train settings of tests/small_configs.py and of configs/demo.yaml, with their views' size in pixels.
SIZES = {
    "test": {"resolution": 32, "batch_size": 4, "rank": 8, "alpha": 8, "target_modules": ("attention",)},
    "demo": {
        "resolution": 64,
        "batch_size": 16,
        "rank": 16,
        "alpha": 16,
        "target_modules": ("attention", "feed_forward", "convolutions", "proj_in", "proj_out"),
        "train_text_encoder": True,
        "perceptual_weight": 0.1,
        "perceptual_every": 4,
        "perceptual_net": "squeeze",
        "perceptual_backbone": "random",
    },
}


# -- one training (a process of its own) ------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    """Join the cgroup (or core) first, before anything reads the CPU count; then train when told to."""
    if args.cgroup:
        Path(args.cgroup, "cgroup.procs").write_text(str(os.getpid()))
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    from artlora import cpus

    if args.threads == "artlora":
        cpus.apply()
    import torch

    step = trainer(SIZES[args.size]).step
    for index in range(args.warmup):
        step(index)
    print("ready", flush=True)
    sys.stdin.readline()
    steps, began, cpu = 0, time.perf_counter(), sum(os.times()[:2])
    while time.perf_counter() - began < args.seconds:
        step(args.warmup + steps)
        steps += 1
    elapsed = time.perf_counter() - began
    figures = {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed}
    figures.update(torch_threads=torch.get_num_threads(), usable_cpus=cpus.usable(), quota=cpus.quota())
    # CPU seconds per second of the window: how much of its CPUs the process kept busy (its own threads' waiting
    # included, as OpenMP spins)
    figures.update(affinity=cpus.affinity(), cpu_use=(sum(os.times()[:2]) - cpu) / elapsed)
    print(json.dumps(figures), flush=True)


def trainer(size: dict):
    """A Trainer on the tiny model (random weights) and random cached latents: four batches' worth of views."""
    import torch

    from artlora.config import TrainConfig
    from artlora.data.latents import LatentGroup, LatentSet
    from artlora.demo import tiny
    from artlora.stages.train.trainer import Trainer

    settings = dict(size)
    resolution = settings.pop("resolution")
    pipe = tiny.build_tiny_sd(seed=0)
    side = resolution // 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    views, tokens, width = 4 * settings["batch_size"], 77, pipe.text_encoder.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(views, 4, side, side, generator=generator)
    captions = tuple(f"a painting in the style of artlora, study {i}" for i in range(views))
    group = LatentGroup(latents=latents, text=torch.randn(views, tokens, width, generator=generator), captions=captions)
    data = LatentSet((group,), torch.zeros(tokens, width), dataset_fingerprint="bench")
    return Trainer(TrainConfig(storage_root="s3://bench", base_model="tiny", **settings), data, pipe)


# -- limits ------------------------------------------------------------------------------------------------


class Limits:
    """A cgroup per process with a quota of 1 CPU where one can be made; else a core per process."""

    def __init__(self, name: str):
        self.name, self.made = name, []
        self.kind = self._probe()

    def _probe(self) -> str:
        for kind in ("cgroup-v1", "cgroup-v2"):
            try:
                self.remove(self.make(0, kind))
                return kind
            except OSError:
                continue
        return "affinity"

    def make(self, index: int, kind: str | None = None) -> Path:
        kind = kind or self.kind
        path = (CGROUP_V1 if kind == "cgroup-v1" else CGROUP_V2) / f"{self.name}-{index}"
        path.mkdir()
        self.made.append(path)
        if kind == "cgroup-v1":
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(PERIOD_US))
        else:
            (path / "cpu.max").write_text(f"{PERIOD_US} {PERIOD_US}")
        return path

    def remove(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.rmdir()
        if path in self.made:
            self.made.remove(path)

    def arguments(self, index: int) -> list[str]:
        if self.kind == "affinity":
            cores = sorted(os.sched_getaffinity(0))
            return ["--core", str(cores[index % len(cores)])]
        return ["--cgroup", str(self.make(index))]

    def clean(self) -> None:
        for path in list(self.made):
            self.remove(path)


# -- the runs ----------------------------------------------------------------------------------------------


def run_together(args: argparse.Namespace, variant: str, limits: Limits | None, count: int) -> dict:
    """`count` trainings started at once, told to go together; their figures, and how busy the machine's CPUs
    were meanwhile with work that was not theirs (on a shared machine, other tenants')."""
    threads = "torch" if variant == "pair_before" else "artlora"
    common = [sys.executable, __file__, "--child", "--threads", threads, "--seconds", str(args.seconds)]
    common += ["--warmup", str(args.warmup), "--size", args.size]
    processes = []
    with tempfile.TemporaryFile("w+") as errors:  # the trainings' warnings; shown if one fails
        try:
            for index in range(count):
                command = [*common, *(limits.arguments(index) if limits else [])]
                processes.append(
                    subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True)
                )
            for process in processes:
                if process.stdout.readline().strip() != "ready":
                    errors.seek(0)
                    raise RuntimeError(f"{variant}: a training process failed to start:\n{errors.read()[-3000:]}")
            load, busy = os.getloadavg()[0], busy_cpu_seconds()
            began = time.perf_counter()
            for process in processes:
                process.stdin.write("go\n")
                process.stdin.flush()
            figures = [json.loads(process.stdout.readline()) for process in processes]
            busy = (busy_cpu_seconds() - busy) / (time.perf_counter() - began)
        finally:
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if limits:
                limits.clean()
    row = {"variant": variant, "processes": figures, "load_before": load}
    row["steps_per_s"] = sum(figure["steps_per_s"] for figure in figures)
    row["others_cpu"] = max(0.0, busy - sum(figure["cpu_use"] for figure in figures))
    print(json.dumps(row), flush=True)
    return row


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent on anything but idling, from /proc/stat (every tenant's)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), platform.processor())
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    import torch

    from artlora import cpus

    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "affinity": cpus.affinity(),
        "cgroup_quota": cpus.quota(),
        "memory_gib": round(int(memory) / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def revision() -> str:
    """The commit measured (with "+changes" when the work tree differs from it)."""
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="test", help="the tests' training or the demo's")
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window of each run")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the window")
    parser.add_argument("--repeats", type=int, default=1, help="times to run the whole set, interleaved")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", choices=["artlora", "torch"], default="artlora", help=argparse.SUPPRESS)
    parser.add_argument("--cgroup", help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if args.child:
        child(args)
        return
    limits = Limits(f"artlora-bench-{os.getpid()}")
    result = {
        "machine": machine(),
        "revision": revision(),
        "size": args.size,
        "train": SIZES[args.size],
        "limit": limits.kind,
        "seconds": args.seconds,
        "warmup_steps": args.warmup,
        "rows": [],
    }
    out = Path(args.out) / f"concurrent-training-{args.size}-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(args.repeats):
        for variant, limited, count in [
            ("alone", False, 1),
            ("pair", True, 2),
            ("pair_before", True, 2),
            ("pair_no_limit", False, 2),
        ]:
            result["rows"].append(run_together(args, variant, limits if limited else None, count))
            result["ratios"] = ratios(result["rows"])
            out.write_text(json.dumps(result, indent=2) + "\n")  # after every run: a timeout keeps what was done
    print_table(result, out)


def ratios(rows: list[dict]) -> dict[str, float]:
    """Each pair's steps/s added up, as a ratio of the alone run's: means over the repeats, and (the cautious
    figure) of the fastest alone run; over every run, and over the quiet ones (`_quiet`: other work took at most
    QUIET CPUs), which are comparable."""
    out = {}
    for suffix, chosen in (("", rows), ("_quiet", [row for row in rows if row["others_cpu"] <= QUIET])):
        speeds: dict[str, list[float]] = {}
        for row in chosen:
            speeds.setdefault(row["variant"], []).append(row["steps_per_s"])
        alone = speeds.pop("alone", [])
        for name, values in sorted(speeds.items()) if alone else ():
            mean = sum(values) / len(values)
            out[f"{name}_vs_alone{suffix}"] = mean / (sum(alone) / len(alone))
            out[f"{name}_vs_fastest_alone{suffix}"] = mean / max(alone)
    return out


def print_table(result: dict, out: Path) -> None:
    m = result["machine"]
    print(f"\n{result['size']} size; {m['cpu_model']}, {m['affinity']} cores, torch {m['torch']}", end="")
    print(f"; limits by {result['limit']}")
    for row in result["rows"]:
        each = ", ".join(f"{p['steps_per_s']:.2f} ({p['torch_threads']} thr)" for p in row["processes"])
        others = row["others_cpu"]
        print(f"{row['variant']:14} {row['steps_per_s']:6.2f} steps/s   each: {each}   others' CPU {others:.2f}")
    for name, value in result["ratios"].items():
        print(f"{name:38} {value:5.2f}x")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
