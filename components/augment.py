"""KFP component: augmented views of the dataset, encoded to a VAE latent cache."""

from kfp import dsl

from artlora.components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def augment(config_json: str, dataset_uri: str) -> str:
    """Encode augmented views of every curated image (cached by content, so reruns encode nothing).

    Args:
        config_json: the resolved pipeline config (artlora.config.PipelineConfig) as JSON.
        dataset_uri: the curated dataset version from the ingest component.

    Returns:
        The s3:// URI of the latent cache index.
    """
    from artlora import log
    from artlora.config import PipelineConfig, with_inputs
    from artlora.stages.augment import run as stage

    log.configure()
    config = PipelineConfig.model_validate_json(config_json).augment
    return stage.run(with_inputs(config, dataset_uri=dataset_uri)).cache_uri
