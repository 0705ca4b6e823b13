"""The environment artlora reads: each variable by its exact name, its default, and one line for a bad value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artlora.io import settings
from artlora.io.settings import S3Limits, SettingError

VARIABLES = (
    *("ARTLORA_S3_ENDPOINT", "ARTLORA_S3_ACCESS_KEY", "ARTLORA_S3_SECRET_KEY", "ARTLORA_S3_REGION"),
    *("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"),
    *("ARTLORA_S3_CONNECT_TIMEOUT", "ARTLORA_S3_READ_TIMEOUT", "ARTLORA_S3_RETRIES"),
    *("ARTLORA_WORK_DIR", "MLFLOW_TRACKING_URI", "ARTLORA_KFP_TOKEN", "ARTLORA_KFP_NAMESPACE"),
)


@pytest.fixture
def environment(monkeypatch):
    """None of artlora's variables set; the test sets what it needs."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_nothing_set_means_no_store_the_shipped_limits_and_a_local_work_folder(environment, tmp_path):
    environment.chdir(tmp_path)
    assert settings.s3_settings() is None
    assert S3Limits.from_env() == S3Limits.defaults() == S3Limits()
    limits = S3Limits.defaults()
    assert (limits.connect_timeout, limits.read_timeout, limits.retries, limits.backoff) == (5.0, 10.0, 3, 0.5)
    assert settings.work_dir(create=False) == tmp_path / ".artlora"
    assert settings.tracking_uri() == f"sqlite:///{tmp_path / '.artlora' / 'mlflow.db'}"
    assert settings.kfp_token() is None and settings.kfp_namespace() is None


def test_the_store_with_its_own_names(environment):
    environment.setenv("ARTLORA_S3_ENDPOINT", " https://store.example:9000/ ")
    environment.setenv("ARTLORA_S3_ACCESS_KEY", "artlora-key")
    environment.setenv("ARTLORA_S3_SECRET_KEY", "artlora-secret")
    environment.setenv("ARTLORA_S3_REGION", "eu-west-1")
    environment.setenv("AWS_ACCESS_KEY_ID", "aws-key")
    environment.setenv("ARTLORA_S3_READ_TIMEOUT", "2.5")
    environment.setenv("ARTLORA_S3_RETRIES", "1")
    s3 = settings.s3_settings()
    assert (s3.endpoint, s3.secure, s3.url) == ("store.example:9000", True, "https://store.example:9000")
    assert (s3.access_key, s3.secret_key, s3.region) == ("artlora-key", "artlora-secret", "eu-west-1")
    assert (s3.limits.connect_timeout, s3.limits.read_timeout, s3.limits.retries) == (5.0, 2.5, 1)
    assert "artlora-secret" not in repr(settings.S3Variables.read())


def test_the_aws_names_stand_in_where_artlora_names_are_unset_or_empty(environment):
    environment.setenv("ARTLORA_S3_ENDPOINT", "http://127.0.0.1:8333")
    environment.setenv("ARTLORA_S3_ACCESS_KEY", "")
    environment.setenv("AWS_ACCESS_KEY_ID", "aws-key")
    environment.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    environment.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    s3 = settings.s3_settings()
    assert (s3.endpoint, s3.secure) == ("127.0.0.1:8333", False)
    assert (s3.access_key, s3.secret_key, s3.region) == ("aws-key", "aws-secret", "ap-south-1")


def test_blank_values_count_as_unset_and_names_are_exact(environment, tmp_path):
    environment.setenv("ARTLORA_S3_ENDPOINT", "  ")
    environment.setenv("ARTLORA_S3_READ_TIMEOUT", " ")
    environment.setenv("ARTLORA_KFP_TOKEN", "  ")
    environment.setenv("artlora_work_dir", str(tmp_path / "lower-case"))  # not artlora's variable
    environment.chdir(tmp_path)
    assert settings.s3_settings() is None
    assert S3Limits.from_env() == S3Limits.defaults()
    assert settings.kfp_token() is None
    assert settings.work_dir(create=False) == tmp_path / ".artlora"


def test_work_folder_tracking_server_and_kfp(environment, tmp_path):
    environment.setenv("ARTLORA_WORK_DIR", str(tmp_path / "work"))
    environment.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    environment.setenv("ARTLORA_KFP_TOKEN", " token \n")
    environment.setenv("ARTLORA_KFP_NAMESPACE", "team-a")
    assert settings.work_dir() == tmp_path / "work" and (tmp_path / "work").is_dir()
    assert settings.tracking_uri() == "http://mlflow:5000"
    assert (settings.kfp_token(), settings.kfp_namespace()) == ("token", "team-a")


@pytest.mark.parametrize(
    "name, value, shown, rule",
    [
        ("ARTLORA_S3_READ_TIMEOUT", "soon", "soon", ">= 0.1 (unset it for the default 10)"),
        ("ARTLORA_S3_READ_TIMEOUT", "-1", "-1", ">= 0.1 (unset it for the default 10)"),
        ("ARTLORA_S3_CONNECT_TIMEOUT", " 0 ", "0", ">= 0.1 (unset it for the default 5)"),
        ("ARTLORA_S3_RETRIES", "-2", "-2", ">= 0 (unset it for the default 3)"),
    ],
)
def test_a_bad_number_is_one_line_naming_the_variable(environment, name, value, shown, rule):
    environment.setenv(name, value)
    with pytest.raises(SettingError) as info:
        S3Limits.from_env()
    assert str(info.value) == f"{name}={shown!r} must be a number {rule}"


def test_a_count_given_with_a_fraction_is_cut_to_a_whole_number(environment):
    environment.setenv("ARTLORA_S3_RETRIES", "2.7")
    assert S3Limits.from_env().retries == 2


def test_a_path_object_as_the_work_folder(environment, tmp_path):
    environment.setenv("ARTLORA_WORK_DIR", str(Path(tmp_path, "a", "..", "b")))
    assert settings.work_dir(create=False) == tmp_path / "b"


def test_mlflow_artifact_client_gets_the_store_and_its_keys_together(environment):
    environment.setenv("ARTLORA_S3_ENDPOINT", "http://127.0.0.1:8333")
    environment.setenv("ARTLORA_S3_ACCESS_KEY", "artlora-key")
    environment.setenv("ARTLORA_S3_SECRET_KEY", "artlora-secret")
    environment.setenv("AWS_ACCESS_KEY_ID", "a-shell-key-for-another-account")
    environment.setenv("AWS_SECRET_ACCESS_KEY", "a-shell-secret")
    environment.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    from mlflow.store.artifact import s3_artifact_repo

    before = s3_artifact_repo._get_s3_client(s3_endpoint_url="http://127.0.0.1:8333")
    assert before._request_signer._credentials.access_key == "a-shell-key-for-another-account"
    settings.point_mlflow_artifacts_at(settings.s3_settings())
    assert {name: os.environ[name] for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID")} == {
        "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
        "AWS_ACCESS_KEY_ID": "artlora-key",
    }
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "artlora-secret"
    # MLflow's client made with the shell's keys is not used again: the next one has the store's.
    after = s3_artifact_repo._get_s3_client(s3_endpoint_url="http://127.0.0.1:8333")
    assert after._request_signer._credentials.access_key == "artlora-key"


def test_an_artifact_store_the_user_named_keeps_its_own_keys(environment):
    environment.setenv("ARTLORA_S3_ENDPOINT", "http://127.0.0.1:8333")
    environment.setenv("ARTLORA_S3_ACCESS_KEY", "artlora-key")
    environment.setenv("MLFLOW_S3_ENDPOINT_URL", "https://artifacts.example")
    environment.setenv("AWS_ACCESS_KEY_ID", "artifacts-key")
    settings.point_mlflow_artifacts_at(settings.s3_settings())
    assert (os.environ["MLFLOW_S3_ENDPOINT_URL"], os.environ["AWS_ACCESS_KEY_ID"]) == (
        "https://artifacts.example",
        "artifacts-key",
    )
