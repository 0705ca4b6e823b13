"""Embedded services for runs on a laptop: an S3 endpoint on loopback (moto's server).

MLflow needs no server locally: `settings.tracking_uri()` falls back to a SQLite store in the work folder, and
its artifacts go to the same S3 endpoint. The embedded endpoint keeps objects in memory, so they live as long
as the process that started it; point ARTLORA_S3_ENDPOINT at a real MinIO to keep them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from artlora.io import settings

log = logging.getLogger(__name__)

# moto accepts any credentials; these only have to be the same for every client of the run.
_LOCAL_KEY = "artlora-local"


def _s3_environment(url: str) -> dict[str, str]:
    """Variables that point artlora and MLflow's boto3 artifact client at one S3 endpoint."""
    return {
        settings.S3_ENDPOINT: url,
        settings.S3_ACCESS_KEY: _LOCAL_KEY,
        settings.S3_SECRET_KEY: _LOCAL_KEY,
        "AWS_ACCESS_KEY_ID": _LOCAL_KEY,
        "AWS_SECRET_ACCESS_KEY": _LOCAL_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": url,
    }


@contextlib.contextmanager
def embedded_s3() -> Iterator[str]:
    """Start an S3 endpoint on 127.0.0.1 (a free port) and export it for this process and its children."""
    from moto.server import ThreadedMotoServer

    # The server's request log would drown the run's own output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    log.info("embedded S3 endpoint at %s (objects live until this run ends)", url)
    try:
        with settings.exported(_s3_environment(url)):
            yield url
    finally:
        server.stop()


@contextlib.contextmanager
def ensure_s3() -> Iterator[str]:
    """Use the configured S3 endpoint, or start an embedded one for the duration of the block."""
    configured = settings.s3_settings()
    if configured is not None:
        # MLflow's artifact client reads its own variable; keep it on the same endpoint as artlora.
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", configured.url)
        yield configured.url
        return
    with embedded_s3() as url:
        yield url
