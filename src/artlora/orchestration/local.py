"""The whole pipeline, run here: the compiled pipeline through kfp.local, each task a subprocess.

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

from artlora.config import PipelineConfig
from artlora.diffusion import loading
from artlora.errors import ArtloraError
from artlora.io import settings, storage, tracking
from artlora.orchestration import process_group


class PipelineFailed(ArtloraError):
    """A task of the local pipeline failed; its own error is in the log above."""


def run_local(config: PipelineConfig) -> dict[str, object]:
    """Run the compiled pipeline with kfp.local and fetch its evaluation report; S3 must be configured."""
    # A bad base model or an unreachable tracking server fails here, not minutes later in a task.
    for reference in {config.augment.base_model, config.train.base_model, config.evaluate.base_model}:
        loading.check_reference(reference)
    tracking.check()
    work = settings.work_dir()
    os.environ[settings.WORK_DIR] = str(work)  # the tasks are subprocesses: give them the same absolute folder
    started = time.monotonic()
    outputs = run_pipeline(config.model_dump_json(), work / "kfp")
    report = work / "reports" / f"{outputs['model_name']}-v{outputs['version']}.html"
    storage.get_storage().get_file(str(outputs["report_uri"]), report)
    result = {**outputs, "tracking_uri": tracking.configure(), "report": str(report)}
    if result["tracking_uri"].startswith(("http://", "https://")):  # a tracking server: its UI shows the version
        result["mlflow_ui"] = f"{result['tracking_uri']}/#/models/{outputs['model_name']}/versions/{outputs['version']}"
    return {**result, "seconds": round(time.monotonic() - started, 1)}


def run_pipeline(config_json: str, pipeline_root: Path) -> dict[str, object]:
    """The pipeline's outputs, from kfp.local run in a process group of its own (`pipelines/build.py`)."""
    with tempfile.TemporaryDirectory() as tmp:
        config_file, outputs_file = Path(tmp) / "config.json", Path(tmp) / "outputs.json"
        config_file.write_text(config_json)
        runner = [sys.executable, "-m", "artlora.pipelines.build", str(config_file), str(pipeline_root)]
        code = process_group.run([*runner, str(outputs_file)])
        result = json.loads(outputs_file.read_text()) if outputs_file.is_file() else {}
    if "outputs" in result:
        return result["outputs"]
    error = result.get("error") or f"the local pipeline runner exited with code {code}"
    raise PipelineFailed(
        f"{error} (the task's error is in its log above; fix it and run again: finished stages are reused)"
    )
