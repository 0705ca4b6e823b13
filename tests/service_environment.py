"""The environment of a user without an S3 store or MLflow server of their own: what makes `demo`, `pipeline run
--local` and `artlora services` run artlora's local services, on free ports (the defaults may be taken here)."""

from __future__ import annotations

from collections.abc import Mapping

from artlora.io import local_services, services, settings

# What `artlora services up` exports, and what a user with services of their own would have set.
CLIENT_VARIABLES = {
    "ARTLORA_S3_ENDPOINT",
    "ARTLORA_S3_ACCESS_KEY",
    "ARTLORA_S3_SECRET_KEY",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}


def free_ports() -> dict[str, str]:
    """ARTLORA_S3_PORT and ARTLORA_MLFLOW_PORT set to free ports: SeaweedFS's block, then MLflow's."""
    base = services.free_port_block(len(services.WEED_PARTS) + 1, also_above=services.WEED_GRPC_OFFSET)
    return {local_services.S3_PORT: str(base), local_services.MLFLOW_PORT: str(base + len(services.WEED_PARTS))}


def without_services(environment: Mapping[str, str]) -> dict[str, str]:
    """`environment` without any store or tracking server, with free ports for the local services."""
    return {**{key: value for key, value in environment.items() if key not in CLIENT_VARIABLES}, **free_ports()}


def kill_local_services(work_dir: str) -> None:
    """End the local services of `work_dir` at once, for a test whose data goes with its temporary folder: nothing
    needs flushing, and `services down` would wait out SeaweedFS's fixed 10 s graceful stop (the services tests
    run a real `down` where it is what they test)."""
    with settings.exported({settings.WORK_DIR: work_dir}):
        for name in (local_services.TRACKING, local_services.STORE):
            record = local_services._record(name)
            if record is not None:
                local_services._handle(record).kill()
