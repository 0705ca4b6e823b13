"""The names and settings the pipeline, the launcher, MLflow and the retrain CronJob rely on, in every overlay."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_checks import K8S, OVERLAYS, PIPELINE_NAMESPACES, SEAWEEDFS_SECURITY, SERVICES_NAMESPACE, container, find

from artlora.config import load_config

S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
ENDPOINT_KEYS = {"ARTLORA_S3_ENDPOINT", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL"}
TOKEN_DIR = "/var/run/secrets/kubeflow/pipelines"


def endpoints(documents: list[dict], overlay: str) -> dict[str, str]:
    return find(documents, "ConfigMap", "artlora-endpoints", PIPELINE_NAMESPACES[overlay])["data"]


def service_behind(documents: list[dict], url: str) -> dict:
    """The Service an in-cluster http://NAME.NAMESPACE.svc.cluster.local:PORT URL reaches; it must serve PORT."""
    parts = urlsplit(url)
    name, namespace, *rest = parts.hostname.split(".")
    assert rest == ["svc", "cluster", "local"], url
    service = find(documents, "Service", name, namespace)
    assert parts.port in [port["port"] for port in service["spec"]["ports"]], url
    return service


def mlflow_flags(documents: list[dict]) -> dict[str, str]:
    """The MLflow server's --flag=value arguments (a bare --flag maps to "")."""
    return dict(arg.removeprefix("--").partition("=")[::2] for arg in container(documents, "Deployment/mlflow")["args"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pipeline_namespace_holds_the_secret_and_configmap_the_tasks_mount(manifests, overlay):
    documents = manifests[overlay]
    secret = find(documents, "Secret", "artlora-s3", PIPELINE_NAMESPACES[overlay])
    assert set(secret["data"]) == S3_KEYS
    urls = endpoints(documents, overlay)
    assert set(urls) == ENDPOINT_KEYS
    for url in urls.values():
        service_behind(documents, url)
    assert service_behind(documents, urls["ARTLORA_S3_ENDPOINT"])["metadata"]["name"] == "seaweedfs"
    assert urls["MLFLOW_S3_ENDPOINT_URL"] == urls["ARTLORA_S3_ENDPOINT"]
    assert service_behind(documents, urls["MLFLOW_TRACKING_URI"])["metadata"]["name"] == "mlflow"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_launcher_writes_the_pipeline_root_to_the_same_store_with_the_same_keys(manifests, overlay):
    documents = manifests[overlay]
    launcher = find(documents, "ConfigMap", "kfp-launcher", PIPELINE_NAMESPACES[overlay])["data"]
    assert launcher["defaultPipelineRoot"].startswith("s3://artlora/")
    default = yaml.safe_load(launcher["providers"])["s3"]["default"]
    store = urlsplit(endpoints(documents, overlay)["ARTLORA_S3_ENDPOINT"])
    assert default["endpoint"] == store.netloc
    assert default["disableSSL"] is (store.scheme == "http")
    assert default["forcePathStyle"] is True  # SeaweedFS serves buckets as paths, not as host names
    reference = default["credentials"]["secretRef"]
    assert default["credentials"]["fromEnv"] is False
    secret = find(documents, "Secret", reference["secretName"], PIPELINE_NAMESPACES[overlay])
    assert {reference["accessKeyKey"], reference["secretKeyKey"]} == set(secret["data"]) == S3_KEYS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_store_and_mlflow_share_the_pipelines_keys(manifests, overlay):
    documents = manifests[overlay]
    pipeline_copy = find(documents, "Secret", "artlora-s3", PIPELINE_NAMESPACES[overlay])["data"]
    assert find(documents, "Secret", "artlora-s3", SERVICES_NAMESPACE)["data"] == pipeline_copy
    for workload in ("Deployment/seaweedfs", "Deployment/mlflow"):
        references = {
            variable["name"]: variable["valueFrom"]["secretKeyRef"]
            for variable in container(documents, workload)["env"]
            if "valueFrom" in variable
        }
        for key in S3_KEYS:
            assert references[key] == {"name": "artlora-s3", "key": key}, workload


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_serves_postgres_runs_and_proxies_artifacts_to_the_store(manifests, overlay):
    documents = manifests[overlay]
    server = container(documents, "Deployment/mlflow")
    assert server["command"] == ["mlflow", "server"]
    flags = mlflow_flags(documents)
    assert "serve-artifacts" in flags
    assert flags["artifacts-destination"].startswith("s3://artlora/")
    backend = urlsplit(flags["backend-store-uri"])
    assert backend.scheme == "postgresql" and backend.password is None  # the password comes from PGPASSWORD
    service_behind(documents, f"http://{backend.hostname}:{backend.port}")
    tracking = urlsplit(endpoints(documents, overlay)["MLFLOW_TRACKING_URI"])
    assert tracking.netloc in flags["allowed-hosts"].split(","), "MLflow would refuse the pipeline's Host header"
    variables = {variable["name"]: variable for variable in server["env"]}
    assert variables["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "artlora-postgres",
        "key": "POSTGRES_PASSWORD",
    }
    assert variables["MLFLOW_S3_ENDPOINT_URL"]["value"] == endpoints(documents, overlay)["ARTLORA_S3_ENDPOINT"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_and_mlflow_agree_on_the_database(manifests, overlay):
    documents = manifests[overlay]
    database = container(documents, "StatefulSet/postgres")
    variables = {variable["name"]: variable.get("value") for variable in database["env"]}
    backend = urlsplit(mlflow_flags(documents)["backend-store-uri"])
    assert backend.username == variables["POSTGRES_USER"]
    assert backend.path == f"/{variables['POSTGRES_DB']}"
    assert set(find(documents, "Secret", "artlora-postgres", SERVICES_NAMESPACE)["data"]) == {"POSTGRES_PASSWORD"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cronjob_checks_once_at_a_time_as_a_kfp_only_identity(manifests, overlay):
    documents = manifests[overlay]
    namespace = PIPELINE_NAMESPACES[overlay]
    cronjob = find(documents, "CronJob", "artlora-retrain", namespace)["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert cronjob["successfulJobsHistoryLimit"] >= 1 and cronjob["failedJobsHistoryLimit"] >= 1
    pod = cronjob["jobTemplate"]["spec"]["template"]["spec"]
    retrain = container(documents, "CronJob/artlora-retrain")
    mounts = {mount["mountPath"]: mount["name"] for mount in retrain["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts["/etc/artlora"]]["configMap"]["name"] == "artlora-pipeline-config"
    assert "config.yaml" in find(documents, "ConfigMap", "artlora-pipeline-config", namespace)["data"]
    (token,) = volumes[mounts[TOKEN_DIR]]["projected"]["sources"]
    assert token["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert token["serviceAccountToken"]["path"] == "token"
    assert {source[kind]["name"] for source in retrain["envFrom"] for kind in source} == {
        "artlora-endpoints",
        "artlora-s3",
    }
    assert pod["serviceAccountName"] == "artlora-retrain"
    variables = {variable["name"]: variable for variable in retrain["env"]}
    # Multi-user KFP: the runs go to the CronJob's own (profile) namespace.
    assert variables["ARTLORA_KFP_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    rules = find(documents, "Role", "artlora-retrain", namespace)["rules"]
    assert {group for rule in rules for group in rule["apiGroups"]} == {"pipelines.kubeflow.org"}
    assert {resource for rule in rules for resource in rule["resources"]} == {"experiments", "runs"}
    assert {verb for rule in rules for verb in rule["verbs"]} <= {"get", "list", "create"}


@pytest.mark.parametrize(("status", "job_status"), [(0, 0), (3, 0), (2, 2)])
def test_the_cronjob_counts_unchanged_data_as_success(manifests, tmp_path, status, job_status):
    """The CronJob's own shell script, run with a stand-in `artlora` that exits as the real one would."""
    retrain = container(manifests["kind"], "CronJob/artlora-retrain")
    assert retrain["command"] == ["/bin/sh", "-c"]
    fake = tmp_path / "artlora"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/args"\nexit {status}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    env |= {variable["name"]: variable["value"] for variable in retrain["env"] if "value" in variable}
    result = subprocess.run(["/bin/sh", "-c", *retrain["args"]], env=env, capture_output=True, text=True)
    assert result.returncode == job_status, result.stdout + result.stderr
    assert (tmp_path / "args").read_text().split() == [
        "retrain-if-changed",
        "--config",
        "/etc/artlora/config.yaml",
        "--host",
        "http://ml-pipeline.kubeflow.svc.cluster.local:8888",
        "--token-file",
        f"{TOKEN_DIR}/token",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_pipeline_config_is_a_valid_config(manifests, overlay, tmp_path):
    data = find(manifests[overlay], "ConfigMap", "artlora-pipeline-config", PIPELINE_NAMESPACES[overlay])["data"]
    (tmp_path / "config.yaml").write_text(data["config.yaml"])
    config = load_config(tmp_path / "config.yaml")
    assert config.storage_root == "s3://artlora"  # the bucket the store, the launcher and MLflow use


def test_the_kind_demo_seeds_what_its_config_reads(manifests):
    config = yaml.safe_load((K8S / "overlays" / "kind" / "config.yaml").read_text())
    seed = container(manifests["kind"], "Job/artlora-demo-seed")["args"][0].split()
    assert seed[seed.index("sample-data") + 2] == config["ingest"]["source"]
    assert seed[seed.index("tiny-model") + 2] == config["base_model"]


def test_the_built_secrets_carry_the_example_values(manifests, k8s_tree):
    """No value reaches a Secret but through the env files (here made from the examples) and the folder that
    `artlora services seaweedfs-secret` wrote."""
    examples = {}
    for example in (K8S / "secrets").glob("*.env.example"):
        for line in example.read_text().splitlines():
            if line and not line.startswith("#"):
                key, value = line.split("=", 1)
                examples[key] = value
    for overlay, documents in manifests.items():
        for secret in (doc for doc in documents if doc["kind"] == "Secret"):
            assert "stringData" not in secret
            written = k8s_tree / "overlays" / overlay / SEAWEEDFS_SECURITY
            for key, value in secret["data"].items():
                if secret["metadata"]["name"] == "artlora-seaweedfs-security":
                    assert base64.b64decode(value) == (written / key).read_bytes(), (overlay, key)
                else:
                    assert base64.b64decode(value).decode() == examples[key], (secret["metadata"], key)
