"""KFP component: register the adapter in MLflow and gate the champion alias."""

from typing import NamedTuple

from kfp import dsl

from artlora.components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(
    config_json: str, adapter_uri: str, run_id: str, source_fingerprint: str, config_digest: str
) -> NamedTuple("RegisterOutputs", model_name=str, version=str, alias=str):
    """Create an MLflow model version with lineage tags; alias it champion or challenger.

    Args:
        config_json: the resolved pipeline config (artlora.config.PipelineConfig) as JSON.
        adapter_uri: the trained adapter from the train component.
        run_id: the training's MLflow run, holding the evaluation metrics.
        source_fingerprint: the source listing's fingerprint, from the check component.
        config_digest: the config's digest, from the check component.

    Returns:
        model_name, version, alias.
    """
    from collections import namedtuple

    from artlora import log
    from artlora.config import PipelineConfig, with_inputs
    from artlora.stages import register as stage

    log.configure()
    config = with_inputs(
        PipelineConfig.model_validate_json(config_json).register,
        adapter_uri=adapter_uri,
        run_id=run_id,
        source_fingerprint=source_fingerprint,
        config_digest=config_digest,
    )
    result = stage.run(config)
    return namedtuple("RegisterOutputs", ["model_name", "version", "alias"])(
        result.model_name, result.version, result.alias
    )
