"""Train on `train.gpus` GPUs: one process trains in this one; two or more are started by `accelerate launch`.

The trainer already runs as one of several DDP processes when `accelerate launch` starts it. So a pipeline task
(or `artlora train`) asked for N GPUs starts N copies of `python -m artlora.cli train` through accelerate, with
the resolved config in a file, and reads the result that the first process prints. The processes agree on a
free port of this machine, so trials side by side on one machine do not collide.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from artlora import cpus
from artlora.config import PipelineConfig, with_inputs
from artlora.errors import ArtloraError
from artlora.stages.train import run as stage

log = logging.getLogger(__name__)


class LaunchError(ArtloraError):
    """The training processes started by `accelerate launch` failed."""


def launched() -> bool:
    """True inside a process that `accelerate launch` (or torchrun) started."""
    return "LOCAL_RANK" in os.environ


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(processes: int, config_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        *("--num_processes", str(processes), "--num_machines", "1"),
        *("--main_process_port", str(_free_port())),
        # The trainer sets its own precision and compilation (train.mixed_precision, train.torch_compile).
        *("--mixed_precision", "no", "--dynamo_backend", "no"),
        *("-m", "artlora.cli", "train", "--config", str(config_path)),
    ]


def run_train(config: PipelineConfig, **inputs: str) -> stage.TrainResult:
    """Train with `config.train` plus its inputs (cache_uri), on train.gpus processes."""
    train = with_inputs(config.train, **inputs)
    if train.gpus < 2 or launched():
        return stage.run(train)
    data = config.model_dump(mode="json")
    data["train"] = train.model_dump(mode="json")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        command = launch_command(train.gpus, path)
        log.info("training with %d processes: %s", train.gpus, " ".join(command))
        # Logs and progress go to stderr, passed through; the first process prints the result on stdout. The
        # processes share this one's CPUs (accelerate would give each one thread, but this process has set them).
        environment = {**os.environ, **cpus.for_processes(train.gpus)}
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=environment)
    if done.returncode != 0:
        raise LaunchError(
            f"`accelerate launch` of {train.gpus} training processes exited with status {done.returncode} (the "
            "processes' errors are in the log above; a rerun resumes from the last checkpoint)"
        )
    return stage.TrainResult(**_printed_result(done.stdout))


def _printed_result(stdout: str) -> dict:
    """The JSON result the first process printed last; lines before it (MLflow prints run links to stdout
    when it talks to a tracking server) go to this process's log."""
    start = 0 if stdout.startswith("{") else stdout.rfind("\n{") + 1
    if stdout[:start].strip():
        log.info("%s", stdout[:start].strip())
    return json.loads(stdout[start:])
