"""What the deploy checks share: where things are, the tools, and readers for the built manifests."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("kind", "gpu")
# The checks' tools live in a virtualenv of their own (tests/deploy/tools.in says why), built by `make test`.
TOOLS_BIN = REPO / ".venv-tools" / "bin"
# The Kubernetes version the manifests are validated against: the kind node's (a test checks they agree).
KUBERNETES_VERSION = "1.36.0"
# Where the pipeline's side of the manifests goes in each overlay, and where the services go.
PIPELINE_NAMESPACES = {"kind": "kubeflow", "gpu": "kubeflow-user-example-com"}
SERVICES_NAMESPACE = "artlora"
# Each overlay's folder of SeaweedFS's security.toml and certificates, the input of its secretGenerator.
SEAWEEDFS_SECURITY = "seaweedfs-security"


def tool(name: str) -> str:
    """A tool's path; its absence is an install bug, so it fails the test rather than skipping it."""
    path = TOOLS_BIN / name
    assert path.is_file(), f"{path} is missing: `make test` installs it from tests/deploy/tools.txt"
    return str(path)


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def find(documents: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    """The one object of this kind and name (and namespace, when given)."""
    matches = [
        doc
        for doc in documents
        if doc["kind"] == kind
        and doc["metadata"]["name"] == name
        and namespace in (None, doc["metadata"].get("namespace"))
    ]
    assert len(matches) == 1, f"{len(matches)} {kind}s named {name} in {namespace or 'any namespace'}"
    return matches[0]


def pod_specs(documents: list[dict]) -> list[tuple[str, dict]]:
    """(kind/name, pod spec) of every workload: Deployments, StatefulSets, Jobs and CronJobs."""
    specs = []
    for doc in documents:
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            specs.append((f"{doc['kind']}/{doc['metadata']['name']}", spec["template"]["spec"]))
    return specs


def container(documents: list[dict], workload: str) -> dict:
    """The one container of a workload ("Deployment/mlflow", "CronJob/artlora-retrain", ...)."""
    (spec,) = [spec for name, spec in pod_specs(documents) if name == workload]
    (only,) = spec["containers"]
    return only


def flag(arguments: list[str], name: str) -> str:
    """The value of --name=value (or -name=value) in a command line."""
    (value,) = [arg.split("=", 1)[1] for arg in arguments if arg.lstrip("-").split("=", 1)[0] == name and "=" in arg]
    return value
