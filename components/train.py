"""KFP component: train the LoRA adapter from the latent cache (GPU node; resumes from checkpoints)."""

from typing import NamedTuple

from kfp import dsl

from artlora.components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(config_json: str, cache_uri: str, parent_run_id: str = "") -> NamedTuple(
    "TrainOutputs", adapter_uri=str, run_id=str, steps=int, adapter_step=int, stopped_early=bool
):
    """Train a LoRA adapter on the UNet; a restarted task continues from its latest checkpoint.

    With train.gpus of 2 or more, the task trains with one DDP process per GPU under `accelerate launch`.

    Args:
        config_json: the resolved pipeline config (artlora.config.PipelineConfig) as JSON.
        cache_uri: the latent cache index from the augment component.
        parent_run_id: a search's MLflow run, which the training's run is filed under as a trial ("" for none).

    Returns:
        adapter_uri: s3:// prefix of the trained adapter (diffusers layout plus one kohya/A1111/ComfyUI file).
        run_id: the MLflow run holding the training's params, metrics and adapter.
        steps: optimizer steps taken (fewer than train.max_steps when early stopping fired).
        adapter_step: the step whose adapter was kept (the best validated one, or the last).
        stopped_early: whether early stopping ended the training.
    """
    from collections import namedtuple

    from artlora import log
    from artlora.config import PipelineConfig
    from artlora.tasks.launch import run_train
    from artlora.tasks.search import file_trial

    log.configure()
    result = run_train(PipelineConfig.model_validate_json(config_json), cache_uri=cache_uri)
    if parent_run_id:
        file_trial(result.run_id, parent_run_id)
    outputs = namedtuple("TrainOutputs", ["adapter_uri", "run_id", "steps", "adapter_step", "stopped_early"])
    adapter_step = result.steps if result.adapter_step is None else result.adapter_step
    return outputs(result.adapter_uri, result.run_id, result.steps, adapter_step, result.stopped_early)
