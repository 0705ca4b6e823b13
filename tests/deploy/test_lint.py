"""The linters: checkov on what is applied and on the Dockerfile, hadolint, shellcheck and yamllint."""

from __future__ import annotations

import json
import shutil

import pytest
from deploy_checks import K8S, REPO, run, tool

DOCKERFILE = REPO / "docker" / "Dockerfile"
SHELL_SCRIPTS = sorted((K8S / "kind").glob("*.sh"))


def checkov(folder, frameworks: list[str]) -> dict[str, dict]:
    """One checkov run over a folder: its report per framework. --skip-download: no calls to checkov's cloud."""
    result = run(tool("checkov"), "-d", str(folder), "--framework", *frameworks, "--skip-download", "-o", "json")
    assert result.returncode in (0, 1), result.stderr  # 1: checks failed, which the tests below report
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    # A framework that found nothing to report on is a bare summary, without its name.
    return {report["check_type"]: report for report in reports if "check_type" in report}


def failures(report: dict) -> list[str]:
    return [
        f"{check['check_id']} {check['check_name']}: {check['resource']} ({check['file_path']})"
        for check in report["results"]["failed_checks"]
    ]


@pytest.fixture(scope="module")
def checkov_reports(built, tmp_path_factory) -> dict[str, dict]:
    """The built overlays (what `kubectl apply -k` sends) and the Dockerfile, in one checkov run."""
    folder = tmp_path_factory.mktemp("checkov")
    for path in [*built.values(), DOCKERFILE]:
        shutil.copy(path, folder)
    return checkov(folder, ["kubernetes", "dockerfile"])


@pytest.mark.parametrize(("framework", "resources"), [("kubernetes", 40), ("dockerfile", 1)])
def test_checkov_fails_no_check(checkov_reports, framework, resources):
    report = checkov_reports[framework]
    assert report["summary"]["resource_count"] >= resources  # it read the files
    assert report["summary"]["parsing_errors"] == 0
    assert failures(report) == []


def test_every_checkov_skip_gives_its_reason(checkov_reports):
    skipped = [check for report in checkov_reports.values() for check in report["results"]["skipped_checks"]]
    assert skipped, "the manifests' skip annotations were not read"
    for check in skipped:
        assert len(check["check_result"].get("suppress_comment") or "") > 20, (check["check_id"], check["resource"])


def test_checkov_finds_no_secret_in_the_committed_deploy_files(tmp_path):
    """checkov's secret scanners over the committed k8s/ and docker/ files, beside one planted AWS key that they
    must find (so a silent scan cannot pass)."""
    listed = run("git", "ls-files", "k8s", "docker")
    assert listed.returncode == 0, listed.stderr
    for name in listed.stdout.split():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "planted.yaml").write_text("aws_access_key_id: AKIA" + "QYLPMN5HHHFPZAM2\n")
    found = failures(checkov(tmp_path, ["secrets"])["secrets"])
    assert found and all(finding.endswith("(/planted.yaml)") for finding in found), found


def test_hadolint_passes_the_dockerfile():
    result = run(tool("hadolint"), str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes_the_kind_scripts():
    assert [path.name for path in SHELL_SCRIPTS] == ["down.sh", "up.sh"]
    result = run(tool("shellcheck"), *map(str, SHELL_SCRIPTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_passes_k8s():
    result = run(tool("yamllint"), "--strict", "-c", str(K8S / ".yamllint.yaml"), str(K8S))
    assert result.returncode == 0, result.stdout + result.stderr
