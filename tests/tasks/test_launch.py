"""train.gpus: 2 on the CPU: the train component starts two DDP processes through `accelerate launch` (gloo in
place of NCCL) and returns the first process's result."""

from __future__ import annotations

import pytest

from artlora.components.train import train
from artlora.config import with_inputs
from artlora.stages.train import checkpoints
from artlora.stages.train import run as stage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_db")]


def test_the_train_component_runs_one_process_per_gpu(small_config, latent_cache, store):
    settings = {"gpus": 2, "max_steps": 2, "checkpoint_every": 1}
    config = small_config.model_copy(update={"train": small_config.train.model_copy(update=settings)})

    outputs = train.python_func(config_json=config.model_dump_json(), cache_uri=latent_cache)

    run = stage.run_uri(with_inputs(config.train, cache_uri=latent_cache))
    assert outputs.adapter_uri == f"{run}/adapter" and store.is_complete(outputs.adapter_uri)
    assert checkpoints.load_checkpoint(store, run, 1).state["processes"] == 2
    assert outputs.run_id == stage.published(store, outputs.adapter_uri)["run_id"]
