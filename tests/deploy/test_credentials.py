"""No committed manifest, script or example file holds a real-looking credential; the examples hold placeholders."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
from deploy_checks import K8S, REPO, run

PLACEHOLDER = "replace-with-"
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:([^/\s@]+)@")
# key: value or KEY=value where the key names a secret (password, secret, token, api/access/private key).
SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b[\w.-]*(?:password|passwd|secret|token|api_?key|access_?key|private_?key)[\w.-]*\s*[:=]\s*[\"']?([^\s\"'#,]+)"
)


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_generated(value: str) -> bool:
    """A long, mixed, high-entropy string: what a generated key or password looks like, unlike a name or a
    placeholder (`AWS_SECRET_ACCESS_KEY`, `artlora-s3`, `replace-with-...`, `$(VAR)`, a path)."""
    return (
        not value.startswith((PLACEHOLDER, "$", "/", "%"))
        and len(value) >= 16
        and re.search(r"\d", value) is not None
        and re.search(r"[A-Za-z]", value) is not None
        and entropy(value) >= 3.5
    )


def credentials_in(text: str) -> list[str]:
    found = AWS_KEY_ID.findall(text) + PRIVATE_KEY.findall(text)
    found += [value for value in URL_PASSWORD.findall(text) if not value.startswith("$")]
    found += [value for value in SECRET_ASSIGNMENT.findall(text) if looks_generated(value)]
    return found


@pytest.mark.parametrize(
    "text",
    [
        "AWS_ACCESS_KEY_ID=AKIA" + "QYLPMN5HHHFPZAM2",
        "AWS_SECRET_ACCESS_KEY=q8Vz03mNbT7yQw5eRrXk29sLq8Vz03mNbT7yQw5e",
        'password: "Xk29sLq8Vz03mNbT"',
        "POSTGRES_PASSWORD=7f3c9a1e5b2d4f6a8c0e1b3d5f7a9c2e",
        "--backend-store-uri=postgresql://mlflow:s3cret@postgres:5432/mlflow",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_the_detector_finds_real_looking_credentials(text):
    assert credentials_in(text)


@pytest.mark.parametrize(
    "text",
    [
        "AWS_SECRET_ACCESS_KEY=replace-with-a-long-random-secret",
        "secretKeyKey: AWS_SECRET_ACCESS_KEY",
        "--backend-store-uri=postgresql://mlflow@postgres.artlora.svc.cluster.local:5432/mlflow",
        "POSTGRES_PASSWORD_FILE: /etc/artlora/postgres/POSTGRES_PASSWORD",
        "printf 'AWS_SECRET_ACCESS_KEY=%s\\n' \"$(random_hex 20)\"",
    ],
)
def test_the_detector_passes_names_and_placeholders(text):
    assert credentials_in(text) == []


def committed(*paths: str) -> list[str]:
    listed = run("git", "ls-files", *paths)
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()


def test_no_committed_deploy_file_holds_a_real_looking_credential():
    files = committed("k8s", "docker", ".ci")
    assert any(name.endswith(".env.example") for name in files)
    found = {name: credentials_in((REPO / name).read_text()) for name in files}
    assert {name: values for name, values in found.items() if values} == {}


def test_no_real_env_file_is_committed():
    assert [name for name in committed("k8s") if name.endswith(".env")] == []
    assert ".env" in run("git", "check-ignore", "-v", "k8s/overlays/kind/s3.env").stdout


def test_the_example_env_files_hold_placeholders_only():
    examples = sorted((K8S / "secrets").glob("*.env.example"))
    assert [path.name for path in examples] == ["mlflow.env.example", "postgres.env.example", "s3.env.example"]
    for path in examples:
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                key, value = line.split("=", 1)
                assert value.startswith(PLACEHOLDER), (path.name, key)
