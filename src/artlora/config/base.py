"""What every stage config shares: the base class, its errors and the keys shared across stages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from artlora.errors import ArtloraError


class ConfigError(ArtloraError, ValueError):
    """A config problem, phrased for the user: which field, what is wrong, what to do."""


class StageConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def require(self, *names: str) -> None:
        """Fail clearly when an input that the pipeline normally fills is missing."""
        stage = type(self).__name__.removesuffix("Config").lower()
        for name in names:
            if getattr(self, name) in (None, ""):
                raise ConfigError(
                    f"{stage}.{name} is required when the {stage} stage runs alone: "
                    f"pass --set {stage}.{name}=... (the stage before prints it)"
                )

    def given(self, name: str) -> str:
        """The value of an input that the pipeline normally fills (`require` names it when it is missing)."""
        self.require(name)
        value = getattr(self, name)
        if not isinstance(value, str):
            raise TypeError(f"{type(self).__name__}.{name} is not a string input: {value!r}")
        return value


StorageRoot = Field(
    description="s3:// prefix under which datasets/, cache/ and runs/ are kept", pattern=r"^s3://[a-z0-9.-]{3,}"
)
BaseModelRef = Field(
    description="base Stable Diffusion model: hub id (org/name), local diffusers folder, s3:// prefix "
    "of a diffusers folder, or a single .safetensors file"
)
Experiment = Field("artlora", description="MLflow experiment that the stage's run is logged to")
Seed = Field(0, ge=0, description="random seed; the same seed and inputs give the same result")
