"""The k8s/ overlays, built once per session for every deploy check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_checks import K8S, OVERLAYS, SEAWEEDFS_SECURITY, run, tool


@pytest.fixture(scope="session")
def k8s_tree(tmp_path_factory) -> Path:
    """A copy of k8s/ with each overlay's env files made from the examples, and its SeaweedFS security written by
    `artlora services seaweedfs-secret`, as the README tells a user to do.

    Any real env file or security folder of a developer's is left out of the copy."""
    root = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("*.env", SEAWEEDFS_SECURITY))
    for overlay in OVERLAYS:
        for example in (root / "secrets").glob("*.env.example"):
            shutil.copy(example, root / "overlays" / overlay / example.name.removesuffix(".example"))
        security = root / "overlays" / overlay / SEAWEEDFS_SECURITY
        command = [sys.executable, "-m", "artlora.cli", "services", "seaweedfs-secret", str(security)]
        made = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
    return root


@pytest.fixture(scope="session")
def built(k8s_tree) -> dict[str, Path]:
    """Each overlay as `kubectl kustomize` builds it (what `kubectl apply -k` sends), in a folder of its own."""
    out = k8s_tree.parent / "built"
    out.mkdir()
    files = {}
    for overlay in OVERLAYS:
        result = run(tool("kubectl"), "kustomize", str(k8s_tree / "overlays" / overlay))
        assert result.returncode == 0, f"kubectl kustomize overlays/{overlay}:\n{result.stderr}"
        files[overlay] = out / f"{overlay}.yaml"
        files[overlay].write_text(result.stdout)
    return files


@pytest.fixture(scope="session")
def manifests(built) -> dict[str, list[dict]]:
    return {overlay: list(yaml.safe_load_all(path.read_text())) for overlay, path in built.items()}
