"""Talking to a Kubeflow Pipelines API server (v2beta1) through kfp.Client, in bounded time, with errors that
name the host and what to fix.

kfp.Client sets up the connection and its authentication: a service-account token file (re-read on every
request, as projected tokens rotate), a bearer token, or none. The calls go through the client's generated
services (`client.runs`, `client.pipeline_uploads`, ...), each with a timeout, after a first health check that
fails fast: kfp.Client's own check retries for half a minute and has no timeout.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kfp
import kfp_server_api
import urllib3
import yaml
from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

from artlora.errors import ArtloraError

# Seconds to connect, and to wait for an answer, per request: a submission uploads a few hundred kilobytes.
TIMEOUT = (10, 60)
FINISHED = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")


class KfpError(ArtloraError):
    """The Kubeflow Pipelines API server could not be reached, refused a request or answered with an error."""


@dataclass(frozen=True)
class Connection:
    host: str  # the KFP API (or UI) URL, e.g. http://localhost:8080
    namespace: str | None = None  # multi-user KFP: the profile namespace runs go to
    token: str | None = None  # a bearer token (never logged)
    token_file: str | None = None  # a service-account token file, re-read on every request

    @property
    def url(self) -> str:
        return self.host.rstrip("/")


def _refusal(connection: Connection, what: str, err: kfp_server_api.ApiException) -> KfpError:
    host = connection.url
    if err.status == 401:
        fix = "give a valid token: --token-file FILE (a service-account token) or ARTLORA_KFP_TOKEN"
    elif err.status == 403:
        fix = f"the token's account may not {what}: grant it access to namespace {connection.namespace or '(none)'}"
    elif err.status == 404:
        fix = "--host must be the KFP API or UI address (e.g. http://localhost:8080), which serves /apis/v2beta1"
    else:
        fix = f"the server said: {str(err.body or '')[:300].strip() or 'nothing more'}"
    return KfpError(f"KFP at {host} answered {err.status} {err.reason} when asked to {what} ({fix})")


@contextlib.contextmanager
def asking(connection: Connection, what: str) -> Iterator[None]:
    """Turn what can go wrong while asking the server to do `what` into one KfpError."""
    try:
        yield
    except kfp_server_api.ApiException as err:
        raise _refusal(connection, what, err) from err
    except urllib3.exceptions.HTTPError as err:  # refused, unresolvable, timed out, dropped
        raise KfpError(
            f"cannot reach KFP at {connection.url} to {what} ({type(err).__name__}: check the URL and that the "
            "API server is up, e.g. `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`)"
        ) from err


def connect(connection: Connection) -> tuple[kfp.Client, bool]:
    """A kfp.Client for the connection, after a health check that fails within seconds; and whether the
    server is multi-user (then every experiment and run lives in a profile namespace)."""
    if connection.token_file and not Path(connection.token_file).is_file():
        raise KfpError(f"token file {connection.token_file} does not exist (give the service-account token's path)")
    credentials = ServiceAccountTokenVolumeCredentials(connection.token_file) if connection.token_file else None
    config = kfp_server_api.Configuration(host=connection.url)
    if credentials or connection.token:
        config.api_key["authorization"], config.api_key_prefix["authorization"] = connection.token, "Bearer"
        config.refresh_api_key_hook = credentials.refresh_api_key_hook if credentials else None
    with asking(connection, "report its health"):
        health = kfp_server_api.HealthzServiceApi(kfp_server_api.ApiClient(config)).healthz_service_get_healthz(
            _request_timeout=TIMEOUT
        )
    if health.multi_user and not connection.namespace:
        raise KfpError(
            f"KFP at {connection.url} is multi-user: give the profile namespace to run in (--namespace NS, or "
            "ARTLORA_KFP_NAMESPACE)"
        )
    with warnings.catch_warnings():  # "only works with KFP v2.0.0-beta.2 and later": every command would say it
        warnings.filterwarnings("ignore", message="This client only works", category=FutureWarning)
        client = kfp.Client(
            host=connection.url,
            namespace=connection.namespace or "kubeflow",  # kfp.Client's way of saying "none given"
            existing_token=None if credentials else connection.token,
            credentials=credentials,
        )
    return client, bool(health.multi_user)


def _equals(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def pipeline_doc(compiled: str | Path) -> dict[str, Any]:
    """A compiled YAML as a run's inline pipeline_spec: the spec, with its Kubernetes platform spec beside it."""
    spec, *platform = yaml.safe_load_all(Path(compiled).read_text())
    return {"pipeline_spec": spec, "platform_spec": platform[0]} if platform else spec


def _reference(pipeline_id: str, version_id: str) -> kfp_server_api.V2beta1PipelineVersionReference:
    return kfp_server_api.V2beta1PipelineVersionReference(pipeline_id=pipeline_id, pipeline_version_id=version_id)


@dataclass(frozen=True)
class Schedule:
    schedule_id: str
    name: str
    cron: str
    mode: str  # ENABLE or DISABLE
    created_at: str


class Kfp:
    """The calls artlora makes, each bounded by TIMEOUT; errors name the host and what to fix."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.client, self.multi_user = connect(connection)

    def _namespace(self) -> str | None:
        """The namespace to name in requests: standalone KFP has none."""
        return self.connection.namespace if self.multi_user else None

    def experiment(self, name: str) -> str:
        """The id of the experiment called `name`, created if it does not exist."""
        with asking(self.connection, f"find or create experiment {name!r}"):
            found = self.client.experiments.experiment_service_list_experiments(
                filter=_equals(name), namespace=self._namespace(), _request_timeout=TIMEOUT
            )
            if found.experiments:
                return found.experiments[0].experiment_id
            body = kfp_server_api.V2beta1Experiment(display_name=name, namespace=self._namespace())
            return self.client.experiments.experiment_service_create_experiment(
                experiment=body, _request_timeout=TIMEOUT
            ).experiment_id

    def pipeline(self, name: str, description: str) -> str:
        """The id of the pipeline called `name`, created (without versions) if it does not exist."""
        with asking(self.connection, f"find or create pipeline {name!r}"):
            found = self.client.pipelines.pipeline_service_list_pipelines(
                filter=_equals(name), namespace=self._namespace(), _request_timeout=TIMEOUT
            )
            if found.pipelines:
                return found.pipelines[0].pipeline_id
            body = kfp_server_api.V2beta1Pipeline(
                name=name, display_name=name, description=description, namespace=self._namespace()
            )
            return self.client.pipelines.pipeline_service_create_pipeline(
                pipeline=body, _request_timeout=TIMEOUT
            ).pipeline_id

    def version(self, pipeline_id: str, compiled: Path, name: str, tags: dict[str, str], description: str) -> str:
        """Upload `compiled` as version `name` of the pipeline, or find the version of that name already there
        (the name carries the compiled spec's digest, so the same name holds the same pipeline)."""
        with asking(self.connection, f"upload pipeline version {name!r}"):
            found = self.client.pipelines.pipeline_service_list_pipeline_versions(
                pipeline_id=pipeline_id, filter=_equals(name), _request_timeout=TIMEOUT
            )
            if found.pipeline_versions:
                return found.pipeline_versions[0].pipeline_version_id
            return self.client.pipeline_uploads.upload_pipeline_version(
                str(compiled),
                name=name,
                display_name=name,
                pipelineid=pipeline_id,
                description=description,
                tags=json.dumps(tags),
                _request_timeout=TIMEOUT,
            ).pipeline_version_id

    def run(self, experiment_id: str, name: str, arguments: dict[str, Any], source: Path | tuple[str, str]) -> str:
        """Start a run; `source` is an uploaded (pipeline id, version id), or a compiled YAML sent inline."""
        body = kfp_server_api.V2beta1Run(
            experiment_id=experiment_id,
            display_name=name,
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=arguments),
        )
        if isinstance(source, tuple):
            body.pipeline_version_reference = _reference(*source)
        else:
            body.pipeline_spec = pipeline_doc(source)
        with asking(self.connection, f"start run {name!r}"):
            return self.client.runs.run_service_create_run(run=body, _request_timeout=TIMEOUT).run_id

    def run_state(self, run_id: str) -> tuple[str, str]:
        """The run's state (PENDING, RUNNING, SUCCEEDED, FAILED, ...) and its error message, if any."""
        with asking(self.connection, f"report run {run_id}"):
            run = self.client.runs.run_service_get_run(run_id=run_id, _request_timeout=TIMEOUT)
        return str(run.state or "PENDING"), (run.error.message if run.error else "") or ""

    def run_url(self, run_id: str) -> str:
        return f"{self.connection.url}/#/runs/details/{run_id}"

    def schedule(self, experiment_id: str, name: str, cron: str, version: tuple[str, str], arguments: dict) -> str:
        """A recurring run: no catch-up of missed times, never two at once."""
        body = kfp_server_api.V2beta1RecurringRun(
            display_name=name,
            experiment_id=experiment_id,
            pipeline_version_reference=_reference(*version),
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=arguments),
            trigger=kfp_server_api.V2beta1Trigger(cron_schedule=kfp_server_api.V2beta1CronSchedule(cron=cron)),
            max_concurrency="1",
            no_catchup=True,
            mode=kfp_server_api.RecurringRunMode.ENABLE,
        )
        with asking(self.connection, f"create recurring run {name!r}"):
            return self.client.recurring_runs.recurring_run_service_create_recurring_run(
                recurring_run=body, _request_timeout=TIMEOUT
            ).recurring_run_id

    def schedules(self) -> list[Schedule]:
        """Every recurring run (in the namespace, on multi-user KFP)."""
        found: list[kfp_server_api.V2beta1RecurringRun] = []
        token = ""
        with asking(self.connection, "list recurring runs"):
            while True:
                page = self.client.recurring_runs.recurring_run_service_list_recurring_runs(
                    page_token=token,
                    page_size=100,
                    namespace=self._namespace(),
                    _request_timeout=TIMEOUT,
                )
                found += page.recurring_runs or []
                token = page.next_page_token
                if not token:
                    break
        return [
            Schedule(
                schedule.recurring_run_id,
                schedule.display_name or "",
                schedule.trigger.cron_schedule.cron if schedule.trigger and schedule.trigger.cron_schedule else "",
                str(schedule.mode or ""),
                str(schedule.created_at or ""),
            )
            for schedule in found
        ]

    def delete_schedule(self, schedule_id: str) -> None:
        with asking(self.connection, f"delete recurring run {schedule_id}"):
            self.client.recurring_runs.recurring_run_service_delete_recurring_run(
                recurring_run_id=schedule_id, _request_timeout=TIMEOUT
            )
