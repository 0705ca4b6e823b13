"""KFP component: register the adapter in MLflow and gate the champion alias."""

from typing import NamedTuple

from kfp import dsl

from artlora.components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(
    config_json: str, adapter_uri: str, run_id: str, cache_uri: str, source_fingerprint: str, config_digest: str
) -> NamedTuple("RegisterOutputs", model_name=str, version=str, alias=str, reason=str):
    """Create an MLflow model version with lineage tags; the gate aliases it champion or challenger.

    Args:
        config_json: the resolved pipeline config (artlora.config.PipelineConfig) as JSON.
        adapter_uri: the trained adapter from the train component.
        run_id: the training's MLflow run, holding the evaluation metrics.
        cache_uri: the latent cache index holding the validation split, on which a champion evaluated on other
            data is measured again.
        source_fingerprint: the source listing's fingerprint, from the check component.
        config_digest: the pipeline config's digest, from the check component.

    Returns:
        model_name, version, alias, and the gate's reason for the alias.
    """
    from collections import namedtuple

    from artlora import log
    from artlora.config import PipelineConfig, with_inputs
    from artlora.stages.register import run as stage

    log.configure()
    config = with_inputs(
        PipelineConfig.model_validate_json(config_json).register,
        adapter_uri=adapter_uri,
        run_id=run_id,
        cache_uri=cache_uri,
        source_fingerprint=source_fingerprint,
        config_digest=config_digest,
    )
    result = stage.run(config)
    outputs = namedtuple("RegisterOutputs", ["model_name", "version", "alias", "reason"])
    return outputs(result.model_name, result.version, result.alias, result.reason)
