"""The register stage's settings: the registered model and its gate."""

from __future__ import annotations

from pydantic import Field

from artlora.config.base import BaseModelRef, StageConfig


class RegisterConfig(StageConfig):
    adapter_uri: str | None = Field(None, description="trained adapter folder (train's output)")
    run_id: str | None = Field(None, description="MLflow run of the training, holding the metrics")
    base_model: str = BaseModelRef
    model_name: str = Field(
        description="MLflow registered model name", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128
    )
    gate_metric: str = Field("val_loss_lora", description="lower is better; beats the champion's to take over")
    source_fingerprint: str | None = Field(
        None,
        description="fingerprint of the source listing the dataset came from (the pipeline fills it); recorded "
        "on the version so that a run on unchanged data can skip training",
    )
    config_digest: str | None = Field(
        None,
        description="digest of the pipeline config the version was trained with (the pipeline fills it); "
        "recorded on the version beside source_fingerprint",
    )
