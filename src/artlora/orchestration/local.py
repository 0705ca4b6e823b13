"""A whole pipeline, run here: compiled from the config, then run through kfp.local, each task a subprocess of
this Python. The same pipeline as on a cluster (its Kubernetes settings are ignored here).

kfp.local's orchestrator runs in a process group of its own (`process_group`), so that Ctrl-C or SIGTERM stops
the orchestrator and every task it started, instead of a task being retried while the run goes on.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from artlora import contracts
from artlora.config import PipelineConfig, TaskSettings
from artlora.data import lineage
from artlora.diffusion import model_sources
from artlora.errors import ArtloraError
from artlora.io import model_registry, runs, settings, storage, tracking
from artlora.orchestration import process_group
from artlora.pipelines import build
from artlora.tasks.parameters import arguments


class PipelineFailed(ArtloraError):
    """A task of the local pipeline failed: with its own one-line error, or with one that is in the log above."""


def without_retries(config: PipelineConfig) -> PipelineConfig:
    """The config with no task retried: here a failed task fails the run at once, while on a cluster retries
    (after a minute or more) get a pod past a node's or a store's passing trouble."""
    cluster = config.cluster
    tasks = {
        name: getattr(cluster, name).model_copy(update={"retries": 0})
        for name, field in type(cluster).model_fields.items()
        if field.annotation is TaskSettings
    }
    return config.model_copy(update={"cluster": cluster.model_copy(update=tasks)})


def run_local(config: PipelineConfig, search: bool = False) -> dict[str, object]:
    """Run the pipeline (or, with `search`, the grid search) with kfp.local; S3 must be configured. When it
    trained, the evaluation report (or the search's summary page) is copied into the work folder."""
    # A bad base model or an unreachable tracking server fails here, not minutes later in a task.
    for reference in {config.augment.base_model, config.train.base_model, config.evaluate.base_model}:
        model_sources.check_reference(reference)
    tracking.check()
    work = settings.work_dir()
    os.environ[settings.WORK_DIR] = str(work)  # the tasks are subprocesses: give them the same absolute folder
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        compiled = build.compile_pipeline(without_retries(config), Path(tmp) / "pipeline.yaml", search=search)
        outputs = run_pipeline(compiled, arguments(config), work / "kfp")
    report = sheet = ""
    if outputs["report_uri"]:
        store, report_uri = storage.get_storage(), str(outputs["report_uri"])
        suffix = "-search" if search else ""
        path = work / "reports" / f"{outputs['model_name']}-v{outputs['version']}{suffix}.html"
        report = str(store.get_file(report_uri, path))
        # The evaluation's style sheet lies beside its report (a search's summary page has none).
        sheet_uri = report_uri.removesuffix(contracts.REPORT) + contracts.STYLE_SHEET
        if report_uri.endswith(contracts.REPORT) and store.exists(sheet_uri):
            sheet = str(store.get_file(sheet_uri, path.with_name(f"{path.stem}-{contracts.STYLE_SHEET}")))
    tracking_uri = tracking.configure()
    result = {**outputs, **_trained(outputs), "tracking_uri": tracking_uri, "report": report, "style_sheet": sheet}
    if tracking_uri.startswith(("http://", "https://")):  # a tracking server: its UI shows the version
        result["mlflow_ui"] = f"{tracking_uri}/#/models/{outputs['model_name']}/versions/{outputs['version']}"
    return {**result, "seconds": round(time.monotonic() - started, 1)}


def run_pipeline(compiled: Path, pipeline_arguments: dict, pipeline_root: Path) -> dict[str, object]:
    """The pipeline's outputs, from kfp.local run in a process group of its own (`pipelines/build.py`)."""
    with tempfile.TemporaryDirectory() as tmp:
        arguments_file, outputs_file = Path(tmp) / "arguments.json", Path(tmp) / "outputs.json"
        arguments_file.write_text(json.dumps(pipeline_arguments))
        runner = [sys.executable, "-m", "artlora.pipelines.build", str(compiled), str(arguments_file)]
        code = process_group.run([*runner, str(pipeline_root), str(outputs_file)])
        result = json.loads(outputs_file.read_text()) if outputs_file.is_file() else {}
    if "outputs" in result:
        return result["outputs"]
    error = result.get("error") or f"the local pipeline runner exited with code {code}"
    if result.get("own"):  # the task's own one line, which says what to do
        raise PipelineFailed(error)
    if result.get("killed"):  # no error of its own in its log: stopped from outside
        hint = "most often the system ran out of memory, as `dmesg` tells; run again: finished stages are reused"
    else:
        hint = "the task's error is in its log above; fix it and run again: finished stages are reused"
    raise PipelineFailed(f"{error} ({hint})")


def _trained(outputs: dict) -> dict[str, object]:
    """The version's adapter and MLflow run, how its training went (the train stage's summary, stored with the
    adapter) and its evaluation's metrics: what a user looks at next, also when the run reused a version."""
    version = model_registry.model_version(str(outputs["model_name"]), str(outputs["version"]))
    adapter_uri = version.tags.get(lineage.ADAPTER_URI, "") if version else ""
    # The train stage's summary, which its adapter's completion marker holds (`stages.train.run.published`); read
    # here without importing the stage, which loads torch and diffusers into this process for nothing.
    training = storage.get_storage().completion(adapter_uri) if adapter_uri else {}
    metrics = runs.run_metrics(version.run_id) if version and version.run_id else {}
    return {
        "adapter_uri": adapter_uri,
        "run_id": version.run_id if version else "",
        "training": training,
        "evaluation": metrics,
    }
