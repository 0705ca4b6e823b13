"""The built overlays: valid for the pinned Kubernetes version, locked down, on the image the package names."""

from __future__ import annotations

import re

import pytest
import yaml
from deploy_checks import (
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    PIPELINE_NAMESPACES,
    SERVICES_NAMESPACE,
    find,
    pod_specs,
    run,
    tool,
)

from artlora.components.image import BASE_IMAGE

WORKLOADS = {
    "Deployment/seaweedfs",
    "Deployment/mlflow",
    "StatefulSet/postgres",
    "CronJob/artlora-retrain",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_the_whole_stack(manifests, overlay):
    workloads = {name for name, _ in pod_specs(manifests[overlay])}
    assert workloads >= WORKLOADS
    kinds = {doc["kind"] for doc in manifests[overlay]}
    assert {"Namespace", "PersistentVolumeClaim", "Service", "Secret", "ConfigMap", "NetworkPolicy", "Role"} <= kinds


def test_manifests_pass_strict_schema_validation(built):
    result = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, *map(str, built.values()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_strict_validation_rejects_an_unknown_field(tmp_path):
    """The check above can fail: a misspelt field is an error, not ignored."""
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dta": {"k": "v"}})
    )
    result = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(manifest))
    assert result.returncode != 0
    assert "dta" in result.stdout + result.stderr


def test_validation_version_is_the_kind_nodes():
    node = yaml.safe_load((K8S / "kind" / "cluster.yaml").read_text())["nodes"][0]["image"]
    major_minor = re.fullmatch(r"kindest/node:v(\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}", node).group(1)
    assert KUBERNETES_VERSION.startswith(f"{major_minor}.")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down_and_sized(manifests, overlay):
    for name, spec in pod_specs(manifests[overlay]):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, where
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_artlora_runs_the_image_the_package_version_names(manifests, overlay):
    images = {container["image"] for _, spec in pod_specs(manifests[overlay]) for container in spec["containers"]}
    repository = BASE_IMAGE.rsplit(":", 1)[0]
    assert {image for image in images if image.startswith(f"{repository}:") or image == repository} == {BASE_IMAGE}
    for image in images - {BASE_IMAGE}:
        assert re.search(r":\d[\w.-]*$", image), f"{image}: pin a version tag"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_are_in_artlora_and_the_pipeline_side_in_the_overlays_namespace(manifests, overlay):
    documents = manifests[overlay]
    pipeline_namespace = PIPELINE_NAMESPACES[overlay]
    for kind, name in [
        ("ConfigMap", "kfp-launcher"),
        ("ConfigMap", "artlora-endpoints"),
        ("ConfigMap", "artlora-pipeline-config"),
        ("Secret", "artlora-s3"),
        ("CronJob", "artlora-retrain"),
        ("ServiceAccount", "artlora-retrain"),
        ("Role", "artlora-retrain"),
    ]:
        find(documents, kind, name, pipeline_namespace)
    binding = find(documents, "RoleBinding", "artlora-retrain", pipeline_namespace)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "artlora-retrain", "namespace": pipeline_namespace}
    ]
    for kind, name in [("Deployment", "seaweedfs"), ("Deployment", "mlflow"), ("StatefulSet", "postgres")]:
        find(documents, kind, name, SERVICES_NAMESPACE)
    # The services read the store's keys from a copy of the Secret in their own namespace.
    find(documents, "Secret", "artlora-s3", SERVICES_NAMESPACE)
    find(documents, "Secret", "artlora-postgres", SERVICES_NAMESPACE)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_the_pipeline_namespace_and_mlflow(manifests, overlay):
    documents = manifests[overlay]
    deny = find(documents, "NetworkPolicy", "default-deny-ingress", SERVICES_NAMESPACE)["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    pipeline_namespace = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": PIPELINE_NAMESPACES[overlay]}}
    }
    mlflow_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}
    expected = {
        "seaweedfs": ([pipeline_namespace, mlflow_pods], 8333),
        "mlflow": ([pipeline_namespace], 5000),
        "postgres": ([mlflow_pods], 5432),
    }
    for name, (sources, port) in expected.items():
        policy = find(documents, "NetworkPolicy", name, SERVICES_NAMESPACE)["spec"]
        assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
        assert policy["ingress"] == [{"from": sources, "ports": [{"port": port}]}], name


def test_the_artlora_namespace_enforces_the_restricted_pod_security_standard(manifests):
    for documents in manifests.values():
        labels = find(documents, "Namespace", SERVICES_NAMESPACE)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
