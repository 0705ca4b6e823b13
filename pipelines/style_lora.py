"""The style-LoRA pipeline: ingest -> augment -> train -> evaluate -> register.

Each task gets the whole resolved config as JSON plus the URIs its upstream task produced. Caching is off on
every task: the stages cache by content themselves (dataset fingerprints, latent keys, run checkpoints), while
KFP's cache keys on the task inputs only and would miss a changed image under the same source prefix.
"""

from typing import NamedTuple

from kfp import dsl

from artlora.components.augment import augment
from artlora.components.evaluate import evaluate
from artlora.components.ingest import ingest
from artlora.components.register import register
from artlora.components.train import train

PIPELINE_NAME = "artlora-style-lora"


class Outputs(NamedTuple):
    model_name: str
    version: str
    alias: str
    reason: str  # why the gate chose the alias
    report_uri: str
    dataset_fingerprint: str
    adapter_uri: str
    run_id: str
    steps: int
    adapter_step: int
    stopped_early: bool


@dsl.pipeline(name=PIPELINE_NAME, description="Curate a style dataset, train a LoRA, evaluate and register it.")
def style_lora_pipeline(
    config_json: str,
) -> Outputs:
    curated = ingest(config_json=config_json).set_caching_options(False)
    cached = augment(config_json=config_json, dataset_uri=curated.outputs["dataset_uri"]).set_caching_options(False)
    trained = (
        train(config_json=config_json, cache_uri=cached.output)
        .set_caching_options(False)
        .set_accelerator_type("nvidia.com/gpu")
        .set_accelerator_limit(1)
        # A restarted task resumes from the run's latest checkpoint, so a retry loses at most one interval.
        .set_retry(num_retries=2, backoff_duration="60s")
    )
    evaluated = evaluate(
        config_json=config_json,
        adapter_uri=trained.outputs["adapter_uri"],
        cache_uri=cached.output,
        run_id=trained.outputs["run_id"],
    ).set_caching_options(False)
    registered = register(
        config_json=config_json,
        adapter_uri=trained.outputs["adapter_uri"],
        run_id=trained.outputs["run_id"],
        cache_uri=cached.output,
    ).set_caching_options(False)
    registered.after(evaluated)
    return Outputs(
        model_name=registered.outputs["model_name"],
        version=registered.outputs["version"],
        alias=registered.outputs["alias"],
        reason=registered.outputs["reason"],
        report_uri=evaluated.outputs["report_uri"],
        dataset_fingerprint=curated.outputs["fingerprint"],
        adapter_uri=trained.outputs["adapter_uri"],
        run_id=trained.outputs["run_id"],
        steps=trained.outputs["steps"],
        adapter_step=trained.outputs["adapter_step"],
        stopped_early=trained.outputs["stopped_early"],
    )
