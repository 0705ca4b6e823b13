"""The edge to MLflow: where it is, how long to wait for it, and what its failures become. `runs` (stage runs,
params, metrics, artifacts) and `model_registry` (registered versions and aliases) build on it; the three are the
only modules that import mlflow.

Locally (no MLFLOW_TRACKING_URI) the store is SQLite in the work folder and artifacts go to the object store
under `<storage_root>/mlflow/`; with a tracking server, the server decides where artifacts go.

Every failure of MLflow (a refusal, a server that went away or froze, an artifact upload that failed) becomes a
TrackingError naming the tracking URI, reported within about a minute (`settings.MLFLOW_DEFAULTS`). Each
stage calls `check` before its work, so a tracking server that is down is reported at once, not after the work.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import mlflow
import requests
import sqlalchemy.exc
from botocore.exceptions import BotoCoreError, ClientError
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from artlora.errors import ArtloraError
from artlora.io import settings

# What MLflow and the clients under it raise: its own errors, HTTP failures to a server, the S3 artifact client's
# failures, and the database store's.
FAILURES = (MlflowException, requests.RequestException, BotoCoreError, ClientError, sqlalchemy.exc.SQLAlchemyError)
# MLflow's HTTP requests with these variables (read per request): one try of at most 2 s.
ONE_SHORT_TRY = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
# Codes with which MLflow says that what was asked for is not there.
ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class TrackingError(ArtloraError):
    """MLflow refused a request or could not be reached; the message names the tracking URI."""


@contextlib.contextmanager
def asking(what: str) -> Iterator[None]:
    """Turn any MLflow failure to `what` into a TrackingError naming the store and what to check."""
    try:
        yield
    except FAILURES as err:
        reason = err.message if isinstance(err, MlflowException) else f"{type(err).__name__}: {err}"
        raise TrackingError(
            f"MLflow at {settings.tracking_uri()} could not {what}: {reason} (check that it is up, "
            "MLFLOW_TRACKING_URI, and the run id or model name given; MLFLOW_HTTP_REQUEST_TIMEOUT and "
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES set how long to wait)"
        ) from err


def tracked(what: str) -> Callable[[F], F]:
    """A function whose MLflow failures are TrackingErrors saying it could not `what`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with asking(what):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def configure() -> str:
    """Point MLflow (and its S3 artifact client) at this run's services, with bounded waiting (settings);
    returns the tracking URI."""
    settings.mlflow_defaults()
    s3 = settings.s3_settings()
    if s3 is not None:
        settings.point_mlflow_artifacts_at(s3)
    uri = settings.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


@tracked("answer a request")
def check() -> str:
    """Ask the tracking store for one experiment, so that one that is down is reported before a stage's work
    (within the bounded waiting of `configure`); returns the tracking URI."""
    uri = configure()
    MlflowClient().search_experiments(max_results=1)
    return uri


def pages(search, **options) -> list:
    """Every item of a paginated MLflow search."""
    items, token = [], None
    while True:
        page = search(max_results=1000, page_token=token, **options)
        items.extend(page)
        token = page.token
        if not token:
            return items


def or_none(what: str, call: Callable[[], T]) -> T | None:
    """call(), or None when MLflow answers that the thing does not exist (an unknown model or version answers
    RESOURCE_DOES_NOT_EXIST, an unknown alias INVALID_PARAMETER_VALUE); any other refusal is a TrackingError."""
    configure()
    with asking(what):
        try:
            return call()
        except MlflowException as err:
            if err.error_code in ABSENT:
                return None
            raise
