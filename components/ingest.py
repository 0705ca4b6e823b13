"""KFP component: ingest and curate raw images into a versioned dataset."""

from typing import NamedTuple

from kfp import dsl

from artlora.components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(config_json: str) -> NamedTuple("IngestOutputs", dataset_uri=str, fingerprint=str):
    """Curate the raw images named by the config's `ingest.source`.

    Args:
        config_json: the resolved pipeline config (artlora.config.PipelineConfig) as JSON.

    Returns:
        dataset_uri: s3:// prefix of the curated dataset version.
        fingerprint: content fingerprint of that version.
    """
    from collections import namedtuple

    from artlora import log
    from artlora.config import PipelineConfig
    from artlora.stages.ingest import run as stage

    log.configure()
    result = stage.run(PipelineConfig.model_validate_json(config_json).ingest)
    return namedtuple("IngestOutputs", ["dataset_uri", "fingerprint"])(result.dataset_uri, result.fingerprint)
