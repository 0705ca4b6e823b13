"""The pipeline on a Kubeflow Pipelines cluster: submit a run, schedule runs, follow a run to its end.

Each submission compiles the pipeline from the config it is given (the cluster settings, the parameters'
defaults and the search's parallelism are fixed at compile time) and uploads it as a version of the pipeline
named after the package version, the code revision and the compiled spec's digest, with the first two as tags.
`submit_inline` sends the compiled spec with the run instead, so the identity that calls it needs no right to
upload pipelines (the retrain CronJob's Role allows experiments and runs only).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from artlora import __version__
from artlora.config import ConfigError, PipelineConfig
from artlora.pipelines import build
from artlora.pipelines.client import FINISHED, Connection, Kfp, KfpError
from artlora.pipelines.style_lora import PIPELINE_NAME, SEARCH_PIPELINE_NAME
from artlora.tasks.parameters import arguments

REVISION = "ARTLORA_REVISION"  # set in the image to the commit it was built from
POLL_S = 15


def revision() -> str:
    """The code revision: $ARTLORA_REVISION, else the git commit of this checkout (`-dirty` with local changes),
    else "unknown" (an installed package outside a checkout)."""
    if os.environ.get(REVISION):
        return os.environ[REVISION]
    here = Path(__file__).parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if changes else commit


@dataclass(frozen=True)
class Submitted:
    run_id: str
    url: str
    version: str  # the pipeline version's name ("" when the spec went inline)


def _names(search: bool) -> tuple[str, str]:
    if search:
        return SEARCH_PIPELINE_NAME, "Grid search of a style LoRA (artlora search)."
    return PIPELINE_NAME, "Curate a style dataset, train a LoRA, evaluate and register it (artlora)."


def _run_name(config: PipelineConfig, pipeline: str) -> str:
    return f"{pipeline} {config.model_name} {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"


def _upload(kfp: Kfp, config: PipelineConfig, search: bool, folder: Path) -> tuple[str, str, str]:
    """Compile and upload the pipeline; (pipeline id, version id, version name)."""
    pipeline, description = _names(search)
    compiled = build.compile_pipeline(config, folder / "pipeline.yaml", search=search)
    spec = hashlib.sha256(compiled.read_bytes()).hexdigest()[:8]
    code = revision()
    name = f"v{__version__}-{code}-{spec}"
    pipeline_id = kfp.pipeline(pipeline, description)
    tags = {"artlora-version": __version__, "artlora-revision": code}
    return pipeline_id, kfp.version(pipeline_id, compiled, name, tags, description), name


def submit(connection: Connection, config: PipelineConfig, experiment: str | None, search: bool = False) -> Submitted:
    """Upload the pipeline compiled from `config` as a version and start a run of it."""
    kfp = Kfp(connection)
    experiment_id = kfp.experiment(experiment or config.experiment)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_id, version_id, name = _upload(kfp, config, search, Path(tmp))
    run_id = kfp.run(experiment_id, _run_name(config, _names(search)[0]), arguments(config), (pipeline_id, version_id))
    return Submitted(run_id, kfp.run_url(run_id), name)


def submit_inline(connection: Connection, config: PipelineConfig, experiment: str | None) -> Submitted:
    """Start a run of the pipeline compiled from `config`, its spec sent with the run (no upload)."""
    kfp = Kfp(connection)
    experiment_id = kfp.experiment(experiment or config.experiment)
    with tempfile.TemporaryDirectory() as tmp:
        compiled = build.compile_pipeline(config, Path(tmp) / "pipeline.yaml")
        run_id = kfp.run(experiment_id, _run_name(config, PIPELINE_NAME), arguments(config), compiled)
    return Submitted(run_id, kfp.run_url(run_id), "")


def check_cron(cron: str) -> None:
    if len(cron.split()) != 6:
        raise ConfigError(
            f"--cron {cron!r}: KFP schedules take 6 fields, seconds first (e.g. '0 0 3 * * *' is 03:00 every day)"
        )


@dataclass(frozen=True)
class Scheduled:
    schedule_id: str
    name: str
    version: str


def schedule(connection: Connection, config: PipelineConfig, cron: str, experiment: str | None) -> Scheduled:
    """A recurring run of the pipeline compiled from `config`: no catch-up, one run at a time. Each run starts
    with the change check, so a day without new data costs one small task."""
    check_cron(cron)
    kfp = Kfp(connection)
    experiment_id = kfp.experiment(experiment or config.experiment)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_id, version_id, version = _upload(kfp, config, False, Path(tmp))
    name = f"{PIPELINE_NAME} {config.model_name}"
    schedule_id = kfp.schedule(experiment_id, name, cron, (pipeline_id, version_id), arguments(config))
    return Scheduled(schedule_id, name, version)


def follow(connection: Connection, run_id: str, say: Callable[[str], None]) -> str:
    """Wait for the run to finish, saying each new state with the time since following began; its last state."""
    kfp = Kfp(connection)
    started, last = time.monotonic(), ""
    while True:
        state, error = kfp.run_state(run_id)
        if state != last:
            minutes = (time.monotonic() - started) / 60
            say(f"run {run_id}: {state} after {minutes:.1f} min" + (f" ({error})" if error else ""))
            last = state
        if state in FINISHED:
            if state != "SUCCEEDED":
                raise KfpError(f"run {run_id} ended {state}: {error or 'see its logs'} ({kfp.run_url(run_id)})")
            return state
        time.sleep(POLL_S)
