"""A stage's config as the params of its MLflow run, when another process continues the same run at once (two
registrations of one adapter): the database refuses the second insert of a param; the values logged first stay,
as they do when the stage runs again later, and the rest are logged."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from artlora.config import RegisterConfig, TrainConfig
from artlora.io import runs, storage
from artlora.io.runs import flatten

pytestmark = pytest.mark.usefixtures("mlflow_db")


@pytest.fixture
def run_id(store, bucket) -> str:
    """A training's run, which register continues."""
    name = storage.parse_uri(bucket)[0]
    if not store.client.bucket_exists(name):  # the config artifact goes to the object store
        store.client.make_bucket(name)
    with runs.stage_run("train", TrainConfig(storage_root=bucket, base_model="tiny/model")) as run:
        return run.info.run_id


@pytest.fixture
def config() -> RegisterConfig:
    return RegisterConfig(base_model="tiny/model", model_name="race")


def _first_logged_by_another(monkeypatch, value=None, only: str | None = None) -> None:
    """The race: between the stage's read of the run's params and its write, another process logs them (the same
    values, or another `value` for each; only the param `only`, if given); the write is then refused as the
    database refuses a duplicate key."""
    log_params = mlflow.log_params

    def raced(params):
        run_id = mlflow.active_run().info.run_id
        theirs = {key: params[key] if value is None else value for key in params if only in (None, key)}
        mlflow.MlflowClient().log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in theirs.items()])
        monkeypatch.setattr(mlflow, "log_params", log_params)
        raise MlflowException("UNIQUE constraint failed: params.key, params.run_uuid")

    monkeypatch.setattr(mlflow, "log_params", raced)


def test_the_same_params_logged_first_by_another_process_are_no_error(monkeypatch, config, run_id):
    _first_logged_by_another(monkeypatch)
    with runs.stage_run("register", config, run_id=run_id):
        pass
    params = mlflow.get_run(run_id).data.params
    assert all(params[key] == str(value) for key, value in flatten("register", config.model_dump(mode="json")).items())


def test_other_values_logged_first_stay_as_they_would_one_run_after_the_other(monkeypatch, config, run_id):
    """Two registrations under two model names at once: the first to log keeps its values, and the params it did
    not log are logged; the config artifact holds this stage's own values."""
    _first_logged_by_another(monkeypatch, value="other", only="register.model_name")
    with runs.stage_run("register", config, run_id=run_id):
        pass
    params = mlflow.get_run(run_id).data.params
    wanted = flatten("register", config.model_dump(mode="json"))
    assert params["register.model_name"] == "other"
    assert all(params[key] == str(value) for key, value in wanted.items() if key != "register.model_name")
    recorded = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/config/register.json"))
    assert recorded["model_name"] == "race"
