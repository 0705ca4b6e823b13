"""The compiled pipeline's Kubernetes platform spec names only Secrets and ConfigMaps the manifests create.

kfp-kubernetes writes the spec as the compiled YAML's second document: platforms.kubernetes.deploymentSpec.executors,
each executor with secretAsEnv / secretAsVolume / configMapAsEnv / configMapAsVolume entries."""

from __future__ import annotations

import pytest
import yaml
from deploy_checks import OVERLAYS, PIPELINE_NAMESPACES, REPO, find

COMPILED = REPO / "pipelines" / "style_lora.yaml"
MOUNTS = {
    "secretAsEnv": "Secret",
    "secretAsVolume": "Secret",
    "configMapAsEnv": "ConfigMap",
    "configMapAsVolume": "ConfigMap",
}
# The contract: every task gets these keys as environment variables of the same names.
EVERY_TASK = {
    ("Secret", "artlora-s3"): {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    ("Secret", "artlora-mlflow"): {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"},
    ("ConfigMap", "artlora-endpoints"): {"ARTLORA_S3_ENDPOINT", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL"},
}


def executors() -> dict[str, dict]:
    """Executor label -> its Kubernetes settings; empty when the pipeline has no platform spec."""
    documents = list(yaml.safe_load_all(COMPILED.read_text()))
    platform = documents[1] if len(documents) > 1 else {}
    return platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def references(settings: dict) -> list[tuple[str, str, set[str]]]:
    """(kind, name, keys read) of every Secret and ConfigMap an executor mounts (no keys: the whole object)."""
    found = []
    for field, kind in MOUNTS.items():
        for mount in settings.get(field, []):
            name = mount.get("secretName") or mount.get("configMapName")
            parameter = mount.get("secretNameParameter") or mount.get("configMapNameParameter") or {}
            constant = parameter.get("runtimeValue", {}).get("constant")
            assert name or constant, f"{field} names its object by a pipeline parameter, which no check can follow"
            keys = {pair.get("secretKey") or pair.get("configMapKey") for pair in mount.get("keyToEnv", [])}
            found.append((kind, name or constant, keys))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_and_configmap_the_pipeline_mounts_is_created(manifests, overlay):
    mounted = [reference for settings in executors().values() for reference in references(settings)]
    assert mounted, "the compiled pipeline mounts no Secret or ConfigMap"
    for kind, name, keys in mounted:
        created = find(manifests[overlay], kind, name, PIPELINE_NAMESPACES[overlay])
        assert keys <= set(created["data"]), f"{kind} {name} lacks {keys - set(created['data'])}"


def test_every_task_gets_the_store_keys_and_the_endpoints():
    tasks = executors()
    assert tasks
    for label, settings in tasks.items():
        read = {}
        for kind, name, keys in references(settings):
            read.setdefault((kind, name), set()).update(keys)
        for obj, keys in EVERY_TASK.items():
            assert keys <= read.get(obj, set()), f"{label} does not get {obj[0]} {obj[1]}: {sorted(keys)}"
        for field in ("secretAsEnv", "configMapAsEnv"):
            for mount in settings.get(field, []):
                for pair in mount.get("keyToEnv", []):
                    assert pair["envVar"] == (pair.get("secretKey") or pair.get("configMapKey")), label
