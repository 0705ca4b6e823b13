"""The one place that imports mlflow: stage runs, params, metrics, artifacts and the model registry.

Locally (no MLFLOW_TRACKING_URI) the store is SQLite in the work folder and artifacts go to the object store
under `<storage_root>/mlflow/`; with a tracking server, the server decides where artifacts go.

Every failure of MLflow (a refusal, a server that went away or froze, an artifact upload that failed) becomes a
TrackingError naming the tracking URI, reported within about a minute (`settings.MLFLOW_DEFAULTS`). Each
stage calls `check` before its work, so a tracking server that is down is reported at once, not after the work.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import mlflow
import requests
import sqlalchemy.exc
from botocore.exceptions import BotoCoreError, ClientError
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import artlora
from artlora.config import StageConfig
from artlora.errors import ArtloraError
from artlora.io import settings, storage

STAGE_TAG = "artlora.stage"
# What MLflow and the clients under it raise: its own errors, HTTP failures to a server, the S3 artifact client's
# failures, and the database store's.
_FAILURES = (MlflowException, requests.RequestException, BotoCoreError, ClientError, sqlalchemy.exc.SQLAlchemyError)
# MLflow's HTTP requests with these variables (read per request): one try of at most 2 s.
ONE_SHORT_TRY = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
# Codes with which MLflow says that what was asked for is not there.
_ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class TrackingError(ArtloraError):
    """MLflow refused a request or could not be reached; the message names the tracking URI."""


@contextlib.contextmanager
def _asking(what: str) -> Iterator[None]:
    """Turn any MLflow failure to `what` into a TrackingError naming the store and what to check."""
    try:
        yield
    except _FAILURES as err:
        reason = err.message if isinstance(err, MlflowException) else f"{type(err).__name__}: {err}"
        raise TrackingError(
            f"MLflow at {settings.tracking_uri()} could not {what}: {reason} (check that it is up, "
            "MLFLOW_TRACKING_URI, and the run id or model name given; MLFLOW_HTTP_REQUEST_TIMEOUT and "
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES set how long to wait)"
        ) from err


def _tracked(what: str) -> Callable[[F], F]:
    """A function whose MLflow failures are TrackingErrors saying it could not `what`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _asking(what):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def configure() -> str:
    """Point MLflow (and its S3 artifact client) at this run's services, with bounded waiting (settings);
    returns the tracking URI."""
    settings.mlflow_defaults()
    s3 = settings.s3_settings()
    if s3 is not None:
        # MLflow's artifact store speaks S3 through boto3, which reads its own variables.
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", s3.url)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", s3.access_key)
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    uri = settings.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


@_tracked("answer a request")
def check() -> str:
    """Ask the tracking store for one experiment, so that one that is down is reported before a stage's work
    (within the bounded waiting of `configure`); returns the tracking URI."""
    uri = configure()
    MlflowClient().search_experiments(max_results=1)
    return uri


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
    except MlflowException:  # another stage created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


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
    configure()
    with _asking(f"open run {run_id}" if run_id else "start a run"):
        if run_id is None:
            experiment = getattr(config, "experiment", "artlora")
            mlflow.set_experiment(experiment_id=_experiment_id(experiment, getattr(config, "storage_root", None)))
        # Explicit either way, so that MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING in the environment cannot switch the
        # monitor on for the stages that did not ask for it.
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else stage, log_system_metrics=system_metrics)
    try:
        with _asking("record the stage's config"):
            _record_config(run, stage, config, run_id, tags)
        yield run
    except BaseException as err:
        _end_failed(err)
        raise
    with _asking("end the run"):
        mlflow.end_run()


def _record_config(
    run: mlflow.ActiveRun, stage: str, config: StageConfig, run_id: str | None, tags: Mapping[str, str] | None
) -> None:
    resolved = config.model_dump(mode="json")
    # MLflow params cannot change once logged: a stage run again on the same run with other settings (an
    # evaluation with new prompts, say) keeps the first values as params; config/<stage>.json has the latest.
    logged = run.data.params
    mlflow.log_params({k: v for k, v in flatten(stage, resolved).items() if k not in logged})
    log_bytes(json.dumps(resolved, indent=2).encode(), f"config/{stage}.json")
    mlflow.set_tags({STAGE_TAG if run_id is None else f"{STAGE_TAG}.{stage}": stage, **(tags or {})})


def _end_failed(err: BaseException) -> None:
    """Mark the run failed (killed, for an interruption) on the way out of an error; an error while ending is left
    out, so the user sees the stage's own. When the error was MLflow's, the server did not answer: ending the run
    (and sending what MLflow still holds: queued metrics, system metrics) gets one short try, since MLflow would
    otherwise wait for it again, here or in its own exit handler, and double the time to report the error."""
    status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
    if not isinstance(err, TrackingError):
        with contextlib.suppress(*_FAILURES):
            mlflow.end_run(status)
        return
    with settings.exported(ONE_SHORT_TRY):
        with contextlib.suppress(*_FAILURES):
            mlflow.flush_async_logging()  # metrics queued with wait=False; else sent again at exit
        with contextlib.suppress(*_FAILURES):
            mlflow.end_run(status)


@_tracked("log metrics")
def log_metrics(metrics: Mapping[str, float], step: int | None = None, wait: bool = True) -> None:
    """Log metrics; with wait=False the call returns at once and MLflow sends them in the background (the
    training loop must not stall on the tracking store). The run's end waits for everything queued."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, synchronous=wait)


@_tracked("set tags")
def set_tags(tags: Mapping[str, str]) -> None:
    mlflow.set_tags(dict(tags))


@_tracked("store an artifact")
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


@_tracked("store an artifact")
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
    configure()
    with _asking(f"find run {run_id}"):
        return MlflowClient().get_run(run_id)


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(get_run(run_id).data.metrics)


def run_tags(run_id: str) -> dict[str, str]:
    return dict(get_run(run_id).data.tags)


# -- registry ------------------------------------------------------------------------------------------

# The logged MLflow Model of an adapter: the adapter folder is its data, artlora (installed, as in the image) its
# code. Loading it calls `_load_pyfunc` of this module; nothing in it is unpickled.
PYFUNC_LOADER = "artlora.generate.pyfunc"
MODEL_NAME = "adapter_model"  # the logged model's name within the run
ADAPTER_DATA = "adapter"  # the adapter folder's name under the model's data/


@dataclass(frozen=True)
class Version:
    """A registered model version, as artlora reads it."""

    name: str
    version: str
    source: str  # where its files are: the logged model (models:/m-...) or, for older versions, an artifact folder
    run_id: str | None
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created: datetime.datetime  # UTC

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _version(entity: ModelVersion) -> Version:
    return Version(
        name=entity.name,
        version=str(entity.version),
        source=entity.source,
        run_id=entity.run_id or None,
        tags=dict(entity.tags or {}),
        aliases=tuple(sorted(entity.aliases or ())),
        created=datetime.datetime.fromtimestamp(entity.creation_timestamp / 1000, tz=datetime.UTC),
    )


def _pages(search, **options) -> list:
    """Every item of a paginated MLflow search."""
    items, token = [], None
    while True:
        page = search(max_results=1000, page_token=token, **options)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _or_none(what: str, call: Callable[[], T]) -> T | None:
    """call(), or None when MLflow answers that the thing does not exist (an unknown model or version answers
    RESOURCE_DOES_NOT_EXIST, an unknown alias INVALID_PARAMETER_VALUE); any other refusal is a TrackingError."""
    configure()
    with _asking(what):
        try:
            return call()
        except MlflowException as err:
            if err.error_code in _ABSENT:
                return None
            raise


def registered_models() -> list[str]:
    """The names of every registered model, sorted."""
    configure()
    with _asking("list registered models"):
        return sorted(model.name for model in _pages(MlflowClient().search_registered_models))


def model_aliases(name: str) -> dict[str, str] | None:
    """A registered model's aliases (alias -> version), or None when there is no model of that name."""
    model = _or_none(f"read model {name!r}", lambda: MlflowClient().get_registered_model(name))
    return None if model is None else {alias: str(version) for alias, version in (model.aliases or {}).items()}


def model_versions(name: str, tags: Mapping[str, str] | None = None) -> list[Version]:
    """Every version of a model (optionally only those carrying every one of `tags`), oldest first."""
    configure()
    # Model names and the tags searched by are artlora's own (letters, digits, `_.-`): nothing to escape.
    query = " and ".join([f"name = '{name}'", *(f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items())])
    with _asking(f"list the versions of {name!r}"):
        found = _pages(MlflowClient().search_model_versions, filter_string=query)
    # A search leaves the versions' aliases out; the model has them.
    aliases = model_aliases(name) or {}
    versions = [
        replace(_version(entity), aliases=tuple(sorted(a for a, v in aliases.items() if v == str(entity.version))))
        for entity in found
    ]
    return sorted(versions, key=lambda v: int(v.version))


def model_version(name: str, version: str) -> Version | None:
    entity = _or_none(f"read {name} version {version}", lambda: MlflowClient().get_model_version(name, version))
    return None if entity is None else _version(entity)


def version_by_alias(name: str, alias: str) -> Version | None:
    entity = _or_none(f"read {name}@{alias}", lambda: MlflowClient().get_model_version_by_alias(name, alias))
    return None if entity is None else _version(entity)


def log_adapter_model(folder: str | Path, params: Mapping[str, Any]) -> tuple[str, str]:
    """Log an adapter folder as an MLflow Model of the active run, loadable with `mlflow.pyfunc.load_model`;
    `params` are its predict() parameters with their defaults. Returns (source URI, logged model id)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    types = {str: "string", int: "long", float: "double", bool: "boolean"}
    signature = ModelSignature(
        inputs=Schema([ColSpec("string")]),  # unnamed: a list of prompts is accepted as it is
        params=ParamSchema([ParamSpec(key, types[type(value)], value) for key, value in params.items()]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / ADAPTER_DATA
        shutil.copytree(folder, data)
        with warnings.catch_warnings(), _asking("log the adapter as an MLflow Model"):
            # Its advice, an input example, would make MLflow load the base model here to check it.
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                loader_module=PYFUNC_LOADER,
                data_path=str(data),
                signature=signature,
                pip_requirements=[f"artlora=={artlora.__version__}"],
            )
    return info.model_uri, info.model_id


def create_version(name: str, source: str, run_id: str, tags: Mapping[str, str], model_id: str | None) -> Version:
    """A new version of `name` (created if needed) from a logged model's URI."""
    configure()
    client = MlflowClient()
    try:
        client.create_registered_model(name, description="artlora style LoRA adapters")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with _asking(f"register a version of {name!r}"):
        entity = client.create_model_version(
            name, source, run_id=run_id, tags={k: str(v) for k, v in tags.items()}, model_id=model_id
        )
    return _version(entity)


def set_alias(name: str, alias: str, version: str) -> None:
    configure()
    with _asking(f"set alias {alias!r} of {name!r} to version {version}"):
        MlflowClient().set_registered_model_alias(name, alias, version)


def set_version_tags(name: str, version: str, tags: Mapping[str, str]) -> None:
    configure()
    client = MlflowClient()
    with _asking(f"tag {name} version {version}"):
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, str(value))


def download_version(version: Version, destination: str | Path) -> Path:
    """Download a version's files into `destination`; returns the adapter folder among them (the logged model's
    data, or the whole download for versions registered from a plain artifact folder)."""
    configure()
    Path(destination).mkdir(parents=True, exist_ok=True)
    with _asking(f"download {version.uri} from {version.source}"):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(destination)))
    logged = local / "data" / ADAPTER_DATA
    return logged if logged.is_dir() else local


def load_run_json(run_id: str, path: str) -> dict | None:
    """A JSON artifact of a run (e.g. `config/evaluate.json`), or None when the run has none."""
    configure()
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
    except (MlflowException, OSError):
        return None


# -- runs by id: a search's parent run and its trials ---------------------------------------------------

PARENT_TAG = "mlflow.parentRunId"  # what makes MLflow show a run as another's child
RUN_NAME_TAG = "mlflow.runName"


def start_parent_run(experiment: str, storage_root: str, name: str, params: Mapping[str, str]) -> str:
    """A run that the trials of a search hang under; it stays open until `finish_run`. Returns its id."""
    configure()
    with _asking(f"start run {name!r} in experiment {experiment!r}"):
        client = MlflowClient()
        run = client.create_run(_experiment_id(experiment, storage_root), run_name=name)
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        return run.info.run_id


def finish_run(run_id: str) -> None:
    configure()
    with _asking(f"finish run {run_id}"):
        MlflowClient().set_terminated(run_id, "FINISHED")


def set_run_tags(run_id: str, tags: Mapping[str, str]) -> None:
    """Tags on a run that is not this process's active run (a trial, from the task that trained it)."""
    configure()
    with _asking(f"tag run {run_id}"):
        client = MlflowClient()
        for key, value in tags.items():
            client.set_tag(run_id, key, value)


def log_run_metrics(run_id: str, metrics: Mapping[str, float]) -> None:
    configure()
    with _asking(f"log metrics to run {run_id}"):
        client = MlflowClient()
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))


def log_run_bytes(run_id: str, data: bytes, name: str) -> None:
    """An artifact file `name` (may include folders) on a run that is not this process's active run."""
    configure()
    with tempfile.TemporaryDirectory() as tmp, _asking(f"log {name} to run {run_id}"):
        path = Path(tmp) / Path(name).name
        path.write_bytes(data)
        parent = str(Path(name).parent)
        MlflowClient().log_artifact(run_id, str(path), None if parent == "." else parent)


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value of a metric, in step order."""
    configure()
    with _asking(f"read metric {key} of run {run_id}"):
        history = MlflowClient().get_metric_history(run_id, key)
    return sorted((metric.step, metric.value) for metric in history)


def run_artifact_bytes(run_id: str, path: str) -> bytes:
    """An artifact file of a run."""
    configure()
    with tempfile.TemporaryDirectory() as tmp, _asking(f"read artifact {path} of run {run_id}"):
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
        return Path(local).read_bytes()
