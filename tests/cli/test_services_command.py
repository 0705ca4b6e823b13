"""`artlora services up | down | status` in a subprocess, as a user runs it: real SeaweedFS and MLflow processes
that outlive the command, keep their data across a restart, and are reported truthfully when one dies.

The tests of this module share one pair of services (a work folder and free ports of their own), in order."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from service_environment import CLIENT_VARIABLES, free_ports, kill_local_services, without_services

from artlora import cli
from artlora.io import local_services, services, settings, storage

pytestmark = pytest.mark.slow  # starts, stops and kills the local services


def artlora(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "artlora.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def exports(stdout: str) -> dict[str, str]:
    """The variables of `export NAME=VALUE` lines, as a shell reads them."""
    return dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in stdout.splitlines())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment of a user with no S3 endpoint or tracking server of their own; the services killed at the
    end. Their data goes with the temporary folder, so nothing needs flushing: a `down` would wait out SeaweedFS's
    10 s graceful stop (test_objects_and_runs_survive_down_and_up runs a real `down`)."""
    environment = {**without_services(os.environ), "ARTLORA_WORK_DIR": str(tmp_path_factory.mktemp("services-work"))}
    yield environment
    kill_services(environment)


def kill_services(environment: dict[str, str]) -> None:
    """End at once whatever runs of the services of `environment`'s work folder (their data is thrown away)."""
    kill_local_services(environment[settings.WORK_DIR])


def folder(env) -> Path:
    return Path(env["ARTLORA_WORK_DIR"]) / "services"


def test_up_starts_both_and_prints_what_other_tools_need(env):
    result = artlora(env, "services", "up")

    assert result.returncode == 0, result.stderr
    variables = exports(result.stdout)
    assert set(variables) == CLIENT_VARIABLES
    mlflow_url = f"http://127.0.0.1:{env[local_services.MLFLOW_PORT]}"
    assert variables["MLFLOW_TRACKING_URI"] == mlflow_url and f"MLflow UI: {mlflow_url}" in result.stderr
    assert variables["ARTLORA_S3_ENDPOINT"] == variables["MLFLOW_S3_ENDPOINT_URL"]
    assert variables["ARTLORA_S3_SECRET_KEY"] == variables["AWS_SECRET_ACCESS_KEY"]
    # With the exported login, the REST API lists experiments and the UI's page and its script are served;
    # without it, nothing but the health check.
    login = (variables["MLFLOW_TRACKING_USERNAME"], variables["MLFLOW_TRACKING_PASSWORD"])
    search = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=10"
    listed = requests.get(search, auth=login, timeout=30)
    assert listed.status_code == 200 and [e["name"] for e in listed.json()["experiments"]] == ["Default"]
    assert requests.get(search, timeout=30).status_code == 401
    assert requests.get(search, auth=("admin", "guessed"), timeout=30).status_code == 401
    assert requests.get(f"{mlflow_url}/", timeout=30).status_code == 401
    page = requests.get(f"{mlflow_url}/", auth=login, timeout=30)
    assert page.status_code == 200 and "<title>MLflow</title>" in page.text
    script = re.search(r'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', page.text).group(1)
    assert requests.get(f"{mlflow_url}/{script}", auth=login, timeout=30).status_code == 200
    # Only the user may read what the services keep, the keys above all.
    assert stat.S_IMODE(folder(env).stat().st_mode) == 0o700
    for name in ("credentials.env", "seaweedfs.json", "mlflow.json", "seaweedfs.log", "mlflow.log", "mlflow.db"):
        assert stat.S_IMODE((folder(env) / name).stat().st_mode) == 0o600, name
    for name in ("auth.ini", "auth.db", "flask-secret-key"):
        assert stat.S_IMODE((folder(env) / "mlflow-auth" / name).stat().st_mode) == 0o600, name
    credentials = (folder(env) / "credentials.env").read_text()
    assert variables["ARTLORA_S3_SECRET_KEY"] in credentials and variables["MLFLOW_TRACKING_PASSWORD"] in credentials


def test_up_again_leaves_them_as_they_are(env):
    pids = {name: json.loads((folder(env) / f"{name}.json").read_text())["pid"] for name in ("seaweedfs", "mlflow")}

    result = artlora(env, "services", "up")

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("(already running)") == 2
    assert all(f"pid {pid} " in result.stderr for pid in pids.values())


def logged_in(variables: dict[str, str], monkeypatch) -> MlflowClient:
    """An MLflow client of this process on the exported server, with the exported login."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, variables[key])
    return MlflowClient(variables["MLFLOW_TRACKING_URI"])


def test_other_commands_find_the_running_services_without_exports(env, monkeypatch):
    variables = exports(artlora(env, "services", "up").stdout)
    client = logged_in(variables, monkeypatch)
    client.create_registered_model("found-style")
    client.create_model_version("found-style", "s3://artlora/runs/x/adapter")

    listed = artlora(env, "models", "list", "--json")  # the user's shell has none of the exports

    assert listed.returncode == 0, listed.stderr
    assert [row["model"] for row in json.loads(listed.stdout)] == ["found-style"]


def test_a_read_only_user_reads_the_registry_and_changes_nothing(env, monkeypatch):
    variables = exports(artlora(env, "services", "up").stdout)
    added = artlora(env, "services", "add-user", "viewer", "--read-only")
    assert added.returncode == 0, added.stderr
    viewer = exports(added.stdout)
    assert viewer["MLFLOW_TRACKING_USERNAME"] == "viewer" and viewer["MLFLOW_TRACKING_PASSWORD"]

    listed = artlora({**env, **viewer}, "models", "list", "--json")  # registry lookups need no write rights
    assert listed.returncode == 0, listed.stderr
    assert "found-style" in listed.stdout
    client = logged_in({**variables, **viewer}, monkeypatch)
    with pytest.raises(MlflowException, match="Permission denied"):
        client.set_registered_model_alias("found-style", "champion", "1")
    assert client.get_registered_model("found-style").aliases == {}
    again = artlora(env, "services", "add-user", "viewer")
    assert again.returncode == 2 and again.stderr == (
        "artlora services add-user: error: MLflow refused to add the user 'viewer': RESOURCE_ALREADY_EXISTS: User "
        "(username=viewer) already exists.\n"
    )


def test_objects_and_runs_survive_down_and_up(env, monkeypatch):
    variables = exports(artlora(env, "services", "up").stdout)
    s3 = settings.S3Settings(
        variables["ARTLORA_S3_ENDPOINT"].removeprefix("http://"),
        False,
        variables["ARTLORA_S3_ACCESS_KEY"],
        variables["ARTLORA_S3_SECRET_KEY"],
        "us-east-1",
    )
    storage.Storage(storage.client_for(s3)).put_bytes("s3://artlora/kept/a.txt", b"kept")
    client = logged_in(variables, monkeypatch)
    run_id = client.create_run(client.create_experiment("survivor")).info.run_id
    client.log_metric(run_id, "loss", 0.5)
    client.log_text(run_id, "<p>report</p>", "eval/report.html")  # through the server into SeaweedFS

    down = artlora(env, "services", "down")
    assert down.returncode == 0 and "stopped mlflow and seaweedfs" in down.stdout
    status = artlora(env, "services", "status")
    assert status.returncode == 1 and status.stdout.split() == ["seaweedfs", "stopped", "mlflow", "stopped"]
    assert not services.answers(f"{variables['MLFLOW_TRACKING_URI']}/health")

    assert exports(artlora(env, "services", "up").stdout) == variables  # the same ports and keys
    assert storage.Storage(storage.client_for(s3)).get_bytes("s3://artlora/kept/a.txt") == b"kept"
    assert client.get_run(run_id).data.metrics == {"loss": 0.5}
    report = Path(client.download_artifacts(run_id, "eval/report.html", str(folder(env).parent)))
    assert report.read_text() == "<p>report</p>"


def test_status_notices_a_dead_process_and_up_starts_it_again(env):
    artlora(env, "services", "up")
    pid = json.loads((folder(env) / "mlflow.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)

    status = artlora(env, "services", "status")

    assert status.returncode == 1
    assert re.search(r"^seaweedfs +running ", status.stdout, re.MULTILINE)
    assert re.search(rf"^mlflow +dead \(stale pid file\) .* pid {pid} is gone, its processes", status.stdout, re.M)
    restarted = artlora(env, "services", "up")  # it also ends the dead server's orphaned worker, which holds the port
    assert restarted.returncode == 0, restarted.stderr
    assert re.search(r"^mlflow .*\(started now\)", restarted.stderr, re.MULTILINE)
    assert re.search(r"^seaweedfs .*\(already running\)", restarted.stderr, re.MULTILINE)
    assert artlora(env, "services", "status").returncode == 0


def test_a_taken_port_is_named(tmp_path):
    environment = {**without_services(os.environ), "ARTLORA_WORK_DIR": str(tmp_path)}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", int(environment[local_services.S3_PORT])))
        listener.listen()
        result = artlora(environment, "services", "up")
    port = environment[local_services.S3_PORT]
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"artlora services up: error: SeaweedFS (S3 port {port}) needs port {port} on 127.0.0.1, which another "
        "process holds (stop it, or choose other ports"
    )


def test_a_taken_mlflow_port_is_named_and_the_store_started_meanwhile_is_kept(tmp_path):
    """SeaweedFS is spawned before MLflow's port is checked: it is still waited for and recorded, not left running
    unknown to `status` and `down`."""
    environment = {**without_services(os.environ), "ARTLORA_WORK_DIR": str(tmp_path)}
    port = environment[local_services.MLFLOW_PORT]
    try:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", int(port)))
            listener.listen()
            result = artlora(environment, "services", "up")
        assert result.returncode == 2
        assert result.stderr.startswith(f"artlora services up: error: MLflow needs port {port} on 127.0.0.1")
        status = artlora(environment, "services", "status")
        assert re.search(r"^seaweedfs +running ", status.stdout, re.MULTILINE), status.stdout
        assert re.search(r"^mlflow +stopped", status.stdout, re.MULTILINE), status.stdout
    finally:
        kill_services(environment)


def test_without_weed_up_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(services, "INSTALLED_SCRIPTS", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    for key, value in free_ports().items():
        monkeypatch.setenv(key, value)

    assert cli.main(["services", "up"]) == 2
    assert "artlora services up: error: SeaweedFS's `weed` is not installed" in capsys.readouterr().err
