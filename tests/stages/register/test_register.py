"""The register stage against a real `mlflow server` (PostgreSQL, artifacts in S3): lineage and gate tags, the
logged MLflow Model, idempotent registration, the champion fix and the like-for-like comparison."""

from __future__ import annotations

import mlflow
import pytest
from registered import register_as, run_copy, run_with, scaled_adapter, unique_model_name

from artlora.config import with_inputs
from artlora.data import lineage
from artlora.errors import ArtloraError
from artlora.io import model_registry, runs, storage
from artlora.stages.augment import run as augment
from artlora.stages.evaluate import run as evaluate
from artlora.stages.ingest import run as ingest

pytestmark = pytest.mark.usefixtures("tracking_server")


def test_a_version_carries_its_lineage_metrics_and_gate_outcome(style_run, store, tmp_path):
    name = unique_model_name()
    # A copy of the style run: its gate page, beside the adapter and in the run, is this registration's alone.
    adapter_uri, run_id = run_copy(store, style_run.adapter_uri, style_run.run_id)
    result = register_as(style_run.config.register, name, adapter_uri, run_id)

    assert (result.version, result.alias, result.reused) == ("1", "champion", False)
    version = model_registry.version_by_alias(name, "champion")
    tags = version.tags
    metrics = runs.run_metrics(style_run.run_id)
    assert float(tags["val_loss_lora"]) == pytest.approx(metrics["val_loss_lora"])
    assert tags[lineage.DATASET_FINGERPRINT] == runs.run_tags(style_run.run_id)["artlora.dataset_fingerprint"]
    assert tags[lineage.BASE_MODEL] == style_run.config.base_model
    assert tags[lineage.ADAPTER_URI] == adapter_uri and tags[lineage.ADAPTER_STEP] == "4"
    assert len(tags[lineage.CONFIG_DIGEST]) == 32 and tags[lineage.CODE_VERSION].startswith("artlora ")
    assert store.exists(tags[lineage.REPORT_URI])
    assert tags[lineage.GATE_DECISION] == "champion"
    assert tags["gate.rule.1"] == "pass: val_loss_lora (lower is better): no champion yet"
    page = store.get_bytes(result.gate_report_uri).decode()
    assert "is <em>champion</em>" in page and "no champion yet" in page
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/register/gate.html") == page
    # The version is a logged MLflow Model (pyfunc flavour) whose data is the adapter in both layouts.
    files = sorted(path.name for path in model_registry.download_version(version, tmp_path).iterdir())
    assert files == sorted(path.rsplit("/", 1)[1] for path in store.list(adapter_uri) if "_COMPLETE" not in path)
    model = mlflow.models.get_model_info(version.uri)
    assert model.flavors["python_function"]["loader_module"] == "artlora.generate.pyfunc"


def test_the_same_adapter_registered_again_is_the_same_version(style_run, store, tmp_path):
    name = unique_model_name()
    first = register_as(style_run.config.register, name, style_run.adapter_uri, style_run.run_id)
    # The same weights under another prefix and run: its content digest is the adapter's, not its location's.
    copy = storage.join(style_run.adapter_uri.rsplit("/", 2)[0], "copy", "adapter")
    store.download_dir(style_run.adapter_uri, tmp_path / "copy")
    store.upload_dir(tmp_path / "copy", copy)
    again = register_as(style_run.config.register, name, copy, style_run.run_id)

    assert (again.version, again.alias, again.reused) == (first.version, "champion", True)
    assert "already version 1" in again.reason and again.gate == first.gate
    assert [version.version for version in model_registry.model_versions(name)] == ["1"]


def test_a_gate_on_any_metric_finds_the_champions_value(style_run, store, tmp_path):
    """The champion fix: every metric is copied to the version, so a later version is compared with it."""
    config = with_inputs(
        style_run.config.register, gate=({"metric": "style_score", "direction": "higher", "over_champion": 0.0},)
    )
    name, fingerprint = unique_model_name(), "same-data"

    def version_with(style_score: float, factor: float):
        adapter = scaled_adapter(store, style_run.adapter_uri, factor, tmp_path)
        return register_as(config, name, adapter, run_with({"style_score": style_score}, fingerprint))

    assert version_with(0.8, 1.1).alias == "champion"
    worse = version_with(0.7, 1.2)
    assert worse.alias == "challenger" and "0.7 vs champion v1 0.8: 12.5% worse" in worse.reason
    assert version_with(0.9, 1.3).alias == "champion"
    assert model_registry.version_by_alias(name, "champion").version == "3"
    assert model_registry.version_by_alias(name, "challenger").version == "2"


def test_a_run_without_the_gates_metric_is_refused(style_run):
    with pytest.raises(ArtloraError, match="no metric val_loss_lora, which register.gate reads"):
        register_as(style_run.config.register, unique_model_name(), style_run.adapter_uri, run_with({}, "data"))


def test_a_champion_evaluated_on_other_data_is_measured_again_on_the_new_data(style_run, store, tmp_path):
    name = unique_model_name()
    # The champion: a copy of the style run, since evaluating it on B below rewrites its evaluation folder, which
    # other tests read as the style run's own.
    champion, champion_run = run_copy(store, style_run.adapter_uri, style_run.run_id)
    register_as(style_run.config.register, name, champion, champion_run)  # the champion, on data A
    on_a = runs.run_metrics(champion_run)["val_loss_lora"]
    # Data B: the same images split differently, so another validation split and dataset fingerprint.
    config = style_run.config
    dataset = ingest.run(with_inputs(config.ingest, storage_root=f"{config.storage_root}-b", val_fraction=0.4))
    cache_b = augment.run(
        with_inputs(config.augment, storage_root=f"{config.storage_root}-b", dataset_uri=dataset.dataset_uri)
    ).cache_uri
    # What the evaluate stage measures for the champion's adapter on B: what a like-for-like gate compares with.
    run_b = run_with({}, "b")
    measured = evaluate.run(with_inputs(config.evaluate, adapter_uri=champion, cache_uri=cache_b, run_id=run_b))
    on_b = measured.val_loss_lora
    assert on_b != on_a
    # A challenger between the two: it beats the champion on one data set and loses on the other.
    value = (on_a + on_b) / 2
    settings = mlflow.artifacts.load_dict(f"runs:/{champion_run}/config/evaluate.json")
    run = run_with({"val_loss_lora": value}, dataset.fingerprint, settings)
    challenger = scaled_adapter(store, champion, 0.5, tmp_path)
    result = register_as(config.register, name, challenger, run, cache_uri=cache_b)

    assert result.alias == ("champion" if value < on_b else "challenger")
    note = model_registry.model_version(name, result.version).tags[lineage.GATE_COMPARED]
    assert "measured again on this version's held-out data" in note and f"{on_b:.6g}" in note
    assert f"vs champion v1 {on_b:.6g}" in result.gate[0]
    page = store.get_bytes(result.gate_report_uri).decode()
    assert "measured again" in page
    # Per style too: the page's rows hold the champion's held-out loss of each style on B, as evaluate measured it.
    per_style = {k: v for k, v in runs.run_metrics(run_b).items() if k.startswith("val_loss_lora/")}
    assert per_style
    for key, loss in per_style.items():
        style = key.split("/", 1)[1]
        assert f'<tr><td class="l">{style}</td><td>-</td><td>{loss:.6g}</td>' in page

    # Registered alone without the new data's cache, the comparison cannot be like for like, and says so.
    other = scaled_adapter(store, champion, 0.25, tmp_path)
    alone = register_as(config.register, name, other, run_with({"val_loss_lora": value}, "data-c"))
    tags = model_registry.model_version(name, alone.version).tags
    assert "not measured again (register.cache_uri is not set), so not like for like" in tags[lineage.GATE_COMPARED]
