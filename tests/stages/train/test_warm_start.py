"""Warm start (train.init_from): a registered version's weights, checked against its manifest, are the adapter's
first weights; a parent of another shape is refused in one line; the parent is in the run's key and lineage."""

from __future__ import annotations

import json

import mlflow
import pytest
from registered import register_as, unique_model_name

from artlora import contracts
from artlora.config import ConfigError, load_config, with_inputs
from artlora.data import lineage
from artlora.data.latent_cache import load_split, validation_data
from artlora.diffusion import loading
from artlora.diffusion.adapters import adapter_digest, adapter_file, heldout_losses
from artlora.io import model_registry
from artlora.registry.references import RegistryError
from artlora.stages.train import run as train
from artlora.stages.train import warm_start
from artlora.stages.train.errors import TrainError
from artlora.stages.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("tracking_server")


@pytest.fixture
def registered(style_run) -> str:
    """The session's style adapter registered under a name of this test's own: models:/NAME/1."""
    name = unique_model_name()
    register_as(style_run.config.register, name, style_run.adapter_uri, style_run.run_id)
    return f"models:/{name}/1"


def warm_config(style_run, bucket, init_from, **changes):
    return with_inputs(style_run.config.train, storage_root=bucket, init_from=init_from, sample_every=0, **changes)


def test_the_first_weights_are_exactly_the_registered_versions(style_run, registered, bucket, tmp_path):
    config = warm_config(style_run, bucket, registered, cache_uri=style_run.cache_uri)
    parent = warm_start.resolve(config)
    assert parent is not None and parent.reference == registered
    version = model_registry.model_version(*registered.removeprefix("models:/").split("/"))
    folder = model_registry.download_version(version, tmp_path / "parent")
    assert parent.digest == adapter_digest(folder) == version.tags[lineage.ADAPTER_DIGEST]

    val = validation_data(style_run.cache_uri)
    seed, steps = config.seed, config.eval_timesteps
    pipe = loading.load_pipeline(config.base_model)
    trainer = Trainer(config, load_split(style_run.cache_uri, "train"), pipe)
    cold = train.validate(trainer, val)
    train.start_from(trainer, parent)
    warm = train.validate(trainer, val)

    reference = loading.load_pipeline(config.base_model)
    scheduler = trainer.noise_scheduler
    base, with_parent = heldout_losses(reference, scheduler, val, adapter_file(folder), steps, seed)
    # Step 0 of the warm start is the parent as diffusers loads it; a cold start is the base model.
    assert warm == pytest.approx(with_parent.loss, rel=1e-6)
    assert cold == pytest.approx(base.loss, rel=1e-6)
    assert abs(warm - cold) > 1e-4
    assert not trainer.optimizer.state  # the optimizer starts fresh


def test_a_warm_started_run_names_its_parent_in_its_key_and_lineage(style_run, registered, bucket, store):
    config = warm_config(
        style_run,
        bucket,
        registered,
        cache_uri=style_run.cache_uri,
        max_steps=1,
        eval_every=0,
        early_stopping_patience=0,
    )
    result = train.run(config)

    parent = warm_start.resolve(config)
    assert result.adapter_uri.startswith(train.run_uri(config, parent))
    cold = with_inputs(config, init_from=None)
    assert train.run_uri(config, parent) != train.run_uri(cold)
    other = warm_start.Parent(parent.reference, "another digest", parent.state, parent.settings)
    assert train.run_uri(config, other) != train.run_uri(config, parent)  # another champion: another run
    assert "init_from" not in cold.model_dump()  # unset, the run key of a cold start is what it was

    tags = mlflow.get_run(result.run_id).data.tags
    assert tags[contracts.INIT_FROM_TAG] == registered and tags[contracts.INIT_FROM_DIGEST_TAG] == parent.digest
    # The run has no evaluation: a gate on its training metric lets register read the lineage from its tags.
    gate = ({"metric": "loss", "max": 1e9},)
    child = register_as(style_run.config.register, unique_model_name(), result.adapter_uri, result.run_id, gate=gate)
    version = model_registry.model_version(child.model_name, child.version)
    assert version is not None
    assert version.tags[lineage.INIT_FROM] == registered
    assert version.tags[lineage.INIT_FROM_DIGEST] == parent.digest


@pytest.mark.parametrize(
    ("changes", "differs"),
    [
        ({"rank": 4}, "rank 8 (this run: 4)"),
        ({"target_modules": ("attention", "feed_forward")}, "target_modules ['attention'] (this run: ['attention', "),
        ({"alpha": 16.0, "use_dora": True}, "alpha 32.0 (this run: 16.0), use_dora False (this run: True)"),
        ({"base_model": "another/base"}, "base_model"),
    ],
)
def test_a_parent_of_another_shape_is_refused_before_the_base_is_loaded(style_run, bucket, changes, differs):
    config = warm_config(style_run, bucket, style_run.adapter_uri, cache_uri=style_run.cache_uri, **changes)
    with pytest.raises(TrainError, match="a warm start needs the same base model and adapter shape") as error:
        train.run(config)
    assert differs in str(error.value) and style_run.adapter_uri in str(error.value)


def test_an_unknown_parent_is_one_line_naming_what_exists(style_run, registered, bucket, tmp_path):
    name = registered.removeprefix("models:/").split("/")[0]
    with pytest.raises(RegistryError, match=f"model '{name}' has no alias 'nosuch' \\(its aliases: champion -> 1\\)"):
        warm_start.resolve(warm_config(style_run, bucket, f"models:/{name}@nosuch"))
    with pytest.raises(TrainError, match="neither a registered version"):
        warm_start.resolve(warm_config(style_run, bucket, str(tmp_path / "nowhere")))


def test_champion_in_a_pipeline_config_is_this_models_champion():
    config = load_config("configs/demo.yaml", ["train.init_from=champion"])
    assert config.train.init_from == "models:/demo-style@champion"
    assert json.loads(config.model_dump_json())["train"]["init_from"] == "models:/demo-style@champion"
    with pytest.raises(ValueError, match="in a train config name it, models:/NAME@champion"):
        with_inputs(config.train, init_from="champion")
    with pytest.raises(ConfigError, match="train.init_from"):
        load_config("configs/demo.yaml", ["train.init_from="])
