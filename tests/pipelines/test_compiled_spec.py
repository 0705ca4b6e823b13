"""The compiled YAML, read back strictly: a KFP PipelineSpec, then a Kubernetes platform spec that carries the
config's `cluster:` section, the typed parameters with the config's values as defaults, and no credential."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb
from kfp.pipeline_spec import pipeline_spec_pb2
from small_configs import small_config_for

from artlora.config import PipelineConfig, load_config
from artlora.pipelines import build
from artlora.tasks.parameters import KNOBS, knob_values

REPO = Path(__file__).resolve().parents[2]
SECRET_VALUES = ("AKIA-sentinel-access-7f3a", "sentinel-secret-9c1e-do-not-print")
CLUSTER = [
    "cluster.s3_secret=team-s3",
    "cluster.endpoints_config_map=team-endpoints",
    "cluster.gpu_resource=nvidia.com/gpu",
    "cluster.gpu_node_selector={nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}",
    "cluster.gpu_tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}, {key: pool, operator: "
    "Equal, value: training}]",
    "cluster.scratch={kind: pvc, size: 200Gi, storage_class: fast-ssd}",
    "cluster.shared_memory=16Gi",
    "cluster.train.timeout_s=7200",
    "cluster.train.retries=4",
    "cluster.evaluate_gpus=1",
    "train.gpus=4",
    "search.rank=[4, 8]",
    "search.parallel=3",
]
GPU_TASKS = {"exec-train": 4, "exec-evaluate": 1}


def strict(path: Path) -> tuple[pipeline_spec_pb2.PipelineSpec, pipeline_spec_pb2.PipelineDeploymentConfig, dict]:
    """(pipeline spec, its executors, each executor's Kubernetes settings), each parsed into KFP's protobuf
    messages with unknown fields refused (the spec keeps the executors and platform settings as free structs)."""
    spec, platform = yaml.safe_load_all(path.read_text())
    pipeline = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    deployment = pipeline_spec_pb2.PipelineDeploymentConfig()
    json_format.ParseDict(spec["deploymentSpec"], deployment, ignore_unknown_fields=False)
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    settings = {
        name: json_format.ParseDict(value, k8s_pb.KubernetesExecutorConfig(), ignore_unknown_fields=False)
        for name, value in executors.items()
    }
    return pipeline, deployment, settings


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Both pipelines compiled once from a config with every cluster setting, with credentials in the environment.
    (Compiling reads no model and no image: the paths need not exist.)"""
    access, secret = SECRET_VALUES
    keys = {
        "AWS_ACCESS_KEY_ID": access,
        "ARTLORA_S3_ACCESS_KEY": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "ARTLORA_S3_SECRET_KEY": secret,
    }
    folder = tmp_path_factory.mktemp("compiled")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in keys.items():
            patch.setenv(name, value)
        config = small_config_for("s3://artlora-tests/compiled", folder / "model", folder / "raw", *CLUSTER)
        single = build.compile_pipeline(config, folder / "single.yaml")
        search = build.compile_pipeline(config, folder / "search.yaml", search=True)
    return config, single, search


def test_the_committed_pipeline_is_a_strict_kfp_pipeline_spec_with_a_platform_spec():
    pipeline, _, settings = strict(build.COMPILED)
    assert pipeline.pipeline_info.name == "artlora-style-lora"
    assert {"exec-check-changes", "exec-ingest", "exec-augment", "exec-train", "exec-evaluate"} <= set(settings)


@pytest.mark.parametrize("which", ["single", "search"])
def test_every_task_gets_the_secret_the_config_map_and_its_volumes(compiled, which):
    config, *paths = compiled
    _, _, settings = strict(dict(zip(("single", "search"), paths, strict=True))[which])
    for name, executor in settings.items():
        secrets = {secret.secret_name: secret for secret in executor.secret_as_env}
        assert set(secrets) == {"team-s3", "artlora-mlflow"}
        assert {(p.secret_key, p.env_var) for p in secrets["team-s3"].key_to_env} == {
            ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
            ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        }
        # MLflow's login, from a Secret at run time: no credential is in the compiled pipeline.
        assert {(p.secret_key, p.env_var) for p in secrets["artlora-mlflow"].key_to_env} == {
            ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_USERNAME"),
            ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_PASSWORD"),
        }
        (endpoints,) = executor.config_map_as_env
        assert endpoints.config_map_name == "team-endpoints"
        assert {p.config_map_key for p in endpoints.key_to_env} == {
            "ARTLORA_S3_ENDPOINT",
            "MLFLOW_TRACKING_URI",
            "MLFLOW_S3_ENDPOINT_URL",
        }
        (scratch,) = executor.generic_ephemeral_volume
        assert (scratch.mount_path, scratch.size, scratch.storage_class_name) == ("/data/work", "200Gi", "fast-ssd")
        (shm,) = executor.empty_dir_mounts
        assert (shm.mount_path, shm.medium, shm.size_limit) == ("/dev/shm", "Memory", "16Gi")
        assert executor.active_deadline_seconds > 0, name


def test_gpu_tasks_get_their_gpus_node_selector_and_tolerations(compiled):
    config, single, _ = compiled
    _, deployment, settings = strict(single)
    for name, executor in settings.items():
        resources = deployment.executors[name].container.resources
        gpus = GPU_TASKS.get(name, 0)
        assert int(resources.accelerator.resource_count or 0) == gpus, name
        if not gpus:
            assert not executor.HasField("node_selector") and not executor.tolerations, name
            continue
        assert resources.accelerator.resource_type == "nvidia.com/gpu"
        assert dict(executor.node_selector.labels) == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        tolerations = {(t.key, t.operator, t.value, t.effect) for t in executor.tolerations}
        assert tolerations == {("nvidia.com/gpu", "Exists", "", "NoSchedule"), ("pool", "Equal", "training", "")}
    train = deployment.executors["exec-train"].container.resources
    assert (train.resource_cpu_request, train.resource_memory_limit) == ("8", "64Gi")
    assert settings["exec-train"].active_deadline_seconds == 7200


def _tasks(pipeline: pipeline_spec_pb2.PipelineSpec) -> dict[str, pipeline_spec_pb2.PipelineTaskSpec]:
    found = dict(pipeline.root.dag.tasks)
    for component in pipeline.components.values():
        found.update(component.dag.tasks)
    return found


def test_tasks_retry_with_backoff_and_the_search_fans_out_search_parallel_at_once(compiled):
    config, single, search = compiled
    tasks = _tasks(strict(single)[0])
    assert tasks["train"].retry_policy.max_retry_count == 4 and tasks["train"].retry_policy.backoff_factor == 2
    assert tasks["ingest"].retry_policy.max_retry_count == config.cluster.ingest.retries
    pipeline = strict(single)[0]
    leaves = [task for task in tasks.values() if pipeline.components[task.component_ref.name].executor_label]
    assert leaves and not any(task.caching_options.enable_cache for task in leaves)
    loops = [task for task in _tasks(strict(search)[0]).values() if task.HasField("parameter_iterator")]
    assert [loop.iterator_policy.parallelism_limit for loop in loops] == [3]


def test_typed_parameters_default_to_the_config_they_were_compiled_from(compiled):
    config, single, _ = compiled
    pipeline, _, _ = strict(single)
    inputs = pipeline.root.input_definitions.parameters
    assert set(inputs) == {"config_json", *KNOBS}
    types = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE"}
    for name, value in knob_values(config).items():
        assert pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(inputs[name].parameter_type) == types[type(value)]
        assert json_format.MessageToDict(inputs[name].default_value) == value, name
    assert PipelineConfig.model_validate_json(inputs["config_json"].default_value.string_value) == config


def test_no_credential_reaches_the_compiled_yaml(compiled):
    _, single, search = compiled
    for path in (single, search, build.COMPILED):
        text = path.read_text()
        assert not any(value in text for value in SECRET_VALUES), path


def test_the_gpu_overlay_config_compiles_for_its_gpu_pool():
    config = load_config(REPO / "k8s" / "overlays" / "gpu" / "config.yaml")
    assert config.cluster.gpu_node_selector or config.cluster.gpu_tolerations
