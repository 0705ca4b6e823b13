"""`artlora models list | show | compare | download | promote` against a real `mlflow server` (PostgreSQL backend,
artifacts proxied to S3), on a model with a champion and a challenger."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
from registered import register_as, run_with, scaled_adapter, unique_model_name

from artlora.cli import main
from artlora.io import model_registry, runs, storage

pytestmark = pytest.mark.usefixtures("tracking_server")


@pytest.fixture(scope="module")
def model(style_run, mlflow_server, tmp_path_factory) -> str:
    """Version 1 (the style adapter, champion) and version 2 (another adapter with a worse loss, challenger)."""
    name = unique_model_name()
    with mock.patch.dict(os.environ, mlflow_server.environment()):
        register_as(style_run.config.register, name, style_run.adapter_uri, style_run.run_id)
        metrics = runs.run_metrics(style_run.run_id)
        fingerprint = runs.run_tags(style_run.run_id)["artlora.dataset_fingerprint"]
        worse = run_with({**metrics, "val_loss_lora": metrics["val_loss_lora"] + 0.5}, fingerprint)
        other = scaled_adapter(storage.get_storage(), style_run.adapter_uri, 2.0, tmp_path_factory.mktemp("v2"))
        assert register_as(style_run.config.register, name, other, worse).alias == "challenger"
    return name


def artlora(capsys, *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def as_json(capsys, *args: str):
    return json.loads(artlora(capsys, *args, "--json"))


def test_list_shows_versions_aliases_key_metrics_dataset_and_age(capsys, model, style_run):
    rows = as_json(capsys, "models", "list", model)
    assert [(row["version"], row["aliases"]) for row in rows] == [("1", ["champion"]), ("2", ["challenger"])]
    loss = runs.run_metrics(style_run.run_id)["val_loss_lora"]
    assert rows[0]["metrics"]["val_loss_lora"] == pytest.approx(loss)
    assert rows[1]["metrics"]["val_loss_lora"] == pytest.approx(loss + 0.5)
    assert rows[0]["dataset_fingerprint"] == runs.run_tags(style_run.run_id)["artlora.dataset_fingerprint"]
    assert rows[0]["age"][-1] in "smh"

    text = artlora(capsys, "models", "list").splitlines()
    assert text[0].split()[:3] == ["MODEL", "VERSION", "ALIASES"] and "val_loss_lora" in text[0]
    mine = [line.split() for line in text if line.startswith(model)]
    assert [line[:3] for line in mine] == [[model, "1", "champion"], [model, "2", "challenger"]]


def test_show_names_the_lineage_metrics_gate_and_reports(capsys, model, style_run):
    shown = as_json(capsys, "models", "show", f"models:/{model}@champion")
    assert (shown["version"], shown["run_id"]) == ("1", style_run.run_id)
    assert set(shown["lineage"]) >= {"dataset_fingerprint", "base_model", "config_digest", "code_version"}
    assert shown["metrics"]["val_loss_lora"] == pytest.approx(runs.run_metrics(style_run.run_id)["val_loss_lora"])
    assert shown["gate"]["decision"] == "champion" and shown["gate"]["rules"]
    assert shown["reports"]["evaluation"].endswith("/eval/report.html")
    assert shown["reports"]["evaluation_artifact"] == f"runs:/{style_run.run_id}/eval/report.html"
    assert as_json(capsys, "models", "show", f"{model}/2")["aliases"] == ["challenger"]
    assert as_json(capsys, "models", "show", model)["version"] == "2"  # a bare name is the latest version

    text = artlora(capsys, "models", "show", f"{model}@challenger")
    assert text.startswith(f"{model} version 2 (models:/{model}/2), aliases: challenger")
    assert "lineage:" in text and "metrics:" in text and "gate: challenger (failed val_loss_lora" in text


def test_compare_puts_metrics_and_lineage_side_by_side(capsys, model):
    compared = as_json(capsys, "models", "compare", f"{model}/1", f"{model}@challenger")
    first, second = compared["metrics"]["val_loss_lora"]
    assert second == pytest.approx(first + 0.5)
    assert compared["aliases"] == [["champion"], ["challenger"]]
    digests = compared["lineage"]["adapter_digest"]
    assert len(set(digests)) == 2  # two different adapters

    row = next(line for line in artlora(capsys, "models", "compare", f"{model}/1", f"{model}/2").splitlines())
    assert row.split() == [f"models:/{model}/1", f"models:/{model}/2"]


def test_download_each_format_once_into_the_cache(capsys, model, style_run, store, tmp_path, work_dir, monkeypatch):
    trained = {uri.rsplit("/", 1)[1]: store.get_bytes(uri) for uri in store.list(style_run.adapter_uri)}
    kohya = next(name for name in trained if name.startswith("artlora-"))

    diffusers = as_json(
        capsys, "models", "download", f"{model}@champion", "--out", str(tmp_path / "d"), "--format", "diffusers"
    )
    assert [os.path.basename(path) for path in diffusers["files"]] == ["pytorch_lora_weights.safetensors"]
    assert (tmp_path / "d" / "pytorch_lora_weights.safetensors").read_bytes() == trained[
        "pytorch_lora_weights.safetensors"
    ]
    assert len(list((work_dir / "adapters").iterdir())) == 1  # fetched into the cache once

    # From now on the cache answers: MLflow is not asked for the files again.
    monkeypatch.setattr(
        model_registry, "download_version", lambda *args: pytest.fail("downloaded a cached version again")
    )
    artlora(capsys, "models", "download", f"{model}@champion", "--out", str(tmp_path / "k"), "--format", "kohya")
    assert (tmp_path / "k" / kohya).read_bytes() == trained[kohya]
    artlora(capsys, "models", "download", f"{model}/1", "--out", str(tmp_path / "both"))
    assert sorted(os.listdir(tmp_path / "both")) == sorted([kohya, "pytorch_lora_weights.safetensors"])


def test_promote_moves_the_alias_and_records_who_and_why(capsys, model):
    done = as_json(capsys, "models", "promote", f"{model}/2", "--alias", "champion", "--reason", "review: sharper")
    assert (done["version"], done["previous"], done["reason"]) == ("2", "1", "review: sharper")
    assert model_registry.version_by_alias(model, "champion").version == "2"
    tags = model_registry.model_version(model, "2").tags
    assert tags["promoted.champion.reason"] == "review: sharper" and tags["promoted.champion.previous"] == "1"
    assert tags["promoted.champion.by"] and tags["promoted.champion.at"].startswith("20")

    line = artlora(capsys, "models", "promote", f"{model}/1", "--reason", "back to the first")
    assert (
        line.strip() == f"{model} version 1 is now champion (was version 2); recorded by {tags['promoted.champion.by']}"
    )
    assert model_registry.version_by_alias(model, "champion").version == "1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "no-such-model"], "no registered model 'no-such-model' in MLflow at http://127.0.0.1:"),
        (
            ["show", "{model}@nightly"],
            "model '{model}' has no alias 'nightly' (its aliases: challenger -> 2, champion -> 1)",
        ),
        (["show", "{model}/9"], "model '{model}' has no version 9 (its versions: 1, 2)"),
        (["download", "{model}/9", "--out", "x"], "has no version 9"),
        (["compare", "{model}/1", "bad name!"], "'bad name!' is not a model reference"),
        (["promote", "{model}", "--reason", "r"], "names no version (give NAME/VERSION"),
    ],
)
def test_unknown_names_aliases_and_versions_are_clear_errors(capsys, model, args, message):
    assert main(["models", *(arg.format(model=model) for arg in args)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"artlora models {args[0]}: error: ") and message.format(model=model) in error


def test_show_prints_the_model_card_that_the_mlflow_page_shows(capsys, model, style_run, mlflow_server, store):
    import requests
    from mlflow.tracking import MlflowClient

    from artlora.data import dataset

    card = as_json(capsys, "models", "show", f"{model}@champion")["card"]
    assert card == MlflowClient().get_model_version(model, "1").description
    assert card.rstrip("\n") in artlora(capsys, "models", "show", f"{model}@champion")
    index = store.get_json(style_run.cache_uri)
    styles = sorted({item.style for item in dataset.load_items(index["dataset_uri"])})
    assert card.startswith(f"# {model} version 1: {', '.join(styles)}\n")
    assert f"`{style_run.config.base_model}`" in card and index["dataset_uri"] in card
    for style in styles:  # each style's row: its images and trigger words
        assert f"| `{style}` |" in card
    assert "## Gate: champion" in card and "no champion yet" in card and "val_loss_lora (lower is better)" in card
    challenger = MlflowClient().get_model_version(model, "2").description
    assert "champion (version 1)" in challenger and "## Gate: challenger" in challenger
    # The report link opens the evaluation report itself, served by MLflow to a logged-in user.
    link = f"{mlflow_server.url}/get-artifact?run_uuid={style_run.run_id}&path=eval/report.html"
    assert f"[Evaluation report]({link})" in card
    login = mlflow_server.admin
    answer = requests.get(link, auth=(login.username, login.password), timeout=30)
    assert answer.status_code == 200 and b"artlora evaluation" in answer.content
