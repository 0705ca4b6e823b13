"""The whole pipeline, run here: the compiled pipeline through kfp.local, each task a subprocess of this Python."""

from __future__ import annotations

import os
import time

from artlora.config import PipelineConfig
from artlora.diffusion import loading
from artlora.errors import ArtloraError
from artlora.io import settings, storage, tracking
from artlora.pipelines import build


class PipelineFailed(ArtloraError):
    """A task of the local pipeline failed; its own error is in the log above."""


def run_local(config: PipelineConfig) -> dict[str, object]:
    """Run the compiled pipeline with kfp.local and fetch its evaluation report; S3 must be configured."""
    # A bad base model fails here, not minutes later in a task.
    for reference in {config.augment.base_model, config.train.base_model, config.evaluate.base_model}:
        loading.check_reference(reference)
    work = settings.work_dir()
    os.environ[settings.WORK_DIR] = str(work)  # the tasks are subprocesses: give them the same absolute folder
    started = time.monotonic()
    try:
        outputs = build.run_local(config.model_dump_json(), pipeline_root=work / "kfp")
    except RuntimeError as err:  # kfp.local's report of a failed task
        raise PipelineFailed(
            f"{err} (the task's error is in its log above; fix it and run again: finished stages are reused)"
        ) from err
    report = work / "reports" / f"{outputs['model_name']}-v{outputs['version']}.html"
    storage.get_storage().get_file(str(outputs["report_uri"]), report)
    result = {**outputs, "tracking_uri": tracking.configure(), "report": str(report)}
    if result["tracking_uri"].startswith(("http://", "https://")):  # a tracking server: its UI shows the version
        result["mlflow_ui"] = f"{result['tracking_uri']}/#/models/{outputs['model_name']}/versions/{outputs['version']}"
    return {**result, "seconds": round(time.monotonic() - started, 1)}
