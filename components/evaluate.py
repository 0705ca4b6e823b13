"""KFP component: compare base and base+LoRA on held-out loss, per-style evidence and sample images."""

from typing import NamedTuple

from kfp import dsl

from artlora.components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    config_json: str,
    adapter_uri: str,
    cache_uri: str,
    run_id: str,
    report: dsl.Output[dsl.HTML],
    metrics: dsl.Output[dsl.Metrics],
) -> NamedTuple("EvaluateOutputs", report_uri=str, val_loss_base=float, val_loss_lora=float, run_id=str):
    """Measure the adapter against its base model and write an HTML report.

    Args:
        config_json: the resolved pipeline config (artlora.config.PipelineConfig) as JSON.
        adapter_uri: the trained adapter from the train component.
        cache_uri: the latent cache index holding the validation split.
        run_id: the training's MLflow run, which receives the metrics.
        report: the evaluation report (the KFP UI shows it).
        metrics: every number of the evaluation (the KFP UI lists them).

    Returns:
        report_uri, val_loss_base, val_loss_lora, and the run_id that now holds them (a search collects it).
    """
    from collections import namedtuple

    from artlora import log
    from artlora.config import PipelineConfig, with_inputs
    from artlora.stages.evaluate import run as stage

    log.configure()
    config = PipelineConfig.model_validate_json(config_json).evaluate
    result = stage.run(with_inputs(config, adapter_uri=adapter_uri, cache_uri=cache_uri, run_id=run_id))
    with open(report.path, "w", encoding="utf-8") as out:
        out.write(result.report_html)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    outputs = namedtuple("EvaluateOutputs", ["report_uri", "val_loss_base", "val_loss_lora", "run_id"])
    return outputs(result.report_uri, result.val_loss_base, result.val_loss_lora, run_id)
