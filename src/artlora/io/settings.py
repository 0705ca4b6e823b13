"""Endpoints, credentials and how long to wait for them, read from the environment only (never from config files
or the repo), each group of variables a pydantic-settings model (frozen, each field named by its variable).

Waiting is bounded so that a store or tracking server that went away, or froze, is reported within about a
minute instead of stalling a run: S3 requests by `S3Limits` (ARTLORA_S3_CONNECT_TIMEOUT, ARTLORA_S3_READ_TIMEOUT,
ARTLORA_S3_RETRIES), MLflow's HTTP requests by MLflow's own variables, which `mlflow_defaults` fills in
where the user has not set them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import annotated_types
from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from artlora.errors import ArtloraError

S3_ENDPOINT = "ARTLORA_S3_ENDPOINT"
S3_ACCESS_KEY = "ARTLORA_S3_ACCESS_KEY"
S3_SECRET_KEY = "ARTLORA_S3_SECRET_KEY"
S3_REGION = "ARTLORA_S3_REGION"
S3_CONNECT_TIMEOUT = "ARTLORA_S3_CONNECT_TIMEOUT"
S3_READ_TIMEOUT = "ARTLORA_S3_READ_TIMEOUT"
S3_RETRIES = "ARTLORA_S3_RETRIES"
WORK_DIR = "ARTLORA_WORK_DIR"
TRACKING_URI = "MLFLOW_TRACKING_URI"
KFP_TOKEN = "ARTLORA_KFP_TOKEN"  # a bearer token for the Kubeflow Pipelines API, when no token file is given
KFP_NAMESPACE = "ARTLORA_KFP_NAMESPACE"  # multi-user KFP: the profile namespace, when --namespace is not given

# MLflow's defaults (120 s per request, 7 retries with back-off factor 2) take about 4 minutes to report a server
# that went away; these report it within about a minute: 4 tries of at most 10 s, 0 + 2 + 4 s back-off between
# them (plus MLflow's jitter of up to 1 s each). A user's own values win.
MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    # With a tracking server MLflow writes "View run ... at: URL" lines to stdout, where a command prints its
    # result as JSON for scripts; the result has the run id, and `pipeline run` prints the UI's link.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


class SettingError(ArtloraError):
    """An environment variable artlora reads holds something it cannot use."""


class _FromEnvironment(BaseSettings):
    """A group of environment variables, read when made (`read()`): each field from the variable its alias names,
    exactly as written (no other case, no .env file); a variable set to "" counts as unset."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True, env_ignore_empty=True)

    @classmethod
    def read(cls) -> Self:
        """The variables as set now; SettingError (one line naming the variable) for a value artlora cannot use."""
        return _read(cls, tuple(os.environ.get(name) for name in _variables(cls)))


_Model = TypeVar("_Model", bound=_FromEnvironment)


@functools.cache
def _variables(model: type[_FromEnvironment]) -> tuple[str, ...]:
    """Every variable name `model` reads."""
    names = []
    for info in model.model_fields.values():
        alias = info.validation_alias
        names += [str(choice) for choice in alias.choices] if isinstance(alias, AliasChoices) else [str(alias)]
    return tuple(names)


# Reading is cached by the variables' values: made afresh, a model takes about 0.2 ms, and every
# `storage.get_storage()` and tracking call reads the store's settings again.
@functools.lru_cache(maxsize=64)
def _read(model: type[_Model], values: tuple[str | None, ...]) -> _Model:
    try:
        return model()
    except ValidationError as err:
        problem = err.errors()[0]
        cause = problem.get("ctx", {}).get("error")
        name = ".".join(str(part) for part in problem["loc"])
        raise SettingError(str(cause) if cause else f"{name}: {problem['msg']}") from None


def _number(field: FieldInfo, raw: object) -> object:
    """A number variable's value, at least its field's `ge`; blanks count as unset. The message names the variable
    and says how to get the default back."""
    if not isinstance(raw, str):  # given in code, not read from the environment
        return raw
    text = raw.strip()
    if not text:
        return field.default
    minimum = float(next(rule.ge for rule in field.metadata if isinstance(rule, annotated_types.Ge)))  # type: ignore[arg-type]
    try:
        value = float(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(
            f"{field.validation_alias}={text!r} must be a number >= {minimum:g} (unset it for the default "
            f"{field.default:g})"
        )
    return int(value) if field.annotation is int else value  # a count given as 2.0 (or 2.7) is 2


class S3Limits(_FromEnvironment):
    """How long one S3 request may take before it is reported: each try waits at most `connect_timeout` to
    connect and `read_timeout` for each answer; failed tries are repeated `retries` times, after 0, 2, 4, ...
    times `backoff` seconds. `from_env()` reads them; `defaults()` is the shipped values whatever is set."""

    connect_timeout: float = Field(
        5.0, ge=0.1, validation_alias=S3_CONNECT_TIMEOUT, description="seconds to wait for a connection, per try"
    )
    read_timeout: float = Field(
        10.0,
        ge=0.1,
        validation_alias=S3_READ_TIMEOUT,
        description="seconds without a byte from the store, per try (not a limit on a whole transfer)",
    )
    retries: int = Field(3, ge=0, validation_alias=S3_RETRIES, description="tries after the first one fails")
    backoff: ClassVar[float] = 0.5  # seconds; not a setting

    @field_validator("connect_timeout", "read_timeout", "retries", mode="before")
    @classmethod
    def _parse(cls, raw: object, info: ValidationInfo) -> object:
        return _number(cls.model_fields[str(info.field_name)], raw)

    @classmethod
    def from_env(cls) -> S3Limits:
        return cls.read()

    @classmethod
    def defaults(cls) -> S3Limits:
        """The shipped limits, without reading the environment."""
        return cls.model_construct()

    @property
    def worst_case(self) -> float:
        """Seconds until a store that stopped answering is reported (connected, then no reply), back-off included."""
        pauses = self.backoff * (2**self.retries - 2) if self.retries > 1 else 0.0  # urllib3: 0, 2b, 4b, ...
        return (self.retries + 1) * (self.connect_timeout + self.read_timeout) + pauses

    def describe(self) -> str:
        return (
            f"{self.retries + 1} tries of {self.connect_timeout:g} s to connect and {self.read_timeout:g} s to "
            f"answer; {S3_CONNECT_TIMEOUT}, {S3_READ_TIMEOUT} and {S3_RETRIES} change that"
        )


class S3Variables(_FromEnvironment):
    """The object store as the environment names it. The AWS names are honoured too, so a cluster's existing
    MinIO secret can be mounted as it is."""

    endpoint: str | None = Field(
        None,
        validation_alias=S3_ENDPOINT,
        description="the store's URL, http(s)://host:port; unset: none configured (then `demo` and `pipeline run "
        "--local` use the local services)",
    )
    access_key: str = Field(
        "", validation_alias=AliasChoices(S3_ACCESS_KEY, "AWS_ACCESS_KEY_ID"), repr=False, description="S3 access key"
    )
    secret_key: str = Field(
        "",
        validation_alias=AliasChoices(S3_SECRET_KEY, "AWS_SECRET_ACCESS_KEY"),
        repr=False,
        description="S3 secret key",
    )
    region: str = Field(
        "us-east-1", validation_alias=AliasChoices(S3_REGION, "AWS_DEFAULT_REGION"), description="the store's region"
    )

    @field_validator("endpoint", mode="before")
    @classmethod
    def _blank_is_unset(cls, raw: object) -> object:
        return (raw.strip() or None) if isinstance(raw, str) else raw


class LocalVariables(_FromEnvironment):
    """Where this machine keeps artlora's files, and the tracking server."""

    work_dir: Path = Field(
        Path(".artlora"),
        validation_alias=WORK_DIR,
        description="local folder for caches, the default MLflow store and downloaded reports",
    )
    tracking_uri: str | None = Field(
        None,
        validation_alias=TRACKING_URI,
        description="the MLflow server; unset: a SQLite store in the work folder",
    )


class KfpVariables(_FromEnvironment):
    """How artlora talks to a Kubeflow Pipelines API when the command line does not say."""

    token: str | None = Field(
        None, validation_alias=KFP_TOKEN, repr=False, description="bearer token, when no --token-file is given"
    )
    namespace: str | None = Field(
        None, validation_alias=KFP_NAMESPACE, description="multi-user KFP: the profile namespace, when no --namespace"
    )

    @field_validator("token", mode="before")
    @classmethod
    def _blank_is_unset(cls, raw: object) -> object:
        return (raw.strip() or None) if isinstance(raw, str) else raw


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # "host:port", without the scheme
    secure: bool  # https when the endpoint was given as https://
    access_key: str
    secret_key: str
    region: str
    limits: S3Limits = field(default_factory=S3Limits.defaults)

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


def s3_settings() -> S3Settings | None:
    """The configured S3 endpoint, or None (then `demo` and `pipeline run --local` use the local services)."""
    variables = S3Variables.read()
    if variables.endpoint is None:
        return None
    raw = variables.endpoint
    return S3Settings(
        endpoint=raw.removeprefix("https://").removeprefix("http://").rstrip("/"),
        secure=raw.startswith("https://"),
        access_key=variables.access_key,
        secret_key=variables.secret_key,
        region=variables.region,
        limits=S3Limits.from_env(),
    )


def work_dir(create: bool = True) -> Path:
    """Local folder for caches, the default MLflow store and downloaded reports."""
    path = LocalVariables.read().work_dir.resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    """MLflow tracking URI: the configured server, else a SQLite store in the work folder."""
    return LocalVariables.read().tracking_uri or f"sqlite:///{work_dir() / 'mlflow.db'}"


def mlflow_defaults() -> None:
    """Bound MLflow's HTTP waiting, and keep stdout for results (MLFLOW_DEFAULTS), where the user has not set
    MLflow's variables."""
    for name, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)


def point_mlflow_artifacts_at(s3: S3Settings) -> None:
    """MLflow's S3 artifact client is boto3, which reads its own variables: give it artlora's store with its keys,
    always the three together (a shell's AWS keys never meet artlora's store), unless MLFLOW_S3_ENDPOINT_URL names
    another store (then the AWS keys are that store's)."""
    if os.environ.get("MLFLOW_S3_ENDPOINT_URL", s3.url).rstrip("/") != s3.url:
        return
    wanted = {
        "MLFLOW_S3_ENDPOINT_URL": s3.url,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }
    if all(os.environ.get(name) == value for name, value in wanted.items()):
        return
    os.environ.update(wanted)
    forget_boto3_keys()


def forget_boto3_keys() -> None:
    """Make boto3 read its keys from the environment again. Its default session keeps the keys it first found in the
    process, and MLflow keeps one client per endpoint address: without this, keys set later (another store, or one
    that came back on the same address) are never used (InvalidAccessKeyId)."""
    boto3: Any = sys.modules.get("boto3")
    if boto3 is not None:
        boto3.DEFAULT_SESSION = None
    artifact_repo: Any = sys.modules.get("mlflow.store.artifact.s3_artifact_repo")
    if artifact_repo is not None and hasattr(artifact_repo, "_cached_get_s3_client"):
        artifact_repo._cached_get_s3_client.cache_clear()


@contextlib.contextmanager
def exported(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block (this process and what it starts), then put back what was there."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def kfp_token() -> str | None:
    """The bearer token for the Kubeflow Pipelines API from the environment, if any."""
    return KfpVariables.read().token


def kfp_namespace() -> str | None:
    """The Kubeflow Pipelines profile namespace from the environment, if any."""
    return KfpVariables.read().namespace
