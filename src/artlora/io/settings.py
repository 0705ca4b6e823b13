"""Endpoints and credentials, read from the environment only (never from config files or the repo)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

S3_ENDPOINT = "ARTLORA_S3_ENDPOINT"
S3_ACCESS_KEY = "ARTLORA_S3_ACCESS_KEY"
S3_SECRET_KEY = "ARTLORA_S3_SECRET_KEY"
S3_REGION = "ARTLORA_S3_REGION"
WORK_DIR = "ARTLORA_WORK_DIR"
TRACKING_URI = "MLFLOW_TRACKING_URI"
KFP_TOKEN = "ARTLORA_KFP_TOKEN"  # a bearer token for the Kubeflow Pipelines API, when no token file is given
KFP_NAMESPACE = "ARTLORA_KFP_NAMESPACE"  # multi-user KFP: the profile namespace, when --namespace is not given


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # "host:port", without the scheme
    secure: bool  # https when the endpoint was given as https://
    access_key: str
    secret_key: str
    region: str

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


def kfp_token() -> str | None:
    """The bearer token for the Kubeflow Pipelines API from the environment, if any."""
    return os.environ.get(KFP_TOKEN, "").strip() or None
