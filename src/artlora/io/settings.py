"""Endpoints, credentials and how long to wait for them, read from the environment only (never from config files
or the repo).

Waiting is bounded so that a store or tracking server that went away, or froze, is reported within about a
minute instead of stalling a run: S3 requests by `S3Limits` (ARTLORA_S3_CONNECT_TIMEOUT, ARTLORA_S3_READ_TIMEOUT,
ARTLORA_S3_RETRIES), MLflow's HTTP requests by MLflow's own variables, which `mlflow_defaults` fills in
where the user has not set them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

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


def _number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise SettingError(f"{name}={raw!r} must be a number >= {minimum:g} (unset it for the default {default:g})")
    return value


@dataclass(frozen=True)
class S3Limits:
    """How long one S3 request may take before it is reported: each try waits at most `connect_timeout` to
    connect and `read_timeout` for each answer; failed tries are repeated `retries` times, after 0, 2, 4, ...
    times `backoff` seconds."""

    connect_timeout: float = 5.0  # seconds
    read_timeout: float = 10.0  # seconds without a byte from the store (not the whole transfer)
    retries: int = 3
    backoff: float = 0.5  # seconds

    @classmethod
    def from_env(cls) -> S3Limits:
        default = cls()
        return cls(
            connect_timeout=_number(S3_CONNECT_TIMEOUT, default.connect_timeout, 0.1),
            read_timeout=_number(S3_READ_TIMEOUT, default.read_timeout, 0.1),
            retries=int(_number(S3_RETRIES, default.retries, 0)),
        )

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


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # "host:port", without the scheme
    secure: bool  # https when the endpoint was given as https://
    access_key: str
    secret_key: str
    region: str
    limits: S3Limits = field(default_factory=S3Limits)

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


def s3_settings() -> S3Settings | None:
    """The configured S3 endpoint, or None (then `demo` and `pipeline run --local` use the local services)."""
    raw = os.environ.get(S3_ENDPOINT, "").strip()
    if not raw:
        return None
    secure = raw.startswith("https://")
    endpoint = raw.removeprefix("https://").removeprefix("http://").rstrip("/")
    return S3Settings(
        endpoint=endpoint,
        secure=secure,
        # The AWS names are honoured too, so a cluster's existing MinIO secret can be mounted as it is.
        access_key=os.environ.get(S3_ACCESS_KEY) or os.environ.get("AWS_ACCESS_KEY_ID", ""),
        secret_key=os.environ.get(S3_SECRET_KEY) or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        region=os.environ.get(S3_REGION) or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        limits=S3Limits.from_env(),
    )


def work_dir(create: bool = True) -> Path:
    """Local folder for caches, the default MLflow store and downloaded reports."""
    path = Path(os.environ.get(WORK_DIR, ".artlora")).resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    """MLflow tracking URI: the configured server, else a SQLite store in the work folder."""
    return os.environ.get(TRACKING_URI) or f"sqlite:///{work_dir() / 'mlflow.db'}"


def mlflow_defaults() -> None:
    """Bound MLflow's HTTP waiting, and keep stdout for results (MLFLOW_DEFAULTS), where the user has not set
    MLflow's variables."""
    for name, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)


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
    return os.environ.get(KFP_TOKEN, "").strip() or None
