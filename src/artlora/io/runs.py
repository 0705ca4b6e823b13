"""MLflow runs: a stage's run with its resolved config, metrics, tags and artifacts; runs by id (a search's parent
run and its trials); reading a run back."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from artlora import contracts
from artlora.config import StageConfig
from artlora.io import settings, storage, tracking


def _experiment_id(name: str, storage_root: str | None) -> str:
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if storage_root and not mlflow.get_tracking_uri().startswith(("http://", "https://")):
        # A tracking server decides where artifacts go; a bare database store (SQLite, PostgreSQL) would put them
        # in the current folder, so they go to the object store instead.
        location = storage.join(storage_root, "mlflow", name)
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another stage created it meanwhile; if not, the error stands
        created = client.get_experiment_by_name(name)
        if created is None:
            raise
        return created.experiment_id


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested config -> MLflow params with dotted names (`train.rank`)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(f"{prefix}.{key}", item))
        return out
    return {prefix: json.dumps(value) if isinstance(value, list | tuple) else str(value)}


@contextlib.contextmanager
def stage_run(
    stage: str,
    config: StageConfig,
    run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    system_metrics: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one stage, with the resolved config as params and as `config/<stage>.json`.

    With `run_id`, the stage continues that run (evaluate and a resumed train add to the training run).

    With `system_metrics`, MLflow samples CPU, memory, disk, network and, where an NVIDIA driver answers, GPU
    usage in a background thread and logs them as `system/...` metrics; a continued run carries on from the
    last logged step. The thread stops when the run ends, normally or by an exception. MLflow's own variables
    set the pace: MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL (seconds, default 10) and
    MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING (samples averaged per logged point, default 1).
    """
    tracking.configure()
    with tracking.asking(f"open run {run_id}" if run_id else "start a run"):
        if run_id is None:
            experiment = getattr(config, "experiment", "artlora")
            mlflow.set_experiment(experiment_id=_experiment_id(experiment, getattr(config, "storage_root", None)))
        # Explicit either way, so that MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING in the environment cannot switch the
        # monitor on for the stages that did not ask for it.
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else stage, log_system_metrics=system_metrics)
    try:
        with tracking.asking("record the stage's config"):
            _record_config(run, stage, config, run_id, tags)
        yield run
    except BaseException as err:
        _end_failed(err)
        raise
    with tracking.asking("end the run"):
        mlflow.end_run()


def _record_config(
    run: mlflow.ActiveRun, stage: str, config: StageConfig, run_id: str | None, tags: Mapping[str, str] | None
) -> None:
    resolved = config.model_dump(mode="json")
    # MLflow params cannot change once logged: a stage run again on the same run with other settings (an
    # evaluation with new prompts, say) keeps the first values as params; config/<stage>.json has the latest.
    params = flatten(stage, resolved)
    try:
        mlflow.log_params({k: v for k, v in params.items() if k not in run.data.params})
    except MlflowException:
        # Another process continuing the same run (two registrations of one adapter at once, under one model name
        # or two) logged some between the read above and this write, and the database refused the whole batch.
        # Its values were first, so they stay, as they would for a run one after the other; the rest is logged.
        now = mlflow.get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in now})
    log_bytes(json.dumps(resolved, indent=2).encode(), f"config/{stage}.json")
    stage_tag = contracts.STAGE_TAG if run_id is None else f"{contracts.STAGE_TAG}.{stage}"
    mlflow.set_tags({stage_tag: stage, **(tags or {})})


def _end_failed(err: BaseException) -> None:
    """Mark the run failed (killed, for an interruption) on the way out of an error; an error while ending is left
    out, so the user sees the stage's own. When the error was MLflow's, the server did not answer: ending the run
    (and sending what MLflow still holds: queued metrics, system metrics) gets one short try, since MLflow would
    otherwise wait for it again, here or in its own exit handler, and double the time to report the error."""
    status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
    if not isinstance(err, tracking.TrackingError):
        with contextlib.suppress(*tracking.FAILURES):
            mlflow.end_run(status)
        return
    with settings.exported(tracking.ONE_SHORT_TRY):
        with contextlib.suppress(*tracking.FAILURES):
            mlflow.flush_async_logging()  # metrics queued with wait=False; else sent again at exit
        with contextlib.suppress(*tracking.FAILURES):
            mlflow.end_run(status)


@tracking.tracked("log metrics")
def log_metrics(metrics: Mapping[str, float], step: int | None = None, wait: bool = True) -> None:
    """Log metrics; with wait=False the call returns at once and MLflow sends them in the background (the
    training loop must not stall on the tracking store). The run's end waits for everything queued."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, synchronous=wait)


@tracking.tracked("set tags")
def set_tags(tags: Mapping[str, str]) -> None:
    mlflow.set_tags(dict(tags))


@tracking.tracked("store an artifact")
def log_artifact(path: str | Path, folder: str | None = None) -> None:
    """Log a file or a folder's files as artifacts of the active run, under `folder`."""
    path = Path(path)
    target = own_store_location(folder)
    if target is not None:
        store = storage.get_storage()
        if path.is_dir():
            store.upload_dir(path, target)
        else:
            store.put_file(storage.join(target, path.name), path)
    elif path.is_dir():
        mlflow.log_artifacts(str(path), folder)
    else:
        mlflow.log_artifact(str(path), folder)


@tracking.tracked("store an artifact")
def log_bytes(data: bytes, name: str) -> None:
    """Log in-memory content as an artifact file called `name` (may include folders)."""
    folder = str(PurePosixPath(name).parent)
    target = own_store_location(None if folder == "." else folder)
    if target is not None:
        storage.get_storage().put_bytes(storage.join(target, PurePosixPath(name).name), data)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PurePosixPath(name).name
        path.write_bytes(data)
        mlflow.log_artifact(str(path), None if folder == "." else folder)


def log_image(image: Any, key: str, step: int) -> None:
    """One image of a series (`key`) at a training step, to the active run: MLflow's UI shows a series as one
    picture with a step slider."""
    mlflow.log_image(image, key=key, step=step)


def own_store_location(folder: str | None) -> str | None:
    """Where the active run's artifacts under `folder` go, when that is on artlora's own object store (the local
    SQLite store puts them there; so does a tracking server that hands out s3:// locations without proxying).
    artlora writes them there itself: MLflow's boto3 client waits 60 s per try, with no setting to shorten it,
    where artlora's client reports a store that froze within about a minute (`settings.S3Limits`). None when
    MLflow should upload (through a tracking server that proxies artifacts, to a folder, to another S3)."""
    uri = mlflow.get_artifact_uri(folder)
    s3 = settings.s3_settings()
    if s3 is None or not storage.is_s3(uri):
        return None
    mlflow_endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL", s3.url).rstrip("/")
    return uri if mlflow_endpoint == s3.url else None


def get_run(run_id: str) -> mlflow.entities.Run:
    tracking.configure()
    with tracking.asking(f"find run {run_id}"):
        return MlflowClient().get_run(run_id)


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(get_run(run_id).data.metrics)


def run_tags(run_id: str) -> dict[str, str]:
    return dict(get_run(run_id).data.tags)


def load_run_json(run_id: str, path: str) -> dict | None:
    """A JSON artifact of a run (e.g. `config/evaluate.json`), or None when the run has none."""
    tracking.configure()
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
    except (MlflowException, OSError):
        return None


# -- runs by id: a search's parent run and its trials ---------------------------------------------------


def start_parent_run(experiment: str, storage_root: str, name: str, params: Mapping[str, str]) -> str:
    """A run that the trials of a search hang under; it stays open until `finish_run`. Returns its id."""
    tracking.configure()
    with tracking.asking(f"start run {name!r} in experiment {experiment!r}"):
        client = MlflowClient()
        run = client.create_run(_experiment_id(experiment, storage_root), run_name=name)
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        return run.info.run_id


def finish_run(run_id: str) -> None:
    tracking.configure()
    with tracking.asking(f"finish run {run_id}"):
        MlflowClient().set_terminated(run_id, "FINISHED")


def set_run_tags(run_id: str, tags: Mapping[str, str]) -> None:
    """Tags on a run that is not this process's active run (a trial, from the task that trained it)."""
    tracking.configure()
    with tracking.asking(f"tag run {run_id}"):
        client = MlflowClient()
        for key, value in tags.items():
            client.set_tag(run_id, key, value)


def log_run_metrics(run_id: str, metrics: Mapping[str, float]) -> None:
    tracking.configure()
    with tracking.asking(f"log metrics to run {run_id}"):
        client = MlflowClient()
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))


def log_run_bytes(run_id: str, data: bytes, name: str) -> None:
    """An artifact file `name` (may include folders) on a run that is not this process's active run."""
    tracking.configure()
    with tempfile.TemporaryDirectory() as tmp, tracking.asking(f"log {name} to run {run_id}"):
        path = Path(tmp) / Path(name).name
        path.write_bytes(data)
        parent = str(Path(name).parent)
        MlflowClient().log_artifact(run_id, str(path), None if parent == "." else parent)


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value of a metric, in step order."""
    tracking.configure()
    with tracking.asking(f"read metric {key} of run {run_id}"):
        history = MlflowClient().get_metric_history(run_id, key)
    return sorted((metric.step, metric.value) for metric in history)


def run_artifact_bytes(run_id: str, path: str) -> bytes:
    """An artifact file of a run."""
    tracking.configure()
    with tempfile.TemporaryDirectory() as tmp, tracking.asking(f"read artifact {path} of run {run_id}"):
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
        return Path(local).read_bytes()
