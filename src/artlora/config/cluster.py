"""Where and how the pipeline's tasks run on a Kubernetes cluster: settings read when the pipeline is compiled.

Nothing here is a credential: the tasks read the object store's keys from a Secret and the endpoints from a
ConfigMap, both named here, as environment variables of the same names as the keys. kfp.local ignores all of it.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A Kubernetes quantity: "500m", "2", "1.5", "8Gi", "512Mi", "1G".
_CPU = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"
_BYTES = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
_LABEL = r"^([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskSettings(_Section):
    """One task's pod: what it asks the scheduler for, how long it may run, how often it is retried. A config
    sets only the keys it changes: the others keep that task's defaults (TASK_DEFAULTS)."""

    cpu_request: str = Field(pattern=_CPU, description="CPU cores reserved for the task (e.g. '500m', '4')")
    cpu_limit: str = Field(pattern=_CPU, description="most CPU cores the task may use")
    memory_request: str = Field(pattern=_BYTES, description="memory reserved for the task (e.g. '8Gi')")
    memory_limit: str = Field(pattern=_BYTES, description="memory at which the task is killed")
    timeout_s: int = Field(ge=60, le=14 * 86400, description="seconds one attempt may run before its pod is stopped")
    retries: int = Field(ge=0, le=10, description="attempts after a failed one (each from where it left off)")
    retry_backoff_s: int = Field(
        60, ge=1, le=3600, description="seconds before the first retry; each further retry waits twice as long"
    )


class Toleration(_Section):
    """A taint the GPU tasks tolerate (GPU node pools are usually tainted so only GPU work lands there)."""

    key: str = Field(description="taint key, e.g. 'nvidia.com/gpu'")
    operator: Literal["Equal", "Exists"] = Field("Exists", description="'Exists' matches any value of the key")
    value: str | None = Field(None, description="taint value, with operator 'Equal'")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="taint effect to tolerate; null tolerates every effect"
    )


class ScratchVolume(_Section):
    """The volume at /data/work: ARTLORA_WORK_DIR, where base models, caches and downloads land."""

    kind: Literal["emptyDir", "pvc"] = Field(
        "emptyDir",
        description="'emptyDir' uses the node's disk; 'pvc' claims a volume of its own for each pod (a generic "
        "ephemeral volume, deleted with the pod) from storage_class",
    )
    size: str = Field("50Gi", pattern=_BYTES, description="size of the volume (emptyDir: the most it may hold)")
    storage_class: str | None = Field(None, description="storage class of a 'pvc' volume; null = the default")


def _task(cpu: str, cpu_limit: str, memory: str, memory_limit: str, hours: float, retries: int) -> dict:
    return dict(
        cpu_request=cpu,
        cpu_limit=cpu_limit,
        memory_request=memory,
        memory_limit=memory_limit,
        timeout_s=int(hours * 3600),
        retries=retries,
    )


# Each task's defaults, under what a config sets. "control" is the small tasks: the change check, the search's
# plan and pick, the "unchanged" report. A retried train task resumes from its latest checkpoint.
TASK_DEFAULTS = {
    "control": _task("250m", "1", "1Gi", "2Gi", hours=0.5, retries=2),
    "ingest": _task("2", "4", "4Gi", "8Gi", hours=4, retries=2),
    "augment": _task("4", "8", "16Gi", "32Gi", hours=6, retries=2),
    "train": _task("8", "16", "32Gi", "64Gi", hours=24, retries=3),
    "evaluate": _task("4", "8", "16Gi", "32Gi", hours=4, retries=2),
    "register": _task("250m", "1", "1Gi", "2Gi", hours=0.5, retries=3),
}


def _task_field(name: str, what: str):
    return Field(default_factory=lambda: TaskSettings(**TASK_DEFAULTS[name]), description=what)


# pydantic warns, when the class is made, that a field named "register" shadows BaseModel's inherited
# ABCMeta.register (as in config/pipeline.py); the field is what we want.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class ClusterConfig(_Section):
        s3_secret: str = Field(
            "artlora-s3",
            pattern=_LABEL,
            description="Secret with the object store's keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (every "
            "task gets them as environment variables of the same names)",
        )
        mlflow_secret: str = Field(
            "artlora-mlflow",
            pattern=_LABEL,
            description="Secret with the MLflow login MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (every "
            "task gets them as environment variables of the same names; none is in the compiled pipeline)",
        )
        endpoints_config_map: str = Field(
            "artlora-endpoints",
            pattern=_LABEL,
            description="ConfigMap with ARTLORA_S3_ENDPOINT, MLFLOW_TRACKING_URI and MLFLOW_S3_ENDPOINT_URL (every "
            "task gets them as environment variables of the same names)",
        )
        gpu_resource: str = Field(
            "nvidia.com/gpu", pattern=_LABEL, description="the GPU type: the resource name GPU tasks ask for"
        )
        evaluate_gpus: int = Field(1, ge=0, le=1, description="GPUs of the evaluate task (0 runs it on CPUs)")
        gpu_node_selector: dict[str, str] = Field(
            default_factory=dict,
            description="node labels a GPU task's node must have, e.g. "
            "{'nvidia.com/gpu.product': 'NVIDIA-H100-80GB-HBM3'}",
        )
        gpu_tolerations: tuple[Toleration, ...] = Field((), description="taints the GPU tasks tolerate")
        scratch: ScratchVolume = Field(default_factory=ScratchVolume, description="the volume at /data/work")
        shared_memory: str = Field(
            "2Gi", pattern=_BYTES, description="size of /dev/shm (in memory) for data loaders and DDP processes"
        )
        control: TaskSettings = _task_field("control", "the small tasks: change check, search plan and pick")
        ingest: TaskSettings = _task_field("ingest", "the ingest task")
        augment: TaskSettings = _task_field("augment", "the augment task")
        train: TaskSettings = _task_field("train", "the train task (its GPUs: train.gpus)")
        evaluate: TaskSettings = _task_field("evaluate", "the evaluate task")
        register: TaskSettings = _task_field("register", "the register task")

        @model_validator(mode="before")
        @classmethod
        def _task_defaults_under_what_is_set(cls, data: Any) -> Any:
            if not isinstance(data, dict):
                return data
            merged = dict(data)
            for name, defaults in TASK_DEFAULTS.items():
                if isinstance(data.get(name), dict):
                    merged[name] = {**defaults, **data[name]}
            return merged
