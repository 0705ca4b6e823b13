"""submit, schedule, schedules and retrain-if-changed's submitting path, against a stand-in for the KFP v2beta1 API.

No Kubeflow Pipelines API server can run here, so these tests talk to `kfp_standin` (tests/kfp_standin.py): a
local HTTP server that checks every request body against the kfp-server-api package's models and every pipeline
spec as KFP's protobufs. The commands run as users run them, through `artlora.cli.main`, with a real S3 endpoint
and MLflow store behind the change check."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import yaml
from kfp_standin import StandIn, serve

from artlora import cli
from artlora.data import lineage
from artlora.io import model_registry, runs, storage
from artlora.orchestration import cluster
from artlora.tasks import changes
from artlora.tasks.parameters import arguments

pytestmark = pytest.mark.usefixtures("mlflow_db")
TOKEN = "sentinel-kfp-token-6a1f"


@pytest.fixture
def kfp():
    standin = StandIn()
    server, url = serve(standin)
    yield standin, url
    server.shutdown()


@pytest.fixture
def config_file(small_config, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small_config.model_dump(mode="json")))
    return path


def secrets() -> list[str]:
    """The test store's keys, in the environment as a CronJob has them: never sent to KFP, never printed."""
    return [os.environ["ARTLORA_S3_ACCESS_KEY"], os.environ["ARTLORA_S3_SECRET_KEY"]]


def artlora(capsys, *args: str) -> tuple[int, str, str]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_submit_uploads_a_tagged_version_starts_a_run_and_follows_it(
    kfp, config_file, small_config, capsys, monkeypatch
):
    standin, url = kfp
    monkeypatch.setattr(cluster, "POLL_S", 0.01)
    status, out, _ = artlora(capsys, "pipeline", "submit", "--host", url, "--config", str(config_file), "--wait")
    assert status == 0, out
    (run_id,) = standin.runs
    assert f"{url}/#/runs/details/{run_id}" in out and "SUCCEEDED" in out

    (pipeline,) = standin.pipelines.values()
    assert pipeline.display_name == "artlora-style-lora"
    (version,) = standin.versions.values()
    assert re.fullmatch(r"v0\.1\.0-[0-9a-z-]+-[0-9a-f]{8}", version.name)
    assert version.tags == {"artlora-version": "0.1.0", "artlora-revision": cluster.revision()}
    run = standin.runs[run_id]
    assert run.pipeline_version_reference.pipeline_version_id == version.pipeline_version_id
    assert run.runtime_config.parameters == json.loads(json.dumps(arguments(small_config)))
    assert standin.experiments[run.experiment_id].display_name == small_config.experiment

    # The same config again: the version is found, not uploaded twice.
    status, out, _ = artlora(capsys, "pipeline", "submit", "--host", url, "--config", str(config_file))
    assert status == 0 and len(standin.versions) == 1 and len(standin.runs) == 2
    assert not any(secret in standin.bodies() + out for secret in secrets())


def test_schedule_creates_one_recurring_run_at_a_time_without_catch_up(kfp, config_file, capsys):
    standin, url = kfp
    cron = "0 0 3 * * *"
    status, out, _ = artlora(
        capsys, "pipeline", "schedule", "--host", url, "--config", str(config_file), "--cron", cron
    )
    assert status == 0, out
    (schedule,) = standin.recurring.values()
    assert schedule.trigger.cron_schedule.cron == cron
    assert (schedule.no_catchup, schedule.max_concurrency, schedule.mode) == (True, "1", "ENABLE")
    assert schedule.pipeline_version_reference.pipeline_version_id in standin.versions

    status, out, _ = artlora(capsys, "pipeline", "schedules", "--host", url)
    assert status == 0 and schedule.recurring_run_id in out and cron in out
    status, out, _ = artlora(capsys, "pipeline", "schedules", "--host", url, "--delete", schedule.recurring_run_id)
    assert status == 0 and not standin.recurring

    status, _, err = artlora(
        capsys, "pipeline", "schedule", "--host", url, "--config", str(config_file), "--cron", "0 3 * * *"
    )
    assert status == 2 and "6 fields" in err


def test_retrain_submits_inline_when_changed_and_nothing_when_a_version_covers_the_data(
    kfp, config_file, small_config, store, capsys
):
    """The CronJob's command: it needs rights on experiments and runs only, so it uploads nothing."""
    standin, url = kfp
    command = ("retrain-if-changed", "--config", str(config_file), "--host", url)
    status, out, _ = artlora(capsys, *command)
    assert status == 0 and out.startswith("changed:") and "submitted run" in out
    assert {path for _, path in standin.calls()} <= {
        "/apis/v2beta1/healthz",
        "/apis/v2beta1/experiments",
        "/apis/v2beta1/runs",
    }
    (run,) = standin.runs.values()
    assert run.pipeline_spec["platform_spec"]["platforms"]["kubernetes"] and run.pipeline_version_reference is None

    # A registered version trained on this listing and config, whose adapter is in the store, covers it.
    checked = changes.check(small_config)
    adapter = storage.join(small_config.storage_root, "runs", "x", "adapter")
    store.mark_complete(adapter)
    tags = {
        lineage.SOURCE_FINGERPRINT: checked.source_fingerprint,
        lineage.PIPELINE_DIGEST: checked.config_digest,
        lineage.ADAPTER_URI: adapter,
    }
    with runs.stage_run("train", small_config.train) as mlflow_run:
        version = model_registry.create_version(small_config.model_name, adapter, mlflow_run.info.run_id, tags, None)
    model_registry.set_alias(small_config.model_name, "champion", version.version)
    status, out, _ = artlora(capsys, *command)
    assert status == 3 and out.strip() == changes.check(small_config).describe()
    assert f"version {version.version} (champion)" in out and len(standin.runs) == 1
    assert not any(secret in standin.bodies() + out for secret in secrets())


def test_a_token_file_or_the_environment_authenticates_and_is_never_printed(
    kfp, config_file, tmp_path, capsys, caplog, monkeypatch
):
    standin, url = kfp
    standin.token = TOKEN
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    status, out, err = artlora(capsys, "pipeline", "schedules", "--host", url, "--token-file", str(token_file))
    assert status == 0, err
    monkeypatch.setenv("ARTLORA_KFP_TOKEN", TOKEN)
    assert artlora(capsys, "pipeline", "schedules", "--host", url)[0] == 0
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in standin.requests)
    monkeypatch.setenv("ARTLORA_KFP_TOKEN", "wrong")
    status, out, err = artlora(capsys, "-v", "pipeline", "schedules", "--host", url)
    assert status == 2 and "401" in err and "--token-file" in err
    assert TOKEN not in out + err + caplog.text


@pytest.mark.parametrize(
    ("refusal", "says"),
    [(401, "--token-file FILE"), (403, "grant it access to namespace"), (404, "KFP API or UI address")],
)
def test_refusals_name_the_host_and_the_fix_at_once(kfp, capsys, refusal, says):
    standin, url = kfp
    standin.refuse_with = refusal
    started = time.monotonic()
    status, _, err = artlora(capsys, "pipeline", "schedules", "--host", url)
    assert status == 2 and f"KFP at {url} answered {refusal}" in err and says in err
    assert time.monotonic() - started < 5 and len(standin.requests) == 1, "a refusal is not retried"


def test_an_unreachable_host_or_a_multi_user_server_without_namespace_is_a_clear_error(kfp, capsys):
    standin, url = kfp
    standin.multi_user = True
    status, _, err = artlora(capsys, "pipeline", "schedules", "--host", url)
    assert status == 2 and "multi-user" in err and "--namespace" in err
    status, _, _ = artlora(capsys, "pipeline", "schedules", "--host", url, "--namespace", "team-a")
    assert status == 0

    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    started = time.monotonic()
    status, _, err = artlora(capsys, "pipeline", "schedules", "--host", closed)
    assert status == 2 and f"cannot reach KFP at {closed}" in err
    assert time.monotonic() - started < 30
