"""Cross-evaluation: a registered adapter (checked as generate checks it) on another dataset version's cache,
into a folder and an MLflow run of its own, the adapter's own `eval/` untouched; style movement as a measure
(per style the LoRA's style distance over the base's) that the gate can read."""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient
from PIL import Image
from registered import register_as, unique_model_name
from safetensors.torch import load_file, save_file

from artlora import contracts
from artlora.cli import main
from artlora.config import with_inputs
from artlora.config.register import GateRule
from artlora.diffusion.adapters import DIFFUSERS_FILE, read_metadata
from artlora.io import model_registry, settings, storage
from artlora.stages.evaluate import cross, painting
from artlora.stages.evaluate import run as evaluate
from artlora.stages.evaluate.style_distance import StyleDistance, combined, scales
from artlora.stages.register.gate import decide

TWO_STYLES = ("geometric", "woodcut")  # the other dataset version: two of the sample styles, a cache of its own


@dataclass(frozen=True)
class Crossed:
    name: str  # the registered model
    cache_uri: str  # the other dataset version's cache
    result: evaluate.EvaluateResult
    own_eval: dict[str, bytes]  # the adapter's own eval/ folder before the cross-evaluation


def _folder_bytes(store: storage.Storage, prefix: str) -> dict[str, bytes]:
    return {uri: store.get_bytes(uri) for uri in sorted(store.list(prefix))}


@pytest.fixture(scope="module")
def crossed(style_run, mlflow_server, sample_folder, tmp_path_factory) -> Crossed:
    from artlora.stages.augment import run as augment
    from artlora.stages.ingest import run as ingest

    work = tmp_path_factory.mktemp("cross")
    source = work / "styles"
    for style in TWO_STYLES:
        shutil.copytree(sample_folder / style, source / style)
    with mock.patch.dict(os.environ, {**mlflow_server.environment(), settings.WORK_DIR: str(work / "work")}):
        config = style_run.config
        dataset = ingest.run(with_inputs(config.ingest, source=str(source)))
        cache_uri = augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri)).cache_uri
        name = unique_model_name()
        register_as(config.register, name, style_run.adapter_uri, style_run.run_id)
        store = storage.get_storage()
        eval_folder = contracts.evaluation_folder(style_run.adapter_uri)
        before = _folder_bytes(store, eval_folder)
        inputs = {"adapter_uri": f"models:/{name}/1", "cache_uri": cache_uri, "loss_timesteps": (500,)}  # for speed
        result = evaluate.run(with_inputs(config.evaluate, **inputs))
    return Crossed(name, cache_uri, result, before)


def test_a_registered_adapter_on_another_cache_gets_a_folder_and_run_of_its_own(crossed, style_run, tracking_server):
    store = storage.get_storage()
    folder = crossed.result.report_uri.rsplit("/", 1)[0]
    assert folder.startswith(f"{style_run.config.storage_root}/evaluations/")
    about = store.get_json(storage.join(folder, contracts.EVALUATION_ABOUT))
    index = store.get_json(crossed.cache_uri)
    assert about["model_version"] == f"models:/{crossed.name}/1"
    assert about["dataset_fingerprint"] == index["dataset_fingerprint"] != ""
    assert store.get_json(storage.join(folder, contracts.EVALUATION_METRICS)) == pytest.approx(crossed.result.metrics)
    assert store.exists(storage.join(folder, contracts.STYLE_SHEET))
    report = store.get_bytes(crossed.result.report_uri).decode()
    assert f"Cross-evaluation of <code>models:/{crossed.name}/1</code>" in report
    kept = store.completion(style_run.adapter_uri)["adapter_step"]  # the training's summary, found from the version
    assert f"the adapter kept is the one of step <b>{kept}</b>" in report
    # The adapter's own report, grid and metrics are byte for byte what they were.
    assert _folder_bytes(store, contracts.evaluation_folder(style_run.adapter_uri)) == crossed.own_eval
    assert crossed.own_eval  # and there was one to keep

    found = mlflow.search_runs(
        filter_string=f"tags.`{cross.EVALUATED_VERSION_TAG}` = 'models:/{crossed.name}/1'",
        search_all_experiments=True,
        output_format="list",
    )
    assert len(found) == 1 and found[0].info.run_id != style_run.run_id
    run = found[0]
    assert run.data.tags[contracts.DATASET_FINGERPRINT_TAG] == index["dataset_fingerprint"]
    assert run.data.metrics["style_movement"] == pytest.approx(crossed.result.metrics["style_movement"])


def test_style_movement_is_the_loras_style_distance_over_the_bases(crossed, style_run, tracking_server):
    """Measured again here from the images the evaluation wrote and the dataset's own images."""
    store, config = storage.get_storage(), style_run.config.evaluate
    folder = crossed.result.report_uri.rsplit("/", 1)[0]
    real = painting.dataset_images(store.get_json(crossed.cache_uri)["dataset_uri"], 32, config.images_per_style)
    heldout = real.get("val") or real["train"]
    styles = sorted(heldout)
    assert styles == list(TWO_STYLES)
    columns = [heldout[style][0] for style in styles]
    distance = StyleDistance(config.seed)
    unit = scales(distance.matrices([real["train"][style][0] for style in styles], columns))

    def painted(side: str, style: str) -> np.ndarray:
        prefix = storage.join(folder, contracts.PAINTED, side, style)
        pngs = [store.get_bytes(uri) for uri in sorted(store.list(prefix))]
        return np.stack([np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in pngs])

    metrics = crossed.result.metrics
    for i, style in enumerate(styles):
        base, lora = (
            combined(distance.matrices([painted(side, style)], columns), unit)[0, i] for side in ("base", "lora")
        )
        assert metrics[f"style_movement/{style}"] == pytest.approx(lora / base, rel=1e-5)
    assert metrics["style_movement"] == max(metrics[f"style_movement/{style}"] for style in styles)
    for style in styles:  # the reference points beside it, per style
        assert metrics[f"style_distance_floor/{style}"] > 0 and metrics[f"style_distance_reference/{style}"] > 0


def test_a_gate_rule_on_style_movement_passes_and_fails_as_its_max_says(crossed):
    metrics, movement = crossed.result.metrics, crossed.result.metrics["style_movement"]
    assert decide((GateRule(metric="style_movement", max=movement + 1e-6),), metrics, None).alias == "champion"
    below = decide((GateRule(metric="style_movement", max=movement - 1e-6),), metrics, None)
    assert below.alias == "challenger" and "style_movement" in below.reason


def _config_arguments(style_run, tiny_model_dir) -> list[str]:
    return [
        "--config",
        str(Path(__file__).parents[3] / "configs" / "demo.yaml"),
        "--set",
        f"storage_root={style_run.config.storage_root}",
        "--set",
        f"base_model={tiny_model_dir}",
        "--set",
        "evaluate.resolution=32",
    ]


def _evaluate(capsys, arguments: list[str]) -> tuple[int, str]:
    code = main(["evaluate", *arguments])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_a_tampered_registered_adapter_is_refused(style_run, mlflow_server, tracking_server, tiny_model_dir, capsys):
    name = unique_model_name()
    register_as(style_run.config.register, name, style_run.adapter_uri, style_run.run_id)
    version = model_registry.model_version(name, "1")
    assert version is not None
    model_id = version.source.removeprefix("models:/")
    location = MlflowClient().get_logged_model(model_id).artifact_location.removeprefix("mlflow-artifacts:/")
    url = f"{mlflow_server.url}/api/2.0/mlflow-artifacts/artifacts/{location.strip('/')}/data/adapter/{DIFFUSERS_FILE}"
    login = (mlflow_server.admin.username, mlflow_server.admin.password)
    weights = requests.get(url, auth=login, timeout=30).content
    assert requests.put(url, data=weights[:-1] + b"!", auth=login, timeout=30).status_code == 200

    arguments = [f"evaluate.adapter_uri=models:/{name}/1", f"evaluate.cache_uri={style_run.cache_uri}"]
    code, line = _evaluate(capsys, [*_config_arguments(style_run, tiny_model_dir), *_set(arguments)])

    assert code == 2
    assert line.startswith(f"artlora evaluate: error: models:/{name}/1: data/adapter/{DIFFUSERS_FILE}")
    assert "not those registered" in line


def test_a_missing_version_a_missing_cache_and_another_familys_adapter_are_one_line_errors(
    style_run, tracking_server, tiny_model_dir, tmp_path, capsys
):
    base = _config_arguments(style_run, tiny_model_dir)
    code, line = _evaluate(
        capsys,
        [*base, *_set(["evaluate.adapter_uri=models:/no-such-model/1", f"evaluate.cache_uri={style_run.cache_uri}"])],
    )
    assert code == 2 and line.startswith("artlora evaluate: error: no registered model 'no-such-model'")

    missing = storage.join(style_run.config.storage_root, "no-such-cache.json")
    code, line = _evaluate(
        capsys, [*base, *_set([f"evaluate.adapter_uri={style_run.adapter_uri}", f"evaluate.cache_uri={missing}"])]
    )
    assert code == 2 and line == (
        f"artlora evaluate: error: latent cache {missing} does not exist (give evaluate.cache_uri the cache_uri "
        "that `artlora augment` printed for the dataset version)"
    )

    nowhere = storage.join(style_run.config.storage_root, "no-such-run", "adapter")
    code, line = _evaluate(
        capsys, [*base, *_set([f"evaluate.adapter_uri={nowhere}", f"evaluate.cache_uri={style_run.cache_uri}"])]
    )
    assert code == 2 and line.startswith(f"artlora evaluate: error: no adapter at {nowhere} (give evaluate.adapter_uri")

    # The same weights named as a transformer's (SD 3.5, Flux): not layers of this UNet.
    store, folder = storage.get_storage(), tmp_path / "foreign"
    store.download_dir(style_run.adapter_uri, folder)
    path = folder / DIFFUSERS_FILE
    tensors = {name.replace("unet.", "transformer.", 1): value for name, value in load_file(path).items()}
    save_file(tensors, path, metadata=read_metadata(path, prefix=""))
    foreign = storage.join(style_run.config.storage_root, "foreign", "adapter")
    store.upload_dir(folder, foreign)
    code, line = _evaluate(
        capsys, [*base, *_set([f"evaluate.adapter_uri={foreign}", f"evaluate.cache_uri={style_run.cache_uri}"])]
    )
    assert code == 2 and line.startswith(f"artlora evaluate: error: adapter {foreign} (trained on ")
    assert "does not fit base model" in line and "layer transformer." in line


def _set(pairs: list[str]) -> list[str]:
    return [part for pair in pairs for part in ("--set", pair)]
