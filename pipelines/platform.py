"""How a task's pod is set up on Kubernetes, from the config's `cluster:` section (kfp.local ignores all of it).

Every task gets the object store's keys from the Secret and the endpoints from the ConfigMap as environment
variables of the same names (the values never pass through the pipeline), a scratch volume at /data/work, a
/dev/shm in memory, its CPU and memory, a deadline and retries with exponential back-off. GPU tasks also get
their GPUs, node selector and tolerations. Caching is off: the stages cache by content themselves, while KFP's
cache keys on the task's inputs only and would miss a changed image under the same source prefix.
"""

from __future__ import annotations

from kfp import dsl, kubernetes

from artlora.config import ClusterConfig, TaskSettings

S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_LOGIN_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")  # MLflow's basic-auth app
ENDPOINT_KEYS = ("ARTLORA_S3_ENDPOINT", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL")
SCRATCH = "/data/work"  # the image's ARTLORA_WORK_DIR
# Hub and torchvision downloads go to the scratch volume too, not to the container's own layer.
DOWNLOADS = {"HF_HOME": f"{SCRATCH}/huggingface", "TORCH_HOME": f"{SCRATCH}/torch"}


def _volumes(task: dsl.PipelineTask, cluster: ClusterConfig) -> None:
    scratch = cluster.scratch
    if scratch.kind == "pvc":
        kubernetes.add_ephemeral_volume(
            task,
            volume_name="scratch",
            mount_path=SCRATCH,
            access_modes=["ReadWriteOnce"],
            size=scratch.size,
            storage_class_name=scratch.storage_class,
        )
    else:
        kubernetes.empty_dir_mount(task, volume_name="scratch", mount_path=SCRATCH, size_limit=scratch.size)
    kubernetes.empty_dir_mount(
        task, volume_name="shm", mount_path="/dev/shm", medium="Memory", size_limit=cluster.shared_memory
    )


def _gpus(task: dsl.PipelineTask, cluster: ClusterConfig, gpus: int) -> None:
    task.set_accelerator_type(cluster.gpu_resource).set_accelerator_limit(gpus)
    for label, value in cluster.gpu_node_selector.items():
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for toleration in cluster.gpu_tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
        )


def place(task: dsl.PipelineTask, cluster: ClusterConfig, settings: TaskSettings, gpus: int = 0) -> dsl.PipelineTask:
    """Set up `task`'s pod as `cluster` says, with `settings` for its resources and `gpus` GPUs."""
    task.set_caching_options(False)
    task.set_cpu_request(settings.cpu_request).set_cpu_limit(settings.cpu_limit)
    task.set_memory_request(settings.memory_request).set_memory_limit(settings.memory_limit)
    # A retried train task resumes from its latest checkpoint; the other stages reuse what they finished.
    task.set_retry(
        num_retries=settings.retries,
        backoff_duration=f"{settings.retry_backoff_s}s",
        backoff_factor=2.0,
        backoff_max_duration="3600s",
    )
    kubernetes.set_timeout(task, settings.timeout_s)
    kubernetes.use_secret_as_env(task, secret_name=cluster.s3_secret, secret_key_to_env={k: k for k in S3_KEYS})
    login = {key: key for key in MLFLOW_LOGIN_KEYS}
    kubernetes.use_secret_as_env(task, secret_name=cluster.mlflow_secret, secret_key_to_env=login)
    kubernetes.use_config_map_as_env(
        task, config_map_name=cluster.endpoints_config_map, config_map_key_to_env={k: k for k in ENDPOINT_KEYS}
    )
    for name, value in DOWNLOADS.items():
        task.set_env_variable(name, value)
    _volumes(task, cluster)
    if gpus:
        _gpus(task, cluster, gpus)
    return task
